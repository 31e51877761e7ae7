"""InfluxQL over HTTP ``/query``, shared by the InfluxDB v1 and v2 stores, and their HTTP error mapping.

InfluxDB 1.x answers InfluxQL natively; InfluxDB 2.x and 3.x answer it on their v1-compatibility endpoint
``/query?db=<bucket>`` (2.x through a DBRP mapping, which 2.4+ creates virtually for every bucket). So both stores
derive from ``InfluxQLStore`` and read through ``InfluxQLReader`` with their own ``httpx.Client`` (v1: basic auth,
v2: ``Authorization: Token``); only writing and ``ensure_ready`` differ.

A query is sent as one request with three statements; the first two say which columns of ``SELECT *`` are tags
and what type each field has (JSON turns the float ``1.0`` into ``1``)::

    SHOW TAG KEYS FROM "m"; SHOW FIELD KEYS FROM "m"; SELECT * FROM "m" WHERE ... ORDER BY time ASC LIMIT n

``aggregate`` is one statement; the time buckets are given in nanoseconds, so any ``every`` is exact and aligned to
the epoch as InfluxDB aligns them, and empty buckets are left out::

    SELECT mean("value") FROM "readings" WHERE "device" = 'd1' AND time >= S AND time < E
        GROUP BY time(60000000000ns), "node", "device", "point" fill(none)

Identifiers are double-quoted and string literals single-quoted, each with backslash escapes, so no tag value or
measurement name can change the statement.

Error mapping (``raise_for_response`` / ``transport_error``): connection errors, timeouts, 5xx, 408 and 429 are
retryable; other 4xx and InfluxQL statement errors are not, and carry InfluxDB's own error text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from central.metrics.base import AggregatedSeries, FieldValue, MetricsStore, MetricsStoreError, Point

__all__ = [
    "InfluxQLReader",
    "InfluxQLStore",
    "is_retryable_status",
    "quote_ident",
    "quote_literal",
    "raise_for_response",
    "transport_error",
]

_RETRYABLE_4XX = frozenset({408, 429})


def quote_ident(name: str) -> str:
    """An InfluxQL identifier: ``"name"`` with backslashes and double quotes escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(text: str) -> str:
    """An InfluxQL string literal: ``'text'`` with backslashes and single quotes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_retryable_status(status_code: int) -> bool:
    return status_code >= 500 or status_code in _RETRYABLE_4XX


def _error_text(response: httpx.Response) -> str:
    """InfluxDB's error message from a JSON body (v1 ``error``, v2 ``message``), else the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.text.strip()


def raise_for_response(backend: str, response: httpx.Response, action: str, *, expected: int = 200) -> None:
    """Raise ``MetricsStoreError`` unless ``response`` has status ``expected``."""
    if response.status_code == expected:
        return
    raise MetricsStoreError(
        backend,
        f"{action} failed with HTTP {response.status_code}: {_error_text(response)}",
        retryable=is_retryable_status(response.status_code),
        status_code=response.status_code,
    )


def transport_error(backend: str, exc: Exception, action: str, url: str) -> MetricsStoreError:
    """A retryable error for a request that got no HTTP answer (refused, reset, timed out)."""
    return MetricsStoreError(backend, f"{action} at {url} failed: {type(exc).__name__}: {exc}", retryable=True)


def _time_conditions(start_ns: int | None, end_ns: int | None) -> list[str]:
    conditions = []
    if start_ns is not None:
        conditions.append(f"time >= {int(start_ns)}")
    if end_ns is not None:
        conditions.append(f"time < {int(end_ns)}")
    return conditions


def _where(tags: Mapping[str, str], start_ns: int | None = None, end_ns: int | None = None) -> str:
    conditions = [f"{quote_ident(k)} = {quote_literal(v)}" for k, v in sorted(tags.items())]
    conditions.extend(_time_conditions(start_ns, end_ns))
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _convert(value: Any, declared: str | None) -> FieldValue:
    """A JSON field value back to its InfluxDB type (floats may arrive as JSON integers)."""
    if declared == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if declared == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"unexpected field value {value!r}")


class InfluxQLReader:
    """Runs ``query`` / ``latest`` as InfluxQL against ``/query`` of one database (v2: bucket)."""

    def __init__(
        self, http: httpx.Client, *, backend: str, database: str, retention_policy: str | None = None
    ) -> None:
        self._http = http
        self._backend = backend
        self._database = database
        self._retention_policy = retention_policy

    def source(self, measurement: str) -> str:
        """``"rp"."measurement"`` or ``"measurement"`` for the FROM clause."""
        if self._retention_policy:
            return f"{quote_ident(self._retention_policy)}.{quote_ident(measurement)}"
        return quote_ident(measurement)

    def ping(self) -> float:
        """Latency in seconds of ``GET /ping``."""
        started = time.perf_counter()
        try:
            response = self._http.get("/ping")
        except httpx.TransportError as exc:
            raise transport_error(self._backend, exc, "ping", str(self._http.base_url)) from exc
        elapsed = time.perf_counter() - started
        if not response.is_success:  # 1.x/2.x answer 204, 3.x 200
            raise_for_response(self._backend, response, "ping", expected=204)
        return elapsed

    def execute(
        self, statements: Iterable[str], *, database: str | None = None, post: bool = False
    ) -> list[dict[str, Any]]:
        """Run ``;``-joined statements; return one result dict per statement, raising on any statement error.

        ``post=True`` is needed by InfluxDB 1.x for statements that change something (CREATE, DROP).
        """
        query = "; ".join(statements)
        params = {"q": query, "epoch": "ns"}
        if database is not None:
            params["db"] = database
        send = self._http.post if post else self._http.get
        try:
            response = send("/query", params=params)
        except httpx.TransportError as exc:
            raise transport_error(self._backend, exc, "query", str(self._http.base_url)) from exc
        raise_for_response(self._backend, response, f"query {query!r}")
        try:
            body = response.json()
            results: list[dict[str, Any]] = body["results"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MetricsStoreError(
                self._backend, f"query {query!r}: unexpected answer {response.text[:200]!r}", retryable=False
            ) from exc
        for result in results:
            if "error" in result:
                raise MetricsStoreError(
                    self._backend, f"query {query!r} failed: {result['error']}", retryable=False
                )
        return results

    def database_exists(self) -> bool:
        (result,) = self.execute(["SHOW DATABASES"])
        return any(row[0] == self._database for series in result.get("series", []) for row in series.get("values", []))

    def _select(self, measurement: str, select: str) -> tuple[list[dict[str, Any]], set[str], dict[str, str]]:
        """Run the schema statements and ``select``; return its series, the tag keys and the field types."""
        source = self.source(measurement)
        tag_result, field_result, select_result = self.execute(
            [f"SHOW TAG KEYS FROM {source}", f"SHOW FIELD KEYS FROM {source}", select], database=self._database
        )
        tag_keys = {row[0] for series in tag_result.get("series", []) for row in series.get("values", [])}
        field_types: dict[str, str] = {}
        for series in field_result.get("series", []):
            for key, kind in series.get("values", []):
                field_types.setdefault(key, kind)
        return select_result.get("series", []), tag_keys, field_types

    def _points(
        self, measurement: str, series: Mapping[str, Any], tag_keys: set[str], field_types: Mapping[str, str]
    ) -> list[Point]:
        group_tags = {k: v for k, v in (series.get("tags") or {}).items() if v}
        columns: list[str] = series["columns"]
        points = []
        for row in series.get("values", []):
            tags = dict(group_tags)
            fields: dict[str, FieldValue] = {}
            time_ns = 0
            for column, value in zip(columns, row, strict=True):
                if column == "time":
                    time_ns = int(value)
                elif value is None:
                    continue
                elif column in tag_keys:
                    tags[column] = str(value)
                else:
                    fields[column] = _convert(value, field_types.get(column))
            if fields:
                points.append(Point(measurement, tags, fields, time_ns))
        return points

    def query(
        self,
        measurement: str,
        *,
        tags: Mapping[str, str],
        start_ns: int | None,
        end_ns: int | None,
        limit: int | None,
    ) -> list[Point]:
        where = _where(tags, start_ns, end_ns)
        select = f"SELECT * FROM {self.source(measurement)}{where} ORDER BY time ASC"  # noqa: S608 (all quoted)
        if limit is not None:
            select += f" LIMIT {int(limit)}"
        all_series, tag_keys, field_types = self._select(measurement, select)
        points = [p for s in all_series for p in self._points(measurement, s, tag_keys, field_types)]
        return sorted(points, key=lambda p: p.time_ns)

    def latest(self, measurement: str, *, group_by: list[str], tags: Mapping[str, str]) -> list[Point]:
        select = f"SELECT * FROM {self.source(measurement)}{_where(tags)}"  # noqa: S608 (all quoted)
        if group_by:
            select += " GROUP BY " + ", ".join(quote_ident(k) for k in group_by)
        select += " ORDER BY time DESC LIMIT 1"
        all_series, tag_keys, field_types = self._select(measurement, select)
        return [p for s in all_series for p in self._points(measurement, s, tag_keys, field_types)]


    def aggregate(
        self,
        measurement: str,
        *,
        tags: Mapping[str, str],
        start_ns: int,
        end_ns: int,
        every_ns: int,
        fn: str,
        field: str,
        group_by: list[str],
    ) -> list[AggregatedSeries]:
        select = (
            f"SELECT {fn.upper()}({quote_ident(field)}) FROM {self.source(measurement)}"  # noqa: S608 (all quoted)
            f"{_where(tags, start_ns, end_ns)} GROUP BY time({int(every_ns)}ns)"
        )
        for key in group_by:
            select += f", {quote_ident(key)}"
        select += " fill(none)"
        (result,) = self.execute([select], database=self._database)
        out = []
        for series in result.get("series", []):
            group = series.get("tags") or {}
            buckets: list[tuple[int, float | int]] = []
            for time_ns, value in series.get("values", []):
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise MetricsStoreError(
                        self._backend, f"{fn} of field {field!r} of {measurement!r} is not a number: {value!r}",
                        retryable=False,
                    )
                buckets.append((int(time_ns), int(value) if fn == "count" else float(value)))
            if buckets:
                out.append(AggregatedSeries({k: str(group.get(k) or "") for k in group_by}, buckets))
        return out


class InfluxQLStore(MetricsStore):
    """Base of the InfluxDB stores: ``ping``, ``query`` and ``latest`` go through ``self._reader``."""

    _reader: InfluxQLReader

    def ping(self) -> float:
        return self._reader.ping()

    def _query(
        self,
        measurement: str,
        *,
        tags: dict[str, str],
        start_ns: int | None,
        end_ns: int | None,
        limit: int | None,
    ) -> list[Point]:
        return self._reader.query(measurement, tags=tags, start_ns=start_ns, end_ns=end_ns, limit=limit)

    def _latest(self, measurement: str, *, group_by: list[str], tags: dict[str, str]) -> list[Point]:
        return self._reader.latest(measurement, group_by=group_by, tags=tags)

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
        return self._reader.aggregate(
            measurement, tags=tags, start_ns=start_ns, end_ns=end_ns, every_ns=every_ns, fn=fn, field=field,
            group_by=group_by,
        )
