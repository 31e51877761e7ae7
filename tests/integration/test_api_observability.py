"""Central's ``GET /metrics`` (Prometheus) and ``GET /health`` on real HTTP with real Postgres.

/metrics: credentials needed (an API key as bearer, as Prometheus sends it); request durations labelled by route
template, never by raw path; ingest counters and lag read from ``IngestService.counters`` at scrape time; quarantine
rows and firing alerts read from the database; every app its own registry. /health: the standard format without
credentials, 503 naming the dependency that is down.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url
from sqlalchemy.orm import Session, sessionmaker

from central import __version__
from central.api.app import create_app
from central.api.deps import AppState
from central.api.observability import StateCollector
from central.api.routes.health import CHECK_TIMEOUT_S, HealthOut
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Alert, Certificate, QuarantineEntry
from central.fleet.pki import init_ca
from central.ingest.service import IngestService
from central.metrics import SQLiteMetricsStore, open_store
from tests.api_support import add_api_key, build_api, serve, settings_for
from tests.netcut import NetCut
from tests.services import InfluxServer, MosquittoServer
from tools.devservers import free_port

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Central:
    client: httpx.Client
    sessions: sessionmaker[Session]
    ingest: IngestService | None
    key: str  # an API key of role viewer

    def scrape(self) -> tuple[str, Samples]:
        r = self.client.get("/metrics", headers={"Authorization": f"Bearer {self.key}"})
        assert r.status_code == 200, r.text
        return r.text, samples(r.text)


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def start_central(database_url: str, metrics_path: Path, *, with_ingest: bool, broker_url: str | None = None,
                  pki_dir: Path | None = None) -> Iterator[Central]:
    """Central's app (with an ingest service that is not started, so its counters can be set) on real HTTP."""
    settings = settings_for(database_url, {"kind": "sqlite", "path": str(metrics_path)},
                            **({"broker": {"url": broker_url}} if broker_url else {}),
                            **({"pki": {"dir": str(pki_dir)}} if pki_dir else {}))
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    store = open_store(settings.metrics)
    ingest = IngestService(settings.broker, sessions, store) if with_ingest else None
    app = create_app(settings, sessions=sessions, store=store, ingest=ingest)
    try:
        for base_url in serve(app):
            with httpx.Client(base_url=base_url, timeout=30) as client:
                yield Central(client, sessions, ingest, add_api_key(sessions, "viewer"))
    finally:
        store.close()
        engine.dispose()


@pytest.fixture
def central(pg_url: str, tmp_path: Path) -> Iterator[Central]:
    init_ca(tmp_path / "pki", crl_days=CRL_DAYS)
    yield from start_central(pg_url, tmp_path / "metrics.sqlite", with_ingest=True, pki_dir=tmp_path / "pki")


CRL_DAYS = 20


def http_count(found: Samples, route: str, method: str, status: str) -> float:
    key = frozenset({("route", route), ("method", method), ("status", status)})
    return found.get(("floorgate_http_request_duration_seconds_count", key), 0.0)


# --- /metrics -------------------------------------------------------------------------------------------------


def test_metrics_need_credentials_and_take_an_api_key_as_bearer(central: Central) -> None:
    r = central.client.get("/metrics")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "not_authenticated"
    ok = central.client.get("/metrics", headers={"Authorization": f"Bearer {central.key}"})  # as Prometheus sends it
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert central.client.get("/metrics", headers={"X-API-Key": central.key}).status_code == 200


def test_request_durations_are_labelled_by_route_template_never_the_raw_path(central: Central) -> None:
    headers = {"X-API-Key": central.key}
    for weighing_id in (12345, 67890):
        assert central.client.get(f"/api/v1/weighings/{weighing_id}", headers=headers).status_code == 404
    assert central.client.get("/api/v1/readings/latest", headers=headers).status_code == 200
    assert central.client.get("/no/such/path/424242").status_code == 404
    assert central.client.post("/health").status_code == 405
    assert central.client.request("BREW", "/health").status_code == 405
    assert central.client.get("/health").status_code in (200, 503)

    text, found = central.scrape()
    assert http_count(found, "/api/v1/weighings/{weighing_id}", "GET", "4xx") == 2
    assert http_count(found, "/api/v1/readings/latest", "GET", "2xx") == 1
    assert http_count(found, "unmatched", "GET", "4xx") == 1
    assert http_count(found, "/health", "POST", "4xx") == 1
    assert http_count(found, "/health", "other", "4xx") == 1
    assert http_count(found, "/health", "GET", "5xx") + http_count(found, "/health", "GET", "2xx") == 1
    for raw in ("12345", "67890", "424242", "BREW"):
        assert raw not in text
    routes = {dict(labels)["route"] for name, labels in found if name.startswith("floorgate_http_request_duration")}
    assert routes == {"/api/v1/weighings/{weighing_id}", "/api/v1/readings/latest", "unmatched", "/health"}


def test_ingest_counters_lag_and_quarantine_are_read_when_scraped(central: Central) -> None:
    assert central.ingest is not None
    c = central.ingest.counters
    c.batches, c.records, c.duplicates, c.quarantined, c.conflicts, c.lost = 7, 40, 3, 2, 1, 5
    c.last_lag_s, c.last_batch_at = 0.25, 1_700_000_000.5
    with central.sessions.begin() as s:
        for n in range(3):
            s.add(QuarantineEntry(received_at=datetime.now(UTC), topic=f"floorgate/v1/n{n}/up/business",
                                  node_id=f"n{n}", reason="not enrolled", payload=b"{}"))

    _, found = central.scrape()
    for name, value in (("batches", 7), ("records", 40), ("duplicates", 3), ("quarantined", 2), ("conflicts", 1),
                        ("lost", 5), ("store_failures", 0)):
        assert found[(f"floorgate_ingest_{name}_total", frozenset())] == value, name
    assert found[("floorgate_ingest_lag_seconds", frozenset())] == 0.25
    assert found[("floorgate_ingest_last_batch_timestamp_seconds", frozenset())] == 1_700_000_000.5
    assert found[("floorgate_ingest_running", frozenset())] == 1
    assert found[("floorgate_ingest_connected", frozenset())] == 0
    assert found[("floorgate_ingest_quarantine_entries", frozenset())] == 3
    assert found[("floorgate_database_up", frozenset())] == 1

    c.batches += 1
    _, found = central.scrape()
    assert found[("floorgate_ingest_batches_total", frozenset())] == 8


def test_alerts_firing_by_severity_come_from_the_alerts_table(central: Central) -> None:
    _, found = central.scrape()
    firing = {dict(labels)["severity"]: v for (name, labels), v in found.items() if name == "floorgate_alerts_firing"}
    assert firing == {"info": 0, "warning": 0, "critical": 0}  # present before anything fires

    now = datetime.now(UTC)
    rows = [("critical", "firing"), ("critical", "firing"), ("warning", "firing"), ("critical", "resolved"),
            ("info", "resolved"), ("page-me", "firing")]
    with central.sessions.begin() as s:
        for n, (severity, state) in enumerate(rows):
            s.add(Alert(rule=f"rule-{n}", subject=f"n1/d1/p{n}", severity=severity, state=state, message="test",
                        started_at=now, resolved_at=now if state == "resolved" else None))
    _, found = central.scrape()
    firing = {dict(labels)["severity"]: v for (name, labels), v in found.items() if name == "floorgate_alerts_firing"}
    assert firing == {"info": 0, "warning": 1, "critical": 2, "page-me": 1}


def cert(now: datetime, serial: str, kind: str, cn: str, days: float, *, revoked: bool = False) -> Certificate:
    return Certificate(serial=serial, common_name=cn, kind=kind, node_id=cn if kind == "node" else None,
                       fingerprint="AB", not_before=now - timedelta(days=1), not_after=now + timedelta(days=days),
                       issued_at=now, revoked_at=now if revoked else None, revoke_reason="t" if revoked else None)


def test_certificate_expiry_per_common_name_and_the_crl_expiry(central: Central, tmp_path: Path) -> None:
    """The latest certificate not revoked of each kind and CN (a reissued node counts with its new one, a revoked
    one not at all, an expired one still — it is what must be seen), and when crl.pem expires."""
    now = datetime.now(UTC).replace(microsecond=0)
    with central.sessions.begin() as s:
        s.add_all([cert(now, "01", "node", "mill-01", 10), cert(now, "02", "node", "mill-01", 700),  # reissued
                   cert(now, "03", "node", "mill-02", 400, revoked=True),  # revoked: not watched
                   cert(now, "04", "node", "mill-03", -3),  # expired: the node cannot connect
                   cert(now, "05", "server", "broker.example", 30),
                   cert(now, "06", "client", "floorgate:central", 365)])
    _, found = central.scrape()
    expiry = {(dict(labels)["kind"], dict(labels)["common_name"]): v for (name, labels), v in found.items()
              if name == "floorgate_pki_certificate_not_after_timestamp_seconds"}
    assert expiry == {("node", "mill-01"): (now + timedelta(days=700)).timestamp(),
                      ("node", "mill-03"): (now - timedelta(days=3)).timestamp(),
                      ("server", "broker.example"): (now + timedelta(days=30)).timestamp(),
                      ("client", "floorgate:central"): (now + timedelta(days=365)).timestamp()}
    crl = x509.load_pem_x509_crl((tmp_path / "pki" / "crl.pem").read_bytes())
    assert crl.next_update_utc is not None
    assert found[("floorgate_pki_crl_next_update_timestamp_seconds", frozenset())] == crl.next_update_utc.timestamp()
    assert abs(crl.next_update_utc.timestamp() - time.time() - CRL_DAYS * 86400) < 120

    (tmp_path / "pki" / "crl.pem").write_text("not a CRL")  # a broken file: no figure, the scrape still works
    _, found = central.scrape()
    assert ("floorgate_pki_crl_next_update_timestamp_seconds", frozenset()) not in found
    assert found[("floorgate_database_up", frozenset())] == 1


def test_every_app_has_its_own_registry(central: Central, postgres_server: Any, unique_id: str, tmp_path: Path
                                        ) -> None:
    url = postgres_server.create_database(f"{unique_id}_b")
    try:
        for other in start_central(url, tmp_path / "other.sqlite", with_ingest=False):
            assert central.client.get("/health").status_code in (200, 503)
            _, mine = central.scrape()
            _, theirs = other.scrape()
            assert http_count(mine, "/health", "GET", "2xx") + http_count(mine, "/health", "GET", "5xx") == 1
            assert http_count(theirs, "/health", "GET", "2xx") + http_count(theirs, "/health", "GET", "5xx") == 0
            assert theirs[("floorgate_ingest_running", frozenset())] == 0  # API only: no ingest counters
            assert not any(name.startswith("floorgate_ingest_batches") for name, _ in theirs)
    finally:
        postgres_server.drop_database(f"{unique_id}_b")


def test_an_unreachable_database_makes_database_up_0_not_a_failed_scrape(tmp_path: Path) -> None:
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2")
    with SQLiteMetricsStore(tmp_path / "m.sqlite") as store:
        state = AppState(settings=settings_for("sqlite://", {"kind": "sqlite", "path": str(tmp_path / "m.sqlite")}),
                         sessions=make_session_factory(engine), store=store, ingest=None, started_at=time.time())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StateCollector(state))
        found = samples(generate_latest(registry).decode())
    engine.dispose()
    assert found[("floorgate_database_up", frozenset())] == 0
    assert not any(name.startswith("floorgate_alerts_firing") for name, _ in found)


# --- /health --------------------------------------------------------------------------------------------------


def check_format(body: dict[str, Any]) -> None:
    HealthOut.model_validate(body)
    assert set(body) == {"status", "version", "uptime_s", "cpu", "memory", "dependencies", "ingest", "sync"}
    assert body["sync"]["ok"] in (True, False)
    assert set(body["dependencies"]) == {"database", "broker", "influxdb"}
    for dependency in body["dependencies"].values():
        assert isinstance(dependency["ok"], bool)
        assert dependency["latency_ms"] >= 0
    assert body["version"] == __version__
    assert body["uptime_s"] >= 0
    assert set(body["cpu"]) == {"percent", "load_1m"}
    assert body["memory"]["rss_bytes"] > 0


def test_health_has_the_standard_format_and_needs_no_credentials(pg_url: str, influx_server: InfluxServer,
                                                                  influx_db: str, mosquitto: MosquittoServer) -> None:
    for api in build_api(pg_url, {"kind": "influxdb-v1", "url": influx_server.url, "database": influx_db},
                         broker={"url": mosquitto.url}):
        r = api.client.get("/health")
        assert r.status_code == 200, r.text
        body = r.json()
        check_format(body)
        assert body["status"] == "ok"
        deps = body["dependencies"]
        assert (deps["database"]["kind"], deps["influxdb"]["kind"], deps["broker"]["url"]) == (
            "postgresql", "influxdb-v1", mosquitto.url)
        assert body["ingest"] == {"running": False}


def test_health_reports_ingest_lag_and_a_broker_ingest_is_not_connected_to(pg_url: str, tmp_path: Path) -> None:
    for central in start_central(pg_url, tmp_path / "m.sqlite", with_ingest=True,
                                 broker_url=f"mqtt://127.0.0.1:{free_port()}"):
        assert central.ingest is not None
        central.ingest.counters.last_lag_s = 0.125
        central.ingest.counters.last_batch_at = time.time() - 2
        r = central.client.get("/health")
        assert r.status_code == 503
        body = r.json()
        check_format(body)
        assert body["status"] == "degraded"
        broker = body["dependencies"]["broker"]
        assert broker["ok"] is False
        assert "not connected" in broker["error"]
        assert body["dependencies"]["database"]["ok"] is True
        assert body["ingest"]["lag_s"] == 0.125
        assert 1.5 < body["ingest"]["last_batch_age_s"] < 30
        assert body["ingest"]["connected"] is False


def test_health_is_503_naming_influxdb_when_it_is_down(pg_url: str, unique_id: str, mosquitto: MosquittoServer
                                                       ) -> None:
    with InfluxServer() as influx:
        for api in build_api(pg_url, {"kind": "influxdb-v1", "url": influx.url, "database": unique_id,
                                      "timeout_s": 2.0}, broker={"url": mosquitto.url}):
            assert api.client.get("/health").status_code == 200
            influx.stop()
            r = api.client.get("/health")
            assert r.status_code == 503
            body = r.json()
            check_format(body)
            deps = body["dependencies"]
            assert (deps["influxdb"]["ok"], deps["database"]["ok"], deps["broker"]["ok"]) == (False, True, True)
            assert deps["influxdb"]["error"]


def test_health_answers_in_time_when_the_database_does_not(pg_url: str, tmp_path: Path) -> None:
    url = make_url(pg_url)
    with NetCut(str(url.host), int(url.port or 5432)) as net:
        via_net = url.set(host="127.0.0.1", port=net.port).render_as_string(hide_password=False)
        for api in build_api(via_net, {"kind": "sqlite", "path": str(tmp_path / "m.sqlite")}):
            assert api.client.get("/health").json()["dependencies"]["database"]["ok"] is True
            net.cut()  # pulled cable: the query waits for an answer that never comes
            started = time.monotonic()
            r = api.client.get("/health")
            assert time.monotonic() - started < CHECK_TIMEOUT_S + 3
            assert r.status_code == 503
            database = r.json()["dependencies"]["database"]
            assert (database["ok"], database["error"]) == (False, f"no answer within {CHECK_TIMEOUT_S:g} s")
            net.restore()  # the waiting query fails now, the pool gets a new connection
            assert api.client.get("/health").json()["dependencies"]["database"]["ok"] is True


def test_the_openapi_document_describes_health_and_metrics(central: Central) -> None:
    paths = central.client.get("/openapi.json").json()["paths"]
    health = paths["/health"]["get"]
    assert "security" not in health
    for status in ("200", "503"):
        assert health["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/HealthOut"}
    metrics = paths["/metrics"]["get"]
    assert metrics["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert set(metrics["responses"]["401"]["content"]) == {"application/json"}
    assert metrics["security"]


# --- the README says what the code does -------------------------------------------------------------------------


def test_readme_scrape_config_and_metric_names_match(central: Central) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Readings and monitoring", 1)[1].split("\n## ", 1)[0]
    config = yaml.safe_load(section.split("# prometheus.yml\n", 1)[1].split("```", 1)[0])
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"

    assert central.ingest is not None
    central.ingest.counters.last_lag_s = 0.1
    with central.sessions.begin() as s:
        s.add(cert(datetime.now(UTC), "01", "node", "mill-01", 10))
    central.client.get("/health")
    text, _ = central.scrape()
    names = {n for n in re.findall(r"`(floorgate_[a-z_]+)", section) if not n.endswith("_")}
    assert len(names) >= 6
    for name in names:
        assert f"\n{name}" in text, name
