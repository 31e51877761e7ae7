"""People and machines at central's API: login, tokens, API keys, the rate limit, and the permission matrix —
every role against every route, each either allowed or 403.

The matrix below is written from the roles' intent (see central/api/security.py), not read from the code: a route
whose dependency asks for the wrong permission makes a cell fail, and a route added without a line here fails
``test_the_matrix_covers_every_route``.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import select

from central.db.models import ApiKey, AuditEntry
from tests.api_support import PASSWORD, TEST_JWT_SECRET, ApiHarness, add_user

pytestmark = pytest.mark.integration

ALL = frozenset({"admin", "operator", "auditor", "viewer"})
FISCAL = frozenset({"admin", "operator", "auditor"})  # fiscal data and exports
WRITE = frozenset({"admin", "operator"})  # the day's work: tickets, master data, device commands
AUDIT = frozenset({"admin", "auditor"})  # audit log, quarantine
ADMIN = frozenset({"admin"})
PUBLIC = None  # no authentication at all

MATRIX: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/health"): PUBLIC,
    ("POST", "/api/v1/auth/token"): PUBLIC,
    ("GET", "/api/v1/auth/me"): ALL,
    ("GET", "/metrics"): ALL,
    # people and machines
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("GET", "/api/v1/users/{user_id}"): ADMIN,
    ("PATCH", "/api/v1/users/{user_id}"): ADMIN,
    ("GET", "/api/v1/api-keys"): ADMIN,
    ("POST", "/api/v1/api-keys"): ADMIN,
    ("GET", "/api/v1/api-keys/{key_id}"): ADMIN,
    ("POST", "/api/v1/api-keys/{key_id}/revoke"): ADMIN,
    ("GET", "/api/v1/audit-log"): AUDIT,
    # the plant
    ("GET", "/api/v1/sites"): ALL,
    ("POST", "/api/v1/sites"): ADMIN,
    ("GET", "/api/v1/sites/{site_id}"): ALL,
    ("PATCH", "/api/v1/sites/{site_id}"): ADMIN,
    ("GET", "/api/v1/nodes"): ALL,
    ("GET", "/api/v1/nodes/{node_id}"): ALL,
    ("PATCH", "/api/v1/nodes/{node_id}"): ADMIN,
    ("GET", "/api/v1/devices"): ALL,
    ("GET", "/api/v1/devices/{node_id}/{device_id}"): ALL,
    ("GET", "/api/v1/ingest/streams"): ALL,
    ("GET", "/api/v1/ingest/quarantine"): AUDIT,
    ("GET", "/api/v1/ingest/quarantine/{entry_id}"): AUDIT,
    ("GET", "/api/v1/readings"): ALL,
    ("GET", "/api/v1/readings/latest"): ALL,
    ("GET", "/api/v1/commands"): ALL,
    ("POST", "/api/v1/commands"): WRITE,
    ("GET", "/api/v1/commands/{command_id}"): ALL,
    ("GET", "/api/v1/alerts"): ALL,
    ("GET", "/api/v1/alerts/{alert_id}"): ALL,
    ("GET", "/api/v1/alert-rules"): ALL,
    # master data
    ("GET", "/api/v1/articles"): ALL,
    ("POST", "/api/v1/articles"): WRITE,
    ("GET", "/api/v1/articles/{article_id}"): ALL,
    ("PATCH", "/api/v1/articles/{article_id}"): WRITE,
    ("GET", "/api/v1/partners"): ALL,
    ("POST", "/api/v1/partners"): WRITE,
    ("GET", "/api/v1/partners/{partner_id}"): ALL,
    ("PATCH", "/api/v1/partners/{partner_id}"): WRITE,
    ("GET", "/api/v1/lots"): ALL,
    ("POST", "/api/v1/lots"): WRITE,
    ("GET", "/api/v1/lots/{lot_id}"): ALL,
    ("PATCH", "/api/v1/lots/{lot_id}"): WRITE,
    # business records
    ("GET", "/api/v1/weighings"): ALL,
    ("GET", "/api/v1/weighings/{weighing_id}"): ALL,
    ("GET", "/api/v1/weighings.csv"): FISCAL,
    ("GET", "/api/v1/tickets"): ALL,
    ("POST", "/api/v1/tickets"): WRITE,
    ("GET", "/api/v1/tickets/{ticket_id}"): ALL,
    ("PATCH", "/api/v1/tickets/{ticket_id}"): WRITE,
    ("POST", "/api/v1/tickets/{ticket_id}/cancel"): WRITE,
    ("GET", "/api/v1/tickets.csv"): FISCAL,
    ("GET", "/api/v1/tickets/{ticket_id}/pdf"): ALL,
    ("GET", "/api/v1/delivery-notes/{number}/pdf"): ALL,
    ("GET", "/api/v1/tse-transactions"): FISCAL,
    ("GET", "/api/v1/tse-transactions/{transaction_id}"): FISCAL,
    ("GET", "/api/v1/tse-transactions.csv"): FISCAL,
    ("POST", "/api/v1/tse-exports"): WRITE,
    ("GET", "/api/v1/tse-exports"): FISCAL,
    ("GET", "/api/v1/tse-exports/{export_id}"): FISCAL,
    ("GET", "/api/v1/tse-registry"): FISCAL,
    ("POST", "/api/v1/tse-registry/{serial}/confirm"): ADMIN,
    ("POST", "/api/v1/tse-registry/{serial}/reject"): ADMIN,
    ("GET", "/api/v1/nodes/{node_id}/alibi"): FISCAL,
    ("GET", "/api/v1/nodes/{node_id}/alibi/verify"): FISCAL,
}


def _routes(api: ApiHarness) -> set[tuple[str, str]]:
    """Every operation of the app: those in its OpenAPI document (plus /metrics, should it leave the document)."""
    out = {(method.upper(), path) for path, ops in api.app.openapi()["paths"].items() for method in ops}
    if api.client.get("/metrics").status_code != 404:
        out.add(("GET", "/metrics"))
    return out


def _url(path: str) -> str:
    """Fill path parameters with values that pass validation (an id that does not exist is fine: an allowed
    role gets 404, a forbidden one 403 before the lookup)."""
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1).endswith("_id") and m.group(1) not in (
        "node_id", "device_id") else "x", path)


def _call(api: ApiHarness, method: str, path: str, headers: dict[str, str]) -> int:
    kwargs: dict[str, object] = {"headers": headers}
    if method in ("POST", "PATCH", "PUT"):
        kwargs["json"] = {}
    return api.client.request(method, _url(path), **kwargs).status_code  # type: ignore[arg-type]


def test_the_matrix_covers_every_route(api: ApiHarness) -> None:
    routes = _routes(api)
    assert routes - set(MATRIX) == set(), "routes without a line in the permission matrix (add them)"
    assert set(MATRIX) - routes == set(), "matrix lines for routes the app does not have"


@pytest.mark.parametrize("role", sorted(ALL))
def test_each_role_gets_exactly_what_the_matrix_allows(api: ApiHarness, role: str) -> None:
    headers = api.auth(role)
    wrong = []
    for (method, path), allowed in sorted(MATRIX.items()):
        if allowed is PUBLIC or (method, path) not in _routes(api):
            continue
        status = _call(api, method, path, headers)
        expected_forbidden = role not in allowed
        if (status == 403) != expected_forbidden or status == 401:
            expected = "403" if expected_forbidden else "not 403"
            wrong.append(f"{method} {path}: {status} for {role} (expected {expected})")
    assert wrong == []


def test_api_keys_carry_their_role(api: ApiHarness) -> None:
    viewer, operator = api.api_key("viewer"), api.api_key("operator")
    assert api.client.get("/api/v1/weighings", headers=viewer).status_code == 200
    assert api.client.post("/api/v1/articles", headers=viewer, json={}).status_code == 403
    assert api.client.post("/api/v1/articles", headers=operator, json={}).status_code == 422  # allowed, body empty
    # the same key as a bearer token works too (Prometheus and many ERP connectors only speak Authorization)
    bearer = {"Authorization": f"Bearer {viewer['X-API-Key']}"}
    assert api.client.get("/api/v1/auth/me", headers=bearer).json()["kind"] == "apikey"


def test_without_credentials_everything_but_health_and_login_is_401(api: ApiHarness) -> None:
    wrong = []
    for (method, path), allowed in sorted(MATRIX.items()):
        if (method, path) not in _routes(api):
            continue
        status = _call(api, method, path, {})
        if allowed is PUBLIC:
            if status in (401, 403):
                wrong.append(f"{method} {path}: {status} but it is public")
        elif status != 401:
            wrong.append(f"{method} {path}: {status} without credentials")
    assert wrong == []
    r = api.client.get("/api/v1/weighings")
    assert r.json()["error"]["code"] == "not_authenticated"
    assert r.headers["www-authenticate"] == "Bearer"


def test_login_issues_a_short_lived_token_and_rejects_wrong_passwords(api: ApiHarness) -> None:
    add_user(api.sessions, "anna", "operator")
    r = api.client.post("/api/v1/auth/token", data={"username": "anna", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    claims = jwt.decode(body["access_token"], TEST_JWT_SECRET, algorithms=["HS256"], issuer="floorgate-central")
    assert claims["sub"] == "anna"
    assert claims["role"] == "operator"
    assert body["expires_in"] == 900
    assert claims["exp"] - claims["iat"] == 900
    me = api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert (me["kind"], me["name"], me["role"]) == ("user", "anna", "operator")
    bad = api.client.post("/api/v1/auth/token", data={"username": "anna", "password": PASSWORD + "x"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "invalid_credentials")
    unknown = api.client.post("/api/v1/auth/token", data={"username": "nobody", "password": PASSWORD})
    assert unknown.json() == bad.json()  # no hint whether the user exists


def test_expired_forged_and_disabled_tokens_are_refused(api: ApiHarness) -> None:
    uid = add_user(api.sessions, "ben", "viewer")
    now = datetime.now(UTC)
    base = {"sub": "ben", "role": "admin", "iss": "floorgate-central", "iat": now}
    expired = jwt.encode({**base, "exp": now - timedelta(seconds=1)}, TEST_JWT_SECRET, algorithm="HS256")
    forged = jwt.encode({**base, "exp": now + timedelta(minutes=5)}, "another-secret-" * 3, algorithm="HS256")
    r = api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert (r.status_code, r.json()["error"]["message"]) == (401, "the access token has expired: log in again")
    assert api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    # a valid token claiming admin still acts with the role the user has now (viewer)
    valid = jwt.encode({**base, "exp": now + timedelta(minutes=5)}, TEST_JWT_SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {valid}"}
    assert api.client.get("/api/v1/users", headers=headers).status_code == 403
    admin = api.auth("admin")
    assert api.client.patch(f"/api/v1/users/{uid}", headers=admin, json={"active": False}).status_code == 200
    assert api.client.get("/api/v1/auth/me", headers=headers).status_code == 401  # disabled: out at once


def test_api_keys_are_shown_once_listed_without_secret_and_revoked_at_once(api: ApiHarness) -> None:
    admin = api.auth("admin")
    created = api.client.post("/api/v1/api-keys", headers=admin, json={"name": "ERP", "role": "auditor"})
    assert created.status_code == 201
    key = created.json()["key"]
    with api.sessions() as s:  # only a digest of the secret is kept
        stored = s.execute(select(ApiKey.secret_hash).where(ApiKey.prefix == created.json()["prefix"])).scalar_one()
    secret = key.split("_", 2)[2]
    assert secret not in stored
    assert stored == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    assert key.startswith(f"fgk_{created.json()['prefix']}_")
    listed = api.client.get("/api/v1/api-keys", headers=admin).json()["items"]
    assert [k["name"] for k in listed] == ["ERP"]
    assert "key" not in listed[0]
    assert key not in api.client.get(f"/api/v1/api-keys/{created.json()['id']}", headers=admin).text
    me = api.client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert (me.status_code, me.json()["role"]) == (200, "auditor")
    assert api.client.post(f"/api/v1/api-keys/{created.json()['id']}/revoke", headers=admin).json()["revoked_at"]
    r = api.client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert api.client.get("/api/v1/auth/me", headers={"X-API-Key": tampered}).status_code == 401
    expired = api.client.post("/api/v1/api-keys", headers=admin, json={
        "name": "old", "role": "viewer", "expires_at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()})
    time.sleep(1.2)
    r = api.client.get("/api/v1/auth/me", headers={"X-API-Key": expired.json()["key"]})
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]


def test_users_are_managed_by_admins_and_every_change_is_audited(api: ApiHarness) -> None:
    admin = api.auth("admin")
    r = api.client.post("/api/v1/users", headers=admin,
                        json={"username": "eva", "password": "short", "role": "viewer"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "password"
    r = api.client.post("/api/v1/users", headers=admin,
                        json={"username": "eva", "password": "long enough password", "role": "viewer"})
    assert r.status_code == 201
    uid = r.json()["id"]
    assert api.client.post("/api/v1/users", headers=admin, json={
        "username": "eva", "password": "long enough password", "role": "viewer"}).status_code == 409
    r = api.client.patch(f"/api/v1/users/{uid}", headers=admin, json={"role": "operator"})
    assert r.json()["role"] == "operator"
    assert api.client.patch("/api/v1/users/999999", headers=admin, json={"role": "viewer"}).json()["error"] == {
        "code": "not_found", "message": "no user with id 999999", "field": "user_id"}
    with api.sessions() as s:
        entries = s.execute(select(AuditEntry).where(AuditEntry.resource == "users",
                                                     AuditEntry.resource_id == str(uid))
                            .order_by(AuditEntry.id)).scalars().all()
    assert [(e.action, e.actor) for e in entries] == [("create", f"user:{api.auth_names['admin']}"),
                                                      ("update", f"user:{api.auth_names['admin']}")]
    assert entries[1].before == {"role": "viewer", "updated_at": entries[1].before["updated_at"]}
    assert entries[1].after["role"] == "operator"
    assert "password_hash" not in entries[0].after
