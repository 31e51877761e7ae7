"""Findings 6, 7 and the first half of 13 against a real ``floorgate central run`` on PostgreSQL.

Before the fix: a 200 MB POST without credentials to ``/api/v1/tickets`` got its 401 after 8.4 s while central's
RSS went 171 → 863 MiB; after 5 wrong passwords from anyone the right one got 429 for ~5 minutes from every
address; 30 parallel wrong logins got 14 password checks instead of 5; ``X-Forwarded-For`` was believed from any
loopback peer (rotating it bypassed the per-address limit, and the forged address was logged); a JWT kept working
after its user's password changed, and a disabled admin's API keys kept working.

Addresses: the server listens on 127.0.0.1, and a client may connect from any address of 127.0.0.0/8, so
"another machine" is a client bound to 127.0.0.2 (``httpx.HTTPTransport(local_address=…)``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.engine import make_engine, make_session_factory
from central.db.models import LoginAttempt
from tests.api_support import TEST_JWT_SECRET, add_api_key
from tests.fiscal_support import Register
from tests.procs import E2E_ADMIN_PASSWORD, Proc, central_yaml, create_admin, floorgate, wait_until
from tests.raw_http import stream_post
from tests.services import MosquittoServer, PostgresServer, free_port

pytestmark = pytest.mark.integration

MIB = 1 << 20
DELAY_S = 60  # the first wait after the free failures: longer than any test here takes
PASSWORD = "the users-own passphrase"  # noqa: S105 — a throwaway test database
LOGIN = "/api/v1/auth/token"


@dataclass
class Central:
    proc: Proc
    url: str
    admin: httpx.Client  # an admin API key
    sessions: sessionmaker[Session]

    def client(self, address: str = "127.0.0.1") -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, transport=httpx.HTTPTransport(local_address=address))

    def rss(self) -> int:
        assert self.proc.popen is not None
        return int(psutil.Process(self.proc.popen.pid).memory_info().rss)

    def metric(self, name: str, **labels: str) -> float:
        want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        for line in self.admin.get("/metrics").text.splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{want} not in /metrics")

    def add_user(self, username: str, role: str = "viewer") -> int:
        r = self.admin.post("/api/v1/users", json={"username": username, "password": PASSWORD, "role": role})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def failures_of(self, username: str) -> list[str | None]:
        with self.sessions() as s:
            return list(s.execute(select(LoginAttempt.client).where(LoginAttempt.username == username)).scalars())


def _login(client: httpx.Client, username: str, password: str = PASSWORD, **headers: str) -> httpx.Response:
    return client.post(LOGIN, data={"username": username, "password": password}, headers=headers)


def _run_central(tmp_path: Path, postgres: PostgresServer, mosquitto: MosquittoServer,
                 **api_extra: Any) -> Iterator[Central]:
    """``floorgate central run`` on a fresh PostgreSQL database, with an admin (``create-admin``) and an admin key."""
    name = "t" + uuid.uuid4().hex[:10]
    pg_url = postgres.create_database(name)
    if not mosquitto.is_running:
        mosquitto.start()
    api_port = free_port()
    api: dict[str, Any] = {"host": "127.0.0.1", "port": api_port, **api_extra}
    cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url, client_id=f"central-{name}",
                       api_port=api_port, api=api,
                       auth={"jwt_secret": TEST_JWT_SECRET, "login_delay_s": DELAY_S})
    migrated = floorgate(["central", "migrate", "--config", str(cfg)])
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    create_admin(cfg)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    url = f"http://127.0.0.1:{api_port}"
    admin = httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": add_api_key(sessions, "admin")})
    proc = Proc("central", ["central", "run", "--config", str(cfg)], tmp_path).start()
    try:
        wait_until("central's API", lambda: admin.get("/health").status_code == 200, timeout_s=60, procs=[proc])
        yield Central(proc, url, admin, sessions)
        proc.check_alive()
    finally:
        proc.stop()
        admin.close()
        engine.dispose()
        postgres.drop_database(name)


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
            mosquitto_server: MosquittoServer) -> Iterator[Central]:
    """One central for the tests of this file: each uses its own user names and client addresses."""
    yield from _run_central(tmp_path_factory.mktemp("central"), postgres_server, mosquitto_server)


@pytest.fixture
def central_behind_proxy(tmp_path: Path, postgres_server: PostgresServer,
                         mosquitto_server: MosquittoServer) -> Iterator[Central]:
    yield from _run_central(tmp_path, postgres_server, mosquitto_server, trusted_proxies=["127.0.0.1"])


# --- finding 6: bodies are bounded before any work -----------------------------------------------------------------


def test_a_200_mb_post_without_credentials_is_refused_413_at_once_and_never_held(central: Central) -> None:
    before = central.rss()
    for chunked in (False, True):
        answer = stream_post(central.url, "/api/v1/tickets", total=200 * MIB, chunked=chunked)
        assert answer.status == 413, answer
        assert answer.json()["error"]["code"] == "payload_too_large"
        assert answer.json()["error"]["field"] is None
        assert answer.seconds < 20, f"answered after {answer.seconds:.1f} s (chunked={chunked})"  # not after 200 MB
        assert answer.sent < 32 * MIB, f"{answer.sent} bytes went out before the answer (chunked={chunked})"
        central.proc.check_alive()
    grown = central.rss() - before
    assert grown < 40 * MIB, f"central's RSS grew by {grown / MIB:.0f} MiB for two refused 200 MB bodies"
    assert central.admin.get("/health").status_code == 200


def test_the_tse_export_upload_has_its_larger_limit_and_still_works(central: Central, tmp_path: Path) -> None:
    operator = {"X-API-Key": add_api_key(central.sessions, "operator"), "Content-Type": "application/x-tar"}
    register = Register(central.sessions, tmp_path / "tse")
    try:
        for amount in ("1.00", "2.50", "3.20"):
            register.signed(amount)
        export = register.tse.export()
    finally:
        register.close()
    r = central.admin.post("/api/v1/tse-exports", headers=operator, content=export,
                           params={"filename": "export.tar"})
    assert r.status_code == 201, r.text
    assert r.json()["report"]["valid"] is True
    # beyond api.max_body_bytes (1 MiB) but within api.max_upload_bytes (64 MiB): read, then judged as a TAR
    big = central.admin.post("/api/v1/tse-exports", headers=operator, content=b"\0" * (3 * MIB))
    assert (big.status_code, big.json()["error"]["code"]) == (422, "invalid_tse_export")
    over = stream_post(central.url, "/api/v1/tse-exports", total=200 * MIB, chunked=True, headers=operator)
    assert (over.status, over.json()["error"]["code"]) == (413, "payload_too_large")
    # the same body to a route with the ordinary limit
    assert stream_post(central.url, "/api/v1/tickets", total=3 * MIB, headers=operator).status == 413


# --- finding 7: the login throttle protects users instead of locking them out --------------------------------------


def test_guessing_from_one_address_does_not_lock_the_user_out_of_their_own(central: Central) -> None:
    central.add_user("mara")
    with central.client("127.0.0.1") as home, central.client("127.0.0.2") as attacker:
        assert _login(home, "mara").status_code == 200  # mara's known-good address
        statuses = [_login(attacker, "mara", "wrong-password").status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429]
        refused = _login(attacker, "mara")
        assert refused.status_code == 429, "the right password is not even checked from the guessing address"
        assert refused.headers["retry-after"] == str(DELAY_S)
        assert _login(home, "mara").status_code == 200, "mara still gets in from her own address"
    assert central.failures_of("mara") == ["127.0.0.2"] * 5  # five password checks, then only waiting


def test_30_parallel_wrong_logins_get_exactly_5_password_checks(central: Central) -> None:
    central.add_user("nils")
    checked = central.metric("floorgate_login_password_checks_total", outcome="failed")
    statuses: list[int] = []
    start = threading.Barrier(30)

    def attempt() -> None:
        with central.client("127.0.0.3") as c:
            start.wait()
            statuses.append(_login(c, "nils", "wrong-password").status_code)

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(statuses) == [401] * 5 + [429] * 25
    assert central.metric("floorgate_login_password_checks_total", outcome="failed") - checked == 5
    assert central.failures_of("nils") == ["127.0.0.3"] * 5
    assert central.metric("floorgate_login_throttled_total", kind="pair") >= 25


def test_a_forged_x_forwarded_for_is_ignored_and_never_logged(central: Central) -> None:
    central.add_user("olga")
    with central.client("127.0.0.4") as attacker:
        statuses = [_login(attacker, "olga", "wrong-password", **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                    for i in range(8)]
        assert statuses == [401] * 5 + [429] * 3, "rotating the header does not give new tries"
        assert _login(attacker, "olga", **{"X-Forwarded-For": "203.0.113.200"}).status_code == 429
    assert central.failures_of("olga") == ["127.0.0.4"] * 5
    log = central.proc.log()
    assert "failed login for 'olga' from 127.0.0.4" in log
    assert "203.0.113." not in log


def test_x_forwarded_for_from_a_trusted_proxy_is_the_client(central_behind_proxy: Central) -> None:
    central = central_behind_proxy
    central.add_user("pia")
    with central.client("127.0.0.1") as proxy:
        for _ in range(5):
            assert _login(proxy, "pia", "wrong-password", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 401
        assert _login(proxy, "pia", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 429
        assert _login(proxy, "pia", **{"X-Forwarded-For": "198.51.100.8"}).status_code == 200
    with central.client("127.0.0.5") as direct:  # not a proxy: its header is not believed (.7 would be 429)
        assert _login(direct, "pia", "wrong-password", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 401
    assert central.failures_of("pia") == ["198.51.100.7"] * 5 + ["127.0.0.5"]
    assert "failed login for 'pia' from 198.51.100.7" in central.proc.log()


# --- finding 13 (first half): credentials end at once ---------------------------------------------------------------


def test_a_token_from_before_a_password_change_is_refused(central: Central) -> None:
    uid = central.add_user("quinn", "operator")
    token = _login(central.admin, "quinn").json()["access_token"]
    me = {"Authorization": f"Bearer {token}"}
    assert central.admin.get("/api/v1/auth/me", headers=me).status_code == 200
    changed = central.admin.patch(f"/api/v1/users/{uid}", json={"password": "quinn's new passphrase"})
    assert changed.status_code == 200
    r = httpx.get(f"{central.url}/api/v1/auth/me", headers=me)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "not_authenticated")


def test_a_disabled_admins_api_key_is_refused_at_once(central: Central) -> None:
    with httpx.Client(base_url=central.url, timeout=60) as c:
        r = _login(c, "admin", E2E_ADMIN_PASSWORD)
        assert r.status_code == 200, r.text
        admin_token = {"Authorization": f"Bearer {r.json()['access_token']}"}
        key = c.post("/api/v1/api-keys", headers=admin_token, json={"name": "ERP", "role": "admin"}).json()["key"]
        assert c.get("/api/v1/users", headers={"X-API-Key": key}).status_code == 200
        uid = next(u["id"] for u in central.admin.get("/api/v1/users").json()["items"] if u["username"] == "admin")
        disabled_at = time.monotonic()
        assert central.admin.patch(f"/api/v1/users/{uid}", json={"active": False}).status_code == 200
        r = c.get("/api/v1/users", headers={"X-API-Key": key})
        assert r.status_code == 401, f"{time.monotonic() - disabled_at:.2f} s after disabling"
        assert c.get("/api/v1/users", headers=admin_token).status_code == 401
