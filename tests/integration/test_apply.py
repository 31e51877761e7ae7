"""Applying batches exactly once — one suite run against both database backends (SQLite and real Postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Device, InboxEntry, QuarantineEntry, StreamMark, Weighing
from central.ingest.apply import BatchReplayed, apply_batch
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
        assert [(w.gross_as_delivered, w.unit) for w in rows] == [("24560", "kg"), ("18420.5", "kg")]
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


def test_a_device_kind_as_long_as_a_profile_name_may_be_is_stored(sessions: sessionmaker[Session]) -> None:
    """A device's kind is its profile's name, up to 64 characters (the profile schema); devices.kind was 32 wide and
    PostgreSQL refused the whole health batch."""
    kind = "k" * 64
    status = Record(seq=1, record_id="s-1", kind="device_status", ts_ns=1_700_000_000_000_000_001, device="silo-7",
                    data={"status": "online", "reason": None, "device_kind": kind})
    r = apply_batch(sessions, batch(status, stream="health"))
    assert (r.acked_seq, r.rejected) == (1, [])
    with sessions() as s:
        assert s.execute(select(Device.kind).where(Device.device_id == "silo-7")).scalar_one() == kind


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


# -- ranges (quota thinning / loss records), replayed batch numbers ---------------------------------------------------

def reading(seq: int, from_seq: int | None = None, kind: str = "reading") -> Record:
    data: dict[str, object] = {"values": {"v": float(seq)}} if kind == "reading" else {"reason": "disk quota"}
    return Record(seq=seq, record_id=f"r-{seq}", kind=kind, ts_ns=1_700_000_000_000_000_000 + seq,
                  device="meter-1" if kind == "reading" else "", data=data, from_seq=from_seq)


def mark(sessions: sessionmaker[Session], stream: str = "readings") -> StreamMark:
    with sessions() as s:
        return s.execute(select(StreamMark).where(StreamMark.node_id == "mill-01", StreamMark.stream == stream)
                         ).scalar_one()


def test_a_record_standing_for_a_range_acks_to_its_seq_and_counts_what_central_lacks(
        sessions: sessionmaker[Session]) -> None:
    r = apply_batch(sessions, batch(reading(1), stream="readings"))
    assert (r.acked_seq, r.lost) == (1, 0)
    r = apply_batch(sessions, batch(reading(3), stream="readings"))  # 2 never arrived (yet)
    assert (r.acked_seq, r.held) == (1, (3,))
    # the node thinned 2..5 into the sample seq 5: central had 3, so 2 and 4 are lost
    r = apply_batch(sessions, batch(reading(5, from_seq=2), reading(6), stream="readings"))
    assert (r.applied, r.duplicates, r.conflicts) == (2, 0, [])
    assert r.acked_seq == 6
    assert r.held == ()
    assert r.lost == 2
    m = mark(sessions)
    assert (m.acked_seq, m.lost) == (6, 2)
    with sessions() as s:
        rows = s.execute(select(InboxEntry.seq, InboxEntry.first_seq).where(InboxEntry.stream == "readings")
                         .order_by(InboxEntry.seq)).all()
    assert [tuple(row) for row in rows] == [(1, None), (3, None), (5, 2), (6, None)]
    # sent again (no ack arrived): a duplicate, nothing lost twice
    r = apply_batch(sessions, batch(reading(5, from_seq=2), reading(6), stream="readings"))
    assert (r.applied, r.duplicates, r.lost, r.acked_seq) == (0, 2, 0, 6)
    assert mark(sessions).lost == 2


def test_a_loss_record_counts_every_seq_it_stands_for(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(reading(1), stream="readings"))
    r = apply_batch(sessions, batch(reading(5, from_seq=2, kind="loss"), reading(6), stream="readings"))
    assert (r.acked_seq, r.lost, r.applied) == (6, 4, 2)  # 2, 3, 4 and 5 itself
    assert count(sessions, InboxEntry) == 3


def test_a_loss_record_for_a_seq_central_holds_is_a_duplicate_not_a_conflict(
        sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(reading(1), reading(2), reading(3), stream="readings"))
    # the node gave up seq 2 after sending it (no ack yet): a single loss record, no range
    r = apply_batch(sessions, batch(reading(2, kind="loss"), stream="readings"))
    assert (r.duplicates, r.conflicts, r.applied, r.lost, r.acked_seq) == (1, [], 0, 0, 3)
    # and a range loss record over seqs central all holds
    r = apply_batch(sessions, batch(reading(3, from_seq=1, kind="loss"), stream="readings"))
    assert (r.duplicates, r.conflicts, r.applied, r.lost, r.acked_seq) == (1, [], 0, 0, 3)
    assert count(sessions, QuarantineEntry) == 0
    m = mark(sessions)
    assert (m.lost, m.records, m.duplicates) == (0, 3, 2)


def test_an_old_batch_number_that_brings_nothing_new_is_a_replay(sessions: sessionmaker[Session]) -> None:
    old = replace(batch(weighing(1)), bno=(1 << 32) + 1)
    newer = replace(batch(weighing(2)), bno=(1 << 32) + 2)
    apply_batch(sessions, old)
    apply_batch(sessions, newer)
    before = mark(sessions, "business")
    with pytest.raises(BatchReplayed) as info:
        apply_batch(sessions, old)
    assert "replayed batch: bno 4294967297 is older than bno 4294967298" in info.value.reason
    after = mark(sessions, "business")
    assert (after.acked_seq, after.records, after.duplicates, after.last_bno) == (
        before.acked_seq, before.records, before.duplicates, before.last_bno)
    assert count(sessions, InboxEntry) == 2
    assert count(sessions, Weighing) == 2
    # the same batch number again is MQTT delivering twice: a plain duplicate
    r = apply_batch(sessions, newer)
    assert (r.applied, r.duplicates, r.acked_seq) == (0, 1, 2)
    assert mark(sessions, "business").duplicates == before.duplicates + 1
    # an old batch number with something new is applied (a resend after a restart, say)
    r = apply_batch(sessions, replace(batch(weighing(2), weighing(3)), bno=(1 << 32) + 1))
    assert (r.applied, r.duplicates, r.acked_seq) == (1, 1, 3)
    assert mark(sessions, "business").last_bno == (1 << 32) + 2  # never moves back
    # without a batch number (bno 0, older nodes) nothing counts as a replay
    assert apply_batch(sessions, batch(weighing(1))).duplicates == 1


def test_seqs_held_beyond_a_gap_are_acked_once_a_range_fills_it(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(reading(1), stream="readings"))
    r = apply_batch(sessions, batch(reading(7), reading(8), stream="readings"))
    assert (r.acked_seq, r.held) == (1, (7, 8))
    r = apply_batch(sessions, batch(reading(10), stream="readings"))
    assert (r.acked_seq, r.held) == (1, (7, 8, 10))
    # 2..6 were thinned into the sample seq 6: the gap closes, the ack runs on through 7 and 8 up to the next gap
    r = apply_batch(sessions, batch(reading(6, from_seq=2), stream="readings"))
    assert (r.acked_seq, r.held, r.lost) == (8, (10,), 4)
    # 9 was dropped: its loss record closes the last gap
    r = apply_batch(sessions, batch(reading(9, kind="loss"), stream="readings"))
    assert (r.acked_seq, r.held, r.lost) == (10, (), 1)
    assert mark(sessions).lost == 5


def test_a_held_range_record_is_acked_when_the_mark_reaches_its_first_seq(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(reading(1), stream="readings"))
    r = apply_batch(sessions, batch(reading(6, from_seq=3), stream="readings"))  # 2 is missing before it
    assert (r.acked_seq, r.held) == (1, (6,))
    r = apply_batch(sessions, batch(reading(2), stream="readings"))
    assert (r.acked_seq, r.held) == (6, ())


def test_seqs_a_held_range_record_stands_for_are_not_counted_lost_twice(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(reading(1), stream="readings"))
    # the thinned sample 6 stands for 3..6; 2 has not arrived: held, and 3, 4, 5 are lost
    r = apply_batch(sessions, batch(reading(6, from_seq=3), stream="readings"))
    assert (r.acked_seq, r.held, r.lost) == (1, (6,), 3)
    # then the node dropped its oldest records, 2..10, to its quota: one loss record for the range
    r = apply_batch(sessions, batch(reading(10, from_seq=2, kind="loss"), stream="readings"))
    assert r.acked_seq == 10
    # newly lost: 2, 7, 8, 9 and 10 — not 3, 4, 5 again (they were counted with seq 6)
    assert r.lost == 5, (
        f"central counts {r.lost} seqs lost for the loss record 2..10, but only 2, 7, 8, 9, 10 are newly lost: "
        "the held record seq 6 stands for 3..6 (InboxEntry.first_seq 3), so 3..5 were counted already")
    assert mark(sessions).lost == 8  # 2, 3, 4, 5, 7, 8, 9, 10: every seq but 1 and 6


def test_a_thinned_sample_that_central_holds_is_a_duplicate(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(reading(1), reading(2), reading(3), stream="readings"))
    # no ack reached the node, which then thinned 1..3 into the sample 3: the same record, now standing for a range
    r = apply_batch(sessions, batch(reading(3, from_seq=1), stream="readings"))
    assert (r.duplicates, r.conflicts, r.lost, r.acked_seq) == (1, [], 0, 3)


def test_a_range_record_does_not_hide_a_conflicting_body(sessions: sessionmaker[Session]) -> None:
    apply_batch(sessions, batch(reading(1), reading(2), reading(3), stream="readings"))
    other = replace(reading(3, from_seq=1), data={"values": {"v": 999.0}})  # seq 3, but another sample
    r = apply_batch(sessions, batch(other, stream="readings"))
    assert r.conflicts == [3], (
        f"seq 3 resent with another body but carrying from_seq counts as {r.duplicates} duplicate(s) and "
        f"{len(r.conflicts)} conflict(s): apply_batch treats any record with from_seq set as a resend, whatever "
        "its digest")
    # a business record may carry from_seq == seq (decode_batch accepts it): it must not hide a conflict either
    apply_batch(sessions, batch(weighing(1, "1000")))
    r = apply_batch(sessions, batch(replace(weighing(1, "9999"), from_seq=1)))
    assert r.conflicts == [1]
    with sessions() as s:
        assert [w.gross_as_delivered for w in s.execute(select(Weighing)).scalars()] == ["1000"]
