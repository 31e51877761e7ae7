"""Every query of every dashboard and alert rule, run for real against the data of an end-to-end run.

``dashboard_plant`` (conftest.py, ``plant.py``) runs simulators → edge agent → mosquitto → central → PostgreSQL +
InfluxDB, with Prometheus scraping central. The checker (``tools/grafana_check/``) then expands each query's variables
and macros as Grafana does and runs it: PostgreSQL as the read-only ``grafana_reader`` role the shipped SQL file
makes, InfluxQL on InfluxDB 1.6.7, PromQL on Prometheus. Every query must return rows; the key panels must show
exactly what the run made; broken queries, an unknown column and a dangling datasource must fail, naming the
dashboard, panel and refId.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.dashboards.plant import EXAMPLE_RULES, SERVER_CERT_DAYS, Plant
from tests.dashboards.support import DASHBOARD_FILES, GRAFANA, broken_dashboard, panel
from tests.procs import wait_until
from tools.grafana_check.checker import check
from tools.grafana_check.report import QueryRun, Report
from tools.grafana_check.runner import Connections

pytestmark = pytest.mark.e2e


def _connections(plant: Plant, postgres: str) -> Connections:
    assert plant.prometheus is not None
    return Connections(postgres=postgres, influxdb=plant.influx_url, influx_database=plant.influx_db,
                       prometheus=plant.prometheus.url)


def _at(plant: Plant) -> datetime:
    """Evaluate as at the end of the run: central was still up (Prometheus' instant values are fresh)."""
    return datetime.fromtimestamp(plant.finished_at, tz=UTC)


@pytest.fixture(scope="module")
def live_report(dashboard_plant: Plant, reader_url: str) -> Report:
    return check(connections=_connections(dashboard_plant, reader_url), at=_at(dashboard_plant),
                 rules_file=EXAMPLE_RULES)


def _problems(report: Report) -> str:
    return "\n".join(map(str, report.problems))


def _run(report: Report, file: str, title: str, ref: str = "A", mode: str = "all") -> QueryRun:
    runs = [r for r in report.runs if f"dashboards/{file}" in r.where and f"panel {title!r} " in r.where
            and r.where.endswith(f"refId {ref}") and r.mode == mode]
    assert len(runs) == 1, [r.where for r in report.runs if title in r.where]
    return runs[0]


def _value(report: Report, file: str, title: str, column: str) -> Any:
    [record] = _run(report, file, title).records
    return record[column]


def _automatic(run: QueryRun, scale: str) -> dict[tuple[str, str], float]:
    """What ``scale`` refused in automatic mode, by (scale, counter), summed over the rows of an InfluxQL query."""
    out: dict[tuple[str, str], float] = {}
    for r in run.records:
        if r["device"] == scale:
            out[(r["device"], r["point"])] = out.get((r["device"], r["point"]), 0) + r["refused"]
    return out


def test_every_query_of_every_dashboard_returns_rows_from_the_end_to_end_run(live_report: Report) -> None:
    assert live_report.ok, _problems(live_report)
    assert live_report.not_run == set()
    expected = set()
    for file in DASHBOARD_FILES:
        dashboard = json.loads((GRAFANA / "dashboards" / file).read_text(encoding="utf-8"))
        for p in dashboard["panels"]:
            for target in p.get("targets", []):
                expected.add((file, p["title"], target["refId"]))
    assert len(expected) >= 60
    for file, title, ref in sorted(expected):
        assert _run(live_report, file, title, ref, "all").rows > 0  # variables as a user first finds them
        assert _run(live_report, file, title, ref, "one").error is None  # only the first value of each
    assert not [r for r in live_report.runs if r.error]


def test_the_panels_show_what_the_run_made(live_report: Report, dashboard_plant: Plant) -> None:
    wb = "weighbridge.json"
    assert _value(live_report, wb, "Weighings", "weighings") == 5
    assert float(_value(live_report, wb, "Goods in / out (t)", "in")) == 19.0  # 30000 − 11000 kg, by reference
    assert float(_value(live_report, wb, "Goods in / out (t)", "out")) == 16.0  # 28000 − 12000 kg, by plate
    assert _value(live_report, wb, "Waiting for a second weighing", "waiting for the second weighing") == 1
    assert _value(live_report, wb, "Weighings refused", "weigh commands") == 2
    reasons = {r["reason"]: r["refused"] for r in _run(live_report, wb, "Refused weighings by reason").records}
    assert reasons == {"overload": 1, "unstable": 1}
    # the scale in automatic mode: one overloaded truck, one that drove over without stopping; bridge-1 is in command
    # mode, where a refused weigh command (above) says it and the overload its scheduled polls saw is no event
    auto = {("bridge-2", "events_overload"): 1, ("bridge-2", "events_unstable"): 1}
    for title, ref in (("Weighings refused", "B"), ("Refused weighings by reason", "B"), ("Weighings per hour", "C")):
        assert _automatic(_run(live_report, wb, title, ref), "bridge-2") == auto, title
        assert not any(_automatic(_run(live_report, wb, title, ref), "bridge-1").values()), title
    per_hour = [r for r in _run(live_report, wb, "Weighings per hour", "C").records if r["device"] == "bridge-2"]
    assert sorted(r["refused"] for r in per_hour if r["refused"]) == [1, 1]  # each in the hour it happened
    articles = {r["article"]: (float(r["in (t)"]), float(r["out (t)"]))
                for r in _run(live_report, wb, "Tonnage in / out per article").records}
    assert articles == {"Wheat": (19.0, 0.0), "Cattle feed A": (0.0, 16.0)}
    [open_first] = _run(live_report, wb, "Open first weighings").records
    assert (open_first["vehicle"], float(open_first["weight"]), open_first["partner"]) == ("EF-3", 25000.0,
                                                                                          "Partner FARM-2")

    fiscal = "fiscal.json"
    assert _value(live_report, fiscal, "Sales", "sales") == 8
    assert float(_value(live_report, fiscal, "Sales", "total (EUR)")) == pytest.approx(8 * 14.04)
    assert _value(live_report, fiscal, "Without signature (TSE ausgefallen)", "TSE failed") == 2
    assert _value(live_report, fiscal, "Failed verification", "invalid") == 0
    [tse] = _run(live_report, fiscal, "TSEs").records
    assert (tse["transactions"], tse["last number"], tse["signature counter"]) == (6, 6, 12)
    counters = [r["signature counter"] for r in _run(live_report, fiscal, "Signature counter per TSE").records]
    assert counters == [2, 4, 6, 8, 10, 12]

    fleet = "fleet.json"
    assert _value(live_report, fleet, "Nodes online / offline", "online") == 1
    assert _value(live_report, fleet, "Nodes online / offline", "offline") == 1  # the spare node
    assert _value(live_report, fleet, "Devices online / offline", "offline or stopped") == 1  # wrong-1
    nodes = {n["node"]: n for n in _run(live_report, fleet, "Nodes").records}
    node, spare = nodes[dashboard_plant.node], nodes[dashboard_plant.spare_node]
    assert (node["site"], node["version"], node["state"], node["alarms"]) == ("MILL-A", "0.1.0", "online", 0)
    assert (spare["site"], spare["last heartbeat"], spare["state"], spare["pending"]) == (None, None, "offline",
                                                                                         None)
    errors = _run(live_report, fleet, "Errors in the selected range").series
    assert ("wrong-1", "errors_exception_2") in [(s["device"], s["point"]) for s in errors]
    backlog = _run(live_report, fleet, "Age of the oldest pending record").records
    assert max(r["max"] for r in backlog if r["max"] is not None) >= 1.0  # central was away for seconds

    silos = "silos-energy.json"
    [hottest] = _run(live_report, silos, "Hottest sensor per silo").records
    assert hottest["max"] == 45.0  # the sensor the run forced
    latest = {r["point"]: r["°C"] for r in _run(live_report, silos, "Latest temperature per silo and sensor").records}
    assert latest["temperature_5"] == 45.0
    assert len(latest) == 8

    central = "central.json"
    assert _run(live_report, central, "Quarantine").records[0]["value"] >= 1
    firing = {r["rule"] for r in _run(live_report, central, "Alerts firing").records}
    assert {"silo-hot-spot", "fiscal-tse", "device-offline"} <= firing
    routes = {s.get("route") for s in _run(live_report, central, "HTTP latency (95th percentile) by route").series}
    assert {"/api/v1/weighings", "/api/v1/tickets", "/health", "unmatched"} <= routes, routes
    days = {(r["kind"], r["common_name"]): r["value"]
            for r in _run(live_report, central, "Certificates and CRL: days left").records}
    assert days.keys() == {("server", "localhost"), ("client", "floorgate:central")}
    assert days[("server", "localhost")] == pytest.approx(SERVER_CERT_DAYS, abs=0.01)
    assert days[("client", "floorgate:central")] == pytest.approx(730, abs=0.01)  # pki.cert_days' default
    [crl] = _run(live_report, central, "Certificates and CRL: days left", "B").records
    assert crl["value"] == pytest.approx(365, abs=0.01)  # pki.crl_days' default


def test_the_thresholds_drawn_apply_to_the_points_their_rules_watch(live_report: Report) -> None:
    rules = {r["name"]: r for r in yaml.safe_load(EXAMPLE_RULES.read_text(encoding="utf-8"))["rules"]}
    hot = rules["silo-hot-spot"]
    series = _run(live_report, "silos-energy.json", "Silo temperature per sensor").series
    assert len(series) == 8
    assert all(fnmatch.fnmatchcase(s["point"], hot["point"]) and fnmatch.fnmatchcase(s["device"], hot["device"])
               for s in series), series
    cold = rules["cold-store-too-warm"]
    probes = _run(live_report, "silos-energy.json", "Probe temperature (cold store)").series
    assert {s["device"] for s in probes} == {cold["device"]}
    backlog = rules["node-backlog"]
    streams = {s["stream"] for s in _run(live_report, "fleet.json", "Records waiting on the node").series}
    assert streams == {backlog["stream"], "health", "readings"}


def test_the_grafana_alert_rules_evaluate_on_the_run(live_report: Report, dashboard_plant: Plant,
                                                     reader_url: str) -> None:
    states = {a.uid: a.state for a in live_report.alerts}
    assert states == {
        "floorgate-central-down": "Normal",
        "floorgate-database-down": "Normal",
        "floorgate-ingest-disconnected": "Normal",
        "floorgate-ingest-stalled": "Normal",
        "floorgate-quarantine-growing": "Alerting",  # the run's malformed batch
        "floorgate-alert-delivery-failing": "Alerting",  # the run's receivers were down
        "floorgate-certificate-expiring": "Alerting",  # the broker's certificate: 20 days
        "floorgate-crl-expiring": "Normal",  # 365 days
    }
    # central has been stopped since the run ended: Prometheus' scrapes fail, the rule's condition is met
    assert dashboard_plant.prometheus is not None
    prom = dashboard_plant.prometheus
    wait_until("a failed scrape of the stopped central", lambda: any(
        s["value"][1] == "0" for s in prom.query('up{job="floorgate-central"}')), timeout_s=15)
    later = check(connections=_connections(dashboard_plant, reader_url), dashboards=[])
    assert later.alert("floorgate-central-down").state == "Alerting"


def test_the_grafana_reader_role_reads_only_what_the_dashboards_need(reader_url: str) -> None:
    with psycopg.connect(reader_url) as conn:
        assert conn.execute("SELECT count(*) FROM weighings").fetchone() == (5,)
        for denied in ("SELECT * FROM users", "SELECT * FROM api_keys", "SELECT * FROM audit_log",
                       "SELECT payload FROM ingest_quarantine", "UPDATE sites SET name = 'x'"):
            with pytest.raises(psycopg.Error, match=r"permission denied|read-only transaction"):
                conn.execute(denied)
            conn.rollback()


def _influx_parse_error(d: dict[str, Any]) -> None:
    target = panel(d, "Power")["targets"][0]
    target["query"] = target["query"].replace('mean("value")', 'mean("value"')


def _unknown_column(d: dict[str, Any]) -> None:
    target = panel(d, "Weighings")["targets"][0]
    target["rawSql"] = target["rawSql"].replace("count(*)", "sum(w.weight_kg)")


def _promql_error(d: dict[str, Any]) -> None:
    target = panel(d, "Ingest rate")["targets"][1]
    target["expr"] = target["expr"].replace("[$__rate_interval]))", "[$__rate_interval])")


def _dangling(d: dict[str, Any]) -> None:
    p = panel(d, "Round-trip time per device")
    p["datasource"]["uid"] = p["targets"][0]["datasource"]["uid"] = "influxdb-old"


def _no_rows(d: dict[str, Any]) -> None:
    target = panel(d, "Round-trip time per device")["targets"][0]
    target["query"] = target["query"].replace("'rtt_ms'", "'rtt'")


def _no_time_column(d: dict[str, Any]) -> None:
    target = panel(d, "Failures")["targets"][0]
    target["rawSql"] = target["rawSql"].replace("$__timeGroupAlias(t.finished_at, $__interval),",
                                                "$__timeGroup(t.finished_at, $__interval) AS \"t\",")


def _variable_query(d: dict[str, Any]) -> None:
    variable = next(v for v in d["templating"]["list"] if v["name"] == "scale")
    variable["query"] = variable["query"].replace("d.device_id FROM", "d.device FROM")


@pytest.mark.parametrize(("file", "change", "expected"), [
    ("silos-energy.json", _influx_parse_error, "panel 'Power' (id 6) refId A: query failed (all): error parsing "
                                               "query"),
    ("weighbridge.json", _unknown_column, "panel 'Weighings' (id 1) refId A: query failed (all): column "
                                          "w.weight_kg does not exist"),
    ("central.json", _promql_error, "panel 'Ingest rate' (id 8) refId B: query failed (all): bad_data: "),
    ("fleet.json", _dangling, "panel 'Round-trip time per device' (id 13) refId A: datasource uid 'influxdb-old' "
                              "is not provisioned"),
    ("fleet.json", _no_rows, "panel 'Round-trip time per device' (id 13) refId A: no rows — query: SELECT "),
    ("fiscal.json", _no_time_column, "panel 'Failures' (id 6) refId A: query failed (all): found no column named "
                                     "'time'"),
    ("weighbridge.json", _variable_query, "variable 'scale': query failed: column d.device does not exist"),
], ids=["influxql-parse", "sql-unknown-column", "promql-parse", "dangling-datasource", "no-rows", "sql-no-time",
        "variable-query"])
def test_a_broken_query_unknown_column_or_dangling_datasource_fails_naming_it(
        tmp_path: Path, dashboard_plant: Plant, reader_url: str, file: str, change: Any, expected: str) -> None:
    path = broken_dashboard(tmp_path, file, change)
    report = check(grafana_dir=path.parents[1], dashboards=[path],
                   connections=_connections(dashboard_plant, reader_url), at=_at(dashboard_plant))
    assert not report.ok
    problems = _problems(report)
    assert expected in problems, problems
    assert all(f"dashboards/{file}" in str(p) for p in report.problems), problems


def test_the_command_line_against_the_live_databases(dashboard_plant: Plant, reader_url: str) -> None:
    assert dashboard_plant.prometheus is not None
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tools.grafana_check", "--postgres", reader_url,
         "--influxdb", dashboard_plant.influx_url,
         "--influx-database", dashboard_plant.influx_db, "--prometheus", dashboard_plant.prometheus.url,
         "--at", str(dashboard_plant.finished_at), "--rules", str(EXAMPLE_RULES), "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True
    assert out["not_run"] == []
    assert len(out["queries"]) >= 150
    assert time.monotonic() - started < 30
