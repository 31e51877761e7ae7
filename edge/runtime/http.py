"""The node's local HTTP endpoints (loopback / LAN): ``GET /health`` and ``GET /metrics`` (Prometheus).

``/health``::

    {"status": "ok" | "degraded" | "alarm", "node": "mill-01", "version": "0.1.0", "uptime_s": 12.5,
     "cpu": {"percent": 3.0}, "memory": {"rss_bytes": …},
     "dependencies": {"broker": {"ok": true, "url": "mqtt://…", "last_ack_age_s": 0.4},
                      "outbox": {"ok": true, "used_bytes": …, "quota_bytes": null, "epoch": "…"}},
     "backlog": {"business": {"head": 42, "acked": 40, "pending": 2, "oldest_age_s": 1.5, "lost": 0}, …},
     "devices": {"bridge-1": {"online": true, "stopped": null, "rtt_ms": 12.1, "errors": {}}},
     "alarms": []}

``degraded`` while the broker is unreachable (the node keeps everything and catches up later), ``alarm`` when a
device is stopped or the clock jumped; HTTP 503 for ``alarm``, 200 otherwise. A port that cannot be bound is
logged and the agent goes on without these endpoints — collecting data matters more.

What they show is read from a ``NodeView`` (the agent, which starts ``serve_http``): its config, outbox, uplink,
drivers, POS service and alarms.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import psutil
import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge import __version__

if TYPE_CHECKING:
    from edge.bus.scheduler import Driver
    from edge.config import NodeConfig
    from edge.pos.sales import PosService
    from edge.store.outbox import Outbox
    from edge.uplink.session import Uplink

log = logging.getLogger(__name__)
_PROC = psutil.Process()


class NodeView(Protocol):
    """What the local endpoints read (the agent): read on every request, nothing is changed."""

    @property
    def cfg(self) -> NodeConfig: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def uplink(self) -> Uplink: ...

    @property
    def drivers(self) -> Sequence[Driver]: ...

    @property
    def pos(self) -> PosService | None: ...

    @property
    def started_at(self) -> float: ...

    def alarms(self) -> list[str]: ...


def health(agent: NodeView) -> tuple[int, dict[str, Any]]:
    now_ns = time.time_ns()
    stats = agent.outbox.stats()
    up = agent.uplink
    alarms = agent.alarms()
    status = "alarm" if alarms else ("ok" if up.connected else "degraded")
    body = {
        "status": status,
        "node": agent.cfg.node_id,
        "version": __version__,
        "uptime_s": round(time.time() - agent.started_at, 3),
        "cpu": {"percent": _PROC.cpu_percent(None)},
        "memory": {"rss_bytes": _PROC.memory_info().rss},
        "dependencies": {
            "broker": {"ok": up.connected, "url": agent.cfg.broker.url,
                       "last_ack_age_s": None if up.counters.last_ack_at is None
                       else round(time.time() - up.counters.last_ack_at, 3)},
            "outbox": {"ok": True, "epoch": agent.outbox.epoch, "used_bytes": agent.outbox.used_bytes(),
                       "quota_bytes": agent.outbox.quota_bytes},
        },
        "backlog": {name: {"head": s.produced, "acked": s.acked, "pending": s.pending,
                           "oldest_age_s": s.oldest_age_s(now_ns),
                           "lost": s.lost + agent.outbox.lost_unstored.get(name, 0)}
                    for name, s in stats.items()},
        "devices": {d.device_id: {"online": d.health.online, "stopped": d.health.stopped,
                                  "rtt_ms": d.health.rtt_ms_avg, "errors": dict(d.health.errors)}
                    for d in agent.drivers},
        "alarms": alarms,
        # what central sent that the node refused (forged, replayed, misdirected, malformed): sync.downlink
        "downlink": {"rejected": up.downlink_rejected(), "accepted": up.downlink.accepted,
                     "trusted_keys": sorted(up.downlink.keys)},
    }
    if agent.pos is not None:  # the counter's sales API: what it signed and what it refused before any TSE work
        body["pos"] = {"sales": agent.pos.sales, "failed_sales": agent.pos.failed_sales,
                       "refused": dict(agent.pos.refused)}
    return (503 if alarms else 200), body


class _AgentCollector(Collector):
    def __init__(self, agent: NodeView) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        a = self.agent
        stats = a.outbox.stats()
        now_ns = time.time_ns()
        pending = GaugeMetricFamily("floorgate_edge_backlog_records", "records waiting for central's ack",
                                    labels=["stream"])
        age = GaugeMetricFamily("floorgate_edge_backlog_oldest_age_seconds", "age of the oldest pending record",
                                labels=["stream"])
        produced = CounterMetricFamily("floorgate_edge_records_produced", "records committed to the outbox",
                                       labels=["stream"])
        lost = CounterMetricFamily("floorgate_edge_records_lost", "records given up to the disk quota",
                                   labels=["stream"])
        for name, s in stats.items():
            pending.add_metric([name], s.pending)
            age.add_metric([name], s.oldest_age_s(now_ns) or 0.0)
            produced.add_metric([name], s.produced)
            lost.add_metric([name], s.lost + a.outbox.lost_unstored.get(name, 0))
        yield from (pending, age, produced, lost)
        yield GaugeMetricFamily("floorgate_edge_outbox_used_bytes", "bytes the outbox uses",
                                value=a.outbox.used_bytes())
        yield GaugeMetricFamily("floorgate_edge_broker_connected", "1 while the uplink is connected",
                                value=1.0 if a.uplink.connected else 0.0)
        c = a.uplink.counters
        for name, value, help_ in (("batches_sent", c.batches_sent, "batches published"),
                                   ("bytes_sent", c.bytes_sent, "payload bytes published"),
                                   ("resends", c.resends, "resends after an ack timeout"),
                                   ("replays", c.replays, "replay requests from central")):
            yield CounterMetricFamily(f"floorgate_edge_uplink_{name}", help_, value=value)
        rejected = CounterMetricFamily("floorgate_edge_downlink_rejected", "acks, replay requests and commands "
                                       "refused (not signed by a trusted central key, another node or epoch, "
                                       "replayed, beyond what was sent, malformed)", labels=["reason"])
        for reason, n in a.uplink.downlink_rejected().items():
            rejected.add_metric([reason], n)
        yield rejected
        if a.pos is not None:
            refused = CounterMetricFamily("floorgate_edge_pos_refused", "POS API requests refused before any TSE "
                                          "work (unauthorized, payload_too_large, invalid)", labels=["reason"])
            for reason, n in sorted(a.pos.refused.items()):
                refused.add_metric([reason], n)
            yield refused
        yield GaugeMetricFamily("floorgate_edge_alarms", "alarms raised now", value=len(a.alarms()))
        online = GaugeMetricFamily("floorgate_edge_device_online", "1 online, 0 offline or stopped",
                                   labels=["device"])
        rtt = GaugeMetricFamily("floorgate_edge_device_rtt_seconds", "smoothed round-trip time", labels=["device"])
        for d in a.drivers:
            online.add_metric([d.device_id], 1.0 if d.health.online and not d.health.stopped else 0.0)
            if d.health.rtt_ms_avg is not None:
                rtt.add_metric([d.device_id], d.health.rtt_ms_avg / 1000)
        yield from (online, rtt)


def make_app(agent: NodeView) -> FastAPI:
    app = FastAPI(title=f"floorgate node {agent.cfg.node_id}", version=__version__)
    registry = CollectorRegistry()
    registry.register(_AgentCollector(agent))

    # async: they run on the agent's event loop thread, the one that owns the outbox connection
    @app.get("/health")
    async def get_health() -> JSONResponse:
        code, body = health(agent)
        return JSONResponse(body, status_code=code)

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


class SignalFreeServer(uvicorn.Server):
    """A uvicorn server inside the agent: the agent handles SIGINT / SIGTERM itself (``edge.agent.run_until_signal``)
    and cancels its servers, so uvicorn takes no signals (its public ``capture_signals`` hook, a no-op here)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(agent: NodeView) -> None:
    http = agent.cfg.http
    config = uvicorn.Config(make_app(agent), host=http.host, port=http.port, log_level="warning", access_log=False,
                            lifespan="off")
    server = SignalFreeServer(config)
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot bind
        log.error("node %s: local /health not available: cannot listen on %s", agent.cfg.node_id, http.listen)
        return
    if not server.started:
        log.error("node %s: local /health not available: cannot listen on %s", agent.cfg.node_id, http.listen)
