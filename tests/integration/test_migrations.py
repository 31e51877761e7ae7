"""Central's schema comes from Alembic: upgrade → downgrade → upgrade on real Postgres, data kept where a migration
does not drop it, and the models agree with what the migrations build."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Article, Base, Weighing

pytestmark = pytest.mark.integration

ERP_TABLES = {"sites", "articles", "partners", "lots", "tickets", "tse_transactions", "users", "api_keys",
              "login_attempts", "audit_log", "commands", "alerts", "alert_notifications", "alibi_entries",
              "tse_exports", "certificates"}


def _tables(engine) -> set[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_upgrade_downgrade_upgrade_round_trip_on_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == "0010"
        assert _tables(engine) >= ERP_TABLES
        sessions = make_session_factory(engine)
        now = datetime.now(UTC)
        with sessions.begin() as s:  # a record of 0001, which the ERP migration must leave alone
            s.add(Weighing(node_id="mill-01", record_id="w-1", epoch="e1", seq=1, device_id="bridge-1",
                           gross=Decimal("24560"), unit="kg", weighed_at=now, received_at=now))
            s.add(Article(code="WHEAT", name="Weizen", unit="kg", price=Decimal("0.2150"), currency="EUR",
                          active=True, created_at=now, updated_at=now))

        migrate.downgrade(engine, "0002")
        assert migrate.current_revision(engine) == "0002"
        assert not ERP_TABLES & _tables(engine)
        with engine.connect() as conn:
            cols = {c["name"] for c in inspect(conn).get_columns("nodes")}
            assert "site_id" not in cols
            assert conn.execute(text("SELECT gross FROM weighings")).scalar_one() == Decimal("24560")

        migrate.downgrade(engine, "base")
        assert "weighings" not in _tables(engine)
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == "0010"
        assert _tables(engine) >= ERP_TABLES
        with sessions() as s:
            assert s.execute(select(Weighing)).scalars().all() == []  # base dropped everything, as it says
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_money_and_weights_are_exact_decimals_and_times_carry_their_zone(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            cols = {c["name"]: c for c in inspect(conn).get_columns("tickets")}
            for name in ("gross", "tare", "net"):  # legal values as delivered: the instrument's digits, as text
                assert str(cols[name]["type"]) == "VARCHAR(40)"
            assert str(cols["created_at"]["type"]) == "TIMESTAMP"
            assert cols["created_at"]["type"].timezone is True
            price = {c["name"]: c for c in inspect(conn).get_columns("articles")}["price"]
            assert str(price["type"]) == "NUMERIC(18, 6)"
    finally:
        engine.dispose()


def test_0010_keeps_the_weights_held_with_the_decimals_their_scale_sent(pg_url: str) -> None:
    engine = make_engine(pg_url)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        migrate.upgrade(engine, "0009")
        with engine.begin() as conn:
            for rid, gross, tare, net, decimals in (("w1", "24560", "8420", "16140", 0),
                                                    ("w2", "100.00", None, None, 2), ("w3", None, "8.4", "16.1", 1)):
                conn.execute(text(
                    "INSERT INTO weighings (node_id, record_id, epoch, seq, device_id, gross, tare, net, decimals, "
                    "unit, weighed_at, received_at) VALUES ('mill-01', :rid, 'e', 1, 'b', :g, :t, :n, :d, 'kg', "
                    ":now, :now)"), {"rid": rid, "g": gross, "t": tare, "n": net, "d": decimals, "now": now})
            conn.execute(text("INSERT INTO tickets (number, direction, status, gross, tare, net, unit, created_at, "
                              "updated_at) VALUES ('T-1', 'in', 'complete', 24560, 8420.5, 16139.5, 'kg', :now, :now)"),
                         {"now": now})
        migrate.upgrade(engine)
        with engine.connect() as conn:
            got = conn.execute(text("SELECT record_id, gross, tare, net FROM weighings ORDER BY record_id")).all()
            assert [tuple(r) for r in got] == [("w1", "24560", "8420", "16140"), ("w2", "100.00", None, None),
                                               ("w3", None, "8.4", "16.1")]
            assert tuple(conn.execute(text("SELECT gross, tare, net FROM tickets")).one()) == (
                "24560", "8420.5", "16139.5")
            assert conn.execute(text("SELECT count(*) FROM node_keys")).scalar_one() == 0
    finally:
        engine.dispose()


def test_0005_keeps_the_tse_transactions_of_0004_and_takes_failed_sales(pg_url: str) -> None:
    engine = make_engine(pg_url)
    row = {"node_id": "shop-1", "record_id": "r1", "tse_serial": "3c1f" * 16, "client_id": "KASSE-01",
           "tx_number": 7, "signature_counter": 14, "process_type": "Kassenbeleg-V1",
           "process_data": "Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Bar", "started_at": datetime(2025, 3, 4, tzinfo=UTC),
           "finished_at": datetime(2025, 3, 4, 0, 0, 5, tzinfo=UTC), "signature": "c2ln", "algorithm":
           "ecdsa-plain-SHA256", "time_format": "unixTime", "currency": "EUR", "tse_failed": False,
           "verified": "pending", "received_at": datetime(2025, 3, 4, 1, tzinfo=UTC)}
    insert = text(f"INSERT INTO tse_transactions ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})")
    try:
        migrate.upgrade(engine, "0004")
        with engine.begin() as conn:
            conn.execute(insert, row)
        migrate.upgrade(engine)
        with engine.begin() as conn:
            cols = {c["name"]: c for c in inspect(conn).get_columns("tse_transactions")}
            assert {"start_counter", "public_key", "log_time", "receipt_id", "tse_error", "device_id", "gap_before",
                    "gap_since"} <= set(cols)
            assert cols["signature"]["nullable"]
            assert cols["tx_number"]["nullable"]
            assert conn.execute(text("SELECT tx_number, signature FROM tse_transactions")).one() == (7, "c2ln")
            conn.execute(insert, {**row, "record_id": "r2", "tx_number": None, "signature_counter": None,
                                  "signature": None, "algorithm": None, "tse_failed": True, "verified": "tse_failed"})
            conn.execute(text("DELETE FROM tse_transactions WHERE record_id = 'r2'"))  # 0004 cannot hold it
        migrate.downgrade(engine, "0004")
        assert "tse_exports" not in _tables(engine)
        with engine.connect() as conn:
            cols = {c["name"]: c for c in inspect(conn).get_columns("tse_transactions")}
            assert "start_counter" not in cols
            assert not cols["signature"]["nullable"]
            assert conn.execute(text("SELECT tx_number, signature FROM tse_transactions")).one() == (7, "c2ln")
    finally:
        engine.dispose()
