"""The health stream's records → the ``Device`` row: its status (``device_status``), its counters
(``device_health``); a ``point_event`` is kept in the inbox only. Payloads: ``sync.records.device_status``,
``device_health``, ``point_event``.
"""

from __future__ import annotations

from central.db.types import utc_from_ns
from central.ingest.handlers.base import Context, checked, touch_device
from sync.envelope import Record
from sync.records.device_health import DeviceHealthPayload
from sync.records.device_status import DeviceStatusPayload
from sync.records.point_event import PointEventPayload


def apply_device_status(ctx: Context, record: Record) -> None:
    """The device's status, unless central already holds a later one (records of one stream may come late)."""
    payload = checked(record, DeviceStatusPayload)
    dev = touch_device(ctx, record, device_kind=payload.device_kind)
    changed = utc_from_ns(record.ts_ns)
    if dev.status_changed_at is None or changed >= dev.status_changed_at:
        dev.status = payload.status
        dev.status_reason = payload.reason
        dev.status_changed_at = changed


def apply_device_health(ctx: Context, record: Record) -> None:
    """The device's latest counters."""
    payload = checked(record, DeviceHealthPayload)
    dev = touch_device(ctx, record, device_kind=payload.device_kind)
    if payload.counters is not None:
        dev.counters = dict(payload.counters)


def apply_point_event(ctx: Context, record: Record) -> None:
    """Checked and kept in the inbox (the node's history of its event points); nothing else is stored."""
    checked(record, PointEventPayload)


__all__ = ["apply_device_health", "apply_device_status", "apply_point_event"]
