"""The thresholds the panels draw against a floorgate alert-rules file (``--rules``): a panel whose description names
an "alert rule `NAME`" must draw that rule's value; every rule of the file with a value must be drawn somewhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tools.grafana_check.context import Context, all_panels, panel_where
from tools.grafana_check.files import load_yaml, rel

RULE_MENTION_RE = re.compile(r"alert rule `([^`]+)`")


def check_thresholds(ctx: Context, dashboards: list[tuple[Path, dict[str, Any]]], rules_file: Path) -> None:
    doc = load_yaml(rules_file) or {}
    rules = {r.get("name"): r for r in doc.get("rules") or [] if isinstance(r, dict)}
    drawn: set[str] = set()
    for path, dash in dashboards:
        where = f"{rel(path)} ({dash.get('title', '?')!r})"
        for panel in all_panels(dash.get("panels") or []):
            for name in RULE_MENTION_RE.findall(str(panel.get("description", ""))):
                at = panel_where(where, panel)
                rule = rules.get(name)
                if rule is None:
                    ctx.report.add(at, f"names alert rule {name!r}, which {rel(rules_file)} does not have")
                    continue
                value = rule_threshold(rule)
                if value is None:
                    continue
                steps = (((panel.get("fieldConfig") or {}).get("defaults") or {}).get("thresholds") or {}).get(
                    "steps") or []
                values = [s.get("value") for s in steps if s.get("value") is not None]
                if value not in values:
                    ctx.report.add(at, f"draws thresholds {values}, but alert rule {name!r} in "
                                       f"{rel(rules_file)} says {value:g}")
                else:
                    drawn.add(name)
    for name, rule in rules.items():
        value = rule_threshold(rule)
        if value is not None and name not in drawn:
            ctx.report.add(rel(rules_file), f"alert rule {name!r} ({rule.get('kind')}, {value:g}) is drawn in "
                                            "no panel (a panel names it in its description as alert rule "
                                            f"`{name}` and draws the threshold)")


def rule_threshold(rule: dict[str, Any]) -> float | None:
    """The number a floorgate alert rule compares with, where a panel can draw it."""
    kind = rule.get("kind")
    key = {"reading": "above" if "above" in rule else "below", "node_backlog": "older_than_s",
           "ingest_lag": "above_s"}.get(str(kind))
    value = rule.get(key) if key else None
    return float(value) if isinstance(value, int | float) else None
