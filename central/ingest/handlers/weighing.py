"""``weighing`` records → a ``Weighing`` row, its ``AlibiEntry`` and its place on a ticket, in the batch's
transaction.

The record's ``data`` is ``sync.records.weighing.WeighingPayload`` (the contract every driver and central code
against). The values are stored exactly as the instrument delivered them (devices.md §4), each with its own digits
(``central.db.types.ExactText``: ``"24560.0"``, ``"8420.5"``, ``"8.425"`` stay those strings; no shared number of
decimals, no float, never recomputed or re-rounded). A value central cannot store as it is makes the record
unusable: the payload model names the field and ``apply`` quarantines the record.
"""

from __future__ import annotations

import logging
from datetime import datetime

from central.db.models import Node, Weighing
from central.db.types import utc_from_ns
from central.db.values import decimal_or_none
from central.ingest.handlers.base import Context, checked, quarantine, touch_device
from central.tickets.alibi import entry_from_record
from central.tickets.pairing import on_weighing
from sync.envelope import Record
from sync.records.weighing import LEGACY_TRIGGERS, WeighingPayload

log = logging.getLogger(__name__)

DEVICE_KIND = "scale"  # a device central knows only from its weighings


def weighing_row(*, node: str, epoch: str, record: Record, payload: WeighingPayload, weighed_at: datetime,
                 received_at: datetime) -> Weighing:
    """The row for ``record`` (a ``weighing`` whose data is ``payload``)."""
    v = payload.values
    gross, tare, net = decimal_or_none(v.gross), decimal_or_none(v.tare), decimal_or_none(v.net)  # checked
    # a tared weighing whose instrument delivers net and tare but no gross keeps gross NULL: never computed here
    trigger = payload.trigger
    return Weighing(
        node_id=node,
        record_id=record.record_id,
        epoch=epoch,
        seq=record.seq,
        device_id=record.device,
        gross=gross,
        unit=v.unit,
        tare=tare,
        tare_preset=v.tare_preset,
        net=net,
        scale_serial=payload.scale_serial,
        instrument_alibi=v.instrument_alibi,
        reference=payload.reference,
        vehicle=payload.vehicle,
        trigger=LEGACY_TRIGGERS.get(trigger, trigger) if trigger is not None else None,
        raw=v.raw,
        weighed_at=weighed_at,
        received_at=received_at,
    )


def apply_weighing(ctx: Context, record: Record) -> None:
    """The ``Weighing`` row and, in the same transaction, the ``AlibiEntry`` of its alibi part (central.tickets.alibi).

    An unusable alibi part does not cost the weighing: the weighing is kept and a copy of the record goes to the
    quarantine with the reason. An unusable weighing (RecordRejected) still leaves its intact alibi entry, so that
    central's copy of the chain has no hole; verify-alibi then names the entry's weighing as missing."""
    session, batch, now = ctx.session, ctx.batch, ctx.now
    node = session.get(Node, batch.node)
    alibi = entry_from_record(session, node=batch.node, public_key=node.public_key if node else None, record=record,
                              received_at=now)
    if alibi.entry is not None:
        session.add(alibi.entry)
    payload = checked(record, WeighingPayload)
    weighing = weighing_row(node=batch.node, epoch=batch.epoch, record=record, payload=payload,
                            weighed_at=utc_from_ns(record.ts_ns), received_at=now)
    weighing.alibi_no = alibi.alibi_no
    session.add(weighing)
    on_weighing(session, weighing, dict(record.data), now)  # paired into a ticket in this transaction
    if alibi.problem is not None:
        ctx.alibi_rejected.append(record.seq)
        log.error("node %s %s seq %d: alibi part not stored: %s — the weighing is kept, a copy quarantined",
                  batch.node, batch.stream, record.seq, alibi.problem)
        quarantine(ctx, record, f"alibi part not stored: record seq {record.seq} (weighing {record.record_id}, "
                                f"device {record.device}): {alibi.problem}; the weighing itself was applied")
    dev = touch_device(ctx, record)
    dev.kind = dev.kind or DEVICE_KIND


__all__ = ["apply_weighing", "weighing_row"]
