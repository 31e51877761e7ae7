"""The time-series store interface behind central: ``Point``, ``MetricsStore`` and ``MetricsStoreError``.

Central writes readings and health figures as points; every backend (InfluxDB 1.x, InfluxDB 2.x/3.x, SQLite for
the demo) implements ``MetricsStore`` and passes the same conformance suite
(``tests/integration/test_metrics_stores.py``). The semantics are InfluxDB's:

- A point is identified by measurement + tag set + time (ns). Writing a point again with the same identity is
  idempotent; new fields are merged into the stored ones, the newer value wins for a field present in both.
- A field keeps the type it was first written with (float, integer, boolean, string); writing another type is a
  non-retryable error ("field type conflict").
- ``query`` returns points ordered by time (ties in unspecified order) with the time range half-open:
  ``start_ns <= time < end_ns``.
- ``aggregate`` is InfluxQL's ``SELECT fn(field) ... GROUP BY time(every), <tags> fill(none)``: buckets start at
  multiples of ``every`` counted from the Unix epoch (the first one may start before ``start_ns``), only buckets
  holding a value are returned, and a bucket's time is its start. ``fn`` is one of ``AGGREGATE_FUNCTIONS``; the
  field must be numeric (float or integer) except for ``count``. Values come back as ``float`` (``count``: ``int``);
  a sum that overflows is ``inf`` on SQLite, and InfluxDB fails the whole query (it cannot encode it in JSON).

What a point may contain is checked when it is built, so that all backends accept and return the same points
(the limits come from the line protocol of InfluxDB 1.x/2.x, see ``lineprotocol.py``):

- measurement, tag keys, tag values and field keys: non-empty ``str``, no control characters (tab, newline, NUL,
  ...), a backslash neither last nor in front of ``,``, ``=``, space or ``"`` (InfluxDB 1.x keeps other
  backslashes literally but cannot express these, and unescapes ``\"`` in measurements and field keys);
- measurement, tag keys and field keys do not start with ``_`` (reserved by InfluxDB); a measurement does not start
  with ``#`` (the line would be a comment); ``time`` is not a tag or field key; no key is both a tag and a field;
- fields: at least one; ``bool``, ``int`` (signed 64 bit), finite ``float`` or ``str`` (any text, newlines
  included; a float ``-0.0`` reads back from InfluxDB as ``0.0``);
- ``time_ns``: within InfluxDB's range, ``-2**63 + 2 <= time_ns <= 2**63 - 2``.

Errors: invalid arguments raise ``ValueError``; everything that goes wrong in the store raises
``MetricsStoreError`` with ``retryable`` telling the caller whether the same call may succeed later
(server down, timeout, 5xx, database locked) or not (bad request, type conflict, authentication).
"""

from __future__ import annotations

import abc
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal, Self, get_args

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "MAX_BUCKETS",
    "MAX_TIME_NS",
    "MIN_EVERY_NS",
    "MIN_TIME_NS",
    "AggregateFn",
    "AggregatedSeries",
    "FieldValue",
    "MetricsStore",
    "MetricsStoreError",
    "Point",
    "bucket_count",
    "check_key",
    "check_name",
    "check_tag_value",
    "field_type",
]

FieldValue = float | int | bool | str

MIN_TIME_NS = -(2**63) + 2
MAX_TIME_NS = 2**63 - 2
_MIN_INT = -(2**63)
_MAX_INT = 2**63 - 1
_RESERVED_KEYS = frozenset({"time"})
_SPECIAL_AFTER_BACKSLASH = frozenset(', ="')

AggregateFn = Literal["mean", "min", "max", "first", "last", "count", "sum"]
AGGREGATE_FUNCTIONS: tuple[str, ...] = get_args(AggregateFn)
MAX_BUCKETS = 10_000  # per series and call: a bound on the work one ``aggregate`` may ask of the store
MIN_EVERY_NS = 1_000_000  # 1 ms
_MAX_EVERY_NS = 2**62  # bucket arithmetic stays within 64 bits


def bucket_count(start_ns: int, end_ns: int, every_ns: int) -> int:
    """How many epoch-aligned buckets of ``every_ns`` the half-open range ``[start_ns, end_ns)`` touches."""
    if end_ns <= start_ns:
        return 0
    return (end_ns - 1) // every_ns - start_ns // every_ns + 1


def check_tag_value(what: str, value: object) -> str:
    """Return ``value`` if it may be used as a tag value (the rules names share, too); else ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, not {type(value).__name__}: {value!r}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    for index, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"{what} {value!r} must not contain control characters or lone surrogates")
        if char == "\\" and (index + 1 == len(value) or value[index + 1] in _SPECIAL_AFTER_BACKSLASH):
            raise ValueError(
                f"{what} {value!r}: a backslash must not be last or precede ',', '=', ' ' or '\"' "
                "(InfluxDB's line protocol cannot express that)"
            )
    return value


def check_name(what: str, value: object) -> str:
    """Return ``value`` if it may be used as a measurement, tag key or field key; else ValueError."""
    name = check_tag_value(what, value)
    if name.startswith("_"):
        raise ValueError(f"{what} {name!r} must not start with '_' (reserved by InfluxDB)")
    return name


def check_key(what: str, value: object) -> str:
    """Return ``value`` if it may be used as a tag key or field key (a name, but not ``time``); else ValueError."""
    key = check_name(what, value)
    if key in _RESERVED_KEYS:
        raise ValueError(f"{what} {key!r} is reserved by InfluxDB")
    return key


def field_type(value: FieldValue) -> str:
    """InfluxDB's name of the type of a field value: ``boolean``, ``integer``, ``float`` or ``string``."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def _check_field_value(key: str, value: object) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _MIN_INT <= value <= _MAX_INT:
            raise ValueError(f"field {key!r}: integer {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"field {key!r}: {value} is not a finite float")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"field {key!r}: string is not valid UTF-8 ({exc.reason})") from None
        return
    raise ValueError(f"field {key!r}: {type(value).__name__} is not float, int, bool or str")


@dataclass(frozen=True)
class Point:
    """One time-series point; validated on construction (see the module docstring for the rules)."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int

    def __post_init__(self) -> None:
        check_name("measurement", self.measurement)
        if self.measurement.startswith("#"):
            raise ValueError(f"measurement {self.measurement!r} must not start with '#' (a comment line)")
        tags = dict(self.tags)
        fields = dict(self.fields)
        for key, value in tags.items():
            check_key("tag key", key)
            check_tag_value(f"tag {key!r} value", value)
        if not fields:
            raise ValueError(f"point of {self.measurement!r} has no fields (InfluxDB needs at least one)")
        for key, field_value in fields.items():
            check_key("field key", key)
            _check_field_value(key, field_value)
        both = sorted(set(tags).intersection(fields))
        if both:
            raise ValueError(f"keys {both} are used as tag and as field")
        if isinstance(self.time_ns, bool) or not isinstance(self.time_ns, int):
            raise ValueError(f"time_ns must be an int, not {type(self.time_ns).__name__}")
        if not MIN_TIME_NS <= self.time_ns <= MAX_TIME_NS:
            raise ValueError(f"time_ns {self.time_ns} is outside InfluxDB's range [{MIN_TIME_NS}, {MAX_TIME_NS}]")
        # Own copies, so that a caller mutating its dicts does not change a frozen point.
        object.__setattr__(self, "tags", tags)
        object.__setattr__(self, "fields", fields)

    def __hash__(self) -> int:
        """The identity InfluxDB uses: measurement, tag set and time."""
        return hash((self.measurement, tuple(sorted(self.tags.items())), self.time_ns))


@dataclass(frozen=True)
class AggregatedSeries:
    """The buckets of one series of ``aggregate``: ``tags`` has every ``group_by`` key ("" where the points lack
    it); ``buckets`` are (bucket start ns, value), oldest first, only those holding a value."""

    tags: Mapping[str, str]
    buckets: Sequence[tuple[int, float | int]]


class MetricsStoreError(Exception):
    """A metrics store operation failed; ``retryable`` says whether the same call may succeed later."""

    def __init__(self, backend: str, message: str, *, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.retryable = retryable
        self.status_code = status_code


def _check_tag_filter(tags: Mapping[str, str] | None) -> dict[str, str]:
    if tags is None:
        return {}
    for key, value in tags.items():
        check_key("tag key", key)
        check_tag_value(f"tag {key!r} value", value)
    return dict(tags)


class MetricsStore(abc.ABC):
    """One time-series backend. Public methods check their arguments and call the backend's ``_`` methods."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def ensure_ready(self) -> None:
        """Create the database / bucket / tables if missing; safe to call again."""

    def write(self, points: Sequence[Point]) -> None:
        """Store all ``points`` or raise ``MetricsStoreError``.

        Idempotent per measurement + tags + time, so a failed batch may be written again as a whole. InfluxDB
        may have stored part of a batch that failed with a non-retryable error (a partial write).
        """
        if points:
            self._write(points)

    @abc.abstractmethod
    def ping(self) -> float:
        """Check the store can be reached (SQLite: can be written now); return the latency in seconds."""

    def query(
        self,
        measurement: str,
        *,
        tags: Mapping[str, str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
    ) -> list[Point]:
        """Points of ``measurement`` with all the given ``tags``, ``start_ns <= time < end_ns``, oldest first."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        return self._query(
            check_name("measurement", measurement),
            tags=_check_tag_filter(tags),
            start_ns=start_ns,
            end_ns=end_ns,
            limit=limit,
        )

    def latest(
        self, measurement: str, *, group_by: Sequence[str], tags: Mapping[str, str] | None = None
    ) -> list[Point]:
        """The newest point per combination of the ``group_by`` tag values, sorted by those values.

        Points without one of the ``group_by`` tags form their own group (value ""), as in InfluxDB.
        """
        keys = [check_key("group_by tag key", key) for key in group_by]
        if len(set(keys)) != len(keys):
            raise ValueError(f"group_by has duplicates: {keys}")
        points = self._latest(check_name("measurement", measurement), group_by=keys, tags=_check_tag_filter(tags))
        return sorted(points, key=lambda p: tuple(p.tags.get(k, "") for k in keys))

    def aggregate(
        self,
        measurement: str,
        *,
        tags: Mapping[str, str] | None = None,
        start_ns: int,
        end_ns: int,
        every_s: float,
        fn: str,
        field: str = "value",
        group_by: Sequence[str] = ("node", "device", "point"),
    ) -> list[AggregatedSeries]:
        """``fn`` of ``field`` per bucket of ``every_s`` seconds and per combination of the ``group_by`` tag values,
        for points with all the given ``tags`` and ``start_ns <= time < end_ns``; series sorted by their tags.

        ValueError for an unknown ``fn``, ``every_s`` below 1 ms, an empty or reversed range, or more than
        ``MAX_BUCKETS`` buckets in the range (the message names ``every``).
        """
        if fn not in AGGREGATE_FUNCTIONS:
            raise ValueError(f"fn must be one of {', '.join(AGGREGATE_FUNCTIONS)}, not {fn!r}")
        keys = [check_key("group_by tag key", key) for key in group_by]
        if len(set(keys)) != len(keys):
            raise ValueError(f"group_by has duplicates: {keys}")
        for name, value in (("start_ns", start_ns), ("end_ns", end_ns)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, not {type(value).__name__}")
            if not MIN_TIME_NS <= value <= MAX_TIME_NS:
                raise ValueError(f"{name} {value} is outside InfluxDB's range [{MIN_TIME_NS}, {MAX_TIME_NS}]")
        if start_ns >= end_ns:
            raise ValueError(f"start_ns {start_ns} must be before end_ns {end_ns}")
        if isinstance(every_s, bool) or not isinstance(every_s, int | float) or not math.isfinite(every_s):
            raise ValueError(f"every must be a finite number of seconds, not {every_s!r}")
        every_ns = round(every_s * 1_000_000_000)
        if not MIN_EVERY_NS <= every_ns <= _MAX_EVERY_NS:
            raise ValueError(f"every must be between 1 ms and {_MAX_EVERY_NS // 10**9} s, not {every_s} s")
        if start_ns // every_ns * every_ns < MIN_TIME_NS:
            raise ValueError(f"start_ns {start_ns}: its bucket of every {every_s:g} s would begin before the earliest "
                             f"time InfluxDB can store ({MIN_TIME_NS})")
        buckets = bucket_count(start_ns, end_ns, every_ns)
        if buckets > MAX_BUCKETS:
            raise ValueError(
                f"every {every_s:g} s makes {buckets} buckets of the range, at most {MAX_BUCKETS} are allowed: "
                "choose a longer every or a shorter range"
            )
        series = self._aggregate(
            check_name("measurement", measurement),
            tags=_check_tag_filter(tags),
            start_ns=start_ns,
            end_ns=end_ns,
            every_ns=every_ns,
            fn=fn,
            field=check_key("field key", field),
            group_by=keys,
        )
        return sorted(series, key=lambda s: tuple(s.tags.get(k, "") for k in keys))

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store is not used afterwards."""

    @abc.abstractmethod
    def _write(self, points: Sequence[Point]) -> None: ...

    @abc.abstractmethod
    def _query(
        self,
        measurement: str,
        *,
        tags: dict[str, str],
        start_ns: int | None,
        end_ns: int | None,
        limit: int | None,
    ) -> list[Point]: ...

    @abc.abstractmethod
    def _latest(self, measurement: str, *, group_by: list[str], tags: dict[str, str]) -> list[Point]: ...

    @abc.abstractmethod
    def _aggregate(
        self,
        measurement: str,
        *,
        tags: dict[str, str],
        start_ns: int,
        end_ns: int,
        every_ns: int,
        fn: str,
        field: str,
        group_by: list[str],
    ) -> list[AggregatedSeries]: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
