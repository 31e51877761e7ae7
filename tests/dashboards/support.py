"""Helpers of the dashboard tests: a copy of ``grafana/`` with one file changed, and finding a panel."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.dashboards.plant import REPO

GRAFANA = REPO / "grafana"
DASHBOARD_FILES = ["central.json", "fiscal.json", "fleet.json", "silos-energy.json", "weighbridge.json"]
ALERTING_FILE = "floorgate-central.yaml"


def grafana_copy(tmp_path: Path) -> Path:
    """``tmp_path/grafana``: provisioning and dashboards as in the repository."""
    target = tmp_path / "grafana"
    shutil.copytree(GRAFANA / "provisioning", target / "provisioning")
    shutil.copytree(GRAFANA / "dashboards", target / "dashboards")
    return target


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in dashboard["panels"] if p.get("title") == title)
    return found


def broken_dashboard(tmp_path: Path, file: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``grafana/`` in which ``change`` was applied to dashboard ``file``; returns that file's path."""
    root = grafana_copy(tmp_path)
    path = root / "dashboards" / file
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    change(dashboard)
    path.write_text(json.dumps(dashboard, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def broken_alerting(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``grafana/`` with ``change`` applied to the alerting provisioning file; returns the copy's root."""
    root = grafana_copy(tmp_path)
    path = root / "provisioning" / "alerting" / ALERTING_FILE
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return root


def rule(doc: dict[str, Any], uid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for g in doc["groups"] for r in g["rules"] if r["uid"] == uid)
    return found
