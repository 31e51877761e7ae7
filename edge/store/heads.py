"""The node's heads (``sync.heads``), read from the outbox database for the signed heartbeat: the alibi mirror's
newest entry and, per TSE, the highest transaction number and signature counter of the sales central acknowledged.

The TSE heads live in the outbox's ``meta`` table (``edge.store.schema``), one row per TSE serial::

    meta ('tse_head:<serial>', '{"tx": 118, "counter": 240}')

raised by ``note_acked_tse_heads`` in the transaction in which central's ack releases the sales' ``tse_transaction``
records (``Outbox.ack``), only ever upwards. So a TSE head names only sales central said it holds — whatever
central lacks below it was lost or removed there (``truncated``), never in transit — and it outlives the records.

The alibi head is the alibi mirror's signed head (``edge.store.alibi``: the newest entry, its record's place in the
outbox — central judges by that place whether it acknowledged the entry — and the retention boundary).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3

from edge.store.alibi import AlibiMirror
from sync.heads import MAX_TSE_HEADS, Heads, TseMark
from sync.records import TSE_TRANSACTION

log = logging.getLogger(__name__)

PREFIX = "tse_head:"
_SERIAL = re.compile(r"[0-9a-f]{1,128}")


def note_acked_tse_heads(db: sqlite3.Connection, stream: str, acked_seq: int) -> None:
    """Raise the stored head of each TSE whose sales central has just acknowledged: the ``tse_transaction``
    records of ``stream`` up to ``acked_seq`` (still in the outbox: run in the transaction that deletes them)."""
    marks: dict[str, tuple[int, int]] = {}
    for (text,) in db.execute("SELECT data FROM outbox WHERE stream=? AND seq<=? AND kind=?",
                              (stream, acked_seq, TSE_TRANSACTION)):
        try:
            data = json.loads(text)
        except ValueError:
            continue
        serial, tx, counter = data.get("tse_serial"), data.get("tx_number"), data.get("signature_counter")
        if not isinstance(serial, str) or not serial or isinstance(tx, bool) or not isinstance(tx, int):
            continue  # a sale without a TSE number (the TSE failed before it started): nothing to vouch for
        counter = counter if isinstance(counter, int) and not isinstance(counter, bool) else 0
        old_tx, old_counter = marks.get(serial, (0, 0))
        marks[serial] = (max(old_tx, tx), max(old_counter, counter))
    for serial, (tx, counter) in marks.items():
        row = db.execute("SELECT value FROM meta WHERE key=?", (PREFIX + serial,)).fetchone()
        if row is not None:
            stored = _parse(str(row[0]))
            if stored is not None:
                tx, counter = max(tx, stored[0]), max(counter, stored[1])
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                   (PREFIX + serial, json.dumps({"tx": tx, "counter": counter})))


def _parse(value: str) -> tuple[int, int] | None:
    try:
        obj = json.loads(value)
        tx, counter = obj["tx"], obj["counter"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(tx, int) or not isinstance(counter, int) or isinstance(tx, bool) or isinstance(counter, bool):
        return None
    return tx, counter


def tse_heads(db: sqlite3.Connection) -> tuple[TseMark, ...]:
    """The TSE heads kept in the outbox (serial order; at most ``MAX_TSE_HEADS``, the highest serials dropped with a
    warning — a node has one or two)."""
    out: list[TseMark] = []
    for key, value in db.execute("SELECT key, value FROM meta WHERE key LIKE 'tse\\_head:%' ESCAPE '\\' "
                                 "ORDER BY key"):
        parsed = _parse(str(value))
        serial = str(key)[len(PREFIX):]
        if parsed is None or parsed[0] < 1 or parsed[1] < 0 or not _SERIAL.fullmatch(serial):
            log.error("outbox: the TSE head of %s is unreadable (%r); not reported", serial, value)
            continue
        out.append(TseMark(serial=serial, tx=parsed[0], counter=parsed[1]))
    if len(out) > MAX_TSE_HEADS:
        log.warning("outbox: %d TSE heads, only %d fit a heartbeat", len(out), MAX_TSE_HEADS)
        out = out[:MAX_TSE_HEADS]
    return tuple(out)


def read_heads(db: sqlite3.Connection) -> Heads:
    """The heads the heartbeat signs: the alibi mirror's signed head (``AlibiMirror.head``) and the TSE heads."""
    return Heads(alibi=AlibiMirror.head(db), tse=tse_heads(db))


__all__ = ["PREFIX", "note_acked_tse_heads", "read_heads", "tse_heads"]
