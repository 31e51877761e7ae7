"""``/api/v1/readings``: the time series of the devices, read from the metrics store (InfluxDB; SQLite in the demo).

    GET /api/v1/readings/latest?node_id=&device_id=&point=         newest value per node / device / point
    GET /api/v1/readings?node_id=N&device_id=D[&point=P]            fn of the values per time bucket
        [&start=2024-05-01T06:00:00+02:00&end=…][&every=5m][&fn=mean|min|max|first|last|count|sum]

Readings are InfluxDB points of measurement ``readings`` (``device_health`` for a device's own counters) with tags
``node``, ``device``, ``point``, ``unit`` and field ``value`` (``ingest/handlers/reading.py``). A series of the range
query is one node / device / point / unit; a bucket starts at a multiple of ``every`` since the Unix epoch, and only
buckets holding a value are listed. Without ``every`` the API picks the shortest of 1s, 5s, … 1d, 7d, 30d, 365d that
gives at most ``TARGET_BUCKETS`` buckets; an ``every`` that would give more than ``MAX_BUCKETS`` is refused (400,
``field: every``).

Errors: a malformed parameter is 422 ``invalid_request``; a range that cannot be answered (start not before end,
a time outside InfluxDB's years 1677–2262, too many buckets) is 400; InfluxDB not answering is 503
``metrics_unavailable`` with ``Retry-After`` — the details go to the log, not to the caller.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from central.api.deps import StateDep
from central.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from central.api.params import IsoTime
from central.api.security import CanRead
from central.metrics import MetricsStoreError
from central.metrics.base import (
    MAX_BUCKETS,
    MAX_TIME_NS,
    MIN_TIME_NS,
    AggregateFn,
    bucket_count,
    check_tag_value,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/readings", tags=["readings"])

Measurement = Literal["readings", "device_health"]
DEFAULT_RANGE = timedelta(hours=1)
TARGET_BUCKETS = 500  # what an automatic `every` aims at: enough for a chart
MAX_EVERY_S = 366 * 86400
RETRY_AFTER_S = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"^([1-9][0-9]{0,8})(ms|s|m|h|d)$")
_AUTO_EVERY = ("1s", "5s", "10s", "30s", "1m", "5m", "10m", "30m", "1h", "3h", "6h", "12h", "1d", "7d", "30d", "365d")
_GROUP = ["node", "device", "point", "unit"]

RESPONSES: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    503: {"model": ErrorResponse, "description": "The metrics store (InfluxDB) does not answer: code "
                                                 "`metrics_unavailable`; try again after `Retry-After` seconds."},
}


class LatestReading(BaseModel):
    node_id: str = Field(examples=["mill-01"])
    device_id: str = Field(examples=["silo-3"])
    point: str = Field(description="the device's point (register map / profile name)", examples=["level_pct"])
    value: float = Field(examples=[71.5])
    unit: str | None = Field(description="as the device profile names it; null if it has none", examples=["%"])
    time: datetime = Field(description="when the node read it (its clock, UTC, µs)")


class LatestReadings(BaseModel):
    items: list[LatestReading] = Field(description="one per node / device / point, sorted by them")


class Bucket(BaseModel):
    time: datetime = Field(description="start of the bucket (UTC)", examples=["2024-05-01T06:05:00Z"])
    value: float | int | None = Field(
        description="fn of the values in the bucket (an integer for `count`); null only where the result is not a "
                    "finite number (a sum that overflows)", examples=[71.25])


class ReadingSeries(BaseModel):
    node_id: str = Field(examples=["mill-01"])
    device_id: str = Field(examples=["silo-3"])
    point: str = Field(examples=["level_pct"])
    unit: str | None = Field(description="a change of unit starts another series", examples=["%"])
    points: list[Bucket] = Field(description="buckets holding a value, oldest first")


class Readings(BaseModel):
    measurement: Measurement
    start: datetime = Field(description="start of the range (UTC), inclusive")
    end: datetime = Field(description="end of the range (UTC), exclusive")
    every: str = Field(description="bucket length as given, or as chosen when not given", examples=["1m"])
    every_s: float = Field(description="bucket length in seconds", examples=[60.0])
    fn: AggregateFn
    series: list[ReadingSeries] = Field(description="one per point and unit, sorted by point")


def _ns(dt: datetime, field: str) -> int:
    ns = (dt - _EPOCH) // timedelta(microseconds=1) * 1000
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise ApiError(400, "invalid_range", f"{field} {dt.isoformat()} is outside the years InfluxDB can store "
                       "(1677-09-21 to 2262-04-11)", field=field)
    return ns


def _datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _tag_filter(**values: str | None) -> dict[str, str]:
    """Tag filter of the given query parameters (``node_id`` → tag ``node``); 422 naming one no tag can match."""
    tags = {}
    for name, value in values.items():
        if value is None:
            continue
        try:
            check_tag_value(name, value)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc), field=name) from None
        tags[name.removesuffix("_id")] = value
    return tags


def _unavailable(exc: MetricsStoreError) -> ApiError:
    log.warning("readings: metrics store failed: %s", exc)
    return ApiError(503, "metrics_unavailable",
                    f"the metrics store ({exc.backend}) cannot answer now; try again later",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


def parse_every(text: str) -> float:
    """``"90s"`` → 90.0, ``"5m"`` → 300.0, ``"250ms"`` → 0.25 (the pattern is checked by the query parameter)."""
    match = _EVERY.match(text)
    if match is None:
        raise ApiError(422, "invalid_request", f"every: expected a number and ms, s, m, h or d, like 5m, not "
                       f"{text!r}", field="every")
    return int(match[1]) * _UNITS_S[match[2]]


def _auto_every(start_ns: int, end_ns: int) -> str:
    for every in _AUTO_EVERY:
        if bucket_count(start_ns, end_ns, round(parse_every(every) * 1e9)) <= TARGET_BUCKETS:
            return every
    return _AUTO_EVERY[-1]


# a tag value as check_tag_value accepts it (no control character; a backslash never last nor before , = space "),
# stated in the schema so that clients (and schemathesis) know the rule
TAG_VALUE = r'^(?:[^\x00-\x1f\x7f-\x9f\\]|\\+[^\x00-\x1f\x7f-\x9f\\, ="])+$'
NodeId = Annotated[str | None, Query(min_length=1, max_length=200, pattern=TAG_VALUE, examples=["mill-01"])]
DeviceId = Annotated[str | None, Query(min_length=1, max_length=200, pattern=TAG_VALUE, examples=["silo-3"])]
PointName = Annotated[str | None, Query(min_length=1, max_length=200, pattern=TAG_VALUE,
                                        description="one point of the device", examples=["level_pct"])]
MeasurementParam = Annotated[Measurement, Query(
    description="`readings` (the device values) or `device_health` (rtt_ms, polls, ok, errors_<kind>, online)")]


@router.get("/latest", response_model=LatestReadings, responses=RESPONSES,
            summary="The newest value of every point (filter by node, device, point)")
def latest_readings(
    state: StateDep,
    principal: CanRead,
    node_id: NodeId = None,
    device_id: DeviceId = None,
    point: PointName = None,
    measurement: MeasurementParam = "readings",
) -> LatestReadings:
    tags = _tag_filter(node_id=node_id, device_id=device_id, point=point)
    try:
        points = state.store.latest(measurement, group_by=["node", "device", "point"], tags=tags)
    except MetricsStoreError as exc:
        raise _unavailable(exc) from exc
    items = []
    for p in points:
        value = p.fields.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        items.append(LatestReading(
            node_id=p.tags.get("node", ""), device_id=p.tags.get("device", ""), point=p.tags.get("point", ""),
            value=float(value), unit=p.tags.get("unit"), time=_datetime(p.time_ns),
        ))
    return LatestReadings(items=items)


@router.get("", response_model=Readings, responses=RESPONSES,
            summary="Values of one device over a time range, aggregated per time bucket")
def readings(
    state: StateDep,
    principal: CanRead,
    node_id: Annotated[str, Query(min_length=1, max_length=200, pattern=TAG_VALUE, examples=["mill-01"])],
    device_id: Annotated[str, Query(min_length=1, max_length=200, pattern=TAG_VALUE, examples=["silo-3"])],
    point: PointName = None,
    measurement: MeasurementParam = "readings",
    start: Annotated[AwareDatetime | None, IsoTime, Query(
        description="ISO 8601 with a time zone, inclusive; default: an hour before `end`",
        examples=["2024-05-01T06:00:00+02:00"])] = None,
    end: Annotated[AwareDatetime | None, IsoTime, Query(
        description="ISO 8601 with a time zone, exclusive; default: now", examples=["2024-05-01T07:00:00Z"])] = None,
    every: Annotated[str | None, Query(
        pattern=_EVERY.pattern, description=f"bucket length: a number and ms, s, m, h or d (at most 366d); default: "
        f"chosen for at most {TARGET_BUCKETS} buckets; more than {MAX_BUCKETS} buckets are refused",
        examples=["5m"])] = None,
    fn: Annotated[AggregateFn, Query(description="what a bucket's values become")] = "mean",
) -> Readings:
    tags = _tag_filter(node_id=node_id, device_id=device_id, point=point)
    end_ns = _ns(end, "end") if end is not None else _ns(datetime.now(UTC), "end")
    start_ns = _ns(start, "start") if start is not None else max(
        MIN_TIME_NS, end_ns - DEFAULT_RANGE // timedelta(microseconds=1) * 1000)
    if start_ns >= end_ns:
        raise ApiError(400, "invalid_range", "start must be before end (end defaults to now)", field="start")
    if every is None:
        every = _auto_every(start_ns, end_ns)
    every_s = parse_every(every)
    if every_s > MAX_EVERY_S:
        raise ApiError(400, "invalid_request", f"every {every} is longer than 366d", field="every")
    every_ns = round(every_s * 1e9)
    if start_ns // every_ns * every_ns < MIN_TIME_NS:
        raise ApiError(400, "invalid_range", f"start: its bucket of every {every} would begin before the earliest "
                       "time InfluxDB can store (1677-09-21)", field="start")
    buckets = bucket_count(start_ns, end_ns, every_ns)
    if buckets > MAX_BUCKETS:
        raise ApiError(400, "too_many_buckets", f"every {every} makes {buckets} buckets of the range, at most "
                       f"{MAX_BUCKETS} are allowed: choose a longer every or a shorter range", field="every")
    try:
        found = state.store.aggregate(measurement, tags=tags, start_ns=start_ns, end_ns=end_ns, every_s=every_s,
                                      fn=fn, group_by=_GROUP)
    except MetricsStoreError as exc:
        raise _unavailable(exc) from exc
    series = [
        ReadingSeries(
            node_id=s.tags["node"], device_id=s.tags["device"], point=s.tags["point"], unit=s.tags["unit"] or None,
            points=[Bucket(time=_datetime(t), value=v if math.isfinite(v) else None) for t, v in s.buckets],
        )
        for s in found
    ]
    return Readings(measurement=measurement, start=_datetime(start_ns), end=_datetime(end_ns), every=every,
                    every_s=every_s, fn=fn, series=series)
