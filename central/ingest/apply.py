"""Applies one decoded batch to central's database in one transaction — exactly once.

For every record an inbox row keyed by ``(node, epoch, stream, seq)`` is inserted together with the business rows
it produces. A record whose inbox row exists is a harmless resend (counted as a duplicate); the same seq with a
different body is an **integrity conflict**: nothing of it is applied, it is reported, never overwritten.
Readings of new records are written to the metrics store *before* the transaction commits: if the store is down
the transaction rolls back, no ack is sent and the node sends the batch again later — while business batches,
which do not touch the metrics store, go on.

The per-stream row in ``ingest_marks`` is locked (``SELECT … FOR UPDATE`` on Postgres) so that several ingest
workers never interleave the same stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import Device, InboxEntry, Node, QuarantineEntry, StreamMark
from central.fiscal.records import BadTseRecord, tse_row
from central.fiscal.verify import store_transaction
from central.ingest.weighings import BadWeighing, weighing_row
from central.metrics import Point
from central.tickets.alibi import entry_from_record
from central.tickets.pairing import on_weighing
from sync.envelope import Batch, Record, record_digest

log = logging.getLogger(__name__)

MAX_HELD_REPORTED = 64
LOSS_KIND = "loss"  # a record standing for readings the node dropped to its disk quota
CLOCK_JUMP_NS = 2_000_000_000  # wall clock moving back this much against the monotonic clock is flagged
SERIES = frozenset({"readings", "device_health"})  # InfluxDB measurements a reading record may go to


class BatchReplayed(Exception):
    """An old batch sent again: its batch number is older than one already applied and it brings nothing new."""

    def __init__(self, batch: Batch, last_bno: int) -> None:
        self.reason = (f"replayed batch: bno {batch.bno} is older than bno {last_bno} already applied and all "
                       f"{len(batch.records)} record(s) (seq {batch.first_seq}..{batch.last_seq}) are held")
        super().__init__(self.reason)


class RecordRejected(Exception):
    """A record that decodes but whose business content is unusable (e.g. a weight that is not a number)."""

    def __init__(self, record: Record, reason: str) -> None:
        self.record = record
        self.reason = reason
        super().__init__(f"record seq {record.seq} ({record.kind}, device {record.device}): {reason}")


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


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)  # SQLite hands back naive datetimes; we only ever store UTC
    return dt


def reading_points(node: str, record: Record) -> list[Point]:
    """One point per value: measurement ``readings`` (or ``device_health`` for a device's own counters), tags
    node/device/point/unit, field ``value``."""
    values = record.data.get("values")
    units = record.data.get("units") or {}
    series = record.data.get("series", "readings")
    if series not in SERIES:
        raise RecordRejected(record, f"data.series: expected one of {sorted(SERIES)}, got {series!r}")
    if not isinstance(values, dict):
        raise RecordRejected(record, "data.values: expected an object of point name → number")
    points = []
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordRejected(record, f"data.values.{name}: expected a number, got {value!r}")
        tags = {"node": node, "device": record.device, "point": str(name)}
        unit = units.get(name) if isinstance(units, dict) else None
        if unit:
            tags["unit"] = str(unit)
        try:
            points.append(Point(series, tags, {"value": float(value)}, record.ts_ns))
        except ValueError as exc:  # a name InfluxDB cannot store, a time out of range
            raise RecordRejected(record, f"data.values.{name}: {exc}") from None
    return points


def _touch_device(session: Session, node: str, record: Record, seen: datetime) -> Device:
    # the session's identity map holds objects weakly: keep the batch's devices here, one SELECT per device and
    # batch instead of one per record
    cache: dict[tuple[str, str], Device] = session.info.setdefault("floorgate_devices", {})
    dev = cache.get((node, record.device))
    if dev is None:
        dev = session.get(Device, (node, record.device))
        if dev is None:
            dev = Device(node_id=node, device_id=record.device)
            session.add(dev)
        cache[(node, record.device)] = dev
    kind = record.data.get("device_kind")
    if isinstance(kind, str):
        dev.kind = kind
    last = _aware(dev.last_seen)
    if last is None or seen > last:
        dev.last_seen = seen
    return dev


def _apply_weighing(session: Session, batch: Batch, record: Record, now: datetime, result: ApplyResult) -> None:
    """The ``Weighing`` row and, in the same transaction, the ``AlibiEntry`` of its alibi part (central.tickets.alibi).

    An unusable alibi part does not cost the weighing: the weighing is kept and a copy of the record goes to the
    quarantine with the reason. An unusable weighing (RecordRejected) still leaves its intact alibi entry, so that
    central's copy of the chain has no hole; verify-alibi then names the entry's weighing as missing."""
    node = session.get(Node, batch.node)
    alibi = entry_from_record(session, node=batch.node, public_key=node.public_key if node else None, record=record,
                              received_at=now)
    if alibi.entry is not None:
        session.add(alibi.entry)
    try:
        weighing = weighing_row(node=batch.node, epoch=batch.epoch, record=record, weighed_at=_ts(record.ts_ns),
                                received_at=now)
    except BadWeighing as exc:
        raise RecordRejected(record, exc.reason) from None
    weighing.alibi_no = alibi.alibi_no
    session.add(weighing)
    on_weighing(session, weighing, record.data, now)  # paired into a ticket in this transaction (central.tickets)
    if alibi.problem is not None:
        result.alibi_rejected.append(record.seq)
        log.error("node %s %s seq %d: alibi part not stored: %s — the weighing is kept, a copy quarantined",
                  batch.node, batch.stream, record.seq, alibi.problem)
        session.add(QuarantineEntry(
            received_at=now, topic=f"{batch.node}/{batch.stream}", node_id=batch.node,
            reason=(f"alibi part not stored: record seq {record.seq} (weighing {record.record_id}, device "
                    f"{record.device}): {alibi.problem}; the weighing itself was applied"),
            payload=json.dumps(record.to_json(), ensure_ascii=False).encode()))
    dev = _touch_device(session, batch.node, record, _ts(record.ts_ns))
    dev.kind = dev.kind or "scale"


def _apply_record(session: Session, batch: Batch, record: Record, now: datetime, points: list[Point],
                  result: ApplyResult) -> None:
    node = batch.node
    data = record.data
    if record.kind == "weighing":
        _apply_weighing(session, batch, record, now, result)
    elif record.kind == "reading":
        points.extend(reading_points(node, record))
        _touch_device(session, node, record, _ts(record.ts_ns))
    elif record.kind == "device_status":
        dev = _touch_device(session, node, record, _ts(record.ts_ns))
        changed = _ts(record.ts_ns)
        if dev.status_changed_at is None or changed >= _aware(dev.status_changed_at):  # type: ignore[operator]
            dev.status = str(data.get("status"))
            dev.status_reason = data.get("reason")
            dev.status_changed_at = changed
    elif record.kind == "device_health":
        dev = _touch_device(session, node, record, _ts(record.ts_ns))
        counters = data.get("counters")
        if isinstance(counters, dict):
            dev.counters = counters
    elif record.kind == "tse_transaction":
        try:  # central.fiscal: the row, verified together with the rows it affects, in this transaction
            store_transaction(session, tse_row(node=node, record=record, received_at=now), now=now)
        except BadTseRecord as exc:
            raise RecordRejected(record, exc.reason) from None
    else:
        log.warning("node %s: record seq %d of unknown kind %r kept in the inbox only", node, record.seq, record.kind)


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
    key = (batch.node, batch.epoch, batch.stream)
    with sessions.begin() as session:
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
        node = session.get(Node, batch.node)
        if node is None:
            node = Node(node_id=batch.node, epoch=batch.epoch, first_seen=now, last_seen=now)
            session.add(node)
        else:
            node.first_seen = node.first_seen or now
            node.last_seen = now
            node.epoch = batch.epoch

        existing: dict[int, str] = dict(
            session.execute(
                select(InboxEntry.seq, InboxEntry.digest).where(
                    InboxEntry.node_id == batch.node,
                    InboxEntry.epoch == batch.epoch,
                    InboxEntry.stream == batch.stream,
                    InboxEntry.seq.between(batch.first_seq, batch.last_seq),
                )
            ).all()
        )
        result = ApplyResult(acked_seq=mark.acked_seq)
        points: list[Point] = []
        prev: Record | None = None
        for record in batch.records:
            _check_clock(batch, prev, record, result)
            prev = record
            digest = record_digest(record)
            if record.seq in existing:
                if existing[record.seq] == digest or record.kind == LOSS_KIND:
                    result.duplicates += 1  # a resend, or a loss marker for a record central has anyway
                else:  # integrity alarm: keep what we hold, put the other body where an auditor finds it
                    result.conflicts.append(record.seq)
                    session.add(QuarantineEntry(
                        received_at=now, topic=f"{batch.node}/{batch.stream}", node_id=batch.node,
                        reason=(f"integrity conflict: {batch.stream} seq {record.seq} (epoch {batch.epoch}) resent "
                                f"with a different body; the record held since then is kept"),
                        payload=json.dumps(record.to_json(), ensure_ascii=False).encode()))
                continue
            if record.from_seq is not None:  # stands for seqs the node gave up: those central lacks are lost
                result.lost += _newly_lost(session, batch, record.from_seq, record.seq - 1)
            if record.kind == LOSS_KIND:
                result.lost += 1
            try:
                if record.kind != LOSS_KIND:
                    _apply_record(session, batch, record, now, points, result)
            except RecordRejected as exc:
                # keep the record (quarantine) and its seq (inbox), so the stream goes on and nothing is lost
                result.rejected.append(record.seq)
                log.error("node %s %s: %s — quarantined", batch.node, batch.stream, exc)
                session.add(
                    QuarantineEntry(
                        received_at=now, topic=f"{batch.node}/{batch.stream}", node_id=batch.node,
                        reason=f"rejected record: {exc}",
                        payload=json.dumps(record.to_json(), ensure_ascii=False).encode(),
                    )
                )
            session.add(
                InboxEntry(
                    node_id=batch.node, epoch=batch.epoch, stream=batch.stream, seq=record.seq,
                    record_id=record.record_id, kind=record.kind, digest=digest, received_at=now,
                    first_seq=record.from_seq, device_time=_ts(record.ts_ns), mono_ns=record.mono_ns,
                    boot_id=batch.boot_id or None,
                )
            )
            result.applied += 1
        if result.applied == 0 and not result.conflicts and batch.bno and batch.bno < mark.last_bno:
            raise BatchReplayed(batch, mark.last_bno)  # rolls back: nothing of it is kept
        if points and write_points is not None:
            write_points(points)  # raises → rollback → no ack → the node resends
        result.points = len(points)

        session.flush()
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
            .limit(10_000)
        ).all()
        held = []
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
    log.debug("applied %s: %s", key, result)
    return result
