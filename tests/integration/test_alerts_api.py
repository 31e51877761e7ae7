"""``/api/v1/alerts`` and ``/api/v1/alert-rules`` over real HTTP on real Postgres: authentication, filters, sort and
cursors, one alert with its notifications, rules with their secrets masked, and odd input answered with 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from central.db.models import Alert, Notification
from tests.api_support import ApiHarness, build_api
from tests.services import InfluxServer

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 7, 10, 0, tzinfo=UTC)
ROUTES = ["/api/v1/alerts", "/api/v1/alerts/1", "/api/v1/alert-rules"]
SMTP_PASSWORD = "smtp-pass-9f8e7d"  # noqa: S105 — never sent anywhere
HOOK_TOKEN = "hook-token-1a2b3c"  # noqa: S105


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "alert-rules.yaml"
    path.write_text(yaml.safe_dump({
        "channels": {
            "hook": {"kind": "webhook", "url": f"https://hooks.example.com/services/{HOOK_TOKEN}",
                     "headers": {"Authorization": f"Bearer {HOOK_TOKEN}"}},
            "mail": {"kind": "email", "host": "smtp.example.com", "port": 587, "starttls": True, "username": "fg",
                     "password": SMTP_PASSWORD, "from": "fg@example.com", "to": ["ops@example.com"]},
        },
        "rules": [
            {"name": "silo-hot-spot", "kind": "reading", "point": "temperature_*", "above": 35, "for_s": 600,
             "severity": "critical", "channels": ["hook", "mail"]},
            {"name": "node-silent", "kind": "node_silent", "after_s": 120},
        ],
    }), encoding="utf-8")
    return path


@pytest.fixture
def api(pg_url: str, influx_server: InfluxServer, influx_db: str, rules_path: Path) -> Iterator[ApiHarness]:
    yield from build_api(pg_url, {"kind": "influxdb-v1", "url": influx_server.url, "database": influx_db},
                         alerts={"rules_file": str(rules_path), "evaluate_every_s": 5})


def _add_alerts(api: ApiHarness) -> list[int]:
    ids = []
    with api.sessions.begin() as s:
        for i, (rule, severity, state) in enumerate([
            ("silo-hot-spot", "critical", "resolved"), ("node-silent", "warning", "firing"),
            ("silo-hot-spot", "critical", "firing"), ("node-silent", "warning", "resolved"),
            ("silo-hot-spot", "info", "firing"),
        ]):
            a = Alert(rule=rule, subject=f"mill-01/silo-{i}/temperature_1" if rule == "silo-hot-spot" else f"n{i}",
                      severity=severity, state=state, message=f"alert {i}", value=40.0 + i,
                      started_at=T0 + timedelta(minutes=10 * (i % 3)),  # not in id order, two share a time
                      resolved_at=T0 + timedelta(hours=1) if state == "resolved" else None,
                      details={"kind": "reading", "threshold": 35.0})
            s.add(a)
            s.flush()
            ids.append(a.id)
        s.add_all([
            Notification(alert_id=ids[0], channel="webhook:hook", event="firing", status="failed",
                         error="POST https://hooks.example.com/…: HTTP 503 ''", at=T0),
            Notification(alert_id=ids[0], channel="webhook:hook", event="firing", status="sent", at=T0),
            Notification(alert_id=ids[0], channel="email:mail", event="firing", status="suppressed",
                         error="rate limit: 20 per 3600 s on this channel", at=T0),
        ])
    return ids


def test_every_route_needs_credentials(api: ApiHarness) -> None:
    for route in ROUTES:
        r = api.client.get(route)
        assert r.status_code == 401, route
        assert r.json()["error"]["code"] == "not_authenticated"
    for route in ROUTES[::2]:
        assert api.client.get(route, headers=api.api_key("viewer")).status_code == 200


def test_list_filters_sorts_and_pages(api: ApiHarness) -> None:
    ids = _add_alerts(api)
    h = api.auth("viewer")

    def get(**params: Any) -> dict[str, Any]:
        r = api.client.get("/api/v1/alerts", params=params, headers=h)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    newest = [a["id"] for a in get()["items"]]
    assert newest == [ids[2], ids[4], ids[1], ids[3], ids[0]]  # started_at desc, then id desc
    assert [a["id"] for a in get(sort="id")["items"]] == ids
    assert {a["id"] for a in get(state="firing")["items"]} == {ids[1], ids[2], ids[4]}
    assert {a["id"] for a in get(rule="node-silent", state="resolved")["items"]} == {ids[3]}
    assert {a["id"] for a in get(severity="critical")["items"]} == {ids[0], ids[2]}
    assert [a["id"] for a in get(subject="n1")["items"]] == [ids[1]]
    assert get(rule="no-such-rule")["items"] == []
    one = get(sort="id")["items"][0]
    assert one["started_at"] == "2025-01-07T10:00:00Z"
    assert one["resolved_at"] == "2025-01-07T11:00:00Z"
    assert one["details"] == {"kind": "reading", "threshold": 35.0}
    assert one["value"] == 40.0

    for sort in ("-started_at", "started_at", "-id"):
        seen, cursor = [], None
        while True:
            page = get(sort=sort, limit=2, **({"cursor": cursor} if cursor else {}))
            seen += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [a["id"] for a in get(sort=sort)["items"]], sort
        assert len(seen) == 5

    page = get(sort="-started_at", limit=2)
    r = api.client.get("/api/v1/alerts", params={"sort": "id", "cursor": page["next_cursor"]}, headers=h)
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "cursor"
    for params in ({"sort": "severity"}, {"state": "burning"}, {"limit": 0}, {"rule": "a\x00b"},
                   {"severity": "high"}, {"subject": "x" * 201}):
        r = api.client.get("/api/v1/alerts", params=params, headers=h)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    r = api.client.get("/api/v1/alerts", params={"cursor": "not-a-cursor"}, headers=h)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_cursor"


def test_one_alert_with_its_notifications(api: ApiHarness) -> None:
    ids = _add_alerts(api)
    h = api.auth("viewer")
    r = api.client.get(f"/api/v1/alerts/{ids[0]}", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["rule"], body["state"]) == (ids[0], "silo-hot-spot", "resolved")
    assert [(n["channel"], n["event"], n["status"]) for n in body["notifications"]] == [
        ("webhook:hook", "firing", "failed"), ("webhook:hook", "firing", "sent"),
        ("email:mail", "firing", "suppressed")]
    assert body["notifications"][2]["error"].startswith("rate limit")
    assert api.client.get(f"/api/v1/alerts/{ids[1]}", headers=h).json()["notifications"] == []
    for bad, status in (("999999", 404), ("0", 422), ("-1", 422), ("abc", 422), (str(2**63), 422)):
        r = api.client.get(f"/api/v1/alerts/{bad}", headers=h)
        assert r.status_code == status, (bad, r.text)
    assert api.client.get("/api/v1/alerts/999999", headers=h).json()["error"] == {
        "code": "not_found", "message": "no alert with id 999999", "field": "alert_id"}


def test_rules_are_shown_with_secrets_masked(api: ApiHarness, rules_path: Path) -> None:
    r = api.client.get("/api/v1/alert-rules", headers=api.auth("viewer"))
    assert r.status_code == 200, r.text
    assert SMTP_PASSWORD not in r.text
    assert HOOK_TOKEN not in r.text
    body = r.json()
    assert body["rules_file"] == str(rules_path)
    assert body["error"] is None
    assert body["evaluate_every_s"] == 5
    assert [rule["name"] for rule in body["rules"]] == ["silo-hot-spot", "node-silent"]
    assert body["rules"][0] | {"above": 35.0, "for_s": 600.0} == body["rules"][0]
    hook, mail = body["channels"]
    assert hook == {"name": "hook", "kind": "webhook", "url": "https://hooks.example.com/…",
                    "headers": ["Authorization"], "timeout_s": 5.0,
                    "rate_limit": {"max_notifications": 30, "window_s": 3600.0}, "max_attempts": 5}
    assert mail["password_set"] is True
    assert mail["from"] == "fg@example.com"
    assert mail["username"] == "fg"

    rules_path.write_text("rules: [{name: x, kind: reading}]\n", encoding="utf-8")  # broken: last good ones stay
    body = api.client.get("/api/v1/alert-rules", headers=api.auth("viewer")).json()
    assert "give exactly one of above and below" in body["error"]
    assert [rule["name"] for rule in body["rules"]] == ["silo-hot-spot", "node-silent"]


def test_rules_without_a_rules_file(pg_url: str, influx_server: InfluxServer, influx_db: str) -> None:
    for api in build_api(pg_url, {"kind": "influxdb-v1", "url": influx_server.url, "database": influx_db}):
        body = api.client.get("/api/v1/alert-rules", headers=api.auth("viewer")).json()
        assert body == {"rules_file": None, "loaded_at": None, "error": None, "evaluate_every_s": 10.0,
                        "channels": [], "rules": []}



def test_fuzzed_alert_routes_answer_as_documented(api: ApiHarness) -> None:
    """Schemathesis on the alert operations only (with alerts and notifications stored, so pages and details are
    not empty): no 5xx, and status codes, content types and bodies as the OpenAPI document declares."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    ids = _add_alerts(api)
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    headers = dict(api.auth("viewer"))
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if "/alert" not in operation.path:
            continue
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  phases=[Phase.explicit, Phase.generate])
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            if case.path_parameters and "alert_id" in case.path_parameters and case.path_parameters["alert_id"] == 1:
                case.path_parameters["alert_id"] = ids[0]
            sent = dict(headers)
            if case.headers:
                sent.update({k: v for k, v in case.headers.items() if k.lower() != "authorization"})
            case.call_and_validate(base_url=api.base_url, headers=sent, checks=checks)

        fuzz()
    assert sorted(labels) == ["GET /api/v1/alert-rules", "GET /api/v1/alerts", "GET /api/v1/alerts/{alert_id}"]
