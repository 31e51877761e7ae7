"""The POS API's receipt book: ``(client_id, receipt_id)`` → the first answer, durable across agent restarts.

A register that sends a ``receipt_id`` may send the same sale again (a timeout, its own restart, the node's restart)
and must get the first answer — the same transaction number and signature — never a second signature. So the answer
is kept in the outbox database (table ``pos_receipts``, outbox schema version 4, ``edge.store.schema``) and written
**in the same SQLite transaction** as the sale's ``tse_transaction`` record (``Outbox.append(…, receipt=…)`` calls
``Receipt.write``): the record and its answer are both on disk, or neither is, before the register gets the answer.

    pos_receipts (client_id, receipt_id, digest, answer, record_id, created_ns)  PRIMARY KEY (client_id, receipt_id)

``digest`` is SHA-256 over client id, receipt id and the processData signed (``edge.pos.sales.Sale.digest``): the same
receipt with other amounts, payments or kind is a 409, not a replay. ``answer`` is the JSON the register got.

Retention: entries older than ``pos.receipt_retention_days`` (default 7) are pruned (at start and at most hourly);
a receipt sent again after that is a new sale. A sale without ``receipt_id`` is never replayed. An entry is about
1.5 KiB (the whole answer: QR code, public key, signature); they count towards ``outbox.quota_bytes`` and are never
given up to it (only to their retention): 2,000 receipts a day kept 7 days are about 20 MiB.

The window that remains: the TSE signs (its transaction number and counters are consumed) *before* the commit. If
the agent dies between FinishTransaction and the commit (one fsync, milliseconds), that transaction has no record
and no receipt entry: the register got no answer, its retry after the restart is signed anew under the next number,
and central shows the skipped number as a gap in the TSE's sequence (the transaction itself is in the TSE's own
export). Nothing is ever answered that is not committed first.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from edge.store.outbox import NewRecord, Outbox

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS: Final = 7
PRUNE_EVERY_S: Final = 3600.0
REMEMBERED_IN_MEMORY: Final = 5000  # MemoryReceipts: the latest answers kept
DAY_NS: Final = 86_400 * 10**9


@dataclass(frozen=True)
class Receipt:
    """One answered receipt: what the register got for ``(client_id, receipt_id)``."""

    client_id: str
    receipt_id: str
    digest: str
    answer: Mapping[str, Any]
    record_id: str
    created_ns: int = field(default_factory=time.time_ns)

    def write(self, db: sqlite3.Connection) -> None:
        """Store it in the caller's transaction (``Outbox.append``, with the sale's record): ``insert``."""
        insert(db, self)


def insert(db: sqlite3.Connection, receipt: Receipt) -> None:
    """Store ``receipt`` in the caller's transaction. The first answer wins: an entry already there is kept (the
    caller looks it up under the same lock first, so this happens only if it did not; the sale's record must be
    stored all the same)."""
    db.execute(
        "INSERT OR IGNORE INTO pos_receipts(client_id, receipt_id, digest, answer, record_id, created_ns)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (receipt.client_id, receipt.receipt_id, receipt.digest, json.dumps(dict(receipt.answer)), receipt.record_id,
         receipt.created_ns),
    )  # fmt: skip


def find(db: sqlite3.Connection, client_id: str, receipt_id: str) -> Receipt | None:
    row = db.execute(
        "SELECT digest, answer, record_id, created_ns FROM pos_receipts WHERE client_id=? AND receipt_id=?",
        (client_id, receipt_id),
    ).fetchone()
    if row is None:
        return None
    return Receipt(client_id=client_id, receipt_id=receipt_id, digest=row[0], answer=json.loads(row[1]),
                   record_id=row[2], created_ns=row[3])


def prune(db: sqlite3.Connection, before_ns: int) -> int:
    """Forget receipts answered before ``before_ns``; returns how many."""
    db.execute("BEGIN IMMEDIATE")
    try:
        n = db.execute("DELETE FROM pos_receipts WHERE created_ns < ?", (before_ns,)).rowcount
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return int(n)


class ReceiptBook(Protocol):
    """Where ``edge.pos.sales.PosService`` keeps its answers: ``find`` the first answer of a receipt;
    ``store`` the sale's
    records and (if the sale has a receipt id) its answer together — durable before it returns, or raises
    ``OutboxError`` and stores neither."""

    def find(self, client_id: str, receipt_id: str) -> Receipt | None: ...

    def store(self, stream: str, records: Sequence[NewRecord], receipt: Receipt | None) -> None: ...


class OutboxReceipts:
    """The agent's book: in the outbox database, in the transaction of the sale's record (``emit`` is the agent's
    ``emit(stream, records, receipt=…)``, which commits through ``Outbox.append``). Entries older than
    ``retention_days`` are pruned now and then at most every ``PRUNE_EVERY_S``."""

    def __init__(self, outbox: Outbox, emit: Callable[..., None], *,
                 retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        self.outbox = outbox
        self.emit = emit
        self.retention_ns = retention_days * DAY_NS
        self._pruned_at: float | None = None
        self.prune_due()

    def find(self, client_id: str, receipt_id: str) -> Receipt | None:
        """The answer the POS API gave for this receipt, if it is still kept (``OutboxError`` if it cannot be
        read)."""
        return self.outbox.use("read the receipt book", lambda db: find(db, client_id, receipt_id))

    def store(self, stream: str, records: Sequence[NewRecord], receipt: Receipt | None) -> None:
        self.emit(stream, records, receipt=receipt)
        self.prune_due()

    def prune_due(self, *, now_ns: int | None = None) -> int:
        """Forget the receipts past retention if the last pruning is ``PRUNE_EVERY_S`` ago (never raises)."""
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return 0
        self._pruned_at = now
        try:
            before_ns = (now_ns or time.time_ns()) - self.retention_ns
            n = self.outbox.use("prune the receipt book", lambda db: prune(db, before_ns))
        except Exception as exc:  # an answer book that cannot be pruned is no reason to refuse a sale
            log.error("POS receipts: cannot prune the receipt book: %s", exc)
            return 0
        if n:
            log.info("POS receipts: forgot %d answer(s) older than %d day(s)", n, self.retention_ns // DAY_NS)
        return n


class MemoryReceipts:
    """A book in memory (the latest ``REMEMBERED_IN_MEMORY`` answers; lost on restart): for a ``PosService`` used
    without an agent's outbox, e.g. in tests. ``emit(stream, records)`` stores the records."""

    def __init__(self, emit: Callable[[str, Sequence[NewRecord]], None]) -> None:
        self.emit = emit
        self._answers: OrderedDict[tuple[str, str], Receipt] = OrderedDict()

    def find(self, client_id: str, receipt_id: str) -> Receipt | None:
        return self._answers.get((client_id, receipt_id))

    def store(self, stream: str, records: Sequence[NewRecord], receipt: Receipt | None) -> None:
        self.emit(stream, records)
        if receipt is not None:
            self._answers.setdefault((receipt.client_id, receipt.receipt_id), receipt)
            while len(self._answers) > REMEMBERED_IN_MEMORY:
                self._answers.popitem(last=False)


__all__ = ["DEFAULT_RETENTION_DAYS", "PRUNE_EVERY_S", "MemoryReceipts", "OutboxReceipts", "Receipt",
           "ReceiptBook", "find", "insert", "prune"]
