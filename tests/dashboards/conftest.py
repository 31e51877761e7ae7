"""Fixtures of the Grafana dashboard tests: one end-to-end run per session (``plant.py``) and the read-only
PostgreSQL role Grafana uses, made by the shipped ``grafana/postgres-grafana-reader.sql``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.dashboards.plant import REPO, Plant
from tools.devservers.influx import InfluxServer
from tools.devservers.mosquitto import MosquittoServer
from tools.devservers.postgres import PostgresServer

READER_SQL = REPO / "grafana" / "postgres-grafana-reader.sql"


@pytest.fixture(scope="session")
def dashboard_plant(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
                    mosquitto_server: MosquittoServer, influx_server: InfluxServer) -> Iterator[Plant]:
    """The end-to-end run's data in PostgreSQL, InfluxDB and Prometheus (its processes already stopped)."""
    if not mosquitto_server.is_running:
        mosquitto_server.start()
    if not influx_server.is_running:
        influx_server.start()
    suffix = uuid.uuid4().hex[:8]
    plant = Plant(tmp=tmp_path_factory.mktemp("dashboards"), postgres=postgres_server, mosquitto=mosquitto_server,
                  influx=influx_server, node=f"gf-{suffix}", db_name=f"gf{suffix}")
    try:
        yield plant.run()
    finally:
        plant.close()


@pytest.fixture(scope="session")
def reader_url(dashboard_plant: Plant) -> str:
    """libpq URL of the run's database as ``grafana_reader``, after running the shipped SQL file (twice: it must
    be repeatable) as the owner of the tables."""
    with psycopg.connect(dashboard_plant.pg_url, autocommit=True) as conn:
        for _ in range(2):
            conn.execute(Path(READER_SQL).read_text(encoding="utf-8"))
    return dashboard_plant.pg_url.replace("postgresql://postgres@", "postgresql://grafana_reader@", 1)
