"""The node's local /health and /metrics: status from the broker and the alarms, backlog straight from the outbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge import __version__
from edge.agent import Agent
from edge.config import parse_config
from edge.runtime.http import health, make_app
from edge.store.outbox import NewRecord
from tests.downlink_support import TRUST

BROKER = "mqtt://127.0.0.1:1"  # never connected: the agent is not run


def _agent(tmp_path: Path, **extra: object) -> Agent:
    cfg = parse_config({"node_id": "mill-01", "data_dir": str(tmp_path), "broker": {"url": BROKER},
                        "http": {"listen": None}, **TRUST, **extra}, source="test")
    return Agent(cfg)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = _agent(tmp_path)
    a.outbox.append("business", [NewRecord(kind="weighing", device="bridge-1", data={"gross": str(i), "unit": "kg"})
                                 for i in range(5)])
    a.outbox.ack("business", 2)
    a.outbox.append("readings", [NewRecord(kind="reading", device="meter-1", data={"values": {"v": 1.0}})
                                 for _ in range(7)])
    yield a
    a.outbox.close()


def test_health_is_degraded_without_the_broker_and_reports_the_outbox_backlog(agent: Agent) -> None:
    code, body = health(agent)
    assert code == 200
    assert body["status"] == "degraded"
    assert body["node"] == "mill-01"
    assert body["version"] == __version__
    assert body["alarms"] == []
    assert body["devices"] == {}
    assert body["dependencies"]["broker"] == {"ok": False, "url": BROKER, "last_ack_age_s": None}
    outbox = body["dependencies"]["outbox"]
    assert outbox["epoch"] == agent.outbox.epoch
    assert outbox["used_bytes"] == agent.outbox.used_bytes() > 0
    assert outbox["quota_bytes"] is None
    stats = agent.outbox.stats()
    assert set(body["backlog"]) == {"business", "health", "readings"}
    for name, s in stats.items():
        got = body["backlog"][name]
        assert (got["head"], got["acked"], got["pending"], got["lost"]) == (s.produced, s.acked, s.pending, s.lost)
    assert {k: v["pending"] for k, v in body["backlog"].items()} == {"business": 3, "health": 0, "readings": 7}
    assert body["backlog"]["business"]["acked"] == 2
    assert body["backlog"]["business"]["head"] == 5
    assert 0 <= body["backlog"]["readings"]["oldest_age_s"] < 60
    assert body["backlog"]["health"]["oldest_age_s"] is None


def test_health_is_ok_while_the_uplink_is_connected(agent: Agent) -> None:
    agent.uplink.connected = True
    agent.uplink.counters.last_ack_at = time.time() - 3
    code, body = health(agent)
    assert (code, body["status"]) == (200, "ok")
    assert body["dependencies"]["broker"]["ok"] is True
    assert 2.5 < body["dependencies"]["broker"]["last_ack_age_s"] < 10


def test_an_alarm_makes_health_503(agent: Agent) -> None:
    agent.uplink.connected = True  # an alarm counts more than a working uplink
    agent._alarms["clock"] = ("wall clock jumped back by 30.0 s", time.monotonic() + 60)
    code, body = health(agent)
    assert (code, body["status"]) == (503, "alarm")
    assert body["alarms"] == ["wall clock jumped back by 30.0 s"]
    agent._alarms["clock"] = ("wall clock jumped back by 30.0 s", time.monotonic() - 1)  # shown long enough
    code, body = health(agent)
    assert (code, body["status"]) == (200, "ok")


def test_a_stopped_device_is_an_alarm(tmp_path: Path) -> None:
    agent = _agent(tmp_path, devices=[{"id": "bridge-1", "type": "mtsics-scale", "address": "tcp://127.0.0.1:1"}])
    try:
        (driver,) = agent.drivers
        code, body = health(agent)
        assert (code, body["status"]) == (200, "degraded")
        assert body["devices"]["bridge-1"]["stopped"] is None
        driver.health.stop("outbox full")
        code, body = health(agent)
        assert (code, body["status"]) == (503, "alarm")
        assert body["alarms"] == ["device bridge-1 stopped: outbox full"]
        assert body["devices"]["bridge-1"]["stopped"] == "outbox full"
        driver.health.resume()
        assert health(agent)[0] == 200
    finally:
        agent.outbox.close()


def test_lost_records_include_those_that_could_not_even_be_stored(agent: Agent) -> None:
    agent.outbox.lost_unstored["readings"] = 4
    _, body = health(agent)
    assert body["backlog"]["readings"]["lost"] == 4
    assert body["backlog"]["business"]["lost"] == 0


def _metric(text: str, name: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


async def test_the_http_endpoints_serve_health_and_prometheus_metrics(agent: Agent) -> None:
    transport = httpx.ASGITransport(app=make_app(agent))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        resp = await client.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.text
        assert _metric(text, 'floorgate_edge_backlog_records{stream="business"}') == 3
        assert _metric(text, 'floorgate_edge_backlog_records{stream="readings"}') == 7
        assert _metric(text, 'floorgate_edge_backlog_records{stream="health"}') == 0
        assert _metric(text, 'floorgate_edge_records_produced_total{stream="business"}') == 5
        assert _metric(text, "floorgate_edge_broker_connected") == 0
        assert _metric(text, "floorgate_edge_outbox_used_bytes") == agent.outbox.used_bytes()
        # the figures are read at every scrape
        agent.outbox.ack("business", 5)
        text = (await client.get("/metrics")).text
        assert _metric(text, 'floorgate_edge_backlog_records{stream="business"}') == 0

        resp = await client.get("/health")
        assert resp.status_code == 200
        assert resp.json()["status"] == "degraded"
        agent._alarms["clock"] = ("wall clock jumped forward by 5.0 s", time.monotonic() + 60)
        resp = await client.get("/health")
        assert resp.status_code == 503
        assert resp.json()["alarms"] == ["wall clock jumped forward by 5.0 s"]
        assert _metric((await client.get("/metrics")).text, "floorgate_edge_alarms") == 1
