#!/usr/bin/env python3
"""Check floorgate's Grafana files: offline, and against the databases the dashboards query.

Offline (always):

- every dashboard validates against Grafana's JSON Schemas (``tests/data/grafana-jsonschema``, from the
  grafana-foundation-sdk): the dashboard, each panel, each panel's ``options`` and ``fieldConfig.defaults.custom``
  against its panel type's schema — a panel type without a schema is refused;
- the grid: every panel has a ``gridPos`` inside the 24 columns and no two panels overlap; panel ids and refIds are
  unique, dashboard uids too;
- every datasource a panel, target, variable or annotation names exists in ``provisioning/datasources`` with that
  uid and type; queries are raw code (SQL ``rawSql``, InfluxQL ``query`` with ``rawQuery``, PromQL ``expr``);
- every ``$variable`` a query uses is defined (before the variable that uses it), or a Grafana built-in;
- the alert rules and contact points in ``provisioning/alerting`` as Grafana reads the file (known keys only,
  durations, the condition and every expression naming an existing refId, datasources provisioned, no template
  variables), each rule validated against ``alerting.jsonschema.json`` in the shape Grafana stores it.

Live (for every datasource given a connection): each variable's query runs first (values chosen as a user would:
"All" where the variable offers it, else every value or the first), then every target of every panel and every
annotation, with the variables and the macros expanded the way Grafana expands them — ``$__timeFilter``,
``$__timeGroup[Alias]``, ``$__time``, ``$__timeFrom/To``, ``$__unixEpoch*`` for PostgreSQL; ``$timeFilter``,
``$__interval`` for InfluxQL; ``$__interval``, ``$__rate_interval``, ``$__range`` for PromQL; multi-value variables
as a quoted list (SQL) or an escaped regex ``(a|b)`` (InfluxQL, PromQL). Every query must run and return rows; a
SQL time series needs a ``time`` column and a number. A second pass with only the first value of each variable must
run without error. The alert rules' queries run over their relative time range and their reduce / threshold
expressions are evaluated (``Report.alerts``).

``--rules FILE`` compares the thresholds drawn in the panels with a floorgate alert-rules file: a panel whose
description names an "alert rule `NAME`" must draw that rule's value; every rule of the file with a value
(``reading`` above / below, ``node_backlog`` older_than_s, ``ingest_lag`` above_s) must be drawn somewhere.

    python -m tools.grafana_check                                    # offline
    python -m tools.grafana_check --postgres postgresql://grafana_reader@127.0.0.1/floorgate \\
        --influxdb http://127.0.0.1:8086 --influx-database floorgate --prometheus http://127.0.0.1:9090 \\
        --rules /etc/floorgate/alert-rules.yaml

Exit status: 0 no problem, 1 problems (each names the file, dashboard, panel, refId or variable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import calendar
import json
import math
import re
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml

GRAFANA_DIR = Path(__file__).resolve().parent.parent / "grafana"
REPO = GRAFANA_DIR.parent
DEFAULT_SCHEMAS = REPO / "tests" / "data" / "grafana-jsonschema"
GRID_COLUMNS = 24
DEFAULT_MAX_DATA_POINTS = 1000  # Grafana uses the panel's width in pixels; about that on a usual screen
QUERY_TIMEOUT_S = 30.0
MAX_RECORDS = 200  # rows kept per query in the report

# panel type → its JSON Schema file (without .jsonschema.json); rows are validated by the dashboard schema
PANEL_SCHEMAS = {"timeseries": "timeseries", "stat": "stat", "table": "table", "barchart": "barchart",
                 "bargauge": "bargauge", "gauge": "gauge", "state-timeline": "statetimeline", "text": "text"}
# datasource plugin type → the query language the checker speaks with it
DIALECTS = {"grafana-postgresql-datasource": "sql", "influxdb": "influxql", "prometheus": "promql"}
EXPR_UID = "__expr__"
EXPRESSION_TYPES = {"math", "reduce", "resample", "classic_conditions", "threshold", "sql"}

# PostgreSQL macros of Grafana's backend (pkg/tsdb/grafana-postgresql-datasource/macros.go)
SQL_MACROS = {"__time", "__timeEpoch", "__timeFilter", "__timeFrom", "__timeTo", "__timeGroup", "__timeGroupAlias",
              "__unixEpochFilter", "__unixEpochNanoFilter", "__unixEpochNanoFrom", "__unixEpochNanoTo",
              "__unixEpochGroup", "__unixEpochGroupAlias"}
# variables Grafana itself defines (frontend or backend)
BUILTIN_VARIABLES = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms",
                     "__from", "__to", "__dashboard", "__org", "__user", "__name", "timeFilter", "interval",
                     "__timezone"}
VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
SQL_MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
DURATION_RE = re.compile(r"^(?:0|(?:\d+(?:ms|s|m|h|d|w|y))+)$")
RULE_MENTION_RE = re.compile(r"alert rule `([^`]+)`")

ALERTING_TOP_KEYS = {"apiVersion", "groups", "deleteRules", "contactPoints", "deleteContactPoints", "policies",
                     "resetPolicies", "templates", "deleteTemplates", "muteTimes", "deleteMuteTimes"}
GROUP_KEYS = {"orgId", "name", "folder", "interval", "rules"}
RULE_KEYS = {"uid", "title", "condition", "data", "dasboardUid", "dashboardUid", "panelId", "noDataState",
             "execErrState", "for", "keepFiringFor", "missing_series_evals_to_resolve", "annotations", "labels",
             "isPaused", "notification_settings", "record"}
QUERY_KEYS = {"refId", "queryType", "relativeTimeRange", "datasourceUid", "model"}
RECEIVER_KEYS = {"uid", "type", "settings", "disableResolveMessage"}


# -- results ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class QueryRun:
    """One query as run: where it comes from, the text sent (variables and macros expanded), what came back."""

    where: str
    dialect: str
    query: str
    mode: str  # "all" (variables as a user finds them) or "one" (the first value of each)
    rows: int = 0
    error: str | None = None
    columns: list[str] = field(default_factory=list)
    series: list[dict[str, str]] = field(default_factory=list)  # tags / labels of each series returned
    records: list[dict[str, Any]] = field(default_factory=list)  # the first rows (column → value, tags)


@dataclass
class AlertEvaluation:
    uid: str
    title: str
    state: str  # Normal / Alerting (condition met: Grafana goes Pending for `for`, then Firing) / NoData / Error
    values: dict[str, float] = field(default_factory=dict)  # condition value per series
    detail: str = ""


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    runs: list[QueryRun] = field(default_factory=list)
    alerts: list[AlertEvaluation] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)
    not_run: set[str] = field(default_factory=set)  # dialects without a connection

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def alert(self, uid: str) -> AlertEvaluation:
        return next(a for a in self.alerts if a.uid == uid)


class Unusable(Exception):
    """A file the checker cannot read at all (exit status 2)."""


# -- files -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Datasource:
    name: str
    uid: str
    type: str
    json_data: dict[str, Any]

    @property
    def dialect(self) -> str:
        return DIALECTS[self.type]


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise Unusable(f"{path}: {exc}") from None


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*") if p.suffix in (".yaml", ".yml"))


def load_datasources(grafana_dir: Path, report: Report) -> dict[str, Datasource]:
    out: dict[str, Datasource] = {}
    directory = grafana_dir / "provisioning" / "datasources"
    files = _yaml_files(directory)
    if not files:
        report.add(str(directory), "no datasource provisioning file")
    for path in files:
        where = _rel(path)
        doc = _load_yaml(path) or {}
        if doc.get("apiVersion") != 1:
            report.add(where, f"apiVersion: expected 1, got {doc.get('apiVersion')!r}")
        for i, ds in enumerate(doc.get("datasources") or []):
            at = f"{where}: datasources[{i}]"
            missing = [k for k in ("name", "uid", "type", "url") if not ds.get(k)]
            if missing:
                report.add(at, f"missing {', '.join(missing)}")
                continue
            if ds["type"] not in DIALECTS:
                report.add(at, f"type {ds['type']!r}: the dashboards use {', '.join(sorted(DIALECTS))}")
                continue
            if ds["uid"] in out:
                report.add(at, f"uid {ds['uid']!r} provisioned twice")
            json_data = ds.get("jsonData") or {}
            if ds["type"] == "influxdb":
                if json_data.get("version", "InfluxQL") != "InfluxQL":
                    report.add(at, f"jsonData.version {json_data['version']!r}: the dashboards query InfluxQL")
                if not json_data.get("dbName"):
                    report.add(at, "jsonData.dbName missing (InfluxQL needs the database)")
            if ds["type"] == "grafana-postgresql-datasource" and not json_data.get("database"):
                report.add(at, "jsonData.database missing")
            out[ds["uid"]] = Datasource(ds["name"], ds["uid"], ds["type"], json_data)
    return out


def load_dashboards(grafana_dir: Path, files: Iterable[Path] | None,
                    report: Report) -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted(files) if files is not None else sorted((grafana_dir / "dashboards").glob("*.json"))
    if not paths:
        report.add(str(grafana_dir / "dashboards"), "no dashboard files")
    out = []
    for path in paths:
        try:
            out.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as exc:
            report.add(_rel(path), f"not a JSON dashboard: {exc}")
    return out


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# -- JSON Schemas ------------------------------------------------------------------------------------------------------
class Schemas:
    """Grafana's JSON Schemas (Draft 7), as validators for a dashboard, a panel, panel options, alert rules."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._docs: dict[str, dict[str, Any]] = {}
        for path in directory.glob("*.jsonschema.json"):
            self._docs[path.name.removesuffix(".jsonschema.json")] = json.loads(path.read_text(encoding="utf-8"))
        if "dashboard" not in self._docs or "alerting" not in self._docs:
            raise Unusable(f"{directory}: dashboard.jsonschema.json and alerting.jsonschema.json are needed")
        self._validators: dict[tuple[str, str], jsonschema.Draft7Validator] = {}

    def validator(self, doc: str, definition: str | None) -> jsonschema.Draft7Validator | None:
        key = (doc, definition or "")
        if key not in self._validators:
            schema = self._docs.get(doc)
            if schema is None or (definition is not None and definition not in schema.get("definitions", {})):
                return None
            if definition is not None:
                schema = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
            self._validators[key] = jsonschema.Draft7Validator(schema)
        return self._validators[key]

    def errors(self, doc: str, definition: str | None, instance: Any, prefix: str = "") -> list[str]:
        validator = self.validator(doc, definition)
        if validator is None:
            return [f"no schema {doc}{'#' + definition if definition else ''}"]
        out = []
        for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
            path = ".".join(str(p) for p in err.absolute_path)
            location = prefix + path if path else prefix.rstrip(".") or "(top)"
            out.append(f"{location}: {_schema_message(err)}")
        return out

    def panel_types(self) -> set[str]:
        return {t for t, doc in PANEL_SCHEMAS.items() if doc in self._docs}


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "oneOf" and err.context:
        best = jsonschema.exceptions.best_match(err.context)
        return f"{str(err.message)[:120]} — {str(best.message)[:200]}"
    return str(err.message)[:300]


# -- time ranges and intervals -----------------------------------------------------------------------------------------
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _add_months(t: datetime, months: int) -> datetime:
    month = t.month - 1 + months
    year = t.year + month // 12
    month = month % 12 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def _floor(t: datetime, unit: str) -> datetime:
    if unit == "y":
        return t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "M":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - timedelta(days=day.weekday())
    if unit == "d":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "h":
        return t.replace(minute=0, second=0, microsecond=0)
    if unit == "m":
        return t.replace(second=0, microsecond=0)
    return t.replace(microsecond=0)


def _shift(t: datetime, amount: int, unit: str) -> datetime:
    if unit == "y":
        return _add_months(t, 12 * amount)
    if unit == "M":
        return _add_months(t, amount)
    return t + timedelta(seconds=amount * _UNIT_SECONDS[unit])


def parse_time(text: str, now: datetime, *, round_up: bool = False) -> datetime:
    """Grafana's date math (``now``, ``now-6h``, ``now-1d/d``, ``now/w``), an ISO 8601 time, or Unix ms. Times are
    UTC (the dashboards say ``timezone: browser``; the checker's browser is in UTC)."""
    text = text.strip()
    if text.startswith("now"):
        m = re.fullmatch(r"now((?:[+-]\d+[smhdwMy])*)(?:/([smhdwMy]))?", text)
        if m is None:
            raise ValueError(f"cannot read the time {text!r}")
        t = now
        for sign, amount, unit in re.findall(r"([+-])(\d+)([smhdwMy])", m.group(1)):
            t = _shift(t, int(amount) * (1 if sign == "+" else -1), unit)
        if m.group(2):
            unit = m.group(2)
            t = _floor(t, unit)
            if round_up:
                t = _shift(t, 1, unit) - timedelta(milliseconds=1)
        return t
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration_ms(text: str) -> int:
    """``10s``, ``1m``, ``500ms``, ``1h30m`` → milliseconds (Grafana's interval syntax; a bare number is seconds)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text) * 1000
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(a + u for a, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    factor = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
              "y": 31_536_000_000}
    return sum(int(a) * factor[u] for a, u in parts)


_ROUND_STEPS_MS = [
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000), (7500, 5000),
    (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000), (210000, 120000),
    (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000), (2700000, 1800000),
    (5400000, 3600000), (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
]


def round_interval_ms(ms: float) -> int:
    """Grafana's rangeutil.roundInterval."""
    for below, rounded in _ROUND_STEPS_MS:
        if ms < below:
            return rounded
    return 31536000000


def format_interval(ms: int) -> str:
    """Grafana's interval text: ``500ms``, ``5s``, ``2m``, ``1h``, ``1d``, ``1y``."""
    for unit, size in (("y", 31_536_000_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    if ms >= 1000:
        return f"{ms // 1000}s"
    return f"{ms}ms"


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    @property
    def ms(self) -> int:
        return int((self.end - self.start).total_seconds() * 1000)

    def rfc3339(self, t: datetime) -> str:
        """As Go's time.RFC3339Nano: fraction without trailing zeros, none when whole seconds."""
        text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
        return text + "Z"


def interval_for(rng: TimeRange, max_data_points: int, low_limit: str | None) -> int:
    ms = round_interval_ms(rng.ms / max_data_points)
    if low_limit:
        ms = max(ms, parse_duration_ms(low_limit.lstrip(">")))
    return ms


# -- variables and interpolation ---------------------------------------------------------------------------------------
@dataclass
class Variable:
    name: str
    type: str
    multi: bool
    include_all: bool
    all_value: str | None
    options: list[tuple[str, str]]  # (text, value)
    selected: list[tuple[str, str]]
    is_all: bool

    @property
    def values(self) -> list[str]:
        return [v for _, v in self.selected]

    @property
    def texts(self) -> list[str]:
        return [t for t, _ in self.selected]


def _js_regex_escape(value: str) -> str:
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def _prom_regex_escape(value: str) -> str:
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value)


def _prom_regular_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def format_variable(var: Variable, fmt: str | None, dialect: str) -> str:
    """The text Grafana puts in place of ``var`` in a query of ``dialect`` (``fmt``: ``${var:fmt}``)."""
    if var.is_all and var.all_value is not None and fmt is None:
        return var.all_value
    values = var.values
    if fmt is None:
        if dialect == "sql":
            if var.multi or var.include_all:
                return ",".join(_quote_literal(v) for v in values)
            return values[0] if values else ""
        if dialect == "influxql":
            if var.multi or var.include_all:
                escaped = [_js_regex_escape(v) for v in values]
                return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
            return values[0] if values else ""
        if var.multi or var.include_all:
            escaped = [_prom_regex_escape(v) for v in values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        return _prom_regular_escape(values[0]) if values else ""
    formats = {
        "raw": lambda: ",".join(values),
        "csv": lambda: ",".join(values),
        "pipe": lambda: "|".join(values),
        "regex": lambda: (_js_regex_escape(values[0]) if len(values) == 1
                          else "(" + "|".join(_js_regex_escape(v) for v in values) + ")"),
        "singlequote": lambda: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
        "doublequote": lambda: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
        "sqlstring": lambda: ",".join(_quote_literal(v) for v in values),
        "json": lambda: json.dumps(values if len(values) != 1 else values[0]),
        "text": lambda: " + ".join(var.texts),
    }
    if fmt not in formats:
        raise ValueError(f"unknown variable format ${{{var.name}:{fmt}}}")
    return formats[fmt]()


def interpolate(text: str, variables: dict[str, Variable], builtins: dict[str, str], dialect: str,
                leave: Collection[str] = frozenset()) -> tuple[str, list[str]]:
    """Replace variables as Grafana's frontend does; return the text and the names it did not know (``leave``:
    names the backend expands later, such as SQL macros)."""
    unknown: list[str] = []

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            return builtins[name]
        if name in variables:
            return format_variable(variables[name], fmt, dialect)
        if name not in leave:
            unknown.append(name)
        return m.group(0)

    return VARIABLE_RE.sub(replace, text), unknown


def referenced_variables(text: str) -> set[str]:
    return {m.group(1) or m.group(2) or m.group(4) for m in VARIABLE_RE.finditer(text)}


# -- PostgreSQL macros (Grafana's backend) -----------------------------------------------------------------------------
def expand_sql_macros(sql: str, rng: TimeRange, interval_ms: int) -> str:
    """What Grafana's PostgreSQL backend does to a query after the frontend: ``$__interval`` and
    ``$__unixEpochFrom/To()``, then the macros; an unknown macro is an error, as in Grafana."""
    sql = sql.replace("$__interval_ms", str(interval_ms)).replace("$__interval", format_interval(interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(int(rng.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(rng.end.timestamp())))
    errors: list[str] = []

    def group_seconds(args: list[str], name: str) -> float:
        if len(args) < 2:
            raise ValueError(f"macro {name} needs time column and interval and optional fill value")
        return parse_duration_ms(args[1].strip("'")) / 1000

    def evaluate(name: str, args: list[str], whole: str, following: str) -> str:
        if name == "__timeGroup" and following.startswith(","):
            name = "__timeGroupAlias"  # Grafana's pre-5.3 compatibility: AS "time" when a comma follows
        frm, to = rng.rfc3339(rng.start), rng.rfc3339(rng.end)
        need_col = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter"}
        if name in need_col and (not args or not args[0]):
            raise ValueError(f"missing time column argument for macro {name}")
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
        if name == "__timeFrom":
            return f"'{frm}'"
        if name == "__timeTo":
            return f"'{to}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            s = _num(group_seconds(args, name))
            group = f"floor(extract(epoch from {args[0]})/{s})*{s}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(rng.start.timestamp())} AND {args[0]} <= {int(rng.end.timestamp())}"
        if name == "__unixEpochNanoFilter":
            return (f"{args[0]} >= {int(rng.start.timestamp() * 1e9)} AND "
                    f"{args[0]} <= {int(rng.end.timestamp() * 1e9)}")
        if name == "__unixEpochNanoFrom":
            return str(int(rng.start.timestamp() * 1e9))
        if name == "__unixEpochNanoTo":
            return str(int(rng.end.timestamp() * 1e9))
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            s = _num(group_seconds(args, name))
            return f"floor(({args[0]})/{s})*{s}" + (' AS "time"' if name == "__unixEpochGroupAlias" else "")
        raise ValueError(f"unknown macro {name!r}")

    def replace(m: re.Match[str]) -> str:
        args = [a.strip() for a in m.group(2).split(",")]
        try:
            return evaluate(m.group(1), args, m.group(0), sql[m.end():])
        except ValueError as exc:
            errors.append(str(exc))
            return "macro_error()"

    out = SQL_MACRO_RE.sub(replace, sql)
    if errors:
        raise ValueError(errors[0])
    return out


def _num(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)


# -- connections -------------------------------------------------------------------------------------------------------
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
                out.samples.append([_float(row[-1]) for row in values])
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
            samples = [_float(v[1]) for v in values]
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


def _float(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


# -- the checker -------------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """A query of a panel, annotation or variable: where it is, its datasource, the query text and its options."""

    where: str
    datasource: Datasource
    text: str
    kind: str  # panel / annotation / variable
    fmt: str = "time_series"  # SQL format; InfluxQL resultFormat
    instant: bool = False
    interval: str | None = None  # the panel's min interval
    max_data_points: int | None = None
    time_from: str | None = None
    time_shift: str | None = None
    repeat: str | None = None


class Checker:
    def __init__(self, *, grafana_dir: Path = GRAFANA_DIR, schemas: Path = DEFAULT_SCHEMAS,
                 dashboards: Iterable[Path] | None = None, connections: Connections | None = None,
                 at: datetime | None = None, time_from: str | None = None, time_to: str | None = None,
                 rules_file: Path | None = None, max_data_points: int = DEFAULT_MAX_DATA_POINTS) -> None:
        self.grafana_dir = grafana_dir
        self.schemas = Schemas(schemas)
        self.dashboard_files = list(dashboards) if dashboards is not None else None
        self.conn = connections or Connections()
        self.now = at or datetime.now(UTC)
        self.time_from, self.time_to = time_from, time_to
        self.rules_file = rules_file
        self.max_data_points = max_data_points
        self.report = Report()
        self.runner = Runner(self.conn)

    def run(self) -> Report:
        try:
            self.datasources = load_datasources(self.grafana_dir, self.report)
            for dialect in ("sql", "influxql", "promql"):
                if not self.conn.available(dialect):
                    self.report.not_run.add(dialect)
            dashboards = load_dashboards(self.grafana_dir, self.dashboard_files, self.report)
            uids: dict[str, str] = {}
            for path, dash in dashboards:
                self.report.dashboards.append(_rel(path))
                uid = dash.get("uid")
                if isinstance(uid, str) and uid in uids:
                    self.report.add(_rel(path), f"dashboard uid {uid!r} is also the uid of {uids[uid]}")
                elif isinstance(uid, str):
                    uids[uid] = _rel(path)
                self.check_dashboard(path, dash)
            self.check_alerting()
            if self.rules_file is not None:
                self.check_thresholds(dashboards, self.rules_file)
        finally:
            self.runner.close()
        return self.report

    # -- a dashboard ---------------------------------------------------------------------------------------------------
    def check_dashboard(self, path: Path, dash: dict[str, Any]) -> None:
        where = f"{_rel(path)} ({dash.get('title', '?')!r})"
        for message in self.schemas.errors("dashboard", None, dash):
            if not message.startswith("panels."):
                self.report.add(where, f"schema: {message}")
        uid = dash.get("uid")
        if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
            self.report.add(where, f"uid {uid!r}: 1 to 40 letters, digits, - or _")
        if not dash.get("title"):
            self.report.add(where, "no title")
        panels = list(self._panels(dash.get("panels") or []))
        self._check_grid(where, panels)
        variables = (dash.get("templating") or {}).get("list") or []
        defined = self._check_variables(where, variables)
        targets: list[Target] = []
        for panel in panels:
            targets += self._check_panel(where, panel, defined)
        for i, anno in enumerate((dash.get("annotations") or {}).get("list") or []):
            if anno.get("builtIn") == 1:
                continue
            at = f"{where} annotation {anno.get('name', i)!r}"
            ds = self._datasource(at, anno.get("datasource"))
            target = anno.get("target") or {}
            if ds is not None:
                text = self._query_text(at, ds, target)
                if text is not None:
                    self._check_references(at, text, defined, ds.dialect)
                    targets.append(Target(at, ds, text, "annotation", fmt="table"))
        self._run_live(where, dash, variables, targets)

    def _panels(self, panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            if panel.get("type") == "row":
                yield from panel.get("panels") or []

    def _panel_where(self, where: str, panel: dict[str, Any]) -> str:
        return f"{where} panel {panel.get('title', '')!r} (id {panel.get('id')})"

    def _check_grid(self, where: str, panels: list[dict[str, Any]]) -> None:
        ids: dict[Any, str] = {}
        placed: list[tuple[str, int, int, int, int]] = []
        for panel in panels:
            at = self._panel_where(where, panel)
            pid = panel.get("id")
            if not isinstance(pid, int):
                self.report.add(at, "no integer id")
            elif pid in ids:
                self.report.add(at, f"id {pid} is also the id of panel {ids[pid]!r}")
            else:
                ids[pid] = panel.get("title", "")
            pos = panel.get("gridPos")
            if not isinstance(pos, dict) or not all(isinstance(pos.get(k), int) for k in ("x", "y", "w", "h")):
                self.report.add(at, "gridPos: x, y, w and h (integers) are needed")
                continue
            x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
            if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
                self.report.add(at, f"off the grid: gridPos x={x} w={w} (x + w must be at most {GRID_COLUMNS}), "
                                    f"y={y} h={h}")
                continue
            for other, ox, oy, ow, oh in placed:
                if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                    self.report.add(at, f"overlaps panel {other!r} (gridPos x={x} y={y} w={w} h={h} against "
                                        f"x={ox} y={oy} w={ow} h={oh})")
            placed.append((str(panel.get("title", "")), x, y, w, h))

    def _check_panel(self, where: str, panel: dict[str, Any], defined: list[str]) -> list[Target]:
        at = self._panel_where(where, panel)
        ptype = panel.get("type")
        if ptype == "row":
            for message in self.schemas.errors("dashboard", "RowPanel", panel):
                self.report.add(at, f"schema: {message}")
            return []
        for message in self.schemas.errors("dashboard", "Panel", panel):
            self.report.add(at, f"schema: {message}")
        doc = PANEL_SCHEMAS.get(str(ptype))
        if doc is None or ptype not in self.schemas.panel_types():
            self.report.add(at, f"panel type {ptype!r} has no JSON Schema here (use one of "
                                f"{', '.join(sorted(self.schemas.panel_types()))})")
            return []
        if self.schemas.validator(doc, "Options") is not None:
            for message in self.schemas.errors(doc, "Options", panel.get("options", {}), "options."):
                self.report.add(at, f"schema ({doc}): {message}")
        custom = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom")
        if custom is not None and self.schemas.validator(doc, "FieldConfig") is not None:
            for message in self.schemas.errors(doc, "FieldConfig", custom, "fieldConfig.defaults.custom."):
                self.report.add(at, f"schema ({doc}): {message}")
        if ptype == "text":
            return []
        raw_targets = panel.get("targets") or []
        if not raw_targets:
            self.report.add(at, "no queries (targets)")
        out = []
        refs: set[str] = set()
        for i, target in enumerate(raw_targets):
            ref = target.get("refId")
            tat = f"{at} refId {ref or i}"
            if not ref:
                self.report.add(tat, "no refId")
            elif ref in refs:
                self.report.add(tat, f"refId {ref} used twice in the panel")
            refs.add(ref or "")
            ds = self._datasource(tat, target.get("datasource") or panel.get("datasource"))
            if ds is None:
                continue
            panel_ds = panel.get("datasource")
            if isinstance(panel_ds, dict) and panel_ds.get("uid") not in (ds.uid, "-- Mixed --"):
                self.report.add(tat, f"target datasource {ds.uid!r} differs from the panel's {panel_ds.get('uid')!r}")
            text = self._query_text(tat, ds, target)
            if text is None:
                continue
            self._check_references(tat, text, defined, ds.dialect)
            out.append(Target(tat, ds, text, "panel", fmt=str(target.get("format") or target.get("resultFormat")
                                                               or "time_series"),
                              instant=bool(target.get("instant")) and not target.get("range"),
                              interval=panel.get("interval") or None, max_data_points=panel.get("maxDataPoints"),
                              time_from=panel.get("timeFrom"), time_shift=panel.get("timeShift"),
                              repeat=panel.get("repeat")))
        return out

    def _datasource(self, at: str, ref: Any) -> Datasource | None:
        if not isinstance(ref, dict) or not ref.get("uid"):
            self.report.add(at, f"no datasource {{type, uid}} (got {ref!r})")
            return None
        ds = self.datasources.get(ref["uid"])
        if ds is None:
            self.report.add(at, f"datasource uid {ref['uid']!r} is not provisioned (provisioning/datasources has "
                                f"{', '.join(sorted(self.datasources)) or 'none'})")
            return None
        if ref.get("type") not in (None, ds.type):
            self.report.add(at, f"datasource {ds.uid!r} has type {ds.type!r}, the panel says {ref.get('type')!r}")
            return None
        return ds

    def _query_text(self, at: str, ds: Datasource, target: dict[str, Any]) -> str | None:
        if ds.dialect == "sql":
            text = target.get("rawSql")
            if not (target.get("rawQuery") or target.get("editorMode") == "code"):
                self.report.add(at, "a SQL query must be raw code (editorMode code): the builder is not checked")
                return None
        elif ds.dialect == "influxql":
            text = target.get("query")
            if not target.get("rawQuery"):
                self.report.add(at, "an InfluxQL query must be raw (rawQuery true): the builder is not checked")
                return None
        else:
            text = target.get("expr")
        if not isinstance(text, str) or not text.strip():
            self.report.add(at, "empty query")
            return None
        return text

    def _check_references(self, at: str, text: str, defined: list[str], dialect: str) -> None:
        leave = SQL_MACROS if dialect == "sql" else set()
        for name in sorted(referenced_variables(text)):
            if name not in defined and name not in BUILTIN_VARIABLES and name not in leave:
                self.report.add(at, f"${name} is not a variable of the dashboard (defined: "
                                    f"{', '.join(defined) or 'none'})")

    def _check_variables(self, where: str, variables: list[dict[str, Any]]) -> list[str]:
        defined: list[str] = []
        for var in variables:
            name = var.get("name")
            at = f"{where} variable {name!r}"
            if not name:
                self.report.add(f"{where} variable", "no name")
                continue
            if name in defined:
                self.report.add(at, "defined twice")
            if var.get("type") not in ("query", "custom", "constant", "interval", "textbox"):
                self.report.add(at, f"type {var.get('type')!r} is not checked (query, custom, constant, interval, "
                                    "textbox)")
            if var.get("type") == "query":
                ds = self._datasource(at, var.get("datasource"))
                query = var.get("query")
                if not isinstance(query, str) or not query.strip():
                    self.report.add(at, "no query")
                elif ds is not None:
                    for ref in sorted(referenced_variables(query)):
                        if ref not in defined and ref not in BUILTIN_VARIABLES:
                            self.report.add(at, f"its query uses ${ref}, which is not a variable defined before it")
            defined.append(name)
        return defined

    # -- live ---------------------------------------------------------------------------------------------------------
    def _range(self, dash: dict[str, Any], target: Target | None = None) -> TimeRange:
        t = dash.get("time") or {}
        start = parse_time(self.time_from or t.get("from", "now-6h"), self.now)
        end = parse_time(self.time_to or t.get("to", "now"), self.now, round_up=True)
        if target is not None and target.time_from:
            start = parse_time(f"now-{target.time_from}", self.now)
            end = self.now
        if target is not None and target.time_shift:
            shift = timedelta(milliseconds=parse_duration_ms(target.time_shift))
            start, end = start - shift, end - shift
        return TimeRange(start, end)

    def _builtins(self, rng: TimeRange, interval_ms: int, ds: Datasource) -> dict[str, str]:
        scrape_ms = parse_duration_ms(ds.json_data.get("timeInterval") or "15s")
        rate_ms = max(interval_ms + scrape_ms, 4 * scrape_ms)
        out = {"__interval": format_interval(interval_ms), "__interval_ms": str(interval_ms),
               "__rate_interval": format_interval(rate_ms), "__range": f"{rng.ms // 1000}s",
               "__range_s": str(rng.ms // 1000), "__range_ms": str(rng.ms),
               "__from": str(int(rng.start.timestamp() * 1000)), "__to": str(int(rng.end.timestamp() * 1000))}
        if ds.dialect == "influxql":
            out["timeFilter"] = (f"time >= {int(rng.start.timestamp() * 1000)}ms and "
                                 f"time <= {int(rng.end.timestamp() * 1000)}ms")
            out["interval"] = format_interval(interval_ms)
        return out

    def _run_live(self, where: str, dash: dict[str, Any], variables: list[dict[str, Any]],
                  targets: list[Target]) -> None:
        for mode in ("all", "one"):
            values, empty = self._resolve_variables(where, dash, variables, mode)
            if values is None:
                return  # a variable's query could not run: already reported
            for target in targets:
                if not self.conn.available(target.datasource.dialect):
                    continue
                uses = referenced_variables(target.text)
                missing = sorted(uses & empty)
                if missing:
                    if mode == "all":
                        self.report.add(target.where, f"not run: variable {', '.join('$' + m for m in missing)} "
                                                      "has no values")
                    continue
                self._run_target(dash, target, values, mode)
            if mode == "all" and any(p.where.startswith(where) for p in self.report.problems):
                return  # the second pass would repeat what is already wrong

    def _resolve_variables(self, where: str, dash: dict[str, Any], variables: list[dict[str, Any]],
                           mode: str) -> tuple[dict[str, Variable] | None, set[str]]:
        rng = self._range(dash)
        out: dict[str, Variable] = {}
        empty: set[str] = set()
        for var in variables:
            name, vtype = str(var.get("name")), var.get("type")
            at = f"{where} variable {name!r}"
            options: list[tuple[str, str]] = []
            if vtype == "query":
                ds = self.datasources.get((var.get("datasource") or {}).get("uid", ""))
                if ds is None:
                    return None, empty
                if not self.conn.available(ds.dialect):
                    empty.add(name)
                    continue
                query = str(var.get("query", ""))
                if referenced_variables(query) & empty:
                    empty.add(name)  # it depends on a variable without values: nothing to choose from either
                    continue
                text, unknown = interpolate(query, out, self._builtins(rng, 60_000, ds), ds.dialect,
                                            SQL_MACROS if ds.dialect == "sql" else set())
                run = QueryRun(at, ds.dialect, text, mode)
                self.report.runs.append(run)
                try:
                    if unknown:
                        raise QueryError(f"unknown variable(s) {', '.join('$' + u for u in unknown)}")
                    options = self._variable_options(ds, text, rng)
                except (QueryError, ValueError) as exc:
                    run.error = str(exc)
                    self.report.add(at, f"query failed: {exc} — query: {text}")
                    return None, empty
                run.rows = len(options)
                options = _apply_regex(options, var.get("regex") or "")
                options = _sort_options(options, int(var.get("sort") or 0))
            elif vtype == "custom":
                options = [(v.strip(), v.strip()) for v in str(var.get("query", "")).split(",") if v.strip()]
            elif vtype in ("constant", "textbox", "interval"):
                current = (var.get("current") or {}).get("value") or var.get("query", "")
                first = str(current).split(",")[0] if vtype == "interval" else str(current)
                options = [(first, first)]
            if not options:
                if mode == "all":
                    self.report.add(at, "no values: every panel using it would show nothing")
                empty.add(name)
                options = []
            multi, include_all = bool(var.get("multi")), bool(var.get("includeAll"))
            if mode == "one" or not (multi or include_all):
                selected, is_all = options[:1], False
            else:
                selected, is_all = options, include_all
            out[name] = Variable(name, str(vtype), multi, include_all, var.get("allValue") or None, options,
                                 selected, is_all)
        return out, empty

    def _variable_options(self, ds: Datasource, text: str, rng: TimeRange) -> list[tuple[str, str]]:
        if ds.dialect == "sql":
            result = self.runner.sql(expand_sql_macros(text, rng, 60_000))
            cols = result.columns
            if "__text" in cols and "__value" in cols:
                ti, vi = cols.index("__text"), cols.index("__value")
                pairs = [(str(r[ti]), str(r[vi])) for r in result.rows]
            else:
                pairs = [(str(r[0]), str(r[0])) for r in result.rows]
        elif ds.dialect == "influxql":
            result = self.runner.influxql(text)
            pairs = [(str(r[-1]), str(r[-1])) for r in result.rows]
        else:
            m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*", text)
            if m is None:
                raise QueryError("only label_values(metric, label) / label_values(label) variables are checked")
            pairs = [(v, v) for v in self.runner.label_values(m.group(2), m.group(1), rng)]
        seen: set[str] = set()
        unique = []
        for text_, value in pairs:
            if value not in seen:
                seen.add(value)
                unique.append((text_, value))
        return unique

    def _run_target(self, dash: dict[str, Any], target: Target, values: dict[str, Variable], mode: str) -> None:
        ds = target.datasource
        rng = self._range(dash, target)
        low = target.interval or ds.json_data.get("timeInterval")
        interval_ms = interval_for(rng, int(target.max_data_points or self.max_data_points), low)
        variables = dict(values)
        if target.repeat and target.repeat in variables:
            v = variables[target.repeat]
            variables[target.repeat] = Variable(v.name, v.type, v.multi, v.include_all, v.all_value, v.options,
                                                v.options[:1], False)
        run = QueryRun(target.where, ds.dialect, target.text, mode)
        self.report.runs.append(run)
        try:
            text, unknown = interpolate(target.text, variables, self._builtins(rng, interval_ms, ds), ds.dialect,
                                        SQL_MACROS if ds.dialect == "sql" else set())
            if unknown:
                raise QueryError(f"unknown variable(s) {', '.join('$' + u for u in sorted(set(unknown)))}")
            if ds.dialect == "sql":
                text = expand_sql_macros(text, rng, interval_ms)
                run.query = text
                result = self.runner.sql(text)
                self._check_sql_shape(target, result)
            elif ds.dialect == "influxql":
                run.query = text
                result = self.runner.influxql(text)
            else:
                run.query = text
                result = self.runner.promql(text, rng, interval_ms / 1000, instant=target.instant)
        except (QueryError, ValueError) as exc:
            run.error = str(exc)
            self.report.add(target.where, f"query failed ({'variables: first value only' if mode == 'one' else 'all'}"
                                          f"): {exc} — query: {run.query}")
            return
        run.rows, run.columns, run.series, run.records = result.count, result.columns, result.series, result.records
        if mode == "all" and result.count == 0:
            self.report.add(target.where, f"no rows — query: {run.query}")

    def _check_sql_shape(self, target: Target, result: Result) -> None:
        needs_time = target.kind == "annotation" or target.fmt == "time_series"
        if needs_time and "time" not in result.columns:
            raise QueryError(f"found no column named 'time' (columns: {', '.join(result.columns)}); a "
                             f"{'annotation' if target.kind == 'annotation' else 'time series'} needs one")
        if target.kind == "panel" and target.fmt == "time_series" and result.rows:
            ti = result.columns.index("time")
            if not any(_is_number(v) for row in result.rows for i, v in enumerate(row) if i != ti):
                raise QueryError(f"no numeric column besides time (columns: {', '.join(result.columns)})")

    # -- alert rules --------------------------------------------------------------------------------------------------
    def check_alerting(self) -> None:
        directory = self.grafana_dir / "provisioning" / "alerting"
        contact_names: set[str] = set()
        files = _yaml_files(directory)
        docs = [(path, _load_yaml(path) or {}) for path in files]
        for path, doc in docs:
            where = _rel(path)
            for key in sorted(set(doc) - ALERTING_TOP_KEYS):
                self.report.add(where, f"unknown key {key!r} (Grafana ignores it)")
            if doc.get("apiVersion") != 1:
                self.report.add(where, f"apiVersion: expected 1, got {doc.get('apiVersion')!r}")
            for i, cp in enumerate(doc.get("contactPoints") or []):
                at = f"{where}: contactPoints[{i}] {cp.get('name')!r}"
                if not cp.get("name"):
                    self.report.add(at, "no name")
                contact_names.add(cp.get("name", ""))
                for j, receiver in enumerate(cp.get("receivers") or []):
                    rat = f"{at} receivers[{j}]"
                    for key in sorted(set(receiver) - RECEIVER_KEYS):
                        self.report.add(rat, f"unknown key {key!r}")
                    api = {k: receiver[k] for k in RECEIVER_KEYS & set(receiver)} | {"name": cp.get("name", "")}
                    for message in self.schemas.errors("alerting", "ContactPoint", api):
                        self.report.add(rat, f"schema: {message}")
        rule_uids: set[str] = set()
        for path, doc in docs:
            for gi, group in enumerate(doc.get("groups") or []):
                self._check_group(_rel(path), gi, group, contact_names, rule_uids)

    def _check_group(self, where: str, gi: int, group: dict[str, Any], contacts: set[str], uids: set[str]) -> None:
        at = f"{where}: groups[{gi}] {group.get('name')!r}"
        for key in sorted(set(group) - GROUP_KEYS):
            self.report.add(at, f"unknown key {key!r} (Grafana ignores it)")
        for key in ("name", "folder", "interval"):
            if not group.get(key):
                self.report.add(at, f"{key} missing")
        interval = str(group.get("interval", ""))
        if not DURATION_RE.fullmatch(interval):
            self.report.add(at, f"interval {interval!r} is not a duration such as 1m")
            interval = "1m"
        api_rules = []
        for ri, rule in enumerate(group.get("rules") or []):
            rat = f"{at} rule {rule.get('uid') or ri!r} ({rule.get('title', '')!r})"
            api = self._check_rule(rat, group, rule, contacts, uids)
            if api is not None:
                api_rules.append(api)
        api_group = {"title": group.get("name", ""), "folderUid": group.get("folder", ""),
                     "interval": parse_duration_ms(interval) // 1000, "rules": api_rules}
        for message in self.schemas.errors("alerting", "RuleGroup", api_group):
            self.report.add(at, f"schema (as Grafana stores it): {message}")

    def _check_rule(self, at: str, group: dict[str, Any], rule: dict[str, Any], contacts: set[str],
                    uids: set[str]) -> dict[str, Any] | None:
        for key in sorted(set(rule) - RULE_KEYS):
            self.report.add(at, f"unknown key {key!r} (Grafana ignores it)")
        uid = rule.get("uid")
        if not uid:
            self.report.add(at, "no uid")
        elif uid in uids:
            self.report.add(at, f"uid {uid!r} used twice")
        uids.add(uid or "")
        for key in ("for", "keepFiringFor"):
            if key in rule and not DURATION_RE.fullmatch(str(rule[key])):
                self.report.add(at, f"{key} {rule[key]!r} is not a duration such as 5m")
        data = rule.get("data") or []
        if not data:
            self.report.add(at, "no data (queries)")
        refs = [q.get("refId") for q in data]
        if len(set(refs)) != len(refs):
            self.report.add(at, f"refIds used twice: {refs}")
        if rule.get("condition") not in refs:
            self.report.add(at, f"condition {rule.get('condition')!r} is not one of the refIds {refs}")
        receiver = (rule.get("notification_settings") or {}).get("receiver")
        if receiver is not None and receiver not in contacts:
            self.report.add(at, f"notification_settings.receiver {receiver!r} is not a provisioned contact point "
                                f"({', '.join(sorted(contacts)) or 'none'})")
        for q in data:
            qat = f"{at} refId {q.get('refId')}"
            for key in sorted(set(q) - QUERY_KEYS):
                self.report.add(qat, f"unknown key {key!r} (Grafana ignores it)")
            model = q.get("model") or {}
            if model.get("refId") not in (None, q.get("refId")):
                self.report.add(qat, f"model.refId {model.get('refId')!r} differs")
            if q.get("datasourceUid") == EXPR_UID:
                etype = model.get("type")
                if etype not in EXPRESSION_TYPES:
                    self.report.add(qat, f"expression type {etype!r} (one of {', '.join(sorted(EXPRESSION_TYPES))})")
                named = ({model.get("expression")} if etype in ("reduce", "resample", "threshold")
                         else set(re.findall(r"\$\{?(\w+)", str(model.get("expression", "")))) if etype == "math"
                         else set())
                for ref in named:
                    if ref not in refs:
                        self.report.add(qat, f"expression {ref!r} is not one of the refIds {refs}")
                continue
            ds = self.datasources.get(q.get("datasourceUid", ""))
            if ds is None:
                self.report.add(qat, f"datasourceUid {q.get('datasourceUid')!r} is not provisioned")
                continue
            if (model.get("datasource") or {}).get("uid") not in (None, ds.uid):
                self.report.add(qat, "model.datasource.uid differs from datasourceUid")
            rel = q.get("relativeTimeRange") or {}
            if not (isinstance(rel.get("from"), int) and isinstance(rel.get("to", 0), int)
                    and rel["from"] > rel.get("to", 0) >= 0):
                self.report.add(qat, f"relativeTimeRange {rel!r}: from (seconds back) must be above to")
            text = self._query_text(qat, ds, model)
            if text is not None:
                leave = SQL_MACROS | {"__interval", "__interval_ms"} if ds.dialect == "sql" else {
                    "timeFilter", "__interval", "__interval_ms", "interval"}
                for name in sorted(referenced_variables(text) - leave):
                    self.report.add(qat, f"${name}: alert rules cannot use dashboard variables")
        api = {"uid": uid or "", "title": rule.get("title", ""), "condition": rule.get("condition", ""),
               "data": data, "noDataState": rule.get("noDataState", "NoData"),
               "execErrState": rule.get("execErrState", "Alerting"), "for": str(rule.get("for", "0s")),
               "orgID": int(group.get("orgId") or 1), "folderUID": str(group.get("folder", "")),
               "ruleGroup": str(group.get("name", ""))}
        for key in ("annotations", "labels", "isPaused", "notification_settings"):
            if key in rule:
                api[key] = rule[key]
        for message in self.schemas.errors("alerting", "Rule", api):
            self.report.add(at, f"schema (as Grafana stores it): {message}")
        sources = [q.get("datasourceUid") for q in data if q.get("datasourceUid") != EXPR_UID]
        if sources and all(uid in self.datasources and self.conn.available(self.datasources[uid].dialect)
                           for uid in sources):
            self.report.alerts.append(self._evaluate(at, rule))
        return api

    def _evaluate(self, at: str, rule: dict[str, Any]) -> AlertEvaluation:
        """Run the rule's queries at ``now`` over their relative time range and evaluate reduce / threshold."""
        evaluation = AlertEvaluation(str(rule.get("uid", "")), str(rule.get("title", "")), "Normal")
        frames: dict[str, dict[str, list[float]]] = {}  # refId → series label → values
        for q in rule.get("data") or []:
            ref, model = q.get("refId", ""), q.get("model") or {}
            qat = f"{at} refId {ref}"
            if q.get("datasourceUid") == EXPR_UID:
                try:
                    frames[ref] = _expression(model, frames)
                except ValueError as exc:
                    self.report.add(qat, str(exc))
                    evaluation.state, evaluation.detail = "Error", str(exc)
                    return evaluation
                continue
            ds = self.datasources[q["datasourceUid"]]
            rel = q.get("relativeTimeRange") or {}
            rng = TimeRange(self.now - timedelta(seconds=int(rel.get("from", 600))),
                            self.now - timedelta(seconds=int(rel.get("to", 0))))
            run = QueryRun(qat, ds.dialect, "", "alert")
            self.report.runs.append(run)
            try:
                text = self._query_text(qat, ds, model) or ""
                interval_ms = interval_for(rng, DEFAULT_MAX_DATA_POINTS, ds.json_data.get("timeInterval"))
                text, _ = interpolate(text, {}, self._builtins(rng, interval_ms, ds), ds.dialect, SQL_MACROS)
                if ds.dialect == "sql":
                    text = expand_sql_macros(text, rng, interval_ms)
                    run.query = text
                    frames[ref] = _sql_frame(self.runner.sql(text))
                elif ds.dialect == "influxql":
                    run.query = text
                    frames[ref] = _series_frame(self.runner.influxql(text))
                else:
                    run.query = text
                    instant = bool(model.get("instant")) and not model.get("range")
                    frames[ref] = _series_frame(self.runner.promql(text, rng, interval_ms / 1000, instant=instant))
            except (QueryError, ValueError) as exc:
                run.error = str(exc)
                self.report.add(qat, f"query failed: {exc} — query: {run.query}")
                evaluation.state, evaluation.detail = "Error", str(exc)
                return evaluation
            run.rows = sum(len(v) for v in frames[ref].values())
            if not frames[ref]:
                self.report.add(qat, f"no data — query: {run.query}")
        condition = frames.get(str(rule.get("condition")), {})
        if not condition:
            evaluation.state = "NoData"
            return evaluation
        evaluation.values = {label: values[-1] if values else math.nan for label, values in condition.items()}
        if any(v and not math.isnan(v) for v in evaluation.values.values()):
            evaluation.state = "Alerting"
        return evaluation

    # -- thresholds against a floorgate alert-rules file ---------------------------------------------------------------
    def check_thresholds(self, dashboards: list[tuple[Path, dict[str, Any]]], rules_file: Path) -> None:
        doc = _load_yaml(rules_file) or {}
        rules = {r.get("name"): r for r in doc.get("rules") or [] if isinstance(r, dict)}
        drawn: set[str] = set()
        for path, dash in dashboards:
            where = f"{_rel(path)} ({dash.get('title', '?')!r})"
            for panel in self._panels(dash.get("panels") or []):
                for name in RULE_MENTION_RE.findall(str(panel.get("description", ""))):
                    at = self._panel_where(where, panel)
                    rule = rules.get(name)
                    if rule is None:
                        self.report.add(at, f"names alert rule {name!r}, which {_rel(rules_file)} does not have")
                        continue
                    value = rule_threshold(rule)
                    if value is None:
                        continue
                    steps = (((panel.get("fieldConfig") or {}).get("defaults") or {}).get("thresholds") or {}).get(
                        "steps") or []
                    values = [s.get("value") for s in steps if s.get("value") is not None]
                    if value not in values:
                        self.report.add(at, f"draws thresholds {values}, but alert rule {name!r} in "
                                            f"{_rel(rules_file)} says {value:g}")
                    else:
                        drawn.add(name)
        for name, rule in rules.items():
            value = rule_threshold(rule)
            if value is not None and name not in drawn:
                self.report.add(_rel(rules_file), f"alert rule {name!r} ({rule.get('kind')}, {value:g}) is drawn in "
                                                  "no panel (a panel names it in its description as alert rule "
                                                  f"`{name}` and draws the threshold)")


def rule_threshold(rule: dict[str, Any]) -> float | None:
    """The number a floorgate alert rule compares with, where a panel can draw it."""
    kind = rule.get("kind")
    key = {"reading": "above" if "above" in rule else "below", "node_backlog": "older_than_s",
           "ingest_lag": "above_s"}.get(str(kind))
    value = rule.get(key) if key else None
    return float(value) if isinstance(value, int | float) else None


def _apply_regex(options: list[tuple[str, str]], regex: str) -> list[tuple[str, str]]:
    if not regex:
        return options
    pattern = regex[1:regex.rindex("/")] if regex.startswith("/") and regex.count("/") >= 2 else regex
    compiled = re.compile(pattern)
    out = []
    for text, value in options:
        m = compiled.search(value)
        if m is None:
            continue
        groups = m.groupdict()
        if groups:
            out.append((groups.get("text") or groups.get("value") or value, groups.get("value") or value))
        elif m.groups():
            out.append((m.group(1), m.group(1)))
        else:
            out.append((text, value))
    return out


def _sort_options(options: list[tuple[str, str]], sort: int) -> list[tuple[str, str]]:
    if sort in (1, 2):
        return sorted(options, key=lambda o: o[0], reverse=sort == 2)
    if sort in (3, 4):
        return sorted(options, key=lambda o: _float(re.sub(r"[^\d.-]", "", o[0]) or "nan"), reverse=sort == 4)
    if sort in (5, 6):
        return sorted(options, key=lambda o: o[0].lower(), reverse=sort == 6)
    if sort in (7, 8):
        return sorted(options, key=lambda o: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", o[0])],
                      reverse=sort == 8)
    return options


def _sql_frame(result: Result) -> dict[str, list[float]]:
    """A SQL table in an alert rule: every numeric column of every row is a series; string columns are labels."""
    out: dict[str, list[float]] = {}
    for row in result.rows:
        labels = ",".join(f"{c}={v}" for c, v in zip(result.columns, row, strict=True)
                          if isinstance(v, str))
        for col, v in zip(result.columns, row, strict=True):
            if _is_number(v) or (v is None and col != "time"):
                out.setdefault(f"{col}{{{labels}}}", []).append(_float(v))
    return out


def _series_frame(result: Result) -> dict[str, list[float]]:
    return {json.dumps(labels, sort_keys=True): samples for labels, samples in zip(result.series, result.samples,
                                                                                   strict=True)}


_REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "last": lambda v: v[-1], "mean": lambda v: sum(v) / len(v), "max": max, "min": min, "sum": sum,
    "count": lambda v: float(len(v)),
}


def _expression(model: dict[str, Any], frames: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    etype = model.get("type")
    source = frames.get(str(model.get("expression")), {})
    if etype == "reduce":
        reducer = _REDUCERS.get(str(model.get("reducer")))
        if reducer is None:
            raise ValueError(f"reducer {model.get('reducer')!r} is not evaluated by the checker "
                             f"({', '.join(_REDUCERS)})")
        mode = (model.get("settings") or {}).get("mode", "")
        out = {}
        for label, values in source.items():
            kept = [v for v in values if not math.isnan(v)] if mode in ("dropNN", "replaceNN") else values
            out[label] = [reducer(kept) if kept and not any(math.isnan(v) for v in kept) else math.nan]
        return out
    if etype == "threshold":
        [condition] = model.get("conditions") or [{}]
        evaluator = condition.get("evaluator") or {}
        kind, params = evaluator.get("type"), [float(p) for p in evaluator.get("params") or []]
        tests = {"gt": lambda v: v > params[0], "lt": lambda v: v < params[0],
                 "within_range": lambda v: params[0] < v < params[1],
                 "outside_range": lambda v: v < params[0] or v > params[1]}
        if kind not in tests:
            raise ValueError(f"threshold evaluator {kind!r} is not evaluated by the checker ({', '.join(tests)})")
        return {label: [1.0 if values and not math.isnan(values[-1]) and tests[kind](values[-1]) else 0.0]
                for label, values in source.items()}
    raise ValueError(f"expression type {etype!r} is not evaluated by the checker (reduce, threshold)")


# -- command line ------------------------------------------------------------------------------------------------------
def check(**kwargs: Any) -> Report:
    """``Checker(**kwargs).run()``: the importable entry point."""
    return Checker(**kwargs).run()


def _parse_at(text: str) -> datetime:
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), tz=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.grafana_check", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check floorgate's Grafana dashboards, provisioning and alert rules: against Grafana's JSON "
                    "Schemas and the grid offline, and — with connections — every query against the real "
                    "databases (variables and macros expanded as Grafana does; every query must return rows).",
        epilog="Exit status: 0 no problem, 1 problems found, 2 bad usage or unreadable files.")
    parser.add_argument("--grafana-dir", type=Path, default=GRAFANA_DIR,
                        help="the folder with provisioning/ and dashboards/ (default: %(default)s)")
    parser.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS,
                        help="Grafana's JSON Schemas (default: %(default)s)")
    parser.add_argument("--dashboard", type=Path, action="append",
                        help="check only this dashboard file (repeatable; default: every dashboards/*.json)")
    parser.add_argument("--postgres", help="libpq URL of central's database (best as grafana_reader)")
    parser.add_argument("--influxdb", help="InfluxDB URL (v1 /query API: 1.x, 2.x with DBRP, 3.x)")
    parser.add_argument("--influx-database", help="the InfluxQL database (central's metrics.database)")
    parser.add_argument("--influx-user", help="InfluxDB user (1.x, or a 2.x v1 authorization)")
    parser.add_argument("--influx-password", help="its password (or use --influx-token)")
    parser.add_argument("--influx-token", help="InfluxDB 2.x / 3.x token, sent as 'Authorization: Token …'")
    parser.add_argument("--prometheus", help="Prometheus URL (scraping central, job floorgate-central)")
    parser.add_argument("--at", help="evaluate as if now were this time (ISO 8601 or Unix seconds)")
    parser.add_argument("--from", dest="time_from", help="time range start for every dashboard (Grafana syntax, "
                                                          "e.g. now-15m; default: each dashboard's own)")
    parser.add_argument("--to", dest="time_to", help="time range end (default: each dashboard's own)")
    parser.add_argument("--rules", type=Path, help="a floorgate alert-rules file: check the thresholds drawn")
    parser.add_argument("--max-data-points", type=int, default=DEFAULT_MAX_DATA_POINTS,
                        help="points per panel that $__interval is computed for (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="list every query run and its row count")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.influxdb and not args.influx_database:
        parser.error("--influxdb needs --influx-database")
    try:
        report = check(grafana_dir=args.grafana_dir, schemas=args.schemas, dashboards=args.dashboard,
                       connections=Connections(args.postgres, args.influxdb, args.influx_database, args.influx_user,
                                               args.influx_password, args.influx_token, args.prometheus),
                       at=_parse_at(args.at) if args.at else None, time_from=args.time_from, time_to=args.time_to,
                       rules_file=args.rules, max_data_points=args.max_data_points)
    except (Unusable, ValueError) as exc:
        print(f"grafana check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": [str(p) for p in report.problems],
                          "queries": [{"where": r.where, "mode": r.mode, "rows": r.rows, "error": r.error,
                                       "query": r.query} for r in report.runs],
                          "alerts": [{"uid": a.uid, "title": a.title, "state": a.state, "values": a.values}
                                     for a in report.alerts],
                          "not_run": sorted(report.not_run)}, indent=2, default=str))
    else:
        if args.verbose:
            for r in report.runs:
                print(f"{'FAIL' if r.error else 'ok  '} {r.rows:6d} rows  [{r.mode}] {r.where}")
        for a in report.alerts:
            print(f"alert rule {a.uid}: {a.state} {a.values or ''}")
        for p in report.problems:
            print(f"PROBLEM {p}")
        skipped = ", ".join(sorted(report.not_run))
        print(f"{len(report.dashboards)} dashboards, {len(report.runs)} queries run"
              f"{f' (not run, no connection: {skipped})' if skipped else ''}, {len(report.problems)} problem(s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
