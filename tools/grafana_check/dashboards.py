"""The offline checks of a dashboard: its JSON Schema, the grid, panel ids and refIds, datasources, raw queries and the
variables they use; then its live run (``tools.grafana_check.live``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tools.grafana_check.context import Context, Target, all_panels, panel_where
from tools.grafana_check.expansion import BUILTIN_VARIABLES, SQL_MACROS, referenced_variables
from tools.grafana_check.files import PANEL_SCHEMAS, rel
from tools.grafana_check.live import run_live

GRID_COLUMNS = 24


def check_dashboard(ctx: Context, path: Path, dash: dict[str, Any]) -> None:
    where = f"{rel(path)} ({dash.get('title', '?')!r})"
    for message in ctx.schemas.errors("dashboard", None, dash):
        if not message.startswith("panels."):
            ctx.report.add(where, f"schema: {message}")
    uid = dash.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        ctx.report.add(where, f"uid {uid!r}: 1 to 40 letters, digits, - or _")
    if not dash.get("title"):
        ctx.report.add(where, "no title")
    panels = list(all_panels(dash.get("panels") or []))
    _check_grid(ctx, where, panels)
    variables = (dash.get("templating") or {}).get("list") or []
    defined = _check_variables(ctx, where, variables)
    targets: list[Target] = []
    for panel in panels:
        targets += _check_panel(ctx, where, panel, defined)
    for i, anno in enumerate((dash.get("annotations") or {}).get("list") or []):
        if anno.get("builtIn") == 1:
            continue
        at = f"{where} annotation {anno.get('name', i)!r}"
        ds = ctx.datasource(at, anno.get("datasource"))
        target = anno.get("target") or {}
        if ds is not None:
            text = ctx.query_text(at, ds, target)
            if text is not None:
                _check_references(ctx, at, text, defined, ds.dialect)
                targets.append(Target(at, ds, text, "annotation", fmt="table"))
    run_live(ctx, where, dash, variables, targets)


def _check_grid(ctx: Context, where: str, panels: list[dict[str, Any]]) -> None:
    ids: dict[Any, str] = {}
    placed: list[tuple[str, int, int, int, int]] = []
    for panel in panels:
        at = panel_where(where, panel)
        pid = panel.get("id")
        if not isinstance(pid, int):
            ctx.report.add(at, "no integer id")
        elif pid in ids:
            ctx.report.add(at, f"id {pid} is also the id of panel {ids[pid]!r}")
        else:
            ids[pid] = panel.get("title", "")
        pos = panel.get("gridPos")
        if not isinstance(pos, dict) or not all(isinstance(pos.get(k), int) for k in ("x", "y", "w", "h")):
            ctx.report.add(at, "gridPos: x, y, w and h (integers) are needed")
            continue
        x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            ctx.report.add(at, f"off the grid: gridPos x={x} w={w} (x + w must be at most {GRID_COLUMNS}), "
                               f"y={y} h={h}")
            continue
        for other, ox, oy, ow, oh in placed:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                ctx.report.add(at, f"overlaps panel {other!r} (gridPos x={x} y={y} w={w} h={h} against "
                                   f"x={ox} y={oy} w={ow} h={oh})")
        placed.append((str(panel.get("title", "")), x, y, w, h))


def _check_panel(ctx: Context, where: str, panel: dict[str, Any], defined: list[str]) -> list[Target]:
    at = panel_where(where, panel)
    ptype = panel.get("type")
    if ptype == "row":
        for message in ctx.schemas.errors("dashboard", "RowPanel", panel):
            ctx.report.add(at, f"schema: {message}")
        return []
    for message in ctx.schemas.errors("dashboard", "Panel", panel):
        ctx.report.add(at, f"schema: {message}")
    doc = PANEL_SCHEMAS.get(str(ptype))
    if doc is None or ptype not in ctx.schemas.panel_types():
        ctx.report.add(at, f"panel type {ptype!r} has no JSON Schema here (use one of "
                           f"{', '.join(sorted(ctx.schemas.panel_types()))})")
        return []
    if ctx.schemas.validator(doc, "Options") is not None:
        for message in ctx.schemas.errors(doc, "Options", panel.get("options", {}), "options."):
            ctx.report.add(at, f"schema ({doc}): {message}")
    custom = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom")
    if custom is not None and ctx.schemas.validator(doc, "FieldConfig") is not None:
        for message in ctx.schemas.errors(doc, "FieldConfig", custom, "fieldConfig.defaults.custom."):
            ctx.report.add(at, f"schema ({doc}): {message}")
    if ptype == "text":
        return []
    raw_targets = panel.get("targets") or []
    if not raw_targets:
        ctx.report.add(at, "no queries (targets)")
    out = []
    refs: set[str] = set()
    for i, target in enumerate(raw_targets):
        ref = target.get("refId")
        tat = f"{at} refId {ref or i}"
        if not ref:
            ctx.report.add(tat, "no refId")
        elif ref in refs:
            ctx.report.add(tat, f"refId {ref} used twice in the panel")
        refs.add(ref or "")
        ds = ctx.datasource(tat, target.get("datasource") or panel.get("datasource"))
        if ds is None:
            continue
        panel_ds = panel.get("datasource")
        if isinstance(panel_ds, dict) and panel_ds.get("uid") not in (ds.uid, "-- Mixed --"):
            ctx.report.add(tat, f"target datasource {ds.uid!r} differs from the panel's {panel_ds.get('uid')!r}")
        text = ctx.query_text(tat, ds, target)
        if text is None:
            continue
        _check_references(ctx, tat, text, defined, ds.dialect)
        out.append(Target(tat, ds, text, "panel", fmt=str(target.get("format") or target.get("resultFormat")
                                                           or "time_series"),
                          instant=bool(target.get("instant")) and not target.get("range"),
                          interval=panel.get("interval") or None, max_data_points=panel.get("maxDataPoints"),
                          time_from=panel.get("timeFrom"), time_shift=panel.get("timeShift"),
                          repeat=panel.get("repeat")))
    return out


def _check_references(ctx: Context, at: str, text: str, defined: list[str], dialect: str) -> None:
    leave = SQL_MACROS if dialect == "sql" else set()
    for name in sorted(referenced_variables(text)):
        if name not in defined and name not in BUILTIN_VARIABLES and name not in leave:
            ctx.report.add(at, f"${name} is not a variable of the dashboard (defined: "
                               f"{', '.join(defined) or 'none'})")


def _check_variables(ctx: Context, where: str, variables: list[dict[str, Any]]) -> list[str]:
    defined: list[str] = []
    for var in variables:
        name = var.get("name")
        at = f"{where} variable {name!r}"
        if not name:
            ctx.report.add(f"{where} variable", "no name")
            continue
        if name in defined:
            ctx.report.add(at, "defined twice")
        if var.get("type") not in ("query", "custom", "constant", "interval", "textbox"):
            ctx.report.add(at, f"type {var.get('type')!r} is not checked (query, custom, constant, interval, "
                               "textbox)")
        if var.get("type") == "query":
            ds = ctx.datasource(at, var.get("datasource"))
            query = var.get("query")
            if not isinstance(query, str) or not query.strip():
                ctx.report.add(at, "no query")
            elif ds is not None:
                for ref in sorted(referenced_variables(query)):
                    if ref not in defined and ref not in BUILTIN_VARIABLES:
                        ctx.report.add(at, f"its query uses ${ref}, which is not a variable defined before it")
        defined.append(name)
    return defined
