"""What a record kind's handler gets and may raise, and the steps several handlers share.

A handler is ``handle(ctx, record) -> None``: it checks the record's ``data`` with the kind's payload model
(:func:`checked`), adds the rows it produces to ``ctx.session`` (the batch's transaction) and, for readings, the
points to ``ctx.points`` (written to the metrics store before the commit). A record it cannot use raises
:class:`RecordRejected`: ``apply`` then quarantines it and keeps its sequence number, so the stream goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy.orm import Session

from central.db.models import Device, QuarantineEntry
from central.db.types import utc_from_ns
from central.metrics import Point
from sync.envelope import Batch, Record
from sync.errors import DecodeError
from sync.records import Payload

P = TypeVar("P", bound=Payload)


class RecordRejected(Exception):
    """A record that decodes but whose business content is unusable (e.g. a weight that is not a number)."""

    def __init__(self, record: Record, reason: str) -> None:
        self.record = record
        self.reason = reason
        super().__init__(f"record seq {record.seq} ({record.kind}, device {record.device}): {reason}")


@dataclass
class Context:
    """The batch a record belongs to, the transaction it is applied in and what the handlers hand back."""

    session: Session
    batch: Batch
    now: datetime  # when central received it
    points: list[Point] = field(default_factory=list)  # readings for the metrics store, written before the commit
    alibi_rejected: list[int] = field(default_factory=list)  # weighings kept whose alibi part was quarantined


Handler = Callable[[Context, Record], None]


def checked(record: Record, model: type[P]) -> P:
    """``record.data`` checked with the kind's payload model; RecordRejected naming the field."""
    try:
        return model.from_payload(record.data)
    except DecodeError as exc:
        raise RecordRejected(record, str(exc)) from None


def quarantine(ctx: Context, record: Record, reason: str) -> None:
    """A copy of ``record`` to the quarantine with ``reason``, in the batch's transaction."""
    batch = ctx.batch
    ctx.session.add(QuarantineEntry(received_at=ctx.now, topic=f"{batch.node}/{batch.stream}", node_id=batch.node,
                                    reason=reason, payload=json.dumps(record.to_json(), ensure_ascii=False).encode()))


def touch_device(ctx: Context, record: Record, *, device_kind: str | None = None) -> Device:
    """The record's device (made on first sight): its kind when the record says it, ``last_seen`` moved forward to
    the record's time."""
    session, node = ctx.session, ctx.batch.node
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
    if device_kind is not None:
        dev.kind = device_kind
    seen = utc_from_ns(record.ts_ns)
    if dev.last_seen is None or seen > dev.last_seen:
        dev.last_seen = seen
    return dev


__all__ = ["Context", "Handler", "RecordRejected", "checked", "quarantine", "touch_device"]
