"""The SQLite outbox: gap-free sequences per stream, durable across reopen, released only by an ack."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import OutboxError, OutboxFull
from edge.store import schema
from edge.store.outbox import NewRecord, Outbox, read_stats
from edge.store.schema import MIGRATIONS, SCHEMA_VERSION


def rec(i: int = 0) -> NewRecord:
    return NewRecord(kind="weighing", device="bridge-1", data={"gross": str(1000 + i), "unit": "kg"})


def test_sequences_are_per_stream_and_survive_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", node_id="n1")
    a = box.append("business", [rec(1), rec(2)])
    b = box.append("readings", [rec(3)])
    c = box.append("business", [rec(4)])
    assert [r.seq for r in a + c] == [1, 2, 3]
    assert [r.seq for r in b] == [1]
    epoch = box.epoch
    box.close()
    again = Outbox(tmp_path / "o.db", node_id="n1")
    assert again.epoch == epoch
    assert [r.data["gross"] for r in again.pending("business", after_seq=0, limit=10)] == ["1001", "1002", "1004"]
    assert again.append("business", [rec(5)])[0].seq == 4
    # the file is in WAL mode and plain sqlite can read it (sqlite-utils too)
    assert sqlite3.connect(tmp_path / "o.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ack_releases_records_and_is_monotonic(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", node_id="n1")
    box.append("business", [rec(i) for i in range(5)])
    assert box.ack("business", 3) == 3
    assert [r.seq for r in box.pending("business", after_seq=0, limit=10)] == [4, 5]
    assert box.ack("business", 2) == 0  # an old ack changes nothing
    assert box.acked_seq("business") == 3
    with pytest.raises(OutboxError, match="beyond the last produced seq 5"):
        box.ack("business", 6)
    stats = box.stats()["business"]
    assert (stats.produced, stats.acked, stats.pending) == (5, 3, 2)
    assert read_stats(tmp_path / "o.db")[1]["business"] == stats


def test_a_new_database_gets_a_new_epoch_and_a_foreign_one_is_refused(tmp_path: Path) -> None:
    one = Outbox(tmp_path / "a.db", node_id="n1")
    two = Outbox(tmp_path / "b.db", node_id="n1")
    assert one.epoch != two.epoch
    one.close()
    with pytest.raises(OutboxError, match="belongs to node 'n1'"):
        Outbox(tmp_path / "a.db", node_id="n2")


def test_a_failed_append_leaves_no_trace(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", node_id="n1")
    box.append("business", [rec(1)])
    dup = NewRecord(kind="weighing", device="b", data={}, record_id="same")
    bad = [dup, NewRecord(kind="weighing", device="b", data={"x": object()})]  # not JSON-serialisable
    with pytest.raises(TypeError):
        box.append("business", bad)
    assert box.stats()["business"].produced == 1
    assert box.append("business", [rec(2)])[0].seq == 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "ack"]), st.integers(1, 5)), max_size=30))
def test_invariants_hold_for_any_sequence_of_appends_and_acks(tmp_path_factory: pytest.TempPathFactory,
                                                               ops: list[tuple[str, int]]) -> None:
    box = Outbox(tmp_path_factory.mktemp("p") / "o.db", node_id="n1")
    produced = acked = 0
    for op, n in ops:
        if op == "append":
            got = box.append("readings", [rec(i) for i in range(n)])
            assert [r.seq for r in got] == list(range(produced + 1, produced + n + 1))
            produced += n
        else:
            target = min(acked + n, produced)
            box.ack("readings", target)
            acked = max(acked, target)
        pending = [r.seq for r in box.pending("readings", after_seq=0, limit=1000)]
        assert pending == list(range(acked + 1, produced + 1))
    box.close()


# -- disk quota, schema migration, starts and boots ------------------------------------------------------------------

QUOTA = 300_000


def reading(i: int, device: str) -> NewRecord:
    return NewRecord(kind="reading", device=device,
                     data={"values": {"voltage_l1": 230.0 + i / 100, "current_l1": 4.2}, "units": {"voltage_l1": "V"}})


def _fill_with_readings(box: Outbox, rounds: int = 400) -> tuple[int, list[str]]:
    """Readings from three meters, a weighing every 20 rounds; returns the highest use seen and the weighings'
    record ids in the order they were stored."""
    max_used = 0
    weighings: list[str] = []
    for i in range(rounds):
        box.append("readings", [reading(i, f"meter-{d}") for d in range(3) for _ in range(5)])
        if i % 20 == 0:
            stored = box.append("business", [rec(i)])
            assert len(stored) == 1
            weighings.append(stored[0].record_id)
        max_used = max(max_used, box.used_bytes())
    return max_used, weighings


def test_the_quota_gives_up_readings_but_every_seq_stays_accounted_for(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", node_id="n1", quota_bytes=QUOTA)
    max_used, weighings = _fill_with_readings(box)
    # the use stays below the quota, give or take the one append that crossed it
    assert max_used <= QUOTA + 4 * box.page_size
    assert box.used_bytes() <= QUOTA
    stats = box.stats()["readings"]
    assert stats.produced == 400 * 15
    assert stats.acked == 0
    assert stats.pending == stats.produced  # sequence numbers waiting, whatever stands for them
    assert stats.lost > 0
    pending = box.pending("readings", after_seq=0, limit=100_000)
    assert len(pending) < stats.produced
    # coverage: the records stand for acked+1 .. produced without a gap or an overlap
    assert pending[0].first_seq == stats.acked + 1
    for prev, r in itertools.pairwise(pending):
        assert r.first_seq == prev.seq + 1, (prev, r)
    assert pending[-1].seq == stats.produced
    assert any(r.kind == "loss" or r.from_seq is not None for r in pending)
    # every seq is a record still there (a thinned sample stands for itself), or counted as lost
    data_records = [r for r in pending if r.kind != "loss"]
    assert stats.lost + len(data_records) == stats.produced
    # a loss record says how many records it stands for, and those are all counted as lost
    for r in pending:
        if r.kind == "loss":
            assert r.data["reason"] == "disk quota"
            assert r.from_seq is not None
            assert r.data["records"] <= r.covers
    # each meter still has samples; the kept samples are unchanged readings
    assert {r.device for r in data_records} == {"meter-0", "meter-1", "meter-2"}
    assert all(r.kind == "reading" and "voltage_l1" in r.data["values"] for r in data_records)
    # business records are never given up: all of them, in order, with their own seqs
    business = box.pending("business", after_seq=0, limit=1000)
    assert [r.record_id for r in business] == weighings
    assert [r.seq for r in business] == list(range(1, len(weighings) + 1))
    assert all(r.from_seq is None for r in business)
    assert box.stats()["business"].lost == 0
    assert box.integrity_check() == "ok"
    # the counts survive a reopen
    box.close()
    again = Outbox(tmp_path / "o.db", node_id="n1", quota_bytes=QUOTA)
    assert again.stats()["readings"] == stats
    again.close()


def test_a_quota_full_of_business_records_refuses_business_and_counts_readings_lost(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", node_id="n1", quota_bytes=100_000)
    stored = 0

    def fill() -> None:
        nonlocal stored
        for i in range(10_000):
            box.append("business", [rec(i) for _ in range(10)])
            stored += 10

    with pytest.raises(OutboxFull, match="disk quota of 100000 bytes is full"):
        fill()
    assert stored > 0
    assert box.stats()["business"].produced == stored  # the refused ones left no trace
    assert len(box.pending("business", after_seq=0, limit=100_000)) == stored
    with pytest.raises(OutboxFull):
        box.append("business", [rec(1)])
    assert box.append("readings", [reading(i, "meter-1") for i in range(7)]) == []
    assert box.append("readings", [reading(0, "meter-1")]) == []
    assert box.lost_unstored == {"readings": 8}
    assert box.stats()["readings"].produced == 0
    assert box.stats()["business"].produced == stored
    assert box.integrity_check() == "ok"
    # acknowledging frees the quota: business records are taken again
    box.ack("business", stored)
    assert box.append("business", [rec(1)])[0].seq == stored + 1
    box.close()


# sha256 of every released step: a node in the field may still have a file of any version, so a released step is
# never changed (a schema change is a new step, with its line here and a test of the upgrade to it)
RELEASED_STEPS = {
    1: "d78e6ec105888ad9f76c8d0a8b6cb98e57f4ce096756b29230915ff70c0980b0",
    2: "d828d5e3465261ab9f9c7899f2e262c16fc66538e1a9fb1a59565a6d32f06d80",
    3: "06d604dfa2553222c1985f0a4bd885edf248c79865bfa1e92cd2ccdb2f713334",
    4: "8c41d9ded5a9b1fa48c76591ea1a13b7d121653b7886bbe49041b2fb04f01e21",
    5: "4e01793f150b512b7f338cf1b9ad5fb7d59b2f5835b8285dd9c89bf570385ce6",
}


def test_released_schema_steps_are_never_changed() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
    assert {v: hashlib.sha256(sql.encode()).hexdigest() for v, sql in MIGRATIONS.items()} == RELEASED_STEPS


def _old_outbox(path: Path, version: int) -> None:
    """An outbox file as release ``version`` left it (its steps of ``edge.store.schema``), with two business and two
    reading records pending and one business record acknowledged."""
    db = sqlite3.connect(path)
    schema.create(db, version)
    db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                   [("epoch", "0123456789abcdef"), ("node_id", "n1"), ("created_ns", "1")])
    db.executemany("INSERT INTO streams(stream, next_seq, acked_seq) VALUES (?, ?, ?)",
                   [("business", 4, 1), ("health", 1, 0), ("readings", 3, 0)])
    db.executemany(
        "INSERT INTO outbox(stream, seq, record_id, kind, device, ts_ns, data, created_ns)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [("business", 2, "w-2", "weighing", "bridge-1", 2, '{"gross": "100", "unit": "kg"}', 10),
         ("business", 3, "w-3", "weighing", "bridge-1", 3, '{"gross": "200", "unit": "kg"}', 11),
         ("readings", 1, "r-1", "reading", "meter-1", 1, '{"values": {"v": 1.0}}', 12),
         ("readings", 2, "r-2", "reading", "meter-1", 2, '{"values": {"v": 2.0}}', 13)])
    db.commit()
    db.close()


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_an_older_outbox_is_migrated_and_keeps_its_records(tmp_path: Path, version: int) -> None:
    path = tmp_path / "o.db"
    _old_outbox(path, version)
    box = Outbox(path, node_id="n1", boot_id="boot-new")
    assert box.epoch == "0123456789abcdef"  # the same database, the same epoch: central keeps the sequence
    business = box.pending("business", after_seq=0, limit=10)
    assert [(r.seq, r.record_id, r.data["gross"], r.from_seq, r.mono_ns) for r in business] == [
        (2, "w-2", "100", None, None), (3, "w-3", "200", None, None)]
    assert [r.seq for r in box.pending("readings", after_seq=0, limit=10)] == [1, 2]
    stats = box.stats()
    assert (stats["business"].produced, stats["business"].acked, stats["business"].pending) == (3, 1, 2)
    assert stats["readings"].lost == 0
    assert box.append("business", [rec(4)])[0].seq == 4
    # records of before the migration carry no boot; a batch never mixes them with this boot's
    run = box.pending_run("business", after_seq=1, limit=10)
    assert [r.seq for r in run.records] == [2, 3]
    run = box.pending_run("business", after_seq=3, limit=10)
    assert (run.boot_id, [r.seq for r in run.records]) == ("boot-new", [4])
    assert box.integrity_check() == "ok"
    box.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    cols = {row[1] for row in check.execute("PRAGMA table_info(outbox)")}
    assert {"mono_ns", "start_no", "from_seq", "thinned"} <= cols
    assert check.execute("SELECT COUNT(*) FROM alibi").fetchone()[0] == 0  # v3: the alibi mirror's table
    assert check.execute("SELECT COUNT(*) FROM pos_receipts").fetchone()[0] == 0  # v4: the POS receipt book
    assert check.execute("SELECT body, sig FROM alibi_meta").fetchall() == [(None, None)]  # v5: signed by the agent
    assert check.execute("SELECT start_no, boot_id FROM starts").fetchall() == [(1, "boot-new")]
    check.close()
    assert read_stats(path)[0] == "0123456789abcdef"


def test_an_outbox_of_a_newer_agent_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    _old_outbox(path, SCHEMA_VERSION)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(OutboxError, match=f"schema version {SCHEMA_VERSION + 1} is newer than this agent"):
        Outbox(path, node_id="n1")
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM starts").fetchone()[0] == 0
    db.close()


def test_every_open_is_a_start_with_its_boot_id(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    numbers = []
    for boot in ("a", "a", "b"):
        box = Outbox(path, node_id="n1", boot_id=boot)
        numbers.append(box.start_no)
        box.close()
    assert numbers == [1, 2, 3]
    db = sqlite3.connect(path)
    assert db.execute("SELECT start_no, boot_id FROM starts ORDER BY start_no").fetchall() == [
        (1, "a"), (2, "a"), (3, "b")]
    db.close()


def test_a_pending_run_stops_where_the_boot_changes(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, node_id="n1", boot_id="a")
    box.append("business", [rec(1), rec(2)])
    box.close()
    box = Outbox(path, node_id="n1", boot_id="a")  # a restart of the agent within the same OS boot
    box.append("business", [rec(3)])
    box.close()
    box = Outbox(path, node_id="n1", boot_id="b")
    box.append("business", [rec(4), rec(5)])
    first = box.pending_run("business", after_seq=0, limit=100)
    assert first.boot_id == "a"
    assert [r.seq for r in first.records] == [1, 2, 3]
    second = box.pending_run("business", after_seq=3, limit=100)
    assert second.boot_id == "b"
    assert [r.seq for r in second.records] == [4, 5]
    assert [r.seq for r in box.pending_run("business", after_seq=0, limit=2).records] == [1, 2]
    # without one_boot (and in ``pending``) everything comes in one go
    assert [r.seq for r in box.pending_run("business", after_seq=0, limit=100, one_boot=False).records] == [
        1, 2, 3, 4, 5]
    assert [r.seq for r in box.pending("business", after_seq=0, limit=100)] == [1, 2, 3, 4, 5]
    box.close()
