"""Applies one decoded batch to central's database in one transaction — exactly once.

For every record an inbox row keyed by ``(node, epoch, stream, seq)`` is inserted together with the business rows
it produces. A record whose inbox row exists is a harmless resend (counted as a duplicate); the same seq with a
different body is an **integrity conflict**: nothing of it is applied, it is reported, never overwritten.
Readings of new records are written to the metrics store *before* the transaction commits: if the store is down
the transaction rolls back, no ack is sent and the node sends the batch again later — while business batches,
which do not touch the metrics store, go on.

What a record of each kind produces is its handler's business (``central.ingest.handlers``, looked up by the kind
names of ``sync.records``); this module keeps the stream: inbox, duplicates and conflicts, ranges and losses, the
contiguous mark that is acknowledged. A record its handler cannot use is quarantined and keeps its seq (the stream
goes on); a record of an unknown kind is kept in the inbox only.

The per-stream row in ``ingest_marks`` is locked (``SELECT … FOR UPDATE`` on Postgres) so that several ingest
workers never interleave the same stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import InboxEntry, Node, StreamMark
from central.db.types import utc_from_ns
from central.ingest.handlers import HANDLERS
from central.ingest.handlers.base import Context, RecordRejected, quarantine
from central.metrics import Point
from sync.envelope import Batch, Record, record_digest
from sync.records import LOSS

log = logging.getLogger(__name__)

MAX_HELD_REPORTED = 64
CLOCK_JUMP_NS = 2_000_000_000  # wall clock moving back this much against the monotonic clock is flagged
MAX_HELD_SCANNED = 10_000  # inbox rows beyond the mark looked at per batch


class BatchReplayed(Exception):
    """An old batch sent again: its batch number is older than one already applied and it brings nothing new."""

    def __init__(self, batch: Batch, last_bno: int) -> None:
        self.reason = (f"replayed batch: bno {batch.bno} is older than bno {last_bno} already applied and all "
                       f"{len(batch.records)} record(s) (seq {batch.first_seq}..{batch.last_seq}) are held")
        super().__init__(self.reason)


@dataclass
class ApplyResult:
    acked_seq: int
    held: tuple[int, ...] = ()
    applied: int = 0
    duplicates: int = 0
    conflicts: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    points: int = 0
    lost: int = 0  # sequence numbers the node gave up to its disk quota (thinned / dropped readings)
    clock_flags: list[str] = field(default_factory=list)
    alibi_rejected: list[int] = field(default_factory=list)  # weighings kept whose alibi part was quarantined


def apply_batch(
    sessions: sessionmaker[Session],
    batch: Batch,
    *,
    write_points: Callable[[Sequence[Point]], None] | None = None,
    now: datetime | None = None,
) -> ApplyResult:
    """Apply ``batch`` exactly once; return the ack to send. Raises the metrics store's error (nothing applied,
    the node resends later)."""
    now = now or datetime.now(UTC)
    with sessions.begin() as session:
        mark = _locked_mark(session, batch)
        node = _node_seen(session, batch, now)
        ctx = Context(session=session, batch=batch, now=now)
        result = ApplyResult(acked_seq=mark.acked_seq, alibi_rejected=ctx.alibi_rejected)
        held = _held_digests(session, batch)
        prev: Record | None = None
        for record in batch.records:
            _check_clock(batch, prev, record, result)
            prev = record
            _take(ctx, record, held, result)
        if result.applied == 0 and not result.conflicts and batch.bno and batch.bno < mark.last_bno:
            raise BatchReplayed(batch, mark.last_bno)  # rolls back: nothing of it is kept
        if ctx.points and write_points is not None:
            write_points(ctx.points)  # raises → rollback → no ack → the node resends
        result.points = len(ctx.points)
        session.flush()
        _advance_mark(session, batch, mark, node, result, now)
    log.debug("applied %s: %s", (batch.node, batch.epoch, batch.stream), result)
    return result


def _locked_mark(session: Session, batch: Batch) -> StreamMark:
    """The stream's mark row, locked for this transaction (made on the stream's first batch)."""
    mark = session.execute(
        select(StreamMark).where(
            StreamMark.node_id == batch.node, StreamMark.epoch == batch.epoch, StreamMark.stream == batch.stream
        ).with_for_update()
    ).scalar_one_or_none()
    if mark is None:
        mark = StreamMark(node_id=batch.node, epoch=batch.epoch, stream=batch.stream, acked_seq=0, records=0,
                          duplicates=0)
        session.add(mark)
        session.flush()
    return mark


def _node_seen(session: Session, batch: Batch, now: datetime) -> Node:
    node = session.get(Node, batch.node)
    if node is None:
        node = Node(node_id=batch.node, epoch=batch.epoch, first_seen=now, last_seen=now)
        session.add(node)
    else:
        node.first_seen = node.first_seen or now
        node.last_seen = now
        node.epoch = batch.epoch
    return node


def _held_digests(session: Session, batch: Batch) -> dict[int, str]:
    """seq → digest of the batch's records central already holds."""
    return dict(
        session.execute(
            select(InboxEntry.seq, InboxEntry.digest).where(
                InboxEntry.node_id == batch.node,
                InboxEntry.epoch == batch.epoch,
                InboxEntry.stream == batch.stream,
                InboxEntry.seq.between(batch.first_seq, batch.last_seq),
            )
        ).all()
    )


def _take(ctx: Context, record: Record, held: Mapping[int, str], result: ApplyResult) -> None:
    """One record: a duplicate, a conflict, or new — then its handler's rows (or its quarantine) and its inbox row."""
    session, batch = ctx.session, ctx.batch
    digest = record_digest(record)
    if record.seq in held:
        if held[record.seq] == digest or record.kind == LOSS:
            result.duplicates += 1  # a resend, or a loss marker for a record central has anyway
        else:  # integrity alarm: keep what we hold, put the other body where an auditor finds it
            result.conflicts.append(record.seq)
            quarantine(ctx, record, f"integrity conflict: {batch.stream} seq {record.seq} (epoch {batch.epoch}) "
                                    "resent with a different body; the record held since then is kept")
        return
    if record.from_seq is not None:  # stands for seqs the node gave up: those central lacks are lost
        result.lost += _newly_lost(session, batch, record.from_seq, record.seq - 1)
    if record.kind == LOSS:
        result.lost += 1
    else:
        try:
            _handle(ctx, record)
        except RecordRejected as exc:
            # keep the record (quarantine) and its seq (inbox), so the stream goes on and nothing is lost
            result.rejected.append(record.seq)
            log.error("node %s %s: %s — quarantined", batch.node, batch.stream, exc)
            quarantine(ctx, record, f"rejected record: {exc}")
    session.add(
        InboxEntry(
            node_id=batch.node, epoch=batch.epoch, stream=batch.stream, seq=record.seq,
            record_id=record.record_id, kind=record.kind, digest=digest, received_at=ctx.now,
            first_seq=record.from_seq, device_time=utc_from_ns(record.ts_ns), mono_ns=record.mono_ns,
            boot_id=batch.boot_id or None,
        )
    )
    result.applied += 1


def _handle(ctx: Context, record: Record) -> None:
    handler = HANDLERS.get(record.kind)
    if handler is None:
        log.warning("node %s: record seq %d of unknown kind %r kept in the inbox only", ctx.batch.node, record.seq,
                    record.kind)
        return
    handler(ctx, record)


def _newly_lost(session: Session, batch: Batch, first: int, last: int) -> int:
    """How many of the seqs ``first..last`` central neither holds nor already counted lost: a held record covers its
    own seq and, when it is a range record (thinned sample or loss marker), the seqs from its ``first_seq`` on."""
    if last < first:
        return 0
    rows = session.execute(
        select(InboxEntry.seq, InboxEntry.first_seq).where(
            InboxEntry.node_id == batch.node, InboxEntry.epoch == batch.epoch, InboxEntry.stream == batch.stream,
            InboxEntry.seq >= first, func.coalesce(InboxEntry.first_seq, InboxEntry.seq) <= last,
        ).order_by(InboxEntry.seq)
    ).all()
    accounted = 0
    upto = first - 1  # highest seq of first..last known to be accounted for so far (ranges merged in seq order)
    for lo, hi in sorted((max(start or seq, first), min(seq, last)) for seq, start in rows):
        if hi > upto:
            accounted += hi - max(lo, upto + 1) + 1
            upto = hi
    return (last - first + 1) - accounted


def _check_clock(batch: Batch, prev: Record | None, record: Record, result: ApplyResult) -> None:
    """Within one boot, wall − monotonic must not shrink: if it does, the node's wall clock was set back."""
    if prev is None or prev.mono_ns is None or record.mono_ns is None or record.mono_ns < prev.mono_ns:
        return
    drift = (record.ts_ns - record.mono_ns) - (prev.ts_ns - prev.mono_ns)
    if drift <= -CLOCK_JUMP_NS:
        flag = (f"wall clock of node {batch.node} jumped back {-drift / 1e9:.1f} s between {batch.stream} seq "
                f"{prev.seq} and {record.seq}")
        log.warning("%s", flag)
        result.clock_flags.append(flag)


def _advance_mark(session: Session, batch: Batch, mark: StreamMark, node: Node, result: ApplyResult,
                  now: datetime) -> None:
    """Move the contiguous mark over what central now holds (a held record covers its range from ``first_seq``), set
    the ack in ``result`` and count the batch on the mark and the node."""
    acked = mark.acked_seq
    if batch.first_seq <= acked + 1:
        acked = max(acked, batch.last_seq)
    beyond = session.execute(
        select(InboxEntry.seq, InboxEntry.first_seq)
        .where(
            InboxEntry.node_id == batch.node, InboxEntry.epoch == batch.epoch,
            InboxEntry.stream == batch.stream, InboxEntry.seq > acked,
        )
        .order_by(InboxEntry.seq)
        .limit(MAX_HELD_SCANNED)
    ).all()
    held: list[int] = []
    for seq, first in beyond:
        if (first or seq) <= acked + 1 and not held:
            acked = seq
        else:
            held.append(seq)
    mark.acked_seq = acked
    mark.records += result.applied
    mark.duplicates += result.duplicates
    mark.lost = (mark.lost or 0) + result.lost
    mark.last_bno = max(mark.last_bno or 0, batch.bno)
    mark.last_batch_at = now
    if result.clock_flags:
        node.clock_flag = result.clock_flags[-1]
        node.clock_flag_at = now
    result.acked_seq = acked
    result.held = tuple(held[:MAX_HELD_REPORTED])


__all__ = ["ApplyResult", "BatchReplayed", "apply_batch"]
