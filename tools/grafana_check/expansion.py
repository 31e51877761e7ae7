"""What Grafana does to a query before it runs: date math and time ranges, ``$__interval``, variable values in each
query language's format, and the PostgreSQL backend's macros."""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
