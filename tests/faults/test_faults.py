"""Fault injection on the whole system (issue 4): for each fault, produced == stored at central, nothing doubled,
sequences contiguous, the outbox intact.

One plant per test: a weighbridge on a pseudo-terminal and two Modbus meters (simulators), ``floorgate edge run``
behind a network link that can be cut, mosquitto, central (API + ingest, or ingest workers), PostgreSQL, InfluxDB.
The faults are real: SIGKILL, restarts of the servers, a link that silently drops every byte, a tiny disk quota.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from sync.envelope import Batch, Record, encode_batch
from sync.signing import generate_key, load_private_key, sign
from tests.faults.plant import Plant
from tests.procs import Proc, floorgate, wait_until
from tests.services import InfluxServer, MosquittoServer, PostgresServer

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


@pytest.fixture
def plant(tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, influx_server: InfluxServer,
          influx_db: str) -> Iterator[Plant]:
    p = Plant(tmp_path, pg_url, mosquitto, influx_server, influx_db)
    try:
        yield p
    finally:
        p.close()


def _publish(mosquitto: MosquittoServer, topic: str, payload: bytes) -> None:
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_crashes_restarts_and_outages_lose_and_double_nothing(
    plant: Plant, postgres_server: PostgresServer, influx_server: InfluxServer, mosquitto: MosquittoServer,
) -> None:
    rng = random.Random(4)
    plant.start()
    captured: list[bytes] = []  # an eavesdropper keeps a real signed batch to replay it later
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda _c, _u, msg: captured.append(msg.payload) if not captured else None
    spy.connect(mosquitto.host, mosquitto.port)
    spy.subscribe(f"floorgate/v1/{plant.node}/up/business", qos=1)
    spy.loop_start()
    # central will SIGKILL itself right after its 8th commit, before sending that ack
    central = plant.start_central(env={"FLOORGATE_FAULT_CRASH_AFTER_COMMITS": "8"})
    plant.start_edge()
    wait_until("a business batch on the wire", lambda: captured, timeout_s=60, procs=plant.alive())
    spy.loop_stop()
    spy.disconnect()
    wait_until("central to kill itself between commit and ack", lambda: not central.running, timeout_s=60,
               procs=[p for p in plant.procs if p is not central])
    assert "fault injection: SIGKILL after commit 8" in central.log()
    plant.forget(central)
    plant.start_central()

    # the edge agent SIGKILLed at random moments, 10 times
    kills = 0
    for _ in range(10):
        time.sleep(rng.uniform(0.3, 2.5))
        plant.kill_edge()
        kills += 1
        plant.start_edge()
    plant.wait_weighings(3)

    mosquitto.restart(kill=True)  # the broker loses what it had not snapshotted
    time.sleep(2)

    postgres_server.restart(kill=rng.random() < 0.5)  # the database goes away under central and comes back
    time.sleep(2)

    influx_server.stop()  # readings wait (on the edge), business records go on
    before = plant.weighings()
    plant.wait_weighings(before + 2, timeout_s=90)
    influx_server.start()

    assert plant.net is not None
    plant.net.cut()  # the network is gone: no FIN, no RST, nothing
    time.sleep(8)
    with httpx.Client(base_url=f"http://127.0.0.1:{plant.node_http_port}", timeout=3) as node_api:
        health = node_api.get("/health").json()
        assert health["status"] == "degraded", health  # the node says so, and keeps everything
        assert health["backlog"]["readings"]["pending"] > 0, health
        assert health["backlog"]["readings"]["oldest_age_s"] > 1, health
    status = floorgate(["edge", "status", "--config", str(plant.node_cfg), "--json"])
    assert status.returncode == 0, status.stderr
    backlog = json.loads(status.stdout)["streams"]
    assert backlog["readings"]["pending"] > 0, backlog
    assert backlog["readings"]["oldest_age_s"] > 1, backlog
    plant.net.restore()

    # forged, replayed and conflicting batches in the middle of it all
    epoch, _ = plant.outbox()
    topic = f"floorgate/v1/{plant.node}/up/business"
    forged = Batch(node=plant.node, epoch=epoch, stream="business", bno=1 << 40, records=(
        Record(seq=1, record_id="forged-1", kind="weighing", ts_ns=time.time_ns(), device="bridge-1",
               data={"gross": "99999", "unit": "kg"}),))
    other_key = generate_key()
    _publish(mosquitto, topic, encode_batch(forged, signer=lambda body: sign(other_key, body)))
    _publish(mosquitto, topic, encode_batch(forged))  # unsigned

    plant.stop_devices()
    epoch, stats = plant.drain(timeout_s=180)
    # replayed: the eavesdropped batch again (validly signed, old batch number, nothing new);
    # conflicting: seq 1 with another weight, signed with the node's own key (a broken or cloned node)
    _publish(mosquitto, topic, captured[0])
    node_key = load_private_key(plant.edge_dir / "node.key")
    conflicting = Batch(node=plant.node, epoch=epoch, stream="business", bno=(1 << 60), records=(
        Record(seq=1, record_id="other-1", kind="weighing", ts_ns=time.time_ns(), device="bridge-1",
               data={"gross": "77777", "unit": "kg"}),))
    _publish(mosquitto, topic, encode_batch(conflicting, signer=lambda body: sign(node_key, body)))
    wait_until("the replayed and the conflicting batch in quarantine",
               lambda: (r := " | ".join(plant.quarantine_reasons())) and "replayed batch" in r
               and "integrity conflict" in r, timeout_s=30, procs=plant.alive())
    plant.stop_edge()
    figures = plant.verify()
    assert kills == 10
    assert stats["business"].produced >= 5, figures
    assert stats["readings"].produced > 100, figures
    reasons = " | ".join(plant.quarantine_reasons())
    assert "forged or altered" in reasons
    assert "not signed" in reasons
    assert plant.weighings() == stats["business"].produced  # the forged 99999 kg weighing is not there
    # the backlog the heartbeats reported is in InfluxDB, and the node row knows key, heartbeat and clock
    res = influx_server.query(plant.influx_db, f"SELECT max(\"pending\") FROM \"node_backlog\" WHERE "
                                               f"\"node\"='{plant.node}' AND \"stream\"='readings'")
    assert res["results"][0]["series"][0]["values"][0][1] > 0, res
    nodes = floorgate(["central", "node", "list", "--config", str(plant.central_cfg)])
    line = next(ln for ln in nodes.stdout.splitlines() if ln.startswith(plant.node))
    assert "NOT ENROLLED" not in line, nodes.stdout
    assert "0.1.0" in line, nodes.stdout


def test_a_full_disk_quota_thins_and_drops_readings_as_counted_loss_and_keeps_every_business_record(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, influx_server: InfluxServer, influx_db: str,
) -> None:
    plant = Plant(tmp_path, pg_url, mosquitto, influx_server, influx_db, quota_mb=0.25)
    try:
        plant.start()
        plant.start_central()
        plant.start_edge()
        plant.wait_weighings(2)
        assert plant.net is not None
        plant.net.cut()  # nothing drains: the backlog grows into the quota
        wait_until("readings given up to the quota", lambda: plant.outbox()[1]["readings"].lost > 200,
                   timeout_s=120, procs=plant.alive())
        business_during_cut = plant.outbox()[1]["business"].produced
        time.sleep(3)
        plant.net.restore()
        plant.stop_devices()
        _epoch, stats = plant.drain(timeout_s=180)
        plant.stop_edge()
        figures = plant.verify(loss_allowed=True)
        assert stats["readings"].lost > 200
        assert figures["readings_lost"] > 0, figures  # central counted the loss too
        assert stats["business"].produced >= business_during_cut >= 2
        assert plant.weighings() == stats["business"].produced
        assert "quota: thinned" in (plant.tmp / "edge.log").read_text()
    finally:
        plant.close()


def test_two_ingest_workers_share_the_load_without_loss_or_duplicates(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, influx_server: InfluxServer, influx_db: str,
) -> None:
    plant = Plant(tmp_path, pg_url, mosquitto, influx_server, influx_db, share_group="ingest")
    try:
        plant.start()
        plant.start_central()  # API + one ingest member of the shared group
        worker = plant.start_central(api=False, name="worker-2")

        def connected(proc: Proc) -> bool:
            return "ingest connected" in proc.log()

        wait_until("worker-2 in the group", lambda: connected(worker), timeout_s=30, procs=plant.alive())
        plant.start_edge()
        plant.wait_weighings(4)
        wait_until("worker-2 to apply batches", lambda: "applied (" in worker.log(), timeout_s=30,
                   procs=plant.alive())
        worker.kill()  # a worker dies: what was in flight to it is resent by the node
        plant.forget(worker)
        worker = plant.start_central(api=False, name="worker-3")
        wait_until("worker-3 in the group", lambda: connected(worker), timeout_s=30, procs=plant.alive())
        plant.wait_weighings(plant.weighings() + 3)
        plant.stop_devices()
        _epoch, _stats = plant.drain(timeout_s=120)
        plant.stop_edge()
        plant.verify()
        applied_by = {p.name: p.log().count("applied (") for p in plant.centrals}
        assert all(n > 0 for n in applied_by.values()), applied_by  # both live members did take a share
        assert all("shared group ingest" in p.log() for p in plant.centrals)
    finally:
        plant.close()


def test_a_full_disk_stops_the_device_whose_business_record_cannot_be_stored_and_raises_an_alarm(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, influx_server: InfluxServer, influx_db: str,
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs as the node's disk and needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    plant = Plant(tmp_path, pg_url, mosquitto, influx_server, influx_db, edge_dir=disk / "edge")
    try:
        plant.start()
        central = plant.start_central()
        plant.start_edge()
        plant.wait_weighings(2)
        assert plant.net is not None
        plant.net.cut()  # nothing drains while the disk fills up
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, check=False)
        with httpx.Client(base_url=f"http://127.0.0.1:{plant.node_http_port}", timeout=3) as node_api:
            health = wait_until(
                "the node to stop the weighbridge and raise an alarm",
                lambda: (h := node_api.get("/health")).status_code == 503 and h.json(), timeout_s=120,
                procs=plant.alive())
        assert health["status"] == "alarm"
        assert health["devices"]["bridge-1"]["stopped"], health
        assert any("bridge-1 stopped" in a and "disk is full" in a for a in health["alarms"]), health
        plant.net.restore()  # the heartbeat takes the alarm to central
        wait_until("central to hear of the alarm", lambda: "reports ALARM: device bridge-1 stopped" in central.log(),
                   timeout_s=30, procs=plant.alive())
        filler.unlink()
        plant.stop_devices()
        _epoch, stats = plant.drain(timeout_s=180)
        plant.stop_edge()
        plant.verify(loss_allowed=True)  # readings may have been given up to make room
        assert plant.weighings() == stats["business"].produced >= 2
    finally:
        plant.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)
