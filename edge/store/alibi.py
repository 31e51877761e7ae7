"""The node's alibi mirror: every weighing gets the next entry of a hash-chained log signed with the node's key
(entry format and chain check: ``sync.alibi``), committed in the **same SQLite transaction** as its outbox row —
a weighing and its entry are stored together or not at all.

The table lives in the outbox database (outbox schema version 3, ``edge.store.schema``)::

    alibi (alibi_no PRIMARY KEY, record_id, stream, seq, weighed_at_ns, body, hash, sig, created_ns)
           alibi_no = 1, 2, 3 … without gaps; stream/seq = the weighing record's place in the outbox

``Outbox.append`` hands each batch of new records to ``AlibiMirror.stamp`` inside its transaction: every record of
kind ``weighing`` — whichever driver made it — gets the next number, its entry row, and ``data["alibi"] =
{"no", "body", "hash", "sig"}`` so the entry travels with the record to central. The head of the chain (number and
hash) is read from the table in that transaction, so a rolled-back append leaves no trace and a restarted agent
continues the numbering.

**Retention** (``alibi.retention_days``, default 90): entries older than that whose record central has
acknowledged are deleted; the newest entry is always kept (the chain goes on from it). Central keeps its own copy.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.alibi import ZERO_HASH, ChainCheck, StoredEntry, check_chain, make_entry
from sync.envelope import Record
from sync.records import WEIGHING

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 90
PRUNE_EVERY_S = 600.0  # after an acknowledgement, prune at most this often
DAY_NS = 86_400 * 1_000_000_000


class AlibiMirror:
    """Writes the chain of one node. Holds no state of the chain itself: the table is the truth."""

    def __init__(self, node_id: str, key: Ed25519PrivateKey, *, retention_days: int = DEFAULT_RETENTION_DAYS,
                 prune_every_s: float = PRUNE_EVERY_S) -> None:
        self.node_id = node_id
        self.key = key
        self.retention_days = retention_days
        self.prune_every_s = prune_every_s
        self._last_prune = float("-inf")  # monotonic

    def stamp(self, db: sqlite3.Connection, stream: str, records: Sequence[Record]) -> list[Record]:
        """Append an entry for every weighing among ``records`` (seq already assigned). Must run inside the
        caller's open transaction; returns the records, weighings with ``data["alibi"]``."""
        if not any(r.kind == WEIGHING for r in records):
            return list(records)
        if not db.in_transaction:
            raise RuntimeError("alibi entries are written only inside the outbox's transaction")
        head = db.execute("SELECT alibi_no, hash FROM alibi ORDER BY alibi_no DESC LIMIT 1").fetchone()
        no, prev = (int(head[0]), str(head[1])) if head else (0, ZERO_HASH)
        now = time.time_ns()
        out: list[Record] = []
        for r in records:
            if r.kind != WEIGHING:
                out.append(r)
                continue
            no += 1
            part = make_entry(self.key, node=self.node_id, alibi_no=no, record_id=r.record_id, device=r.device,
                              weighed_at_ns=r.ts_ns, data=r.data, prev_hash=prev)
            db.execute(
                "INSERT INTO alibi(alibi_no, record_id, stream, seq, weighed_at_ns, body, hash, sig, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (no, r.record_id, stream, r.seq, r.ts_ns, part.body, part.hash, part.sig, now))
            prev = part.hash
            out.append(replace(r, data={**r.data, "alibi": part.to_json()}))
        return out

    def prune(self, db: sqlite3.Connection, *, now_ns: int | None = None) -> int:
        """Delete entries weighed more than ``retention_days`` ago whose record central acknowledged, never the
        newest one. Returns how many were deleted."""
        cutoff = (now_ns if now_ns is not None else time.time_ns()) - self.retention_days * DAY_NS
        db.execute("BEGIN IMMEDIATE")
        try:
            n = db.execute(
                "DELETE FROM alibi WHERE weighed_at_ns < ? AND alibi_no < (SELECT MAX(alibi_no) FROM alibi)"
                " AND seq <= (SELECT acked_seq FROM streams WHERE streams.stream = alibi.stream)",
                (cutoff,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._last_prune = time.monotonic()
        if n:
            log.info("alibi mirror: %d entr%s older than %d days given up (acknowledged by central)", n,
                     "y" if n == 1 else "ies", self.retention_days)
        return int(n)

    def maybe_prune(self, db: sqlite3.Connection) -> int:
        """``prune`` at most every ``prune_every_s``; errors are logged, never raised (pruning can wait)."""
        if time.monotonic() - self._last_prune < self.prune_every_s:
            return 0
        try:
            return self.prune(db)
        except sqlite3.Error as exc:
            self._last_prune = time.monotonic()
            log.error("alibi mirror: cannot prune old entries: %s", exc)
            return 0


def read_entries(path: str | Path) -> list[StoredEntry]:
    """The entries kept in an outbox database (read-only; the agent may be running)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=5)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alibi'").fetchone():
            return []
        return [StoredEntry(position=no, body=body, hash=h, sig=sig) for no, body, h, sig in db.execute(
            "SELECT alibi_no, body, hash, sig FROM alibi ORDER BY alibi_no")]
    finally:
        db.close()


def check_local(entries: Sequence[StoredEntry], key: Ed25519PublicKey, node_id: str) -> ChainCheck:
    """The node's own chain re-checked; older entries may have been given up to retention (``pruned``)."""
    return check_chain(entries, key, node=node_id, pruned=True, holder="this node")


__all__ = ["DEFAULT_RETENTION_DAYS", "AlibiMirror", "check_local", "read_entries"]
