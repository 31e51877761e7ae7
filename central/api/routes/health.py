"""``GET /health``: the service and each dependency, with latencies (no authentication).

    {"status": "ok" | "degraded", "version": "0.1.0", "uptime_s": 12.5,
     "cpu": {"percent": 3.0, "load_1m": 0.2}, "memory": {"rss_bytes": …, "percent": 1.2},
     "dependencies": {"database": {"ok": true, "latency_ms": 0.8, "kind": "postgresql"},
                      "broker":   {"ok": true, "latency_ms": 0.3, "url": "mqtt://127.0.0.1:1883"},
                      "influxdb": {"ok": true, "latency_ms": 1.9, "kind": "influxdb-v1"}},
     "ingest": {"running": true, "connected": true, "lag_s": 0.05, "last_batch_age_s": 2.1, "batches": 120,
                "records": 480, "duplicates": 3, "quarantined": 1, "conflicts": 0, "rejected": 0, "store_failures": 0}}

``sync`` lists streams that are stuck (a node holds them acknowledged beyond central's mark, ``central.ingest.health``)
and the downlink messages nodes refused; a stuck stream makes ``status`` ``degraded`` but keeps HTTP 200.

HTTP 200 when every dependency is ok, 503 otherwise (so a load balancer or Ansible ``uri`` check can use it). Each
check gives up after ``CHECK_TIMEOUT_S`` (a database behind a pulled cable must not hang the answer). ``lag_s`` is
the last batch's time from the node sending it to central applying it; ``last_batch_age_s`` says how old that is.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable
from typing import Any, Literal

import psutil
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from central import __version__
from central.api.deps import AppState, StateDep
from central.ingest.health import downlink_refusals, stuck_streams

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 5.0
_PROC = psutil.Process()
_PROC.cpu_percent(None)  # prime: the first reading is always 0


class Dependency(BaseModel):
    ok: bool
    latency_ms: float = Field(description="how long the check took", examples=[0.8])
    kind: str | None = Field(None, description="database dialect / metrics store kind", examples=["postgresql"])
    url: str | None = Field(None, description="the broker", examples=["mqtt://127.0.0.1:1883"])
    note: str | None = None
    error: str | None = Field(None, description="why the check failed")


class Dependencies(BaseModel):
    database: Dependency
    broker: Dependency = Field(description="a QoS 1 round trip on ingest's connection (TCP connect without ingest)")
    influxdb: Dependency = Field(description="the metrics store: InfluxDB, or the demo's SQLite store")


class Cpu(BaseModel):
    percent: float = Field(description="of one core, by this process, since the previous call")
    load_1m: float


class Memory(BaseModel):
    rss_bytes: int
    percent: float


class IngestHealth(BaseModel):
    running: bool = Field(description="whether this process runs the MQTT ingest")
    connected: bool | None = None
    lag_s: float | None = Field(None, description="node send → applied, of the last batch")
    last_batch_age_s: float | None = Field(None, description="since the last batch was applied")
    batches: int | None = None
    records: int | None = None
    duplicates: int | None = None
    quarantined: int | None = Field(None, description="messages stored in the quarantine")
    quarantine_repeats: int | None = Field(None, description="the same trouble again within seconds: not stored")
    quarantine_dropped: dict[str, int] | None = Field(
        None, description="messages not stored, beyond their source's limit: by reason (rate, bytes)")
    quarantine_pruned: int | None = Field(None, description="quarantine entries deleted after the retention")
    conflicts: int | None = None
    rejected: int | None = None
    store_failures: int | None = None
    unexpected_errors: int | None = Field(
        None, description="messages whose handling failed in an unforeseen way: quarantined, the process kept going")


class StuckStreamOut(BaseModel):
    node: str
    epoch: str
    stream: str
    mark: int = Field(description="central's contiguous mark (ingest_marks)")
    node_acked: int = Field(description="what the node's last heartbeat says central acknowledged")
    missing: int = Field(description="node_acked - mark: records the node no longer has and central lacks")


class SyncHealth(BaseModel):
    ok: bool = Field(description="false when a stream is stuck (or the check failed)")
    stuck_streams: list[StuckStreamOut] = Field(
        default_factory=list, description="streams a node holds acknowledged beyond central's mark (e.g. after "
        "central was restored from a backup): the gap cannot be replayed; an operator must look")
    downlink_refused: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="node → reason → acks, replay requests and commands the node refused "
        "(not signed by central's key, replayed, misdirected, malformed), from its heartbeat")
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded when a dependency is not ok (HTTP 503) or a "
                                              "stream is stuck (sync; HTTP 200: the API itself works)")
    version: str
    uptime_s: float
    cpu: Cpu
    memory: Memory
    dependencies: Dependencies
    ingest: IngestHealth
    sync: SyncHealth | None = None


async def _within_timeout(check: Awaitable[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except TimeoutError:
        return {"ok": False, "latency_ms": CHECK_TIMEOUT_S * 1000, **extra,
                "error": f"no answer within {CHECK_TIMEOUT_S:g} s"}


def _timed(fn: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        extra = fn() or {}
        return {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 3), **extra}
    except Exception as exc:
        return {"ok": False, "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "error": str(exc)[:300]}


def _check_database(state: AppState) -> dict[str, Any]:
    def probe() -> dict[str, Any]:
        with state.sessions() as s:
            s.execute(text("SELECT 1"))
            return {"kind": s.get_bind().dialect.name}

    return _timed(probe)


async def _check_broker(state: AppState) -> dict[str, Any]:
    """A QoS 1 round trip on the ingest connection (so 'ok' means ingest is connected, not just that a port is
    open); without ingest in this process, a TCP connect."""
    broker = state.settings.broker
    t0 = time.perf_counter()
    try:
        if state.ingest is not None:
            rtt = await state.ingest.ping()
        else:
            await asyncio.to_thread(lambda: socket.create_connection((broker.host, broker.port), timeout=2).close())
            rtt = time.perf_counter() - t0
        return {"ok": True, "latency_ms": round(rtt * 1000, 3), "url": broker.url}
    except Exception as exc:
        return {"ok": False, "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "url": broker.url,
                "error": str(exc)[:300] or type(exc).__name__}


def _check_metrics(state: AppState) -> dict[str, Any]:
    out = _timed(lambda: {"kind": state.store.kind, "ping_s": state.store.ping()})
    out.pop("ping_s", None)
    if state.store.kind == "sqlite":
        out["note"] = "no InfluxDB configured: readings are kept in the embedded SQLite store"
    return out


def _check_sync(state: AppState) -> dict[str, Any]:
    try:
        with state.sessions() as s:
            stuck = stuck_streams(s)
            refused = downlink_refusals(s)
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:300]}
    return {"ok": not stuck, "stuck_streams": [x.to_json() for x in stuck], "downlink_refused": refused}


@router.get(
    "/health",
    summary="Service and dependency health (no authentication)",
    responses={200: {"model": HealthOut, "description": "Every dependency is ok."},
               503: {"model": HealthOut, "description": "A dependency is not ok (status `degraded`)."}},
)
async def health(state: StateDep) -> JSONResponse:
    *deps, sync = await asyncio.gather(
        _within_timeout(asyncio.to_thread(_check_database, state)),
        _within_timeout(_check_broker(state), url=state.settings.broker.url),
        _within_timeout(asyncio.to_thread(_check_metrics, state), kind=state.store.kind),
        _within_timeout(asyncio.to_thread(_check_sync, state)),
    )
    dependencies = dict(zip(("database", "broker", "influxdb"), deps, strict=True))
    ok = all(d["ok"] for d in dependencies.values())
    ingest: dict[str, Any] = {"running": state.ingest is not None}
    if state.ingest is not None:
        c = state.ingest.counters
        ingest.update(
            connected=state.ingest.connected, lag_s=c.last_lag_s, batches=c.batches, records=c.records,
            duplicates=c.duplicates, quarantined=c.quarantined, conflicts=c.conflicts, rejected=c.rejected,
            quarantine_repeats=c.quarantine_repeats, quarantine_pruned=c.quarantine_pruned,
            quarantine_dropped={"rate": c.quarantine_dropped_rate, "bytes": c.quarantine_dropped_bytes},
            store_failures=c.store_failures, unexpected_errors=c.unexpected_errors,
            last_batch_age_s=None if c.last_batch_at is None else round(max(0.0, time.time() - c.last_batch_at), 3),
        )
    sync.pop("latency_ms", None)
    mem = _PROC.memory_info()
    body = {
        "status": "ok" if ok and sync["ok"] else "degraded",
        "sync": sync,
        "version": __version__,
        "uptime_s": round(time.time() - state.started_at, 3),
        "cpu": {"percent": _PROC.cpu_percent(None), "load_1m": os.getloadavg()[0]},
        "memory": {"rss_bytes": mem.rss, "percent": round(_PROC.memory_percent(), 3)},
        "dependencies": dependencies,
        "ingest": ingest,
    }
    checked = HealthOut.model_validate(body).model_dump(mode="json", exclude_unset=True)  # the documented shape
    return JSONResponse(checked, status_code=200 if ok else 503)
