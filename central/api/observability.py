"""Central's Prometheus metrics: what ``GET /metrics`` (``routes/prom.py``) exposes, and how it is measured.

Every app has its own ``CollectorRegistry`` (``install``), so several apps in one process (tests, a bench) never
share or clash over a metric. Figures are read when Prometheus scrapes, not pushed:

    floorgate_http_request_duration_seconds{route,method,status}   histogram, by a middleware around every request
    floorgate_ingest_running / _connected                          1 / 0: ingest in this process, on the broker
    floorgate_ingest_{batches,records,duplicates,quarantined,conflicts,rejected,lost,heartbeats,…}_total
                                                                   IngestService.counters of this process
    floorgate_ingest_lag_seconds                                   node send time → applied, of the last batch
    floorgate_ingest_last_batch_timestamp_seconds                  when the last batch was applied
    floorgate_ingest_quarantine_entries                            rows in the quarantine table (all workers)
    floorgate_ingest_quarantine_dropped_total{reason}              not stored: beyond the source's limit (rate /
                                                                   bytes, central.ingest.quarantine)
    floorgate_alerts_firing{severity}                              alerts in state firing (info/warning/critical
                                                                   always present, 0 when none)
    floorgate_database_up                                          1 when the database queries worked
    floorgate_sync_stuck_streams                                   streams a node holds acknowledged beyond
                                                                   central's mark (central.ingest.health)
    floorgate_sync_stream_stuck_records{node,stream}               node's acked - central's mark, stuck ones only
    floorgate_pki_certificate_not_after_timestamp_seconds{kind,common_name}
                                                                   expiry of each certificate in use (the latest
                                                                   not revoked one per CN; kind node/server/client)
    floorgate_pki_crl_next_update_timestamp_seconds                when pki.dir/crl.pem expires: Mosquitto then
                                                                   refuses every client (only where pki is set)

``route`` is the route template (``/api/v1/weighings/{weighing_id}``), never the raw path, and ``unmatched`` for
paths no route knows; ``method`` is one of the usual HTTP methods or ``other``; ``status`` is the class (``2xx``),
so that no request can create a new time series. The ingest counters exist only where ingest runs
(``floorgate central run``); an API-only process reports ``floorgate_ingest_running 0``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central.api.deps import AppState
from central.db.models import Alert, Certificate, QuarantineEntry
from central.fleet.pki import CRL_FILE, crl_next_update
from central.ingest.health import stuck_streams

log = logging.getLogger(__name__)

__all__ = ["HTTP_BUCKETS_S", "HttpMetricsMiddleware", "StateCollector", "install", "registry_of"]

HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SEVERITIES = ("info", "warning", "critical")
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# (attribute of IngestCounters, metric name without floorgate_ingest_ and _total, help)
_INGEST_COUNTERS = (
    ("batches", "batches", "batches applied"),
    ("records", "records", "records applied (new)"),
    ("duplicates", "duplicates", "records received again and ignored (already applied)"),
    ("quarantined", "quarantined", "messages put into the quarantine"),
    ("quarantine_repeats", "quarantine_repeats", "the same trouble again within seconds: counted, not stored"),
    ("quarantine_pruned", "quarantine_pruned", "quarantine entries deleted after ingest.quarantine_retention_days"),
    ("conflicts", "conflicts", "records resent with another body (integrity alarm)"),
    ("rejected", "rejected", "records rejected as malformed"),
    ("replayed", "replayed", "replayed batches (nothing new)"),
    ("lost", "lost", "sequence numbers nodes gave up to their disk quota"),
    ("heartbeats", "heartbeats", "node heartbeats received"),
    ("replays_requested", "replays_requested", "replays asked of nodes to fill a gap"),
    ("store_failures", "store_failures", "batches not applied: metrics store unavailable (node resends)"),
    ("db_failures", "db_failures", "batches not applied: database error (node resends)"),
    ("unexpected_errors", "unexpected_errors", "messages whose handling failed unexpectedly (quarantined; ingest "
     "kept running)"),
)


class HttpMetricsMiddleware:
    """Pure ASGI middleware: observes each HTTP request's duration under its route template, method and status."""

    def __init__(self, app: ASGIApp, *, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started ends as a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)  # set by the router on a (partial) match
            method = scope.get("method", "")
            self.histogram.labels(
                route=route if isinstance(route, str) else UNMATCHED,
                method=method if method in _METHODS else "other",
                status=f"{status // 100}xx",
            ).observe(time.perf_counter() - started)


class StateCollector(Collector):
    """Ingest counters, quarantine size and firing alerts, read from the app's state when scraped."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._database()
        yield from self._crl()

    def _ingest(self) -> Iterator[Metric]:
        ingest = self.state.ingest
        yield GaugeMetricFamily("floorgate_ingest_running", "1 if this process runs the MQTT ingest",
                                value=0.0 if ingest is None else 1.0)
        if ingest is None:
            return
        yield GaugeMetricFamily("floorgate_ingest_connected", "1 while ingest is connected to the broker",
                                value=1.0 if ingest.connected else 0.0)
        c = ingest.counters
        for attribute, name, help_text in _INGEST_COUNTERS:
            yield CounterMetricFamily(f"floorgate_ingest_{name}", help_text, value=getattr(c, attribute))
        dropped = CounterMetricFamily("floorgate_ingest_quarantine_dropped",
                                      "messages not put into the quarantine: beyond their source's limit",
                                      labels=["reason"])
        dropped.add_metric(["rate"], c.quarantine_dropped_rate)
        dropped.add_metric(["bytes"], c.quarantine_dropped_bytes)
        yield dropped
        if c.last_lag_s is not None:
            yield GaugeMetricFamily("floorgate_ingest_lag_seconds",
                                    "from the node sending the last batch to central applying it",
                                    value=c.last_lag_s)
        if c.last_batch_at is not None:
            yield GaugeMetricFamily("floorgate_ingest_last_batch_timestamp_seconds",
                                    "Unix time the last batch was applied", value=c.last_batch_at)

    def _database(self) -> Iterator[Metric]:
        try:
            with self.state.sessions() as session:
                firing = {str(severity): int(count) for severity, count in session.execute(
                    select(Alert.severity, func.count()).where(Alert.state == "firing").group_by(Alert.severity))}
                quarantine = int(session.execute(select(func.count()).select_from(QuarantineEntry)).scalar_one())
                stuck = stuck_streams(session)
                certificates = session.execute(
                    select(Certificate.kind, Certificate.common_name, func.max(Certificate.not_after))
                    .where(Certificate.revoked_at.is_(None))
                    .group_by(Certificate.kind, Certificate.common_name)
                    .order_by(Certificate.kind, Certificate.common_name)).all()
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read alerts and quarantine from the database: %s", exc)
            yield GaugeMetricFamily("floorgate_database_up", "1 if the scrape's database queries worked", value=0.0)
            return
        yield GaugeMetricFamily("floorgate_database_up", "1 if the scrape's database queries worked", value=1.0)
        missing = GaugeMetricFamily(
            "floorgate_sync_stream_stuck_records", "records a node holds acknowledged beyond central's mark (node's "
            "acked - central's mark; only stuck streams): they cannot be replayed", labels=["node", "stream"])
        for x in stuck:
            missing.add_metric([x.node, x.stream], float(x.node_acked - x.mark))
        yield missing
        yield GaugeMetricFamily("floorgate_sync_stuck_streams", "streams stuck (see floorgate_sync_stream_stuck_"
                                "records)", value=float(len(stuck)))
        yield GaugeMetricFamily("floorgate_ingest_quarantine_entries",
                                "messages kept in the ingest quarantine (all workers)", value=quarantine)
        alerts = GaugeMetricFamily("floorgate_alerts_firing", "alerts firing now", labels=["severity"])
        for severity in sorted({*SEVERITIES, *firing}):
            alerts.add_metric([severity], float(firing.get(severity, 0)))
        yield alerts
        expiry = GaugeMetricFamily(
            "floorgate_pki_certificate_not_after_timestamp_seconds",
            "Unix time the certificate expires: the latest not revoked one per kind and common name",
            labels=["kind", "common_name"])
        for kind, common_name, not_after in certificates:
            expiry.add_metric([kind, common_name], not_after.timestamp())
        yield expiry

    def _crl(self) -> Iterator[Metric]:
        pki = self.state.settings.pki
        if pki is None:
            return
        path = pki.dir / CRL_FILE
        try:
            next_update = crl_next_update(path)
        except (OSError, ValueError) as exc:
            log.warning("metrics: cannot read the CRL %s: %s", path, exc)
            return
        yield GaugeMetricFamily("floorgate_pki_crl_next_update_timestamp_seconds",
                                "Unix time crl.pem expires: the broker then refuses every client (renew it with "
                                "`floorgate central ca crl`)", value=next_update.timestamp())



def install(app: FastAPI, state: AppState) -> CollectorRegistry:
    """Give ``app`` its own registry (``registry_of``), the state collector and the request-duration middleware."""
    registry = CollectorRegistry(auto_describe=False)  # collect only on scrape, not on register
    registry.register(StateCollector(state))
    histogram = Histogram(
        "floorgate_http_request_duration_seconds", "time to answer an HTTP request, by route template",
        labelnames=("route", "method", "status"), buckets=HTTP_BUCKETS_S, registry=registry,
    )
    app.add_middleware(HttpMetricsMiddleware, histogram=histogram)
    app.state.prometheus_registry = registry
    return registry


def registry_of(app: FastAPI) -> CollectorRegistry:
    registry: CollectorRegistry = app.state.prometheus_registry
    return registry
