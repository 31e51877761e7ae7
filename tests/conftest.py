"""Shared fixtures: throwaway real servers (started on first use, one per session) and per-test isolation.

The server classes live in ``services.py``; see ``tests/README.md`` for the layout and the fixtures.
A missing server binary makes the requesting test fail with the Debian package to install — never a skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.api_support import ApiHarness, build_api
from tests.services import InfluxServer, MosquittoServer, PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto_server() -> Iterator[MosquittoServer]:
    with MosquittoServer() as server:
        yield server


@pytest.fixture(scope="session")
def influx_server() -> Iterator[InfluxServer]:
    with InfluxServer() as server:
        yield server


@pytest.fixture
def unique_id() -> str:
    """A short random id for node ids, topics, database names: ``t`` + 10 hex digits."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def pg_url(postgres_server: PostgresServer, unique_id: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh database, dropped after the test."""
    url = postgres_server.create_database(unique_id)
    yield url
    postgres_server.drop_database(unique_id)


@pytest.fixture
def influx_db(influx_server: InfluxServer, unique_id: str) -> Iterator[str]:
    """Name of a fresh InfluxDB database, dropped after the test (the server is started again if it was stopped)."""
    if not influx_server.is_running:
        influx_server.start()
    influx_server.create_database(unique_id)
    yield unique_id
    if influx_server.is_running:
        influx_server.drop_database(unique_id)


@pytest.fixture
def mosquitto(mosquitto_server: MosquittoServer) -> MosquittoServer:
    """The session's broker, running: started again if an earlier test stopped or killed it."""
    if not mosquitto_server.is_running:
        mosquitto_server.start()
    return mosquitto_server


@pytest.fixture
def api(pg_url: str, influx_server: InfluxServer, influx_db: str) -> Iterator[ApiHarness]:
    """Central's API app on a fresh migrated Postgres database and a fresh InfluxDB database, with a TestClient;
    ``api.auth(role)`` gives the header of a logged-in user of that role (tests/api_support.py)."""
    yield from build_api(pg_url, {"kind": "influxdb-v1", "url": influx_server.url, "database": influx_db})
