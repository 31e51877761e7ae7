"""What every check shares: the options, the datasources, the report and the query runner; the datasource and query
text of a panel target, its time range and Grafana's built-in variables."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tools.grafana_check.expansion import TimeRange, format_interval, parse_duration_ms, parse_time
from tools.grafana_check.files import DEFAULT_SCHEMAS, GRAFANA_DIR, Datasource, Schemas
from tools.grafana_check.report import Report
from tools.grafana_check.runner import Connections, Runner

DEFAULT_MAX_DATA_POINTS = 1000  # Grafana uses the panel's width in pixels; about that on a usual screen


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


class Context:
    """The options of one check (``grafana_dir``, ``schemas``, ``dashboards``: files instead of every
    ``dashboards/*.json``, ``connections``, ``at``: now, ``time_from`` / ``time_to`` for every dashboard,
    ``rules_file``, ``max_data_points``) and what the checks share while they run."""

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
        self.datasources: dict[str, Datasource] = {}

    def datasource(self, at: str, ref: Any) -> Datasource | None:
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

    def query_text(self, at: str, ds: Datasource, target: dict[str, Any]) -> str | None:
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

    def time_range(self, dash: dict[str, Any], target: Target | None = None) -> TimeRange:
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

    def builtins(self, rng: TimeRange, interval_ms: int, ds: Datasource) -> dict[str, str]:
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


def all_panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows too."""
    for panel in items:
        yield panel
        if panel.get("type") == "row":
            yield from panel.get("panels") or []


def panel_where(where: str, panel: dict[str, Any]) -> str:
    return f"{where} panel {panel.get('title', '')!r} (id {panel.get('id')})"
