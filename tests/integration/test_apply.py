"""Applying batches exactly once — one suite run against both database backends (SQLite and real Postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Device, InboxEntry, QuarantineEntry, Weighing
from central.ingest.apply import apply_batch
from central.metrics import InfluxV1Store, MetricsStoreError, SQLiteMetricsStore
from sync.envelope import Batch, Record

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'central.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteMetricsStore]:
    s = SQLiteMetricsStore(tmp_path / "metrics.db")
    s.ensure_ready()
    yield s
    s.close()


def weighing(seq: int, gross: str = "24560", **extra: object) -> Record:
    return Record(seq=seq, record_id=f"w-{seq}", kind="weighing", ts_ns=1_700_000_000_000_000_000 + seq,
                  device="bridge-1", data={"gross": gross, "unit": "kg", **extra})


def batch(*records: Record, stream: str = "business", epoch: str = "e1") -> Batch:
    return Batch(node="mill-01", epoch=epoch, stream=stream, records=records)


def count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def test_a_resent_batch_changes_nothing(sessions: sessionmaker[Session]) -> None:
    b = batch(weighing(1), weighing(2, "18420.5"))
    first = apply_batch(sessions, b)
    again = apply_batch(sessions, b)
    assert (first.applied, first.acked_seq) == (2, 2)
    assert (again.applied, again.duplicates, again.acked_seq) == (0, 2, 2)
    with sessions() as s:
        rows = s.execute(select(Weighing).order_by(Weighing.seq)).scalars().all()
        assert [(w.gross_as_delivered, w.decimals, w.unit) for w in rows] == [
            ("24560", 0, "kg"), ("18420.5", 1, "kg")]
    assert count(sessions, InboxEntry) == 2


def test_gap_holds_then_fills(sessions: sessionmaker[Session]) -> None:
    r = apply_batch(sessions, batch(weighing(3), weighing(4)))
    assert (r.acked_seq, r.held) == (0, (3, 4))
    r = apply_batch(sessions, batch(weighing(1)))
    assert (r.acked_seq, r.held) == (1, (3, 4))
    r = apply_batch(sessions, batch(weighing(2)))
    assert (r.acked_seq, r.held) == (4, ())


def test_same_seq_with_another_body_is_a_conflict_never_an_overwrite(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(weighing(1, "1000")))
    r = apply_batch(sessions, batch(weighing(1, "9999"), weighing(2)))
    assert r.conflicts == [1]
    assert r.applied == 1
    with sessions() as s:
        assert [w.gross_as_delivered for w in s.execute(select(Weighing).order_by(Weighing.seq)).scalars()] == [
            "1000", "24560"]


def test_epochs_are_kept_apart(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(weighing(1), epoch="old"))
    r = apply_batch(sessions, batch(Record(1, "w-new", "weighing", 1, "bridge-1", {"gross": "5", "unit": "kg"}),
                                    epoch="new"))
    assert (r.applied, r.acked_seq) == (1, 1)
    assert count(sessions, Weighing) == 2


def test_a_bad_record_is_quarantined_and_does_not_block_the_stream(sessions: sessionmaker[Session]) -> None:
    r = apply_batch(sessions, batch(weighing(1), weighing(2, "heavy"), weighing(3)))
    assert r.rejected == [2]
    assert r.acked_seq == 3
    assert count(sessions, Weighing) == 2
    with sessions() as s:
        q = s.execute(select(QuarantineEntry)).scalar_one()
        assert "data.gross: expected a decimal number, got 'heavy'" in q.reason
        assert b'"heavy"' in q.payload


def test_readings_go_to_the_metrics_store_once(sessions: sessionmaker[Session], store: SQLiteMetricsStore) -> None:
    rec = Record(1, "r-1", "reading", 1_700_000_000_000_000_000, "meter-1",
                 {"values": {"voltage_l1": 230.1, "frequency": 50.0}, "units": {"voltage_l1": "V"}})
    b = batch(rec, stream="readings")
    assert apply_batch(sessions, b, write_points=store.write).points == 2
    assert apply_batch(sessions, b, write_points=store.write).points == 0
    got = store.query("readings", tags={"device": "meter-1", "point": "voltage_l1"})
    assert [(p.fields["value"], p.tags["unit"]) for p in got] == [(230.1, "V")]
    with sessions() as s:
        assert s.get(Device, ("mill-01", "meter-1")) is not None


def test_metrics_store_down_means_nothing_applied_and_no_ack(sessions: sessionmaker[Session]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    down = InfluxV1Store(f"http://127.0.0.1:{closed_port}", "floorgate", timeout_s=0.5)
    rec = Record(1, "r-1", "reading", 1_700_000_000_000_000_000, "meter-1", {"values": {"v": 1.0}})
    with pytest.raises(MetricsStoreError) as info:
        apply_batch(sessions, batch(rec, stream="readings"), write_points=down.write)
    assert info.value.retryable
    assert count(sessions, InboxEntry) == 0
    # business records do not touch the store at all
    assert apply_batch(sessions, batch(weighing(1)), write_points=down.write).acked_seq == 1
