"""The Grafana files without any server: dashboards against Grafana's JSON Schemas, the grid, datasources against
the provisioning, variables, alert rules; the thresholds drawn against the example alert rules; and the checker
itself — it must catch each kind of fault, and expand macros and variables the way Grafana does.

The same checker runs every query against real databases in ``test_grafana_live.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards.plant import EXAMPLE_RULES, REPO
from tests.dashboards.support import (
    DASHBOARD_FILES,
    GRAFANA,
    broken_alerting,
    broken_dashboard,
    grafana_copy,
    panel,
    rule,
)
from tools.grafana_check.checker import check
from tools.grafana_check.expansion import (
    TimeRange,
    Variable,
    expand_sql_macros,
    format_interval,
    format_variable,
    interpolate,
    interval_for,
    parse_time,
)

SCHEMAS = REPO / "tests" / "data" / "grafana-jsonschema"


def _problems(report: Any) -> str:
    return "\n".join(map(str, report.problems))


def test_the_dashboards_and_the_provisioning_pass_every_offline_check() -> None:
    report = check()
    assert report.ok, _problems(report)
    assert sorted(Path(d).name for d in report.dashboards) == DASHBOARD_FILES
    assert report.not_run == {"sql", "influxql", "promql"}  # no connection given: nothing run
    assert report.runs == []


def test_the_dashboards_hold_what_issue_8_asks_for() -> None:
    dashboards = {f: json.loads((GRAFANA / "dashboards" / f).read_text(encoding="utf-8")) for f in DASHBOARD_FILES}
    titles = {f: {p["title"] for p in d["panels"]} for f, d in dashboards.items()}
    assert {"Nodes online / offline", "Nodes", "Records waiting on the node", "Age of the oldest pending record",
            "Round-trip time per device", "Errors per minute by kind"} <= titles["fleet.json"]
    assert {"Weighings per hour", "Tonnage in / out per article", "Tonnage in / out per partner",
            "Open first weighings", "Refused weighings"} <= titles["weighbridge.json"]
    assert {"Silo temperature per sensor", "Humidity", "Power", "Energy meter reading"} <= titles["silos-energy.json"]
    assert {"Transactions per register", "Failures", "Signature counter per TSE"} <= titles["fiscal.json"]
    assert {"Ingest rate", "Ingest lag", "Quarantined messages", "HTTP latency (95th percentile) by route",
            "Alerts firing"} <= titles["central.json"]
    for f, d in dashboards.items():
        assert len(titles[f]) == len(d["panels"]), f"{f}: two panels with one title"
        names = [v["name"] for v in d["templating"]["list"]]
        assert "node" in names, f
        if f != "central.json":
            assert names[:2] == ["site", "node"], f
    # a device variable on each plant dashboard (devices, scales, silos / probes / meters, registers / TSEs)
    assert {"device"} <= {v["name"] for v in dashboards["fleet.json"]["templating"]["list"]}
    assert {"scale"} <= {v["name"] for v in dashboards["weighbridge.json"]["templating"]["list"]}
    assert {"silo", "probe", "meter"} <= {v["name"] for v in dashboards["silos-energy.json"]["templating"]["list"]}
    assert {"register", "tse"} <= {v["name"] for v in dashboards["fiscal.json"]["templating"]["list"]}
    uids = {p["datasource"]["uid"] for d in dashboards.values() for p in d["panels"] if "datasource" in p}
    assert uids == {"floorgate-influxdb", "floorgate-postgres", "floorgate-prometheus", "-- Mixed --"}
    # refused weighings from both sources: weigh commands the scale refused (PostgreSQL) and what a scale in
    # automatic mode counted instead of a weighing (InfluxDB, the device_health counters)
    for title in ("Weighings refused", "Weighings per hour", "Refused weighings by reason"):
        queries = {t["datasource"]["uid"]: t.get("rawSql") or t.get("query")
                   for t in panel(dashboards["weighbridge.json"], title)["targets"]}
        assert "c.command = 'weigh' AND c.status = 'failed'" in queries["floorgate-postgres"], title
        assert '"point" =~ /^events_(overload|unstable)$/' in queries["floorgate-influxdb"], title


def test_the_reference_schemas_are_the_verbatim_copy_with_their_licence() -> None:
    assert "Apache License" in (SCHEMAS / "LICENSE").read_text(encoding="utf-8")
    assert "f178d5a42a89" in (SCHEMAS / "README.md").read_text(encoding="utf-8")
    for name in ("dashboard", "alerting", "timeseries", "stat", "table", "barchart", "bargauge", "statetimeline"):
        assert json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text(encoding="utf-8"))["$schema"].startswith(
            "http://json-schema.org/draft-07/")


def test_the_thresholds_drawn_are_those_of_the_example_alert_rules() -> None:
    report = check(rules_file=EXAMPLE_RULES)
    assert report.ok, _problems(report)
    silos = json.loads((GRAFANA / "dashboards" / "silos-energy.json").read_text(encoding="utf-8"))
    steps = panel(silos, "Silo temperature per sensor")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    rules = {r["name"]: r for r in yaml.safe_load(EXAMPLE_RULES.read_text(encoding="utf-8"))["rules"]}
    assert rules["silo-hot-spot"]["above"] in [s["value"] for s in steps]


def test_a_threshold_that_no_longer_matches_its_rule_is_named(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE_RULES.read_text(encoding="utf-8"))
    next(r for r in doc["rules"] if r["name"] == "silo-hot-spot")["above"] = 40
    doc["rules"].append({"name": "mill-motor-hot", "kind": "reading", "device": "motor-*", "point": "temperature",
                         "above": 80, "for_s": 60, "severity": "warning", "channels": ["ops-webhook"]})
    changed = tmp_path / "alert-rules.yaml"
    changed.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    problems = _problems(check(rules_file=changed))
    assert "panel 'Silo temperature per sensor' (id 1): draws thresholds [35], but alert rule 'silo-hot-spot'" in (
        problems)
    assert "says 40" in problems
    assert "alert rule 'mill-motor-hot' (reading, 80) is drawn in no panel" in problems


def _off_grid(d: dict[str, Any]) -> None:
    panel(d, "Nodes")["gridPos"]["x"] = 12  # w 24: columns 12..35 of 24


def _overlap(d: dict[str, Any]) -> None:
    panel(d, "Humidity")["gridPos"].update(x=6, y=21)  # onto "Power" (x 12, y 19, w 12, h 8)


def _dangling(d: dict[str, Any]) -> None:
    p = panel(d, "Weighings")
    p["datasource"]["uid"] = p["targets"][0]["datasource"]["uid"] = "floorgate-postgress"


def _unknown_type(d: dict[str, Any]) -> None:
    panel(d, "Failures")["type"] = "piechart"


def _bad_option(d: dict[str, Any]) -> None:
    panel(d, "Sales")["options"]["graphMode"] = "sparkline"


def _bad_field(d: dict[str, Any]) -> None:
    panel(d, "Ingest lag")["fieldConfig"]["defaults"]["custom"]["lineWidht"] = 2


def _undefined_variable(d: dict[str, Any]) -> None:
    p = panel(d, "Power")
    p["targets"][0]["query"] = p["targets"][0]["query"].replace("$meter", "$plant")


def _no_grid_pos(d: dict[str, Any]) -> None:
    del panel(d, "Tickets")["gridPos"]


def _duplicate_id(d: dict[str, Any]) -> None:
    panel(d, "Humidity")["id"] = panel(d, "Power")["id"]


def _variable_before_its_parent(d: dict[str, Any]) -> None:
    variables = d["templating"]["list"]
    variables.insert(0, variables.pop(1))  # node before site, but node's query uses $site


@pytest.mark.parametrize(("file", "change", "expected"), [
    ("fleet.json", _off_grid, "panel 'Nodes' (id 6): off the grid: gridPos x=12 w=24"),
    ("silos-energy.json", _overlap, "panel 'Power' (id 6): overlaps panel 'Humidity'"),
    ("weighbridge.json", _dangling, "panel 'Weighings' (id 1) refId A: datasource uid 'floorgate-postgress' is not "
                                    "provisioned"),
    ("fiscal.json", _unknown_type, "panel 'Failures' (id 6): panel type 'piechart' has no JSON Schema here"),
    ("fiscal.json", _bad_option, "panel 'Sales' (id 1): schema (stat): options.graphMode: 'sparkline' is not one of"),
    ("central.json", _bad_field, "panel 'Ingest lag' (id 9): schema (timeseries): fieldConfig.defaults.custom: "
                                 "Additional properties are not allowed ('lineWidht' was unexpected)"),
    ("silos-energy.json", _undefined_variable, "panel 'Power' (id 6) refId A: $plant is not a variable of the "
                                               "dashboard"),
    ("weighbridge.json", _no_grid_pos, "panel 'Tickets' (id 11): gridPos: x, y, w and h (integers) are needed"),
    ("silos-energy.json", _duplicate_id, "panel 'Power' (id 6): id 6 is also the id of panel 'Humidity'"),
    ("fleet.json", _variable_before_its_parent, "variable 'node': its query uses $site, which is not a variable "
                                                "defined before it"),
], ids=["off-grid", "overlap", "dangling-datasource", "panel-type", "stat-option", "field-config",
        "undefined-variable", "no-gridpos", "duplicate-id", "variable-order"])
def test_each_kind_of_dashboard_fault_is_named(tmp_path: Path, file: str, change: Any, expected: str) -> None:
    path = broken_dashboard(tmp_path, file, change)
    report = check(grafana_dir=path.parents[1])
    assert not report.ok
    problems = _problems(report)
    assert expected in problems, problems
    assert all(f"dashboards/{file}" in str(p) for p in report.problems), problems  # only the broken file


def _condition(doc: dict[str, Any]) -> None:
    rule(doc, "floorgate-ingest-stalled")["condition"] = "D"


def _alert_datasource(doc: dict[str, Any]) -> None:
    rule(doc, "floorgate-central-down")["data"][0]["datasourceUid"] = "prometheus-old"


def _alert_variable(doc: dict[str, Any]) -> None:
    model = rule(doc, "floorgate-quarantine-growing")["data"][0]["model"]
    model["rawSql"] += " AND node_id IN ($node)"


def _alert_expression(doc: dict[str, Any]) -> None:
    rule(doc, "floorgate-database-down")["data"][2]["model"]["expression"] = "X"


def _alert_duration(doc: dict[str, Any]) -> None:
    rule(doc, "floorgate-ingest-disconnected")["for"] = "2 minutes"


def _alert_receiver(doc: dict[str, Any]) -> None:
    rule(doc, "floorgate-alert-delivery-failing")["notification_settings"]["receiver"] = "ops"


def _alert_unknown_key(doc: dict[str, Any]) -> None:
    rule(doc, "floorgate-central-down")["noDataStat"] = "OK"


def _alert_state(doc: dict[str, Any]) -> None:
    rule(doc, "floorgate-central-down")["execErrState"] = "Firing"


@pytest.mark.parametrize(("change", "expected"), [
    (_condition, "rule 'floorgate-ingest-stalled' ('floorgate ingest stalled'): condition 'D' is not one of the "
                 "refIds"),
    (_alert_datasource, "rule 'floorgate-central-down' ('floorgate central down') refId A: datasourceUid "
                        "'prometheus-old' is not provisioned"),
    (_alert_variable, "refId A: $node: alert rules cannot use dashboard variables"),
    (_alert_expression, "rule 'floorgate-database-down' ('floorgate central cannot reach PostgreSQL') refId C: "
                        "expression 'X' is not one of the refIds"),
    (_alert_duration, "for '2 minutes' is not a duration"),
    (_alert_receiver, "notification_settings.receiver 'ops' is not a provisioned contact point (floorgate-ops)"),
    (_alert_unknown_key, "unknown key 'noDataStat' (Grafana ignores it)"),
    (_alert_state, "schema (as Grafana stores it): execErrState: 'Firing' is not one of"),
], ids=["condition", "datasource", "variable", "expression", "duration", "receiver", "unknown-key", "exec-state"])
def test_each_kind_of_alert_rule_fault_is_named(tmp_path: Path, change: Any, expected: str) -> None:
    report = check(grafana_dir=broken_alerting(tmp_path, change))
    problems = _problems(report)
    assert expected in problems, problems
    assert all("provisioning/alerting/floorgate-central.yaml" in str(p) for p in report.problems), problems


def test_a_datasource_provisioned_twice_or_for_flux_is_named(tmp_path: Path) -> None:
    root = grafana_copy(tmp_path)
    path = root / "provisioning" / "datasources" / "floorgate.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["datasources"][0]["jsonData"]["version"] = "Flux"
    doc["datasources"].append(dict(doc["datasources"][2]))
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    problems = _problems(check(grafana_dir=root))
    assert "datasources[0]: jsonData.version 'Flux': the dashboards query InfluxQL" in problems
    assert "datasources[3]: uid 'floorgate-prometheus' provisioned twice" in problems


# -- the checker expands what Grafana expands, as Grafana does ---------------------------------------------------------
RANGE = TimeRange(datetime(2018, 4, 12, 18, 0, tzinfo=UTC), datetime(2018, 4, 12, 18, 5, tzinfo=UTC))


def test_postgres_macros_expand_as_in_grafanas_backend() -> None:
    # the expected texts are those of Grafana's pkg/tsdb/grafana-postgresql-datasource/macros_test.go
    assert expand_sql_macros("WHERE $__timeFilter(time_column)", RANGE, 1000) == (
        "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'")
    assert expand_sql_macros("GROUP BY $__timeGroup(time_column,'5m')", RANGE, 1000) == (
        "GROUP BY floor(extract(epoch from time_column)/300)*300")
    assert expand_sql_macros("SELECT $__timeGroup(time_column,'5m'), value", RANGE, 1000) == (
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value')  # pre-5.3 compatibility
    assert expand_sql_macros("SELECT $__timeGroupAlias(time_column, 5m)", RANGE, 1000) == (
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"')
    assert expand_sql_macros("select $__time(time_column)", RANGE, 1000) == 'select time_column AS "time"'
    assert expand_sql_macros("select $__timeFrom(), $__timeTo()", RANGE, 1000) == (
        "select '2018-04-12T18:00:00Z', '2018-04-12T18:05:00Z'")
    assert expand_sql_macros("$__unixEpochFilter(t) $__interval $__interval_ms", RANGE, 2000) == (
        "t >= 1523556000 AND t <= 1523556300 2s 2000")
    with pytest.raises(ValueError, match="unknown macro '__timeFliter'"):
        expand_sql_macros("WHERE $__timeFliter(t)", RANGE, 1000)


def _var(values: list[str], *, multi: bool = True, include_all: bool = True, all_value: str | None = None) -> Variable:
    options = [(v, v) for v in values]
    return Variable("v", "query", multi, include_all, all_value, options, options, include_all)


def test_multi_value_variables_are_quoted_or_made_a_regex_as_grafana_does() -> None:
    two = _var(["mill-01", "o'brien.yard"])
    assert format_variable(two, None, "sql") == "'mill-01','o''brien.yard'"
    assert format_variable(two, None, "influxql") == r"(mill-01|o'brien\.yard)"
    assert format_variable(two, None, "promql") == r"(mill-01|o\\'brien\\.yard)"
    assert format_variable(_var(["a.b"]), None, "influxql") == r"a\.b"  # one value: escaped, no group
    assert format_variable(_var(["a.b"], multi=False, include_all=False), None, "influxql") == "a.b"
    assert format_variable(_var(["x"], all_value=".*"), None, "promql") == ".*"  # "All" with a custom all value
    assert format_variable(two, "csv", "sql") == "mill-01,o'brien.yard"
    text, unknown = interpolate("node =~ /^$v$/ AND $timeFilter AND ${v:csv} $nope", {"v": two},
                                {"timeFilter": "time >= 1ms"}, "influxql")
    assert text == r"node =~ /^(mill-01|o'brien\.yard)$/ AND time >= 1ms AND mill-01,o'brien.yard $nope"
    assert unknown == ["nope"]


def test_time_ranges_and_intervals_follow_grafana() -> None:
    now = datetime(2024, 5, 1, 13, 37, 12, tzinfo=UTC)
    assert parse_time("now-6h", now) == datetime(2024, 5, 1, 7, 37, 12, tzinfo=UTC)
    assert parse_time("now-1d/d", now) == datetime(2024, 4, 30, tzinfo=UTC)
    assert parse_time("now/d", now, round_up=True) == datetime(2024, 5, 1, 23, 59, 59, 999000, tzinfo=UTC)
    assert parse_time("now-1M", now) == datetime(2024, 4, 1, 13, 37, 12, tzinfo=UTC)
    hour = TimeRange(now.replace(hour=12), now)
    assert interval_for(hour, 1000, None) == 5000  # 3.6 s → 5 s (rangeutil.roundInterval)
    assert interval_for(hour, 1000, "15s") == 15000  # the datasource's min interval
    assert interval_for(TimeRange(now - timedelta(days=1), now), 1000, None) == 60000  # 86.4 s → 1 m
    assert [format_interval(ms) for ms in (500, 5000, 60000, 3_600_000, 86_400_000)] == ["500ms", "5s", "1m", "1h",
                                                                                       "1d"]


def test_the_command_line(tmp_path: Path) -> None:
    tool = [sys.executable, "-m", "tools.grafana_check"]
    helped = subprocess.run([*tool, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0
    assert "--postgres" in helped.stdout
    assert "Exit status" in helped.stdout
    clean = subprocess.run(tool, capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "5 dashboards, 0 queries run (not run, no connection: influxql, promql, sql), 0 problem(s)" in clean.stdout
    broken = broken_dashboard(tmp_path, "fleet.json", _off_grid)
    failed = subprocess.run([*tool, "--grafana-dir", str(broken.parents[1]), "--json"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert failed.returncode == 1
    out = json.loads(failed.stdout)
    assert out["ok"] is False
    assert any("panel 'Nodes' (id 6): off the grid" in p for p in out["problems"]), out["problems"]
    bad = subprocess.run([*tool, "--schemas", str(tmp_path / "nowhere")], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 2
    assert "dashboard.jsonschema.json and alerting.jsonschema.json are needed" in bad.stderr
