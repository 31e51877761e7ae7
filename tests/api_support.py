"""Central's API on real Postgres and InfluxDB for tests: the app, people of every role and API keys.

    def test_x(api: ApiHarness) -> None:
        r = api.client.get("/api/v1/weighings", headers=api.auth("viewer"))

``api`` (fixture in tests/conftest.py) builds the app on a fresh Postgres database (migrated) and a fresh InfluxDB
database and serves it with uvicorn on 127.0.0.1 (a random port, in a thread): ``api.client`` is an
``httpx.Client`` talking real HTTP to it; ``auth(role)`` logs a user of that role in through ``/api/v1/auth/token``
— the real flow — once, and returns the header; ``api_key(role)`` creates an API key the way the API does.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from central.api.app import create_app
from central.api.security import ROLES, hash_secret, new_api_key
from central.config import CentralSettings, parse_settings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import ApiKey, User
from central.metrics import MetricsStore, open_store

TEST_JWT_SECRET = "test-secret-" + "0123456789abcdef" * 3
PASSWORD = "correct horse battery staple"  # noqa: S105 — test users only


def settings_for(database_url: str, metrics: dict[str, Any], **extra: Any) -> CentralSettings:
    data: dict[str, Any] = {"database_url": database_url, "metrics": metrics,
                            "auth": {"jwt_secret": TEST_JWT_SECRET}, **extra}
    return parse_settings(data, source="test settings")


def add_user(sessions: sessionmaker[Session], username: str, role: str, password: str = PASSWORD,
             *, active: bool = True) -> int:
    now = datetime.now(UTC)
    with sessions.begin() as s:
        user = User(username=username, password_hash=hash_secret(password), role=role, active=active,
                    created_at=now, updated_at=now)
        s.add(user)
        s.flush()
        return user.id


def add_api_key(sessions: sessionmaker[Session], role: str, name: str = "test key") -> str:
    key, prefix, secret_hash = new_api_key()
    with sessions.begin() as s:
        s.add(ApiKey(name=name, prefix=prefix, secret_hash=secret_hash, role=role, created_by="test",
                     created_at=datetime.now(UTC)))
    return key


@dataclass
class ApiHarness:
    app: FastAPI
    client: httpx.Client
    base_url: str
    settings: CentralSettings
    engine: Engine
    sessions: sessionmaker[Session]
    store: MetricsStore
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)
    auth_names: dict[str, str] = field(default_factory=dict)  # role → the user name auth(role) logged in

    def auth(self, role: str) -> dict[str, str]:
        """Bearer header of a user with ``role`` (created and logged in on first use)."""
        if role not in self._headers:
            name = f"{role}-{secrets.token_hex(3)}"
            self.auth_names[role] = name
            add_user(self.sessions, name, role)
            r = self.client.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
            assert r.status_code == 200, r.text
            self._headers[role] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        return self._headers[role]

    def api_key(self, role: str) -> dict[str, str]:
        return {"X-API-Key": add_api_key(self.sessions, role)}


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot; pytest owns the signals
        pass


def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (random port) in a thread; yields its base URL, stops it afterwards."""
    from tools.devservers import free_port

    port = free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                    lifespan="off", proxy_headers=False))  # as central.runner serves it
    thread = threading.Thread(target=server.run, name=f"api-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test API server on 127.0.0.1:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def build_api(database_url: str, metrics: dict[str, Any], **extra: Any) -> Iterator[ApiHarness]:
    settings = settings_for(database_url, metrics, **extra)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    store = open_store(settings.metrics)
    store.ensure_ready()
    app = create_app(settings, sessions=sessions, store=store)
    for base_url in serve(app):
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield ApiHarness(app=app, client=client, base_url=base_url, settings=settings, engine=engine,
                             sessions=sessions, store=store)
    store.close()
    engine.dispose()


__all__ = ["ROLES", "ApiHarness", "add_api_key", "add_user", "build_api", "settings_for"]
