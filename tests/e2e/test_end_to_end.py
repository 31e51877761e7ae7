"""The whole path on real parts: simulated devices (a weighbridge on a real pseudo-terminal, Modbus meters on
TCP) → ``floorgate edge run`` → mosquitto → ``floorgate central run`` → PostgreSQL + InfluxDB.

Every weighing the edge committed arrives exactly once — through an edge agent killed with SIGKILL and restarted,
and a broker killed with SIGKILL and restarted — and every reading can be queried back from InfluxDB. A garbage
scale line, a Modbus exception and a malformed MQTT payload are each logged, counted, and crash nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml

from edge.store.outbox import read_stats
from protocols.sim.weighbridge import Weighbridge
from tests.api_support import TEST_JWT_SECRET
from tests.procs import Proc, create_admin, enrol, floorgate, login, wait_until
from tests.services import InfluxServer, MosquittoServer, free_port

pytestmark = pytest.mark.e2e

NODE = "e2e-node"
TRUCKS = [24560 + 20 * i * (1 if i % 2 else -1) + 1000 * i for i in range(60)]  # distinct, known weights


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sim(name: str, args: list[str], tmp_path: Path) -> tuple[Proc, str]:
    proc = Proc(name, ["simulate", *args], tmp_path).start()
    if "--pty" in args:
        return proc, "serial://" + proc.wait_for_line("pty:")
    return proc, proc.wait_for_line("listening:")


def _outbox_stats(data_dir: Path) -> tuple[str, dict[str, Any]]:
    return read_stats(data_dir / "outbox.db")


def _streams(api: httpx.Client, epoch: str) -> dict[str, int]:
    items = api.get("/api/v1/ingest/streams", params={"node_id": NODE}).json()["items"]
    return {s["stream"]: s["acked_seq"] for s in items if s["epoch"] == epoch}


def _all_weighings(api: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.get("/api/v1/weighings", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        out.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def _visits(n: int) -> list[int]:
    """The first ``n`` gross weights the simulated weighbridge (``--trucks TRUCKS --seed 3``) puts on the bridge: the
    scripted trucks, then its seeded random ones — a loaded machine may be slow enough to see those too."""
    cycle = Weighbridge(trucks=TRUCKS, seed=3, time_scale=0.1).cycle
    return [int(cycle.load_weight(i)) for i in range(n)]


def _is_subsequence(seen: list[int], of: list[int]) -> bool:
    it = iter(of)
    return all(any(x == y for y in it) for x in seen)


def test_records_arrive_exactly_once_through_agent_and_broker_crashes(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, influx_server: InfluxServer, influx_db: str,
) -> None:
    procs: list[Proc] = []
    api_port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=5)
    try:
        bridge, bridge_addr = _sim("sim-weighbridge", [
            "weighbridge", "--pty", "--time-scale", "0.1", "--garbage-every", "37",
            "--trucks", ",".join(map(str, TRUCKS)), "--seed", "3"], tmp_path)
        meter, meter_addr = _sim("sim-sdm630", ["sdm630", "--seed", "1"], tmp_path)
        probe, probe_addr = _sim("sim-probe", ["th-probe", "--seed", "2"], tmp_path)
        procs += [bridge, meter, probe]

        central_cfg = _write_yaml(tmp_path / "central.yaml", {
            "database_url": pg_url,
            "broker": {"url": mosquitto.url, "protocol": "5", "client_id": f"central-{NODE}"},
            "metrics": {"kind": "influxdb-v1", "url": influx_server.url, "database": influx_db},
            "api": {"host": "127.0.0.1", "port": api_port},
            "auth": {"jwt_secret": TEST_JWT_SECRET},
        })
        edge_dir = tmp_path / "edge"
        node_cfg = _write_yaml(tmp_path / "node.yaml", {
            "node_id": NODE,
            "data_dir": str(edge_dir),
            "broker": {"url": mosquitto.url, "protocol": "5"},
            "uplink": {"ack_timeout_s": 2, "retry_min_s": 0.2, "retry_max_s": 2},
            "health_interval_s": 1,
            "http": {"listen": None},
            "devices": [
                {"id": "bridge-1", "type": "mtsics-scale", "address": bridge_addr, "interval_s": 0.08,
                 "weighing": {"threshold": 500}},
                {"id": "meter-1", "type": "sdm630", "address": meter_addr, "interval_s": 0.5},
                {"id": "probe-1", "type": "th-probe", "address": probe_addr, "interval_s": 0.5},
                # an SDM630 map read from the probe: registers it does not have → Modbus exception answers
                {"id": "wrong-1", "type": "sdm630", "address": probe_addr, "interval_s": 0.5},
            ],
        })
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(node_cfg, central_cfg)
        create_admin(central_cfg)
        central = Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start()
        procs.append(central)
        wait_until("central API", lambda: api.get("/health").status_code == 200, timeout_s=30, procs=procs)
        assert api.get("/api/v1/weighings").status_code == 401  # nothing without logging in
        login(api)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)

        def weighings_at_least(n: int) -> int | None:
            got = len(_all_weighings(api))
            return got if got >= n else None

        wait_until("3 weighings", lambda: weighings_at_least(3), timeout_s=60, procs=procs)

        edge.kill()  # SIGKILL in the middle of polling and syncing
        procs.remove(edge)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)
        wait_until("6 weighings after the agent was killed", lambda: weighings_at_least(6), timeout_s=60,
                   procs=procs)

        mosquitto.restart(kill=True)  # the broker loses what it had not snapshotted
        wait_until("9 weighings after the broker was killed", lambda: weighings_at_least(9), timeout_s=90,
                   procs=procs)

        health = api.get("/health").json()
        assert health["status"] == "ok", health
        assert all(d["ok"] and d["latency_ms"] >= 0 for d in health["dependencies"].values()), health
        assert health["dependencies"]["influxdb"]["kind"] == "influxdb-v1"

        # a malformed MQTT payload on a node's topic: quarantined with its reason, ingest goes on
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        pub.publish(f"floorgate/v1/{NODE}/up/business", b"\x00\xffnot a batch", qos=1).wait_for_publish(5)
        pub.publish(f"floorgate/v1/{NODE}/up/business", b'{"v": 1, "type": "batch"}', qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        quarantine = wait_until(
            "2 quarantined messages",
            lambda: (q := api.get("/api/v1/ingest/quarantine").json()["items"]) and len(q) >= 2 and q,
            timeout_s=20, procs=procs,
        )
        reasons = " | ".join(q["reason"] for q in quarantine)
        assert "unknown encoding marker 0x00" in reasons
        assert "node: missing" in reasons

        # stop the devices, let the edge drain, then compare both ends exactly
        for sim in (bridge, meter, probe):
            sim.stop()
            procs.remove(sim)
        epoch, _ = _outbox_stats(edge_dir)

        def influx_count(measurement: str, point: str) -> int:
            res = influx_server.query(
                influx_db, f"SELECT count(\"value\") FROM \"{measurement}\" WHERE \"point\"='{point}'")
            series = res["results"][0].get("series")
            return int(series[0]["values"][0][1]) if series else 0

        def reading_points() -> int:
            """One voltage_l1 per meter record, one temperature per probe record, one `polls` per device-health record
            (the agent's own counters, measurement device_health): one point per record of the readings stream."""
            return (influx_count("readings", "voltage_l1") + influx_count("readings", "temperature")
                    + influx_count("device_health", "polls"))

        def drained() -> tuple[dict[str, Any], int] | None:
            """The outbox drained, and the readings in InfluxDB counted at a moment no new record came in between:
            the agent goes on making device-health readings for the stopped devices, so the count is taken after
            central holds all ``produced`` and only kept when ``produced`` has not moved by the time it is taken."""
            _, stats = _outbox_stats(edge_dir)
            stored = _streams(api, epoch)
            if not all(s.pending == 0 and stored.get(n, 0) == s.produced for n, s in stats.items()):
                return None
            points = reading_points()
            _, again = _outbox_stats(edge_dir)
            return (stats, points) if again["readings"].produced == stats["readings"].produced else None

        stats, readings_in_influx = wait_until("the edge outbox to drain", drained, timeout_s=60, procs=procs)

        weighings = sorted(_all_weighings(api), key=lambda w: w["seq"])
        produced = stats["business"].produced
        assert produced >= 9
        assert [w["seq"] for w in weighings] == list(range(1, produced + 1)), "a weighing was lost or doubled"
        assert len({w["record_id"] for w in weighings}) == produced
        grosses = [int(w["gross"]) for w in weighings]
        expected = _visits(len(TRUCKS) + 5000)
        assert _is_subsequence(grosses, expected), f"weighings not in truck order or invented: {grosses}"
        assert all(w["unit"] == "kg" and w["scale_serial"] == "0123456789" for w in weighings)

        # every reading record is in InfluxDB, once (counted at a quiet moment, see drained)
        assert influx_count("readings", "voltage_l1") > 0
        assert influx_count("device_health", "rtt_ms") > 0
        assert readings_in_influx == stats["readings"].produced
        mean = influx_server.query(influx_db, "SELECT mean(\"value\") FROM \"readings\" WHERE \"point\"='voltage_l1'")
        assert 220 < mean["results"][0]["series"][0]["values"][0][1] < 240

        devices = {d["device_id"]: d for d in api.get("/api/v1/devices").json()["items"]}
        assert set(devices) == {"bridge-1", "meter-1", "probe-1", "wrong-1"}
        assert devices["bridge-1"]["counters"]["frames_bad"] > 0, devices["bridge-1"]
        assert devices["wrong-1"]["counters"]["device_errors"] > 0, devices["wrong-1"]
        assert devices["wrong-1"]["status"] == "offline"
        assert "Modbus exception 2" in (devices["wrong-1"]["status_reason"] or "")

        edge_log = edge.log()
        assert "framing: MT-SICS" in edge_log
        assert "Modbus exception" in edge_log
        assert "quarantined message" in central.log()
    finally:
        api.close()
        for p in reversed(procs):
            p.stop()
