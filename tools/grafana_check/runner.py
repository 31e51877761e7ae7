"""Running queries: SQL on PostgreSQL (read-only transactions), InfluxQL over InfluxDB's /query, PromQL over
Prometheus' HTTP API."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from tools.grafana_check.expansion import TimeRange

QUERY_TIMEOUT_S = 30.0
MAX_RECORDS = 200  # rows kept per query in the report


@dataclass
class Connections:
    """Where the live checks run. ``postgres``: a libpq URL; ``influxdb`` + ``influx_database`` (and
    ``influx_user`` / ``influx_password``, or ``influx_token`` for 2.x / 3.x); ``prometheus``: its URL."""

    postgres: str | None = None
    influxdb: str | None = None
    influx_database: str | None = None
    influx_user: str | None = None
    influx_password: str | None = None
    influx_token: str | None = None
    prometheus: str | None = None

    def available(self, dialect: str) -> bool:
        return {"sql": self.postgres is not None, "influxql": self.influxdb is not None,
                "promql": self.prometheus is not None}[dialect]


@dataclass
class Result:
    """What a query returned. ``count``: rows (SQL), points (InfluxQL) or samples (PromQL) that hold a value —
    a row of NULLs, a bucket filled with null or a NaN sample is no data."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    series: list[dict[str, str]] = field(default_factory=list)
    samples: list[list[float]] = field(default_factory=list)  # per series (Prometheus / InfluxDB)
    records: list[dict[str, Any]] = field(default_factory=list)  # the first rows as column → value (with tags)
    count: int = 0


class QueryError(Exception):
    pass


class Runner:
    """Runs SQL on PostgreSQL (read-only transactions), InfluxQL over InfluxDB's /query, PromQL over Prometheus'
    HTTP API."""

    def __init__(self, conn: Connections) -> None:
        self.conn = conn
        self._pg: Any = None
        self._http = httpx.Client(timeout=QUERY_TIMEOUT_S)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        self._http.close()

    def sql(self, query: str) -> Result:
        import psycopg  # only where PostgreSQL is checked

        if self._pg is None:
            try:
                self._pg = psycopg.connect(self.conn.postgres or "", connect_timeout=10)
            except psycopg.Error as exc:
                raise QueryError(f"cannot connect to PostgreSQL: {exc}") from None
        try:
            with self._pg.transaction(force_rollback=True):
                self._pg.execute("SET TRANSACTION READ ONLY")
                self._pg.execute(f"SET LOCAL statement_timeout = {int(QUERY_TIMEOUT_S * 1000)}")
                cur = self._pg.execute(query)
                if cur.description is None:
                    raise QueryError("the statement returns no result set")
                columns = [d.name for d in cur.description]
                rows = list(cur.fetchall())
                return Result(columns=columns, rows=rows,
                              records=[dict(zip(columns, r, strict=True)) for r in rows[:MAX_RECORDS]],
                              count=sum(1 for r in rows if any(v is not None for v in r)))
        except psycopg.Error as exc:
            raise QueryError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from None

    def influxql(self, query: str) -> Result:
        c = self.conn
        params = {"db": c.influx_database or "", "epoch": "ms"}
        headers = {}
        if c.influx_token:
            headers["Authorization"] = f"Token {c.influx_token}"
        elif c.influx_user:
            params.update(u=c.influx_user, p=c.influx_password or "")
        try:
            response = self._http.post(f"{c.influxdb}/query", params=params, data={"q": query}, headers=headers)
        except httpx.HTTPError as exc:
            raise QueryError(f"InfluxDB at {c.influxdb}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise QueryError(f"InfluxDB answered {response.status_code}: {response.text[:200]}") from None
        if "error" in body:
            raise QueryError(body["error"])
        out = Result()
        for result in body.get("results", []):
            if "error" in result:
                raise QueryError(result["error"])
            for series in result.get("series", []):
                out.columns = columns = series.get("columns", [])
                tags = dict(series.get("tags") or {})
                tags.setdefault("__name__", series.get("name", ""))
                values = series.get("values") or []
                out.series.append(tags)
                out.samples.append([to_float(row[-1]) for row in values])
                out.rows.extend(tuple(row) for row in values)
                first = 1 if columns[:1] == ["time"] else 0
                out.count += sum(1 for row in values if any(v is not None for v in row[first:]))
                out.records += [tags | dict(zip(columns, row, strict=True))
                                for row in values[:max(0, MAX_RECORDS - len(out.records))]]
        return out

    def promql(self, expr: str, rng: TimeRange, step_s: float, *, instant: bool) -> Result:
        params: dict[str, Any] = {"query": expr}
        if instant:
            path, params["time"] = "/api/v1/query", rng.end.timestamp()
        else:
            path = "/api/v1/query_range"
            params.update(start=rng.start.timestamp(), end=rng.end.timestamp(), step=step_s)
        body = self._prom_get(path, params)
        out = Result()
        data = body["data"]
        for item in data["result"] if data["resultType"] in ("vector", "matrix") else []:
            out.series.append(dict(item["metric"]))
            values = item.get("values") or ([item["value"]] if "value" in item else [])
            samples = [to_float(v[1]) for v in values]
            out.samples.append(samples)
            out.count += sum(1 for v in samples if not math.isnan(v))
            if len(out.records) < MAX_RECORDS:
                out.records.append(dict(item["metric"]) | {"value": samples[-1] if samples else math.nan})
        return out

    def label_values(self, label: str, metric: str | None, rng: TimeRange) -> list[str]:
        params: dict[str, Any] = {"start": rng.start.timestamp(), "end": rng.end.timestamp()}
        if metric:
            params["match[]"] = metric
        values: list[str] = self._prom_get(f"/api/v1/label/{label}/values", params)["data"]
        return values

    def _prom_get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            response = self._http.get(f"{self.conn.prometheus}{path}", params=params)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise QueryError(f"Prometheus at {self.conn.prometheus}: {exc}") from None
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body


def to_float(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def is_number(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)
