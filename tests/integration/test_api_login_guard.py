"""Central's API boundary on real Postgres: body limits before any work, the login throttle (per user and address,
known-good addresses, exact counting under concurrency, trusted proxies), and credentials that end at once when a
password changes or a user is disabled. The same against a real ``floorgate central run``: tests/hostile/
test_api_auth_hostile.py."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from central.api.throttle import ADDRESS, PAIR, USER
from central.db.models import ApiKey, AuditEntry, LoginAttempt, LoginThrottle, User
from tests.api_support import PASSWORD, TEST_JWT_SECRET, ApiHarness, add_user, build_api
from tests.raw_http import stream_post

pytestmark = pytest.mark.integration

DELAY_S = 30.0  # the first wait: long enough that no test races it
UPLOAD_LIMIT = 4 << 20
LOGIN = "/api/v1/auth/token"


def _settings(tmp_path: Path, **api: object) -> dict[str, object]:
    return {"auth": {"jwt_secret": TEST_JWT_SECRET, "login_delay_s": DELAY_S, "login_max_delay_s": 600.0},
            "api": {"max_upload_bytes": UPLOAD_LIMIT, **api}}


@pytest.fixture
def guard(pg_url: str, tmp_path: Path) -> Iterator[ApiHarness]:
    yield from build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")}, **_settings(tmp_path))


@pytest.fixture
def behind_proxy(pg_url: str, tmp_path: Path) -> Iterator[ApiHarness]:
    yield from build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")},
                         **_settings(tmp_path, trusted_proxies=["127.0.0.1"]))


def _from(api: ApiHarness, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 reaches the server on 127.0.0.1)."""
    return httpx.Client(base_url=api.base_url, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def _login(client: httpx.Client, username: str, password: str = PASSWORD, **headers: str) -> httpx.Response:
    return client.post(LOGIN, data={"username": username, "password": password}, headers=headers)


def _checks(api: ApiHarness) -> dict[str, float]:
    """floorgate_login_password_checks_total by outcome, from /metrics."""
    text = api.client.get("/metrics", headers=api.api_key("admin")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("floorgate_login_password_checks_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = float(line.rsplit(" ", 1)[1])
    return out


def _failures(api: ApiHarness, username: str) -> list[str | None]:
    with api.sessions() as s:
        return list(s.execute(select(LoginAttempt.client).where(LoginAttempt.username == username)).scalars())


# --- body limits ---------------------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_413_before_credentials_declared_or_chunked(guard: ApiHarness) -> None:
    limit = guard.settings.api.max_body_bytes
    assert limit == 1 << 20  # the default
    for chunked in (False, True):
        answer = stream_post(guard.base_url, "/api/v1/tickets", total=32 << 20, chunked=chunked)
        assert answer.status == 413, answer
        assert answer.json() == {"error": {"code": "payload_too_large",
                                           "message": f"the request body is larger than {limit} bytes",
                                           "field": None}}
        # declared: answered before the body; chunked: soon after the limit (socket buffers hold a few MiB)
        assert answer.sent < (0 if not chunked else limit) + (8 << 20), answer.sent
    # at the limit it is read and then refused for what it is: no credentials
    r = guard.client.post("/api/v1/tickets", content=b"{" + b" " * (limit - 2) + b"}",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    # credentials do not lift the limit
    r = guard.client.post("/api/v1/tickets", content=b" " * (limit + 1), headers=guard.auth("operator"))
    assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")


def test_the_tse_export_upload_has_its_own_larger_limit(guard: ApiHarness) -> None:
    key = guard.api_key("operator")
    tar = {**key, "Content-Type": "application/x-tar"}
    within = guard.client.post("/api/v1/tse-exports", content=b"\0" * (2 << 20), headers=tar)
    # read whole and judged for what it is (not a TAR that verifies), not refused for its size
    assert (within.status_code, within.json()["error"]["code"]) == (422, "invalid_tse_export")
    over = stream_post(guard.base_url, "/api/v1/tse-exports", total=UPLOAD_LIMIT + 1, chunked=True, headers=tar)
    assert (over.status, over.json()["error"]["code"]) == (413, "payload_too_large")
    declared = stream_post(guard.base_url, "/api/v1/tse-exports", total=UPLOAD_LIMIT + 1, headers=tar)
    assert declared.status == 413
    assert "larger than 4194304 bytes" in declared.json()["error"]["message"]


# --- the login throttle --------------------------------------------------------------------------------------------


def _wait_as_set(r: httpx.Response, set_at: float) -> float:
    """The wait the try started at ``set_at`` (monotonic) set, from the ``Retry-After`` of a refused try after it:
    what is left of it then plus the time gone by (the machine may be slow), rounded back to the whole wait."""
    left = int(r.headers["retry-after"])
    gone = time.monotonic() - set_at
    for wait in (DELAY_S, 2 * DELAY_S, 4 * DELAY_S):
        if wait - math.ceil(gone) <= left <= wait:
            return wait
    raise AssertionError(f"Retry-After {left} s, {gone:.1f} s after the failure that set it")


def test_a_known_good_address_keeps_working_while_another_address_guesses(guard: ApiHarness) -> None:
    add_user(guard.sessions, "carl", "viewer")
    add_user(guard.sessions, "dora", "viewer")
    home, attacker = _from(guard, "127.0.0.1"), _from(guard, "127.0.0.2")
    with home, attacker:
        assert _login(home, "carl").status_code == 200  # carl's address is known-good from now on
        for _ in range(5):
            set_at = time.monotonic()  # the last of these sets the wait
            assert _login(attacker, "carl", "wrong-password").status_code == 401
        r = _login(attacker, "carl")
        assert (r.status_code, r.json()["error"]["code"]) == (429, "too_many_attempts"), \
            "the right password must not be checked from the guessing address"
        assert _wait_as_set(r, set_at) == DELAY_S
        assert _login(home, "carl").status_code == 200, "carl is not locked out by someone else's guessing"
        assert _login(attacker, "dora").status_code == 200, "another user from that address is not slowed"
    assert _failures(guard, "carl") == ["127.0.0.2"] * 5


def test_delays_grow_with_each_failure_and_are_forgotten_after_the_window(guard: ApiHarness) -> None:
    add_user(guard.sessions, "erik", "viewer")

    def wait_passes() -> None:  # move the pair's next try into the past, as if the wait was over
        with guard.sessions.begin() as s:
            s.execute(update(LoginThrottle).where(LoginThrottle.username == "erik", LoginThrottle.kind == PAIR)
                      .values(next_at=datetime.now(UTC) - timedelta(seconds=1)))

    for _ in range(5):
        set_at = time.monotonic()
        assert _login(guard.client, "erik", "wrong-password").status_code == 401
    waits = []
    for _ in range(3):
        r = _login(guard.client, "erik", "wrong-password")
        assert r.status_code == 429
        waits.append(_wait_as_set(r, set_at))
        wait_passes()
        set_at = time.monotonic()
        assert _login(guard.client, "erik", "wrong-password").status_code == 401  # one more try after the wait
    assert waits == [30, 60, 120]
    # the window passes without a failure: erik starts from zero
    with guard.sessions.begin() as s:
        s.execute(update(LoginThrottle).values(last_at=datetime.now(UTC) - timedelta(seconds=901),
                                               next_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert _login(guard.client, "erik").status_code == 200
    with guard.sessions() as s:
        pair = s.execute(select(LoginThrottle).where(LoginThrottle.kind == PAIR, LoginThrottle.username == "erik")
                         ).scalar_one()
        assert (pair.failures, pair.next_at, pair.last_success_at is not None) == (0, None, True)


def test_parallel_wrong_logins_get_exactly_the_allowed_password_checks(guard: ApiHarness) -> None:
    add_user(guard.sessions, "fred", "viewer")
    before = _checks(guard)
    statuses: list[int] = []
    start = threading.Barrier(30)

    def attempt() -> None:
        with httpx.Client(base_url=guard.base_url, timeout=60) as c:
            start.wait()
            statuses.append(_login(c, "fred", "wrong-password").status_code)

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(statuses) == [401] * 5 + [429] * 25
    after = _checks(guard)
    assert after["failed"] - before.get("failed", 0) == 5
    assert len(_failures(guard, "fred")) == 5


def test_one_address_trying_many_names_is_slowed(guard: ApiHarness) -> None:
    add_user(guard.sessions, "gina", "viewer")
    with _from(guard, "127.0.0.3") as sprayer, _from(guard, "127.0.0.4") as elsewhere:
        for i in range(20):
            assert _login(sprayer, f"guess-{i}", "wrong-password").status_code == 401
        r = _login(sprayer, "gina")
        assert r.status_code == 429
        with guard.sessions() as s:
            assert s.execute(select(LoginThrottle.failures).where(
                LoginThrottle.kind == ADDRESS, LoginThrottle.client == "127.0.0.3")).scalar_one() == 20
        assert _login(elsewhere, "gina").status_code == 200


def test_guessing_from_many_addresses_slows_new_addresses_but_not_known_ones(guard: ApiHarness) -> None:
    add_user(guard.sessions, "hans", "viewer")
    with _from(guard, "127.0.0.1") as home:
        assert _login(home, "hans").status_code == 200
    for i in range(10):  # a botnet: two tries each from five addresses
        with _from(guard, f"127.0.1.{i // 2 + 1}") as bot:
            assert _login(bot, "hans", "wrong-password").status_code == 401
    with _from(guard, "127.0.2.1") as new_place, _from(guard, "127.0.0.1") as home:
        r = _login(new_place, "hans")
        assert r.status_code == 429, "the user's counter slows addresses hans never logged in from"
        assert _login(home, "hans").status_code == 200, "but not hans at home"
    with guard.sessions() as s:
        assert s.execute(select(LoginThrottle.failures).where(
            LoginThrottle.kind == USER, LoginThrottle.username == "hans")).scalar_one() == 10


def test_x_forwarded_for_from_a_peer_that_is_no_trusted_proxy_is_ignored(guard: ApiHarness) -> None:
    add_user(guard.sessions, "ines", "viewer")
    # no trusted proxies (the default): rotating the header changes nothing, and the real peer is what is kept
    for i in range(5):
        r = _login(guard.client, "ines", "wrong-password", **{"X-Forwarded-For": f"203.0.113.{i}"})
        assert r.status_code == 401
    assert _login(guard.client, "ines", **{"X-Forwarded-For": "203.0.113.99"}).status_code == 429
    assert _failures(guard, "ines") == ["127.0.0.1"] * 5


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(behind_proxy: ApiHarness) -> None:
    add_user(behind_proxy.sessions, "ines", "viewer")
    for _ in range(5):
        r = _login(behind_proxy.client, "ines", "wrong-password", **{"X-Forwarded-For": "198.51.100.7"})
        assert r.status_code == 401
    assert _login(behind_proxy.client, "ines", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    # a client further left in the chain cannot pose as another: the right-most untrusted hop counts
    spoofed = _login(behind_proxy.client, "ines", **{"X-Forwarded-For": "198.51.100.8, 198.51.100.7"})
    assert spoofed.status_code == 429
    assert _login(behind_proxy.client, "ines", **{"X-Forwarded-For": "198.51.100.8"}).status_code == 200
    assert _failures(behind_proxy, "ines") == ["198.51.100.7"] * 5


# --- credentials end at once -----------------------------------------------------------------------------------------


def test_a_password_change_ends_the_users_tokens(guard: ApiHarness) -> None:
    uid = add_user(guard.sessions, "jan", "operator")
    old = {"Authorization": f"Bearer {_login(guard.client, 'jan').json()['access_token']}"}
    assert guard.client.get("/api/v1/auth/me", headers=old).status_code == 200
    admin = guard.auth("admin")
    r = guard.client.patch(f"/api/v1/users/{uid}", headers=admin, json={"password": "a brand new passphrase"})
    assert r.status_code == 200
    refused = guard.client.get("/api/v1/auth/me", headers=old)
    assert refused.status_code == 401
    assert "password" in refused.json()["error"]["message"]
    assert _login(guard.client, "jan").status_code == 401
    new = {"Authorization": f"Bearer {_login(guard.client, 'jan', 'a brand new passphrase').json()['access_token']}"}
    assert guard.client.get("/api/v1/auth/me", headers=new).status_code == 200
    # other changes (the name) leave the tokens alone
    assert guard.client.patch(f"/api/v1/users/{uid}", headers=admin, json={"full_name": "Jan K."}).status_code == 200
    assert guard.client.get("/api/v1/auth/me", headers=new).status_code == 200


def test_disabling_an_admin_ends_their_tokens_and_the_api_keys_they_made(guard: ApiHarness) -> None:
    uid = add_user(guard.sessions, "kim", "admin")
    kim = {"Authorization": f"Bearer {_login(guard.client, 'kim').json()['access_token']}"}
    made = guard.client.post("/api/v1/api-keys", headers=kim, json={"name": "ERP", "role": "admin"}).json()
    by_key = guard.client.post("/api/v1/api-keys", headers={"X-API-Key": made["key"]},
                               json={"name": "ERP 2", "role": "viewer"}).json()  # a key made by kim's key
    others = guard.client.post("/api/v1/api-keys", headers=guard.auth("admin"),
                               json={"name": "other", "role": "viewer"}).json()
    for key in (made, by_key, others):
        assert guard.client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]}).status_code == 200
    assert guard.client.patch(f"/api/v1/users/{uid}", headers=guard.auth("admin"),
                              json={"active": False}).status_code == 200
    assert guard.client.get("/api/v1/auth/me", headers=kim).status_code == 401
    for key in (made, by_key):
        r = guard.client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]})
        assert r.status_code == 401, key
    assert guard.client.get("/api/v1/auth/me", headers={"X-API-Key": others["key"]}).status_code == 200
    with guard.sessions() as s:
        revoked = s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.resource == "api_keys", AuditEntry.action == "revoke")).scalar_one()
        assert revoked == 2
    # enabling kim again does not bring the old token or keys back
    assert guard.client.patch(f"/api/v1/users/{uid}", headers=guard.auth("admin"),
                              json={"active": True}).status_code == 200
    assert guard.client.get("/api/v1/auth/me", headers=kim).status_code == 401
    assert guard.client.get("/api/v1/auth/me", headers={"X-API-Key": made["key"]}).status_code == 401


def test_an_owner_disabled_outside_the_api_ends_the_key_on_the_next_request(guard: ApiHarness) -> None:
    uid = add_user(guard.sessions, "lea", "admin")
    lea = {"Authorization": f"Bearer {_login(guard.client, 'lea').json()['access_token']}"}
    key = guard.client.post("/api/v1/api-keys", headers=lea, json={"name": "cron", "role": "viewer"}).json()
    with guard.sessions() as s:
        assert s.execute(select(ApiKey.owner_user_id).where(ApiKey.prefix == key["prefix"])).scalar_one() == uid
    assert guard.client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]}).status_code == 200
    with guard.sessions.begin() as s:  # e.g. by hand in the database: no revocation, no token version
        s.execute(update(User).where(User.id == uid).values(active=False))
    r = guard.client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]})
    assert r.status_code == 401
    assert "disabled" in r.json()["error"]["message"]
