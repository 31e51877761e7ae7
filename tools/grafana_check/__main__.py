"""``python -m tools.grafana_check``: the command line (see the package's documentation)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from tools.grafana_check.checker import check
from tools.grafana_check.context import DEFAULT_MAX_DATA_POINTS
from tools.grafana_check.files import DEFAULT_SCHEMAS, GRAFANA_DIR
from tools.grafana_check.report import Unusable
from tools.grafana_check.runner import Connections


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
