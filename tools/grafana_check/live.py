"""The live run of a dashboard: its variables' queries first (values chosen as a user would), then every target with
the variables and macros expanded as Grafana expands them, twice — with the variables as a user finds them and with
the first value of each."""

from __future__ import annotations

import re
from typing import Any

from tools.grafana_check.context import Context, Target
from tools.grafana_check.expansion import (
    SQL_MACROS,
    TimeRange,
    Variable,
    expand_sql_macros,
    interpolate,
    interval_for,
    referenced_variables,
)
from tools.grafana_check.files import Datasource
from tools.grafana_check.report import QueryRun
from tools.grafana_check.runner import QueryError, Result, is_number, to_float


def run_live(ctx: Context, where: str, dash: dict[str, Any], variables: list[dict[str, Any]],
             targets: list[Target]) -> None:
    for mode in ("all", "one"):
        values, empty = _resolve_variables(ctx, where, dash, variables, mode)
        if values is None:
            return  # a variable's query could not run: already reported
        for target in targets:
            if not ctx.conn.available(target.datasource.dialect):
                continue
            uses = referenced_variables(target.text)
            missing = sorted(uses & empty)
            if missing:
                if mode == "all":
                    ctx.report.add(target.where, f"not run: variable {', '.join('$' + m for m in missing)} "
                                                 "has no values")
                continue
            _run_target(ctx, dash, target, values, mode)
        if mode == "all" and any(p.where.startswith(where) for p in ctx.report.problems):
            return  # the second pass would repeat what is already wrong


def _resolve_variables(ctx: Context, where: str, dash: dict[str, Any], variables: list[dict[str, Any]],
                       mode: str) -> tuple[dict[str, Variable] | None, set[str]]:
    rng = ctx.time_range(dash)
    out: dict[str, Variable] = {}
    empty: set[str] = set()
    for var in variables:
        name, vtype = str(var.get("name")), var.get("type")
        at = f"{where} variable {name!r}"
        options: list[tuple[str, str]] = []
        if vtype == "query":
            ds = ctx.datasources.get((var.get("datasource") or {}).get("uid", ""))
            if ds is None:
                return None, empty
            if not ctx.conn.available(ds.dialect):
                empty.add(name)
                continue
            query = str(var.get("query", ""))
            if referenced_variables(query) & empty:
                empty.add(name)  # it depends on a variable without values: nothing to choose from either
                continue
            text, unknown = interpolate(query, out, ctx.builtins(rng, 60_000, ds), ds.dialect,
                                        SQL_MACROS if ds.dialect == "sql" else set())
            run = QueryRun(at, ds.dialect, text, mode)
            ctx.report.runs.append(run)
            try:
                if unknown:
                    raise QueryError(f"unknown variable(s) {', '.join('$' + u for u in unknown)}")
                options = _variable_options(ctx, ds, text, rng)
            except (QueryError, ValueError) as exc:
                run.error = str(exc)
                ctx.report.add(at, f"query failed: {exc} — query: {text}")
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
                ctx.report.add(at, "no values: every panel using it would show nothing")
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


def _variable_options(ctx: Context, ds: Datasource, text: str, rng: TimeRange) -> list[tuple[str, str]]:
    if ds.dialect == "sql":
        result = ctx.runner.sql(expand_sql_macros(text, rng, 60_000))
        cols = result.columns
        if "__text" in cols and "__value" in cols:
            ti, vi = cols.index("__text"), cols.index("__value")
            pairs = [(str(r[ti]), str(r[vi])) for r in result.rows]
        else:
            pairs = [(str(r[0]), str(r[0])) for r in result.rows]
    elif ds.dialect == "influxql":
        result = ctx.runner.influxql(text)
        pairs = [(str(r[-1]), str(r[-1])) for r in result.rows]
    else:
        m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*", text)
        if m is None:
            raise QueryError("only label_values(metric, label) / label_values(label) variables are checked")
        pairs = [(v, v) for v in ctx.runner.label_values(m.group(2), m.group(1), rng)]
    seen: set[str] = set()
    unique = []
    for text_, value in pairs:
        if value not in seen:
            seen.add(value)
            unique.append((text_, value))
    return unique


def _run_target(ctx: Context, dash: dict[str, Any], target: Target, values: dict[str, Variable], mode: str) -> None:
    ds = target.datasource
    rng = ctx.time_range(dash, target)
    low = target.interval or ds.json_data.get("timeInterval")
    interval_ms = interval_for(rng, int(target.max_data_points or ctx.max_data_points), low)
    variables = dict(values)
    if target.repeat and target.repeat in variables:
        v = variables[target.repeat]
        variables[target.repeat] = Variable(v.name, v.type, v.multi, v.include_all, v.all_value, v.options,
                                            v.options[:1], False)
    run = QueryRun(target.where, ds.dialect, target.text, mode)
    ctx.report.runs.append(run)
    try:
        text, unknown = interpolate(target.text, variables, ctx.builtins(rng, interval_ms, ds), ds.dialect,
                                    SQL_MACROS if ds.dialect == "sql" else set())
        if unknown:
            raise QueryError(f"unknown variable(s) {', '.join('$' + u for u in sorted(set(unknown)))}")
        if ds.dialect == "sql":
            text = expand_sql_macros(text, rng, interval_ms)
            run.query = text
            result = ctx.runner.sql(text)
            _check_sql_shape(target, result)
        elif ds.dialect == "influxql":
            run.query = text
            result = ctx.runner.influxql(text)
        else:
            run.query = text
            result = ctx.runner.promql(text, rng, interval_ms / 1000, instant=target.instant)
    except (QueryError, ValueError) as exc:
        run.error = str(exc)
        ctx.report.add(target.where, f"query failed ({'variables: first value only' if mode == 'one' else 'all'}"
                                     f"): {exc} — query: {run.query}")
        return
    run.rows, run.columns, run.series, run.records = result.count, result.columns, result.series, result.records
    if mode == "all" and result.count == 0:
        ctx.report.add(target.where, f"no rows — query: {run.query}")


def _check_sql_shape(target: Target, result: Result) -> None:
    needs_time = target.kind == "annotation" or target.fmt == "time_series"
    if needs_time and "time" not in result.columns:
        raise QueryError(f"found no column named 'time' (columns: {', '.join(result.columns)}); a "
                         f"{'annotation' if target.kind == 'annotation' else 'time series'} needs one")
    if target.kind == "panel" and target.fmt == "time_series" and result.rows:
        ti = result.columns.index("time")
        if not any(is_number(v) for row in result.rows for i, v in enumerate(row) if i != ti):
            raise QueryError(f"no numeric column besides time (columns: {', '.join(result.columns)})")


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
        return sorted(options, key=lambda o: to_float(re.sub(r"[^\d.-]", "", o[0]) or "nan"), reverse=sort == 4)
    if sort in (5, 6):
        return sorted(options, key=lambda o: o[0].lower(), reverse=sort == 6)
    if sort in (7, 8):
        return sorted(options, key=lambda o: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", o[0])],
                      reverse=sort == 8)
    return options
