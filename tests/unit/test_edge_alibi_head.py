"""The node's signed alibi head (outbox schema 5, ``alibi_meta``) on a real SQLite outbox: written in the transaction
of every entry and of every prune, read for the heartbeat, and used by the node's own check — tampered with as
someone with the outbox file (but not the node key) would: the newest entry deleted → ``truncated``; the oldest
deleted inside the retention period → ``removed``; the head row changed, deleted or replaced by an older copy → named.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.store import schema
from edge.store.alibi import DAY_NS, AlibiMirror, check_local, meta_warning, read_entries, read_head, read_meta
from edge.store.outbox import NewRecord, Outbox
from sync.alibi import ChainCheck
from sync.signing import generate_key, verify

NODE = "mill-01"


def weighing(gross: str, *, ts_ns: int | None = None) -> NewRecord:
    return NewRecord(kind="weighing", device="bridge-1", data={"gross": gross, "unit": "kg"},
                     **({"ts_ns": ts_ns} if ts_ns is not None else {}))  # type: ignore[arg-type]


def outbox(path: Path, key: Ed25519PrivateKey) -> Outbox:
    return Outbox(path, node_id=NODE, alibi=AlibiMirror(NODE, key))


def check(path: Path, key: Ed25519PrivateKey) -> ChainCheck:
    return check_local(read_entries(path), key.public_key(), NODE, meta=read_meta(path))


def kinds(c: ChainCheck) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.kind, p.entries) for p in c.problems]


def sql(path: Path, statement: str, *params: object) -> None:
    db = sqlite3.connect(path)
    db.execute(statement, params)
    db.commit()
    db.close()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture
def pruned(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    """An outbox with entries 1–8; 1–3 (100 days old, acknowledged) given up to the 90-day retention."""
    path = tmp_path / "o.db"
    box = outbox(path, key)
    now = time.time_ns()
    box.append("business", [weighing(str(i), ts_ns=now - 100 * DAY_NS + i) for i in range(1, 4)])
    box.append("business", [weighing(str(i)) for i in range(4, 9)])
    box.ack("business", 8)  # the acknowledgement prunes by itself
    box.prune_alibi(now_ns=now)
    box.close()
    assert [e.position for e in read_entries(path)] == [4, 5, 6, 7, 8]
    return path


def test_the_head_row_is_signed_with_every_entry_and_read_for_the_heartbeat(tmp_path: Path,
                                                                            key: Ed25519PrivateKey) -> None:
    path = tmp_path / "o.db"
    box = outbox(path, key)
    assert read_head(path) is None  # no weighing yet: the heartbeat's alibi is null
    out = box.append("business", [weighing("100"), NewRecord(kind="health", device="n", data={}), weighing("200")])
    head = read_head(path)
    assert head is not None
    assert (head.no, head.hash, head.epoch, head.stream, head.seq) == (2, out[2].data["alibi"]["hash"], box.epoch,
                                                                       "business", 3)
    assert (head.pruned_through, head.pruned_hash) == (0, None)
    assert box.use("read the alibi head", AlibiMirror.head) == head
    meta = read_meta(path)
    assert meta.body is not None
    body = json.loads(meta.body)
    assert {k: body[k] for k in ("type", "node", "no", "hash", "seq", "pruned_through", "reset")} == {
        "type": "alibi-meta", "node": NODE, "no": 2, "hash": head.hash, "seq": 3, "pruned_through": 0, "reset": None}
    assert verify(key.public_key(), meta.body.encode(), meta.sig) is None
    assert check(path, key).ok
    box.close()


def test_retention_records_its_boundary_in_the_signed_row(pruned: Path, key: Ed25519PrivateKey) -> None:
    head = read_head(pruned)
    assert head is not None
    assert (head.no, head.pruned_through) == (8, 3)
    assert head.pruned_hash == json.loads(read_entries(pruned)[0].body)["prev_hash"]  # entry 4 links to it
    c = check(pruned, key)
    assert c.ok
    assert [e.position for e in c.entries] == [4, 5, 6, 7, 8]


def test_the_newest_entry_deleted_on_the_node_is_truncated(pruned: Path, key: Ed25519PrivateKey) -> None:
    sql(pruned, "DELETE FROM alibi WHERE alibi_no >= 7")
    c = check(pruned, key)
    assert kinds(c) == [("truncated", (7, 8))]
    assert c.problems[0].message.startswith("entries 7…8 missing: the node's signed head is entry 8 (hash ")
    assert c.problems[0].message.endswith("this node keeps up to 6")
    # the agent goes on after the signed head: the gap stays visible, the numbers central holds are not reused
    box = outbox(pruned, key)
    assert box.append("business", [weighing("900")])[0].data["alibi"]["no"] == 9
    box.close()
    assert kinds(check(pruned, key)) == [("removed", (7, 8))]


def test_the_oldest_entries_deleted_inside_retention_are_removed(pruned: Path, tmp_path: Path,
                                                                  key: Ed25519PrivateKey) -> None:
    sql(pruned, "DELETE FROM alibi WHERE alibi_no <= 5")
    c = check(pruned, key)
    assert kinds(c) == [("removed", (4, 5))]
    assert c.problems[0].message.startswith("entries 4…5 missing inside the retention period: the node gave up its "
                                            "entries only up to 3 (the signed boundary, written ")
    # without any pruning: the boundary is 0, so deleting entry 1 is named too
    fresh = tmp_path / "fresh.db"
    box = outbox(fresh, key)
    box.append("business", [weighing(str(i)) for i in range(1, 5)])
    box.close()
    sql(fresh, "DELETE FROM alibi WHERE alibi_no = 1")
    assert kinds(check(fresh, key)) == [("removed", (1,))]
    # what the check said before the signed head: nothing (older entries may have been given up)
    assert check_local(read_entries(fresh), key.public_key(), NODE).ok


@pytest.mark.parametrize(("change", "message"), [
    ("UPDATE alibi_meta SET body = replace(body, '\"no\":8', '\"no\":6')",
     "the signed head row (alibi_meta): its signature does not verify with the node's key"),
    ("UPDATE alibi_meta SET body = 'x'", "the signed head row (alibi_meta) is not a signed head (changed)"),
    ("DELETE FROM alibi_meta", "the signed head row (alibi_meta) is missing: it was deleted"),
])
def test_a_tampered_head_row_is_named(pruned: Path, key: Ed25519PrivateKey, change: str, message: str) -> None:
    sql(pruned, change)
    c = check(pruned, key)
    assert kinds(c) == [("head_invalid", ())]
    assert c.problems[0].message.startswith(message)


def test_a_head_row_deleted_is_made_again_marked_as_reset(pruned: Path, key: Ed25519PrivateKey) -> None:
    sql(pruned, "DELETE FROM alibi_meta")
    sql(pruned, "DELETE FROM alibi WHERE alibi_no = 8")
    box = outbox(pruned, key)  # opening leaves a missing row missing: only an empty one is signed
    assert read_meta(pruned).state == "missing"
    assert box.append("business", [weighing("900")])[0].data["alibi"]["no"] == 8  # from the table: no way to know
    box.close()
    c = check(pruned, key)
    assert kinds(c) == [("head_invalid", ())]
    assert "the signed head row was made again at " in c.problems[0].message
    assert "because it was missing: entries deleted before then cannot be told" in c.problems[0].message


def test_an_older_copy_of_the_head_row_is_named(pruned: Path, tmp_path: Path, key: Ed25519PrivateKey) -> None:
    db = sqlite3.connect(pruned)
    old = db.execute("SELECT body, sig FROM alibi_meta").fetchone()
    db.close()
    box = outbox(pruned, key)
    box.append("business", [weighing("900"), weighing("901")])
    box.close()
    sql(pruned, "UPDATE alibi_meta SET body = ?, sig = ?", *old)  # a validly signed row, of before entries 9 and 10
    c = check(pruned, key)
    assert kinds(c) == [("head_invalid", (9, 10))]
    assert c.problems[0].message == ("entries 9…10 kept above the signed head 8: the head row is an older copy "
                                     "(replaced)")


def test_another_chain_start_after_the_boundary_is_a_break(pruned: Path, key: Ed25519PrivateKey) -> None:
    db = sqlite3.connect(pruned)
    (body,) = db.execute("SELECT body FROM alibi_meta").fetchone()
    db.close()
    fields = json.loads(body)
    assert fields["pruned_through"] == 3
    # a row signed by the node, but with another hash for entry 3: entry 4 no longer links to it
    mirror = AlibiMirror(NODE, key)
    db = sqlite3.connect(pruned, isolation_level=None)
    db.execute("BEGIN")
    mirror._write(db, {**fields, "pruned_hash": "f" * 64})  # the node itself, a bad boundary
    db.execute("COMMIT")
    db.close()
    assert kinds(check(pruned, key)) == [("chain_break", (3, 4))]


def test_an_outbox_of_version_4_gets_its_head_row_signed_from_the_table(tmp_path: Path,
                                                                         key: Ed25519PrivateKey) -> None:
    path = tmp_path / "o.db"
    box = outbox(path, key)
    box.append("business", [weighing(str(i)) for i in range(1, 6)])
    box.close()
    # as release 4 left it: no alibi_meta, user_version 4 — and entries 1–2 given up by that release's retention
    sql(path, "DROP TABLE alibi_meta")
    sql(path, "DELETE FROM alibi WHERE alibi_no <= 2")
    sql(path, "PRAGMA user_version = 4")
    assert read_meta(path).state == "no_table"
    assert meta_warning(read_meta(path)) is not None
    assert read_head(path) is None
    box = outbox(path, key)
    box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    db.close()
    head = read_head(path)
    assert head is not None
    assert (head.no, head.pruned_through) == (5, 2)
    assert check(path, key).ok
    assert meta_warning(read_meta(path)) is None
