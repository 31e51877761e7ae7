"""``SQLiteMetricsStore``: a server-less time-series store for the demo, with InfluxDB's semantics.

One file in WAL mode, one table of points and one of field types::

    points(measurement TEXT, tags TEXT, time_ns INTEGER, fields TEXT)   PRIMARY KEY (measurement, tags, time_ns)
           tags   = canonical JSON object: keys sorted, no spaces, UTF-8   {"node":"mill-1","scale":"bridge"}
           fields = JSON object                                             {"stable":true,"weight_kg":23410.5}
    field_types(measurement TEXT, field TEXT, type TEXT)                 PRIMARY KEY (measurement, field)

Like InfluxDB, writing a point with the same measurement + tags + time again merges its fields into the stored
ones (upsert with ``json_patch``), so replays are harmless, and a field keeps the type it was first written with
(a different type is a non-retryable "field type conflict"; InfluxDB checks per shard, this store per
measurement). A batch is written in one transaction: all points or none.

``aggregate`` groups in SQL: the bucket of a row is ``time_ns - ((time_ns % every) + every) % every`` (the epoch-
aligned start, also before 1970), a field's value is read with ``json_each`` (any key, no JSON path quoting), and
``first`` / ``last`` use SQLite's ``min()`` / ``max()`` with a bare column, which takes the value of the row holding
the minimum / maximum time.

Thread-safe: one connection guarded by a lock (central calls the store from a worker thread). A database locked
by another process beyond ``busy_timeout_s``, a full disk or an I/O error are retryable ``MetricsStoreError``s.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from central.metrics.base import AggregatedSeries, FieldValue, MetricsStore, MetricsStoreError, Point, field_type

__all__ = ["DEFAULT_BUSY_TIMEOUT_S", "SQLiteMetricsStore"]

DEFAULT_BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (measurement, tags, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_by_time ON points (measurement, time_ns);
CREATE TABLE IF NOT EXISTS field_types (
    measurement TEXT NOT NULL,
    field TEXT NOT NULL,
    type TEXT NOT NULL,
    PRIMARY KEY (measurement, field)
) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO points (measurement, tags, time_ns, fields) VALUES (?, ?, ?, ?)
ON CONFLICT (measurement, tags, time_ns) DO UPDATE SET fields = json_patch(points.fields, excluded.fields)
"""

# Primary result codes worth retrying: BUSY, LOCKED, IOERR, FULL, PROTOCOL.
_RETRYABLE_CODES = frozenset({5, 6, 10, 13, 15})

# The value of one tag of the row ``p`` ('' when the point does not have that tag), for WHERE and PARTITION BY.
_TAG_VALUE = "coalesce((SELECT value FROM json_each(p.tags) WHERE key = ?), '')"
_HAS_TAG = "EXISTS (SELECT 1 FROM json_each(p.tags) WHERE key = ? AND value = ?)"
_FIELD_VALUE = "(SELECT value FROM json_each(p.fields) WHERE key = ?)"
# fn -> (aggregate over v, extra bare column); first/last take v of the row with min/max t (SQLite's bare columns)
_AGGREGATES = {
    "mean": "avg(v)", "min": "min(v)", "max": "max(v)", "sum": "total(v)", "count": "count(v)",
    "first": "min(t), v", "last": "max(t), v",
}
_NUMERIC = frozenset({"float", "integer"})


def _dumps(mapping: dict[str, Any]) -> str:
    return json.dumps(mapping, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)


class SQLiteMetricsStore(MetricsStore):
    """Points in one SQLite file (created with its parent directory if missing)."""

    kind = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self._path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._types: dict[tuple[str, str], str] = {}  # committed field types, filled on demand

    @property
    def path(self) -> Path:
        return self._path

    @contextmanager
    def _connection(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with ``sqlite3`` errors turned into ``MetricsStoreError``."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                yield self._conn
            except sqlite3.Error as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                retryable = code is not None and (code & 0xFF) in _RETRYABLE_CODES
                raise MetricsStoreError(
                    self.kind, f"{action} on {self._path} failed: {exc}", retryable=retryable
                ) from exc

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # time series, not business records
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def ensure_ready(self) -> None:
        with self._connection("open"):
            pass

    def ping(self) -> float:
        """Latency of taking (and releasing) the write lock: the store could be written right now."""
        with self._connection("ping") as conn:
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return time.perf_counter() - started

    def _write(self, points: Sequence[Point]) -> None:
        with self._connection(f"write of {len(points)} points") as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                new_types = self._check_types(conn, points)
                conn.executemany(
                    _UPSERT,
                    [(p.measurement, _dumps(dict(p.tags)), p.time_ns, _dumps(dict(p.fields))) for p in points],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._types.update(new_types)

    def _check_types(self, conn: sqlite3.Connection, points: Sequence[Point]) -> dict[tuple[str, str], str]:
        """Record the types of new fields; raise on a field written with another type than before."""
        new_types: dict[tuple[str, str], str] = {}
        for point in points:
            for name, value in point.fields.items():
                key = (point.measurement, name)
                kind = field_type(value)
                known = new_types.get(key) or self._types.get(key)
                if known is None:
                    row = conn.execute(
                        "SELECT type FROM field_types WHERE measurement = ? AND field = ?", key
                    ).fetchone()
                    if row is None:
                        conn.execute("INSERT INTO field_types (measurement, field, type) VALUES (?, ?, ?)",
                                     (*key, kind))
                        new_types[key] = known = kind
                    else:
                        self._types[key] = known = str(row[0])
                if known != kind:
                    raise MetricsStoreError(
                        self.kind,
                        f"field type conflict: input field {name!r} on measurement {point.measurement!r} "
                        f"is type {kind}, already exists as type {known}",
                        retryable=False,
                    )
        return new_types

    def _query(
        self,
        measurement: str,
        *,
        tags: dict[str, str],
        start_ns: int | None,
        end_ns: int | None,
        limit: int | None,
    ) -> list[Point]:
        where, params = self._where(measurement, tags)
        if start_ns is not None:
            where += " AND p.time_ns >= ?"
            params.append(int(start_ns))
        if end_ns is not None:
            where += " AND p.time_ns < ?"
            params.append(int(end_ns))
        # Only fixed SQL fragments are formatted in; every value is a bound parameter.
        sql = f"SELECT p.tags, p.time_ns, p.fields FROM points AS p WHERE {where} ORDER BY p.time_ns, p.tags"  # noqa: S608
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._connection(f"query of {measurement!r}") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [self._point(measurement, row) for row in rows]

    def _latest(self, measurement: str, *, group_by: list[str], tags: dict[str, str]) -> list[Point]:
        where, where_params = self._where(measurement, tags)
        partition = f"PARTITION BY {', '.join([_TAG_VALUE] * len(group_by))} " if group_by else ""
        # Only fixed SQL fragments are formatted in; every value is a bound parameter.
        sql = (
            "SELECT tags, time_ns, fields FROM ("  # noqa: S608
            f" SELECT p.tags, p.time_ns, p.fields, row_number() OVER ({partition}ORDER BY p.time_ns DESC, p.tags)"
            f" AS newest FROM points AS p WHERE {where}"
            ") WHERE newest = 1"
        )
        with self._connection(f"latest of {measurement!r}") as conn:
            rows = conn.execute(sql, [*group_by, *where_params]).fetchall()
        return [self._point(measurement, row) for row in rows]

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
    ) -> list[AggregatedSeries]:
        where, where_params = self._where(measurement, tags)
        groups = "".join(f"{_TAG_VALUE} AS g{i}, " for i in range(len(group_by)))
        group_names = [f"g{i}" for i in range(len(group_by))]
        # Only fixed SQL fragments are formatted in; every value is a bound parameter.
        sql = (
            f"SELECT {', '.join([*group_names, 'bucket'])}, {_AGGREGATES[fn]} FROM ("  # noqa: S608
            f" SELECT {groups}p.time_ns - ((p.time_ns % ?) + ?) % ? AS bucket, p.time_ns AS t,"
            f" {_FIELD_VALUE} AS v FROM points AS p WHERE {where} AND p.time_ns >= ? AND p.time_ns < ?"
            f") WHERE v IS NOT NULL GROUP BY {', '.join([*group_names, 'bucket'])}"
            f" ORDER BY {', '.join([*group_names, 'bucket'])}"
        )
        params = [*group_by, every_ns, every_ns, every_ns, field, *where_params, start_ns, end_ns]
        with self._connection(f"aggregate of {measurement!r}") as conn:
            row = conn.execute("SELECT type FROM field_types WHERE measurement = ? AND field = ?",
                               (measurement, field)).fetchone()
            if row is None:
                return []
            if fn != "count" and row[0] not in _NUMERIC:
                raise MetricsStoreError(
                    self.kind, f"{fn} of field {field!r} of {measurement!r}: the field is a {row[0]}, not a number",
                    retryable=False,
                )
            rows = conn.execute(sql, params).fetchall()
        series: dict[tuple[str, ...], list[tuple[int, float | int]]] = {}
        width = len(group_by)
        for result in rows:
            value = result[-1]
            series.setdefault(tuple(result[:width]), []).append(
                (int(result[width]), int(value) if fn == "count" else float(value))
            )
        return [AggregatedSeries(dict(zip(group_by, key, strict=True)), buckets) for key, buckets in series.items()]

    @staticmethod
    def _where(measurement: str, tags: dict[str, str]) -> tuple[str, list[Any]]:
        where = "p.measurement = ?"
        params: list[Any] = [measurement]
        for key, value in sorted(tags.items()):
            where += f" AND {_HAS_TAG}"
            params.extend((key, value))
        return where, params

    @staticmethod
    def _point(measurement: str, row: tuple[str, int, str]) -> Point:
        tags_json, time_ns, fields_json = row
        fields: dict[str, FieldValue] = json.loads(fields_json)
        return Point(measurement, json.loads(tags_json), fields, int(time_ns))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
