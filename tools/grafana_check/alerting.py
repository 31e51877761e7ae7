"""The alert rules and contact points in ``provisioning/alerting``, as Grafana reads the file and in the shape it stores
them; with connections, each rule's queries run and its reduce / threshold expressions are evaluated."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tools.grafana_check.context import DEFAULT_MAX_DATA_POINTS, Context
from tools.grafana_check.expansion import (
    DURATION_RE,
    SQL_MACROS,
    TimeRange,
    expand_sql_macros,
    interpolate,
    interval_for,
    parse_duration_ms,
    referenced_variables,
)
from tools.grafana_check.files import load_yaml, rel, yaml_files
from tools.grafana_check.report import AlertEvaluation, QueryRun
from tools.grafana_check.runner import QueryError, Result, is_number, to_float

EXPR_UID = "__expr__"
EXPRESSION_TYPES = {"math", "reduce", "resample", "classic_conditions", "threshold", "sql"}

ALERTING_TOP_KEYS = {"apiVersion", "groups", "deleteRules", "contactPoints", "deleteContactPoints", "policies",
                     "resetPolicies", "templates", "deleteTemplates", "muteTimes", "deleteMuteTimes"}
GROUP_KEYS = {"orgId", "name", "folder", "interval", "rules"}
RULE_KEYS = {"uid", "title", "condition", "data", "dasboardUid", "dashboardUid", "panelId", "noDataState",
             "execErrState", "for", "keepFiringFor", "missing_series_evals_to_resolve", "annotations", "labels",
             "isPaused", "notification_settings", "record"}
QUERY_KEYS = {"refId", "queryType", "relativeTimeRange", "datasourceUid", "model"}
RECEIVER_KEYS = {"uid", "type", "settings", "disableResolveMessage"}


def check_alerting(ctx: Context) -> None:
    directory = ctx.grafana_dir / "provisioning" / "alerting"
    contact_names: set[str] = set()
    files = yaml_files(directory)
    docs = [(path, load_yaml(path) or {}) for path in files]
    for path, doc in docs:
        where = rel(path)
        for key in sorted(set(doc) - ALERTING_TOP_KEYS):
            ctx.report.add(where, f"unknown key {key!r} (Grafana ignores it)")
        if doc.get("apiVersion") != 1:
            ctx.report.add(where, f"apiVersion: expected 1, got {doc.get('apiVersion')!r}")
        for i, cp in enumerate(doc.get("contactPoints") or []):
            at = f"{where}: contactPoints[{i}] {cp.get('name')!r}"
            if not cp.get("name"):
                ctx.report.add(at, "no name")
            contact_names.add(cp.get("name", ""))
            for j, receiver in enumerate(cp.get("receivers") or []):
                rat = f"{at} receivers[{j}]"
                for key in sorted(set(receiver) - RECEIVER_KEYS):
                    ctx.report.add(rat, f"unknown key {key!r}")
                api = {k: receiver[k] for k in RECEIVER_KEYS & set(receiver)} | {"name": cp.get("name", "")}
                for message in ctx.schemas.errors("alerting", "ContactPoint", api):
                    ctx.report.add(rat, f"schema: {message}")
    rule_uids: set[str] = set()
    for path, doc in docs:
        for gi, group in enumerate(doc.get("groups") or []):
            _check_group(ctx, rel(path), gi, group, contact_names, rule_uids)


def _check_group(ctx: Context, where: str, gi: int, group: dict[str, Any], contacts: set[str], uids: set[str]) -> None:
    at = f"{where}: groups[{gi}] {group.get('name')!r}"
    for key in sorted(set(group) - GROUP_KEYS):
        ctx.report.add(at, f"unknown key {key!r} (Grafana ignores it)")
    for key in ("name", "folder", "interval"):
        if not group.get(key):
            ctx.report.add(at, f"{key} missing")
    interval = str(group.get("interval", ""))
    if not DURATION_RE.fullmatch(interval):
        ctx.report.add(at, f"interval {interval!r} is not a duration such as 1m")
        interval = "1m"
    api_rules = []
    for ri, rule in enumerate(group.get("rules") or []):
        rat = f"{at} rule {rule.get('uid') or ri!r} ({rule.get('title', '')!r})"
        api = _check_rule(ctx, rat, group, rule, contacts, uids)
        if api is not None:
            api_rules.append(api)
    api_group = {"title": group.get("name", ""), "folderUid": group.get("folder", ""),
                 "interval": parse_duration_ms(interval) // 1000, "rules": api_rules}
    for message in ctx.schemas.errors("alerting", "RuleGroup", api_group):
        ctx.report.add(at, f"schema (as Grafana stores it): {message}")


def _check_rule(ctx: Context, at: str, group: dict[str, Any], rule: dict[str, Any], contacts: set[str],
                uids: set[str]) -> dict[str, Any] | None:
    for key in sorted(set(rule) - RULE_KEYS):
        ctx.report.add(at, f"unknown key {key!r} (Grafana ignores it)")
    uid = rule.get("uid")
    if not uid:
        ctx.report.add(at, "no uid")
    elif uid in uids:
        ctx.report.add(at, f"uid {uid!r} used twice")
    uids.add(uid or "")
    for key in ("for", "keepFiringFor"):
        if key in rule and not DURATION_RE.fullmatch(str(rule[key])):
            ctx.report.add(at, f"{key} {rule[key]!r} is not a duration such as 5m")
    data = rule.get("data") or []
    if not data:
        ctx.report.add(at, "no data (queries)")
    refs = [q.get("refId") for q in data]
    if len(set(refs)) != len(refs):
        ctx.report.add(at, f"refIds used twice: {refs}")
    if rule.get("condition") not in refs:
        ctx.report.add(at, f"condition {rule.get('condition')!r} is not one of the refIds {refs}")
    receiver = (rule.get("notification_settings") or {}).get("receiver")
    if receiver is not None and receiver not in contacts:
        ctx.report.add(at, f"notification_settings.receiver {receiver!r} is not a provisioned contact point "
                           f"({', '.join(sorted(contacts)) or 'none'})")
    for q in data:
        qat = f"{at} refId {q.get('refId')}"
        for key in sorted(set(q) - QUERY_KEYS):
            ctx.report.add(qat, f"unknown key {key!r} (Grafana ignores it)")
        model = q.get("model") or {}
        if model.get("refId") not in (None, q.get("refId")):
            ctx.report.add(qat, f"model.refId {model.get('refId')!r} differs")
        if q.get("datasourceUid") == EXPR_UID:
            etype = model.get("type")
            if etype not in EXPRESSION_TYPES:
                ctx.report.add(qat, f"expression type {etype!r} (one of {', '.join(sorted(EXPRESSION_TYPES))})")
            named = ({model.get("expression")} if etype in ("reduce", "resample", "threshold")
                     else set(re.findall(r"\$\{?(\w+)", str(model.get("expression", "")))) if etype == "math"
                     else set())
            for ref in named:
                if ref not in refs:
                    ctx.report.add(qat, f"expression {ref!r} is not one of the refIds {refs}")
            continue
        ds = ctx.datasources.get(q.get("datasourceUid", ""))
        if ds is None:
            ctx.report.add(qat, f"datasourceUid {q.get('datasourceUid')!r} is not provisioned")
            continue
        if (model.get("datasource") or {}).get("uid") not in (None, ds.uid):
            ctx.report.add(qat, "model.datasource.uid differs from datasourceUid")
        rel = q.get("relativeTimeRange") or {}
        if not (isinstance(rel.get("from"), int) and isinstance(rel.get("to", 0), int)
                and rel["from"] > rel.get("to", 0) >= 0):
            ctx.report.add(qat, f"relativeTimeRange {rel!r}: from (seconds back) must be above to")
        text = ctx.query_text(qat, ds, model)
        if text is not None:
            leave = SQL_MACROS | {"__interval", "__interval_ms"} if ds.dialect == "sql" else {
                "timeFilter", "__interval", "__interval_ms", "interval"}
            for name in sorted(referenced_variables(text) - leave):
                ctx.report.add(qat, f"${name}: alert rules cannot use dashboard variables")
    api = {"uid": uid or "", "title": rule.get("title", ""), "condition": rule.get("condition", ""),
           "data": data, "noDataState": rule.get("noDataState", "NoData"),
           "execErrState": rule.get("execErrState", "Alerting"), "for": str(rule.get("for", "0s")),
           "orgID": int(group.get("orgId") or 1), "folderUID": str(group.get("folder", "")),
           "ruleGroup": str(group.get("name", ""))}
    for key in ("annotations", "labels", "isPaused", "notification_settings"):
        if key in rule:
            api[key] = rule[key]
    for message in ctx.schemas.errors("alerting", "Rule", api):
        ctx.report.add(at, f"schema (as Grafana stores it): {message}")
    sources = [q.get("datasourceUid") for q in data if q.get("datasourceUid") != EXPR_UID]
    if sources and all(uid in ctx.datasources and ctx.conn.available(ctx.datasources[uid].dialect)
                       for uid in sources):
        ctx.report.alerts.append(_evaluate(ctx, at, rule))
    return api


def _evaluate(ctx: Context, at: str, rule: dict[str, Any]) -> AlertEvaluation:
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
                ctx.report.add(qat, str(exc))
                evaluation.state, evaluation.detail = "Error", str(exc)
                return evaluation
            continue
        ds = ctx.datasources[q["datasourceUid"]]
        rel = q.get("relativeTimeRange") or {}
        rng = TimeRange(ctx.now - timedelta(seconds=int(rel.get("from", 600))),
                        ctx.now - timedelta(seconds=int(rel.get("to", 0))))
        run = QueryRun(qat, ds.dialect, "", "alert")
        ctx.report.runs.append(run)
        try:
            text = ctx.query_text(qat, ds, model) or ""
            interval_ms = interval_for(rng, DEFAULT_MAX_DATA_POINTS, ds.json_data.get("timeInterval"))
            text, _ = interpolate(text, {}, ctx.builtins(rng, interval_ms, ds), ds.dialect, SQL_MACROS)
            if ds.dialect == "sql":
                text = expand_sql_macros(text, rng, interval_ms)
                run.query = text
                frames[ref] = _sql_frame(ctx.runner.sql(text))
            elif ds.dialect == "influxql":
                run.query = text
                frames[ref] = _series_frame(ctx.runner.influxql(text))
            else:
                run.query = text
                instant = bool(model.get("instant")) and not model.get("range")
                frames[ref] = _series_frame(ctx.runner.promql(text, rng, interval_ms / 1000, instant=instant))
        except (QueryError, ValueError) as exc:
            run.error = str(exc)
            ctx.report.add(qat, f"query failed: {exc} — query: {run.query}")
            evaluation.state, evaluation.detail = "Error", str(exc)
            return evaluation
        run.rows = sum(len(v) for v in frames[ref].values())
        if not frames[ref]:
            ctx.report.add(qat, f"no data — query: {run.query}")
    condition = frames.get(str(rule.get("condition")), {})
    if not condition:
        evaluation.state = "NoData"
        return evaluation
    evaluation.values = {label: values[-1] if values else math.nan for label, values in condition.items()}
    if any(v and not math.isnan(v) for v in evaluation.values.values()):
        evaluation.state = "Alerting"
    return evaluation


def _sql_frame(result: Result) -> dict[str, list[float]]:
    """A SQL table in an alert rule: every numeric column of every row is a series; string columns are labels."""
    out: dict[str, list[float]] = {}
    for row in result.rows:
        labels = ",".join(f"{c}={v}" for c, v in zip(result.columns, row, strict=True)
                          if isinstance(v, str))
        for col, v in zip(result.columns, row, strict=True):
            if is_number(v) or (v is None and col != "time"):
                out.setdefault(f"{col}{{{labels}}}", []).append(to_float(v))
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
