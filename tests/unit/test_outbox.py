"""The SQLite outbox: gap-free sequences per stream, durable across reopen, released only by an ack."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import OutboxError
from edge.outbox import NewRecord, Outbox, read_stats


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
