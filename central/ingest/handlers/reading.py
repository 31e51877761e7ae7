"""``reading`` records → points in the metrics store, written before the batch's transaction commits (if the store is
down the transaction rolls back and the node sends the batch again later).

One point per value (``sync.records.reading.ReadingPayload``): measurement ``readings`` (or ``device_health`` for a
device's own counters), tags node / device / point / unit, field ``value``.
"""

from __future__ import annotations

from central.ingest.handlers.base import Context, RecordRejected, checked, touch_device
from central.metrics import Point
from sync.envelope import Record
from sync.records.reading import ReadingPayload


def reading_points(node: str, record: Record, payload: ReadingPayload) -> list[Point]:
    """The points of ``record`` (its data is ``payload``); RecordRejected for a value InfluxDB cannot store."""
    points = []
    for name, value in payload.values.items():
        tags = {"node": node, "device": record.device, "point": str(name)}
        unit = payload.units.get(name)
        if unit:
            tags["unit"] = unit
        try:
            points.append(Point(payload.series, tags, {"value": float(value)}, record.ts_ns))
        except ValueError as exc:  # a name InfluxDB cannot store, a time out of range
            raise RecordRejected(record, f"data.values.{name}: {exc}") from None
    return points


def apply_reading(ctx: Context, record: Record) -> None:
    ctx.points.extend(reading_points(ctx.batch.node, record, checked(record, ReadingPayload)))
    touch_device(ctx, record)


__all__ = ["apply_reading", "reading_points"]
