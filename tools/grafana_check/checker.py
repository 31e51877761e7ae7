"""``check(**options) -> Report``: every check of the Grafana files, in order (the importable entry point)."""

from __future__ import annotations

from typing import Any

from tools.grafana_check.alerting import check_alerting
from tools.grafana_check.context import Context
from tools.grafana_check.dashboards import check_dashboard
from tools.grafana_check.files import load_dashboards, load_datasources, rel
from tools.grafana_check.report import Report
from tools.grafana_check.thresholds import check_thresholds


def check(**options: Any) -> Report:
    """Check the dashboards, the provisioning and the alert rules; the options are :class:`Context`'s."""
    ctx = Context(**options)
    try:
        ctx.datasources = load_datasources(ctx.grafana_dir, ctx.report)
        for dialect in ("sql", "influxql", "promql"):
            if not ctx.conn.available(dialect):
                ctx.report.not_run.add(dialect)
        dashboards = load_dashboards(ctx.grafana_dir, ctx.dashboard_files, ctx.report)
        uids: dict[str, str] = {}
        for path, dash in dashboards:
            ctx.report.dashboards.append(rel(path))
            uid = dash.get("uid")
            if isinstance(uid, str) and uid in uids:
                ctx.report.add(rel(path), f"dashboard uid {uid!r} is also the uid of {uids[uid]}")
            elif isinstance(uid, str):
                uids[uid] = rel(path)
            check_dashboard(ctx, path, dash)
        check_alerting(ctx)
        if ctx.rules_file is not None:
            check_thresholds(ctx, dashboards, ctx.rules_file)
    finally:
        ctx.runner.close()
    return ctx.report
