"""``GET /health``: the service and each dependency, with latencies (no authentication).

    {"status": "ok" | "degraded", "version": "0.1.0", "uptime_s": 12.5,
     "cpu": {"percent": 3.0, "load_1m": 0.2}, "memory": {"rss_bytes": …, "percent": 1.2},
     "dependencies": {"database": {"ok": true, "latency_ms": 0.8, "kind": "postgresql"},
                      "broker":   {"ok": true, "latency_ms": 0.3, "url": "mqtt://127.0.0.1:1883"},
                      "influxdb": {"ok": true, "latency_ms": 1.9, "kind": "influxdb-v1"}},
     "ingest": {"running": true, "lag_s": 0.05, "batches": 120, "records": 480, "duplicates": 3,
                "quarantined": 1, "conflicts": 0}}

HTTP 200 when every dependency is ok, 503 otherwise (so a load balancer or Ansible ``uri`` check can use it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import psutil
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from central import __version__
from central.api.deps import AppState, StateDep

router = APIRouter(tags=["health"])
_PROC = psutil.Process()
_PROC.cpu_percent(None)  # prime: the first reading is always 0


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
            await asyncio.to_thread(socket.create_connection((broker.host, broker.port), timeout=2).close)
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


@router.get("/health", summary="Service and dependency health (no authentication)")
async def health(state: StateDep) -> JSONResponse:
    deps = await asyncio.gather(
        asyncio.to_thread(_check_database, state),
        _check_broker(state),
        asyncio.to_thread(_check_metrics, state),
    )
    dependencies = dict(zip(("database", "broker", "influxdb"), deps, strict=True))
    ok = all(d["ok"] for d in dependencies.values())
    ingest: dict[str, Any] = {"running": state.ingest is not None}
    if state.ingest is not None:
        c = state.ingest.counters
        ingest.update(
            connected=state.ingest.connected, lag_s=c.last_lag_s, batches=c.batches, records=c.records,
            duplicates=c.duplicates, quarantined=c.quarantined, conflicts=c.conflicts, rejected=c.rejected,
            store_failures=c.store_failures,
        )
    mem = _PROC.memory_info()
    body = {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "uptime_s": round(time.time() - state.started_at, 3),
        "cpu": {"percent": _PROC.cpu_percent(None), "load_1m": os.getloadavg()[0]},
        "memory": {"rss_bytes": mem.rss, "percent": round(_PROC.memory_percent(), 3)},
        "dependencies": dependencies,
        "ingest": ingest,
    }
    return JSONResponse(body, status_code=200 if ok else 503)
