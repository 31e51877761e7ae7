"""Shared fixtures: throwaway real servers (started on first use, one per session) and per-test isolation.

The server classes live in ``services.py``; see ``tests/README.md`` for the layout and the fixtures.
A missing server binary makes the requesting test fail with the Debian package to install — never a skip.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.api_support import ApiHarness, build_api
from tests.services import InfluxServer, MosquittoServer, PostgresServer

# Property-based tests (tests/*/test_fuzz_*.py, README "Fuzzing"): a modest budget in `make test` ("ci"), a long one
# in `make fuzz` ("fuzz"); HYPOTHESIS_PROFILE picks one. No deadline: the machine is shared and timing is not the point.
settings.register_profile("ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", max_examples=1_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """A test that runs the CLI in-process (``floorgate_cli.main``) makes the root logger write to the sys.stderr
    of that moment — pytest's capture of that test, closed after it. Put the root logger back, or every later log
    line from a thread that outlives its test (an SMTP receiver, an ingest thread) ends in "--- Logging error ---"."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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



# ``make test`` runs the tests on two pytest-xdist workers, by scope: every test of a file on one worker (its module
# fixtures are built once), and the Ansible and dashboard tests as one scope each (they share a plant built once per
# session, and two workers must not boot containers or do the dashboards' data run at the same time). A scheduler
# of our own because xdist's ``--dist loadgroup`` does not group under pytest 9.2 (it rewrites ``item._nodeid``,
# which pytest no longer reads).
_SHARED_PLANT_DIRS = ("tests/ansible/", "tests/dashboards/")


# the longest units first, so that the quick ones fill the gaps at the end (and no long file starts last)
_FIRST = ("tests/ansible/", "tests/dashboards/", "tests/faults/", "tests/integration/test_api_fuzz.py", "tests/e2e/",
          "tests/hostile/", "tests/integration/")  # test_api_fuzz: schemathesis against a live central, ~2 min


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        where = item.nodeid
        return next((i for i, d in enumerate(_FIRST) if where.startswith(d)), len(_FIRST))

    items.sort(key=rank)  # stable: within a folder, the order of collection


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ByFileAndPlant(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((d for d in _SHARED_PLANT_DIRS if nodeid.startswith(d)), nodeid.split("::", 1)[0])

    return ByFileAndPlant(config, log)
