"""Device commands end to end on real parts: ``POST /api/v1/commands`` on ``floorgate central run`` (PostgreSQL) →
the dispatcher → mosquitto → ``floorgate edge run`` → an MT-SICS weighbridge simulated on a real pseudo-terminal →
the node's signed result → the command row, read back with ``GET …?wait_s=``.

The weighbridge runs in this process with its clock in the test's hand, so the scale is empty, has a truck driving
on, a truck standing, or an overloading truck exactly when the test says. Checked: tare, zero, weigh (also a
weighing at central), poll and reload succeed with the scale's values; ``Z I`` and overload end ``failed`` with the
reason; a command to a node nobody runs ends ``timeout`` and its late answer is kept; a redelivered command is
executed once; a forged result is quarantined.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from sqlalchemy import select

from central.db.engine import make_engine, make_session_factory
from central.db.models import AuditEntry, Command, Device, QuarantineEntry
from central.fleet.commands import wire_command
from central.fleet.nodes import register_node
from edge.store.outbox import read_stats
from sync.commands import CommandResult, decode_result, encode_command, encode_result
from sync.downlink import DownlinkSigner
from sync.signing import generate_key, load_private_key, public_key_text, sign
from tests.api_support import add_api_key
from tests.procs import Proc, central_yaml, enrol, floorgate, node_yaml, wait_until, write_yaml
from tests.services import MosquittoServer, free_port
from tests.weighbridge_support import BridgeThread

pytestmark = pytest.mark.e2e

# the weighbridge's load cycle (time_scale 1): empty 0-3 s, a truck drives on 3-5 s, stands 5-9 s, drives off 9-11 s
EMPTY, DRIVING_ON, SETTLED = 1.0, 4.0, 7.0
SECOND_TRUCK_SETTLED = 11.0 + SETTLED  # 70 t on a 60 t bridge: S +


class Spy:
    """An MQTT client on the test's side: publishes like central or a node would, and collects command results."""

    def __init__(self, mosquitto: MosquittoServer, topic: str) -> None:
        self.results: list[bytes] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, msg: self.results.append(msg.payload)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(5), "no SUBACK from the broker"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def sim() -> Iterator[BridgeThread]:
    s = BridgeThread([24560, 70000])
    s.t = EMPTY
    try:
        yield s
    finally:
        s.stop()


def test_commands_from_the_api_reach_the_scale_and_come_back(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, sim: BridgeThread, unique_id: str,
) -> None:
    node, absent = f"{unique_id}-n", f"{unique_id}-gone"
    procs: list[Proc] = []
    api_port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=40)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    spy = Spy(mosquitto, "floorgate/v1/+/cmd/result")
    try:
        pty = sim.start()
        central_cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url,
                                   client_id=f"central-{unique_id}", api_port=api_port)
        node_cfg = node_yaml(tmp_path, node_id=node, broker_url=mosquitto.url, devices=[
            {"id": "bridge-1", "type": "mtsics-scale", "address": f"serial://{pty}", "interval_s": 0.1,
             "weighing": {"threshold": 500}}])
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(node_cfg, central_cfg)
        api.headers["X-API-Key"] = add_api_key(sessions, "operator")
        auditor = {"X-API-Key": add_api_key(sessions, "auditor")}
        central = Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start()
        procs.append(central)
        wait_until("central API", lambda: api.get("/health").status_code in (200, 503), timeout_s=30, procs=procs)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)
        wait_until("bridge-1 known at central", lambda: api.get(
            "/api/v1/devices", params={"node_id": node}).json()["items"], timeout_s=30, procs=procs)

        def run(command: str, device: str | None = "bridge-1", *, on: str = node, **body: Any) -> dict[str, Any]:
            r = api.post("/api/v1/commands", json={"node_id": on, "device_id": device, "command": command, **body})
            assert r.status_code == 202, r.text
            queued = r.json()
            assert (queued["status"], queued["command"], queued["device_id"]) == ("queued", command, device)
            done = api.get(f"/api/v1/commands/{queued['command_id']}", params={"wait_s": 25})
            assert done.status_code == 200, done.text
            row = done.json()
            assert row["status"] not in ("queued", "sent"), (row, edge.tail())
            return row

        # the bridge is empty: zero and tare are done
        zero = run("zero")
        assert (zero["status"], zero["result"], zero["error"]) == ("succeeded", {"answer": "Z A"}, None)
        assert zero["sent_at"] is not None
        assert zero["answered_at"] is not None
        tare = run("tare")
        assert (tare["status"], tare["result"]["tare"], tare["result"]["unit"]) == ("succeeded", "0", "kg")

        # a truck drives on: the scale refuses zero
        sim.t = DRIVING_ON
        refused = run("zero")
        assert (refused["status"], refused["error"]) == ("failed", "scale refused zero: Z I (not executable now)")

        # the truck stands: weigh now (also a weighing at central), poll
        sim.t = SETTLED
        weigh = run("weigh", args={"reference": "DN-4711"})
        assert weigh["status"] == "succeeded", weigh
        assert (weigh["result"]["gross"], weigh["result"]["unit"], weigh["result"]["stable"]) == ("24560", "kg", True)
        assert weigh["args"] == {"reference": "DN-4711"}
        weighing = wait_until("the commanded weighing at central", lambda: next(
            (w for w in api.get("/api/v1/weighings", params={"node_id": node}).json()["items"]
             if w["record_id"] == weigh["result"]["record_id"]), None), timeout_s=20, procs=procs)
        assert (weighing["gross"], weighing["unit"], weighing["device_id"]) == ("24560", "kg", "bridge-1")
        poll = run("poll")
        assert (poll["status"], poll["result"]["weight"], poll["result"]["stable"]) == ("succeeded", "24560", True)

        # the 70 t truck overloads the bridge: weigh fails with the reason
        sim.t = SECOND_TRUCK_SETTLED
        over = run("weigh")
        assert (over["status"], over["error"]) == ("failed", "overload: the scale answered S +")

        # reload: a valid config is taken, an invalid one is refused and the running one stays
        config = yaml.safe_load(node_cfg.read_text())
        config["devices"][0]["interval_s"] = 0.2
        write_yaml(node_cfg, config)
        reload = run("reload", None)
        assert (reload["status"], reload["result"]["changed"]) == ("succeeded", ["bridge-1"]), reload
        write_yaml(node_cfg, {**config, "devices": [{**config["devices"][0], "weighing": {"threshold": "lots"}}]})
        bad = run("reload", None)
        assert bad["status"] == "rejected"
        assert "config not reloaded, the running one stays" in bad["error"]
        assert "devices[0].weighing.threshold" in bad["error"]
        assert run("poll")["status"] == "succeeded"

        # a redelivered command (the same id once more on the broker) is answered again, not executed again
        _, before = read_stats(tmp_path / "edge" / "outbox.db")
        with sessions() as s:
            weigh_row = s.execute(select(Command).where(Command.command_id == weigh["command_id"])).scalar_one()
        # (signed with central's key, as central does: the node drops anything else)
        signer = DownlinkSigner(load_private_key(tmp_path / "central-signing.key"))
        spy.publish(f"floorgate/v1/{node}/cmd", encode_command(wire_command(weigh_row, signer), signer=signer))
        answers = wait_until("the answer to the redelivered command", lambda: [
            p for p in spy.results if decode_result(p).command_id == weigh["command_id"]][1:], timeout_s=15,
            procs=procs)
        first = next(p for p in spy.results if decode_result(p).command_id == weigh["command_id"])
        assert answers == [first]  # the stored result, byte for byte
        _, after = read_stats(tmp_path / "edge" / "outbox.db")
        assert after["business"].produced == before["business"].produced  # no second weighing
        assert api.get(f"/api/v1/commands/{weigh['id']}").json() == weigh  # central keeps the first answer

        # a node nobody runs: the command times out; the answer that comes late is kept, the status stays timeout
        absent_key = generate_key()
        register_node(sessions, absent, public_key_text(absent_key))
        with sessions.begin() as s:
            s.add(Device(node_id=absent, device_id="bridge-1", kind="mtsics-scale"))
        lost = run("poll", on=absent, timeout_s=1)
        assert (lost["status"], lost["error"], lost["late"]) == (
            "timeout", f"no answer from node {absent} within 1 s", False)
        late = CommandResult(command_id=lost["command_id"], node=absent, command="poll", device="bridge-1",
                             status="succeeded", result={"weight": "0", "unit": "kg"}, finished_at_ns=time.time_ns())
        spy.publish(f"floorgate/v1/{absent}/cmd/result", encode_result(late, signer=lambda b: sign(absent_key, b)))
        kept = wait_until("the late answer", lambda: (r := api.get(f"/api/v1/commands/{lost['id']}").json())["late"]
                          and r, timeout_s=15, procs=procs)
        assert (kept["status"], kept["result"]) == ("timeout", {"weight": "0", "unit": "kg"})
        assert "after the timeout: succeeded" in kept["error"]

        # a forged answer (signed with another key) to an open command: quarantined, the command untouched
        open_cmd = api.post("/api/v1/commands", json={"node_id": absent, "device_id": "bridge-1",
                                                      "command": "tare", "timeout_s": 600}).json()
        wait_until("the command sent", lambda: api.get(f"/api/v1/commands/{open_cmd['id']}").json()["status"]
                   == "sent", timeout_s=15, procs=procs)
        forged = CommandResult(command_id=open_cmd["command_id"], node=absent, command="tare", device="bridge-1",
                               status="succeeded", result={"tare": "0", "unit": "kg"}, finished_at_ns=time.time_ns())
        spy.publish(f"floorgate/v1/{absent}/cmd/result",
                    encode_result(forged, signer=lambda b: sign(generate_key(), b)))
        entry = wait_until("the forged result in quarantine", lambda: next(
            (q for q in api.get("/api/v1/ingest/quarantine", headers=auditor).json()["items"]
             if q["topic"] == f"floorgate/v1/{absent}/cmd/result"), None), timeout_s=15, procs=procs)
        assert "command result" in entry["reason"]
        assert "signature does not match" in entry["reason"]
        assert api.get(f"/api/v1/commands/{open_cmd['id']}").json()["status"] == "sent"

        # everything asked is in the audit log, under the API key that asked
        with sessions() as s:
            audited = s.execute(select(AuditEntry).where(AuditEntry.action == "command")).scalars().all()
            quarantined = s.execute(select(QuarantineEntry).where(QuarantineEntry.node_id == absent)).scalars().all()
        assert len(audited) == 11
        assert all(a.actor.startswith("apikey:") and a.resource == "commands" for a in audited)
        assert len(quarantined) == 1
        listed = api.get("/api/v1/commands", params={"node_id": node, "command": "weigh", "sort": "id"}).json()
        assert [c["status"] for c in listed["items"]] == ["succeeded", "failed"]
        assert "Traceback" not in central.log() + edge.log()
    finally:
        spy.close()
        api.close()
        for p in reversed(procs):
            p.stop()
        engine.dispose()
