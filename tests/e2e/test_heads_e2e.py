"""Tail truncation at central with the node running, on the real path: the MT-SICS weighbridge simulator → ``floorgate
edge run`` → mosquitto → ``floorgate central run`` on PostgreSQL with an alert rule of kind ``integrity``.

Two weighings reach central; someone with the database deletes the newest alibi entry and its weighing. The node's
next heartbeat signs its head (entry 2, acknowledged), so central names the missing end: the ``alibi_truncated``
alert fires and ingest logs ``INTEGRITY``. With the entry put back from a copy, the alert resolves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from central.db.engine import make_engine, make_session_factory
from central.db.models import AlibiEntry, Node, StreamMark
from protocols.sim.load import Phase
from tests.procs import Proc, central_yaml, create_admin, enrol, floorgate, login, node_yaml, wait_until, write_yaml
from tests.services import MosquittoServer, free_port
from tests.weighbridge_support import BridgeThread

pytestmark = pytest.mark.e2e


@pytest.fixture
def sim() -> Iterator[BridgeThread]:
    s = BridgeThread([24560, 11020])
    try:
        yield s
    finally:
        s.stop()


def test_a_deleted_newest_alibi_entry_alerts_within_one_heartbeat(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, sim: BridgeThread, unique_id: str,
) -> None:
    node = f"{unique_id}-hd"
    subject = f"{node}/alibi"
    procs: list[Proc] = []
    api_port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=40)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    try:
        pty = sim.start()
        sim.at(0, Phase.EMPTY)
        rules = write_yaml(tmp_path / "alert-rules.yaml", {"rules": [
            {"name": "records-integrity", "kind": "integrity", "severity": "critical", "checks": ["alibi_truncated"]}]})
        central_cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url,
                                   client_id=f"central-{unique_id}", api_port=api_port,
                                   alerts={"rules_file": str(rules), "evaluate_every_s": 0.5})
        node_cfg = node_yaml(tmp_path, node_id=node, broker_url=mosquitto.url, devices=[
            {"id": "bridge-1", "type": "mtsics-scale", "address": f"serial://{pty}", "interval_s": 0.1,
             "weighing": {"auto": False}}])
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(node_cfg, central_cfg)
        create_admin(central_cfg)
        central = Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start()
        procs.append(central)
        wait_until("central API", lambda: api.get("/health").status_code in (200, 503), timeout_s=30, procs=procs)
        login(api)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)
        wait_until("bridge-1 known at central", lambda: api.get(
            "/api/v1/devices", params={"node_id": node}).json()["items"], timeout_s=30, procs=procs)

        def weigh(visit: int) -> dict[str, Any]:
            sim.at(visit, Phase.SETTLED)
            r = api.post("/api/v1/commands", json={"node_id": node, "device_id": "bridge-1", "command": "weigh",
                                                   "args": {}})
            assert r.status_code == 202, r.text
            done = api.get(f"/api/v1/commands/{r.json()['command_id']}", params={"wait_s": 25}).json()
            assert done["status"] == "succeeded", (done, edge.tail())
            return dict(done)

        weigh(0)
        weigh(1)

        def head_acknowledged() -> dict[str, Any] | None:
            with sessions() as s:
                row = s.get(Node, node)
                alibi = (row.heads or {}).get("alibi") if row is not None else None
                if not alibi or alibi["no"] != 2:
                    return None
                mark = s.get(StreamMark, (node, alibi["epoch"], alibi["stream"]))
                held = s.execute(select(AlibiEntry.alibi_no).where(AlibiEntry.node_id == node)).scalars().all()
                return dict(alibi) if mark is not None and mark.acked_seq >= alibi["seq"] and len(held) == 2 else None

        head = wait_until("the signed head of entry 2, acknowledged", head_acknowledged, timeout_s=30, procs=procs)
        assert api.get("/api/v1/alerts", params={"state": "firing"}).json()["items"] == []

        # someone with central's database removes the newest entry and its weighing
        with sessions.begin() as s:
            kept = {k: v for k, v in s.execute(text("SELECT * FROM alibi_entries WHERE node_id = :n AND alibi_no = 2"),
                                               {"n": node}).mappings().one().items()}
            for column in ("first_weighing_id", "second_weighing_id"):
                s.execute(text(f"UPDATE tickets SET {column} = NULL WHERE {column} IN "
                               "(SELECT id FROM weighings WHERE node_id = :n AND alibi_no = 2)"), {"n": node})
            s.execute(text("DELETE FROM weighings WHERE node_id = :n AND alibi_no = 2"), {"n": node})
            s.execute(text("DELETE FROM alibi_entries WHERE node_id = :n AND alibi_no = 2"), {"n": node})
        deleted_at = time.monotonic()

        def firing() -> dict[str, Any] | None:
            items = api.get("/api/v1/alerts", params={"state": "firing"}).json()["items"]
            return next((a for a in items if a["subject"] == subject), None)

        alert = wait_until("the alibi_truncated alert", firing, timeout_s=30, procs=procs)
        wait_until("the INTEGRITY line of the next heartbeat", lambda: "INTEGRITY" in central.log(), timeout_s=10,
                   procs=procs)
        assert time.monotonic() - deleted_at < 10, "not within a heartbeat (1 s) and an evaluation (0.5 s)"
        assert alert["rule"] == "records-integrity"
        assert alert["severity"] == "critical"
        assert f"node {node}: alibi entry 2 missing at central (truncated)" in alert["message"], alert["message"]
        assert head["hash"][:16] in alert["message"]
        assert "alibi entry 2 missing at central (truncated)" in central.log()

        # the entry is put back from a copy: the alert resolves
        with sessions.begin() as s:
            columns = ", ".join(kept)
            s.execute(text(f"INSERT INTO alibi_entries ({columns}) VALUES ({', '.join(':' + c for c in kept)})"),
                      kept)

        def resolved() -> dict[str, Any] | None:
            items = api.get("/api/v1/alerts", params={"state": "resolved"}).json()["items"]
            return next((a for a in items if a["subject"] == subject), None)

        wait_until("the alert resolved", resolved, timeout_s=30, procs=procs)
        assert "Traceback" not in central.log() + edge.log()
    finally:
        api.close()
        for p in reversed(procs):
            p.stop()
        engine.dispose()
