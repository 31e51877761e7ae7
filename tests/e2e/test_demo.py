"""``floorgate demo`` — the README's first command — shows weighings reaching central, with the embedded amqtt
broker (what a fresh machine without mosquitto gets) and with mosquitto."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.procs import floorgate, wait_until
from tests.services import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"])
def test_demo_shows_weighings_reaching_central(tmp_path: Path, broker: str) -> None:
    port = free_port()
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "floorgate_cli", "demo", "--duration", "60", "--api-port", str(port),
             "--broker", broker, "--time-scale", "0.15", "--data-dir", str(tmp_path / "data")],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
            def weighings() -> list[dict[str, object]] | None:
                if demo.poll() is not None:
                    raise AssertionError(f"demo exited early with {demo.returncode}:\n{out.read_text()}")
                items = api.get("/api/v1/weighings").json()["items"]
                return items if len(items) >= 2 else None

            items = wait_until("2 weighings through the demo", weighings, timeout_s=60)
            assert all(w["device_id"] == "bridge-1" and w["unit"] == "kg" for w in items)
            health = api.get("/health").json()
            assert health["status"] == "ok", health
            assert {k: v["ok"] for k, v in health["dependencies"].items()} == {
                "database": True, "broker": True, "influxdb": True}
            devices = api.get("/api/v1/devices").json()["items"]
            assert {d["device_id"] for d in devices if d["online"]} >= {"bridge-1", "meter-1"}
            # readings from the demo's metrics store, newest and per minute; Prometheus figures of central
            latest = api.get("/api/v1/readings/latest", params={"device_id": "meter-1"}).json()["items"]
            assert latest, "no readings of meter-1"
            node, point = latest[0]["node_id"], latest[0]["point"]
            ranged = api.get("/api/v1/readings", params={"node_id": node, "device_id": "meter-1", "point": point,
                                                         "every": "1m", "fn": "count"}).json()
            assert sum(b["value"] for s in ranged["series"] for b in s["points"]) >= 1, ranged
            assert "floorgate_ingest_batches_total" in api.get("/metrics").text
            # the demo's fleet CA binds the node's key: its alibi chain verifies with a trusted key
            cfg = str(tmp_path / "data" / "central.yaml")
            for check in (["verify-alibi", "--node", "demo-node"], ["node", "keys", "demo-node"]):
                done = floorgate(["central", *check, "--config", cfg])
                assert done.returncode == 0, done.stdout + done.stderr
            time.sleep(1.5)  # let the live view print at least once more
    finally:
        demo.terminate()
        demo.wait(30)
    text = out.read_text()
    assert f"API http://127.0.0.1:{port}" in text
    assert f"broker: {broker}" in text
    for column in ("produced", "buffered", "acked", "stored"):
        assert column in text
    assert "last weighing: bridge-1" in text
    assert "Traceback" not in text, text
