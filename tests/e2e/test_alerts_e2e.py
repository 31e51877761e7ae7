"""An alert rule fires and resolves on the whole path: a simulated silo temperature cable (Modbus TCP) driven above
the threshold → ``floorgate edge run`` → mosquitto → ``floorgate central run`` (ingest → InfluxDB, the alert
evaluator) → a webhook receiver and an SMTP server, which each get exactly one firing and one resolved message.

The simulator's ``--force-file`` is the control: a JSON file of point → value that the device reads instead of its
model's values while the file exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.alert_receivers import SmtpSink, WebhookReceiver
from tests.api_support import TEST_JWT_SECRET
from tests.procs import Proc, create_admin, enrol, floorgate, login, wait_until
from tests.services import InfluxServer, MosquittoServer, free_port

pytestmark = pytest.mark.e2e

NODE = "e2e-alerts"
SUBJECT = f"{NODE}/silo-1/temperature_4"


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _force(path: Path, values: dict[str, float] | None) -> None:
    """Set the simulator's forced values atomically (None: back to the model)."""
    if values is None:
        path.unlink()
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(values), encoding="utf-8")
    tmp.replace(path)


def test_silo_hot_spot_fires_and_resolves_once_at_the_webhook_and_by_mail(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, influx_server: InfluxServer, influx_db: str,
) -> None:
    procs: list[Proc] = []
    api_port = free_port()
    force_file = tmp_path / "force.json"
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=5)
    with WebhookReceiver() as hook, SmtpSink() as smtp:
        try:
            sim = Proc("sim-silo", ["simulate", "silo-cable-8", "--seed", "3", "--force-file", str(force_file)],
                       tmp_path).start()
            procs.append(sim)
            sim_addr = sim.wait_for_line("listening:")
            rules = _write_yaml(tmp_path / "alert-rules.yaml", {
                "channels": {
                    "hook": {"kind": "webhook", "url": hook.url},
                    "mail": {"kind": "email", "host": "127.0.0.1", "port": smtp.port,
                             "from": "floorgate@test.example", "to": ["silo-team@test.example"]},
                },
                "rules": [{
                    "name": "silo-hot-spot", "kind": "reading", "device": "silo-*", "point": "temperature_*",
                    "above": 40, "for_s": 3, "max_gap_s": 5, "severity": "critical", "channels": ["hook", "mail"],
                    "message": "{device} sensor {point} at {value:.1f} {unit}",
                }],
            })
            central_cfg = _write_yaml(tmp_path / "central.yaml", {
                "database_url": pg_url,
                "broker": {"url": mosquitto.url, "protocol": "5", "client_id": f"central-{NODE}"},
                "metrics": {"kind": "influxdb-v1", "url": influx_server.url, "database": influx_db},
                "api": {"host": "127.0.0.1", "port": api_port},
                "auth": {"jwt_secret": TEST_JWT_SECRET},
                "alerts": {"rules_file": str(rules), "evaluate_every_s": 0.5},
            })
            node_cfg = _write_yaml(tmp_path / "node.yaml", {
                "node_id": NODE,
                "data_dir": str(tmp_path / "edge"),
                "broker": {"url": mosquitto.url, "protocol": "5"},
                "uplink": {"ack_timeout_s": 2, "retry_min_s": 0.2, "retry_max_s": 2},
                "health_interval_s": 1,
                "heartbeat_interval_s": 1,
                "http": {"listen": None},
                "buses": [{"id": "gw", "kind": "tcp", "address": sim_addr}],
                "devices": [{"id": "silo-1", "profile": "silo-cable-8", "bus": "gw", "unit_id": 1,
                             "poll_groups": {"default": 0.3}, "report_every_s": 1}],
            })
            migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
            assert migrated.returncode == 0, migrated.stderr
            enrol(node_cfg, central_cfg)
            create_admin(central_cfg)
            central = Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start()
            procs.append(central)
            wait_until("central API", lambda: api.get("/health").status_code == 200, timeout_s=30, procs=procs)
            login(api)
            edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
            procs.append(edge)

            def silo_points() -> int:
                res = influx_server.query(influx_db, "SELECT count(\"value\") FROM \"readings\" WHERE "
                                                     "\"device\"='silo-1' AND \"point\"='temperature_4'")
                series = res["results"][0].get("series")
                return int(series[0]["values"][0][1]) if series else 0

            wait_until("silo readings in InfluxDB", lambda: silo_points() >= 2, timeout_s=30, procs=procs)
            assert hook.bodies() == []
            assert smtp.subjects() == []

            heated_at = time.monotonic()
            _force(force_file, {"temperature_4": 45.0})  # the grain heats up at sensor 4
            wait_until("the firing webhook", lambda: len(hook.bodies()) >= 1, timeout_s=30, procs=procs)
            assert time.monotonic() - heated_at >= 3  # for_s
            wait_until("the firing e-mail", lambda: len(smtp.subjects()) >= 1, timeout_s=10, procs=procs)
            firing = api.get("/api/v1/alerts", params={"state": "firing"}).json()["items"]
            assert [(a["rule"], a["subject"], a["message"]) for a in firing] == [
                ("silo-hot-spot", SUBJECT, "silo-1 sensor temperature_4 at 45.0 °C")]

            _force(force_file, None)  # cooled down
            wait_until("the resolved webhook", lambda: len(hook.bodies()) >= 2, timeout_s=30, procs=procs)
            wait_until("the resolved e-mail", lambda: len(smtp.subjects()) >= 2, timeout_s=10, procs=procs)
            time.sleep(3)  # six more evaluations: nothing is sent again

            assert [(b["state"], b["subject"], b["rule"]) for b in hook.bodies()] == [
                ("firing", SUBJECT, "silo-hot-spot"), ("resolved", SUBJECT, "silo-hot-spot")]
            assert hook.bodies()[0]["value"] == 45.0
            assert hook.bodies()[1]["value"] < 40
            assert smtp.subjects() == [f"[FIRING] critical silo-hot-spot: {SUBJECT}",
                                       f"[RESOLVED] critical silo-hot-spot: {SUBJECT}"]
            [alert] = api.get("/api/v1/alerts").json()["items"]
            detail = api.get(f"/api/v1/alerts/{alert['id']}").json()
            assert detail["state"] == "resolved"
            assert detail["resolved_at"] is not None
            assert sorted((n["channel"], n["event"], n["status"]) for n in detail["notifications"]) == [
                ("email:mail", "firing", "sent"), ("email:mail", "resolved", "sent"),
                ("webhook:hook", "firing", "sent"), ("webhook:hook", "resolved", "sent")]
            rules_out = api.get("/api/v1/alert-rules").json()
            assert [r["name"] for r in rules_out["rules"]] == ["silo-hot-spot"]
            assert rules_out["error"] is None

            central.stop()  # SIGTERM: the evaluator finishes its evaluation and central exits cleanly
            assert central.popen is not None
            assert central.popen.returncode == 0, central.tail()
            assert "alerts: evaluating" in central.log()
            assert "FIRING critical silo-hot-spot" in central.log()
        finally:
            api.close()
            for p in reversed(procs):
                p.stop()
