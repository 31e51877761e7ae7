"""The files the checker reads: datasource provisioning, dashboard JSON and Grafana's JSON Schemas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tools.grafana_check.report import Report, Unusable

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "grafana"
REPO = GRAFANA_DIR.parent
DEFAULT_SCHEMAS = REPO / "tests" / "data" / "grafana-jsonschema"

# panel type → its JSON Schema file (without .jsonschema.json); rows are validated by the dashboard schema
PANEL_SCHEMAS = {"timeseries": "timeseries", "stat": "stat", "table": "table", "barchart": "barchart",
                 "bargauge": "bargauge", "gauge": "gauge", "state-timeline": "statetimeline", "text": "text"}
# datasource plugin type → the query language the checker speaks with it
DIALECTS = {"grafana-postgresql-datasource": "sql", "influxdb": "influxql", "prometheus": "promql"}


@dataclass(frozen=True)
class Datasource:
    name: str
    uid: str
    type: str
    json_data: dict[str, Any]

    @property
    def dialect(self) -> str:
        return DIALECTS[self.type]


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise Unusable(f"{path}: {exc}") from None


def yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*") if p.suffix in (".yaml", ".yml"))


def load_datasources(grafana_dir: Path, report: Report) -> dict[str, Datasource]:
    out: dict[str, Datasource] = {}
    directory = grafana_dir / "provisioning" / "datasources"
    files = yaml_files(directory)
    if not files:
        report.add(str(directory), "no datasource provisioning file")
    for path in files:
        where = rel(path)
        doc = load_yaml(path) or {}
        if doc.get("apiVersion") != 1:
            report.add(where, f"apiVersion: expected 1, got {doc.get('apiVersion')!r}")
        for i, ds in enumerate(doc.get("datasources") or []):
            at = f"{where}: datasources[{i}]"
            missing = [k for k in ("name", "uid", "type", "url") if not ds.get(k)]
            if missing:
                report.add(at, f"missing {', '.join(missing)}")
                continue
            if ds["type"] not in DIALECTS:
                report.add(at, f"type {ds['type']!r}: the dashboards use {', '.join(sorted(DIALECTS))}")
                continue
            if ds["uid"] in out:
                report.add(at, f"uid {ds['uid']!r} provisioned twice")
            json_data = ds.get("jsonData") or {}
            if ds["type"] == "influxdb":
                if json_data.get("version", "InfluxQL") != "InfluxQL":
                    report.add(at, f"jsonData.version {json_data['version']!r}: the dashboards query InfluxQL")
                if not json_data.get("dbName"):
                    report.add(at, "jsonData.dbName missing (InfluxQL needs the database)")
            if ds["type"] == "grafana-postgresql-datasource" and not json_data.get("database"):
                report.add(at, "jsonData.database missing")
            out[ds["uid"]] = Datasource(ds["name"], ds["uid"], ds["type"], json_data)
    return out


def load_dashboards(grafana_dir: Path, files: Iterable[Path] | None,
                    report: Report) -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted(files) if files is not None else sorted((grafana_dir / "dashboards").glob("*.json"))
    if not paths:
        report.add(str(grafana_dir / "dashboards"), "no dashboard files")
    out = []
    for path in paths:
        try:
            out.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as exc:
            report.add(rel(path), f"not a JSON dashboard: {exc}")
    return out


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# -- JSON Schemas ------------------------------------------------------------------------------------------------------
class Schemas:
    """Grafana's JSON Schemas (Draft 7), as validators for a dashboard, a panel, panel options, alert rules."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._docs: dict[str, dict[str, Any]] = {}
        for path in directory.glob("*.jsonschema.json"):
            self._docs[path.name.removesuffix(".jsonschema.json")] = json.loads(path.read_text(encoding="utf-8"))
        if "dashboard" not in self._docs or "alerting" not in self._docs:
            raise Unusable(f"{directory}: dashboard.jsonschema.json and alerting.jsonschema.json are needed")
        self._validators: dict[tuple[str, str], jsonschema.Draft7Validator] = {}

    def validator(self, doc: str, definition: str | None) -> jsonschema.Draft7Validator | None:
        key = (doc, definition or "")
        if key not in self._validators:
            schema = self._docs.get(doc)
            if schema is None or (definition is not None and definition not in schema.get("definitions", {})):
                return None
            if definition is not None:
                schema = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
            self._validators[key] = jsonschema.Draft7Validator(schema)
        return self._validators[key]

    def errors(self, doc: str, definition: str | None, instance: Any, prefix: str = "") -> list[str]:
        validator = self.validator(doc, definition)
        if validator is None:
            return [f"no schema {doc}{'#' + definition if definition else ''}"]
        out = []
        for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
            path = ".".join(str(p) for p in err.absolute_path)
            location = prefix + path if path else prefix.rstrip(".") or "(top)"
            out.append(f"{location}: {_schema_message(err)}")
        return out

    def panel_types(self) -> set[str]:
        return {t for t, doc in PANEL_SCHEMAS.items() if doc in self._docs}


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "oneOf" and err.context:
        best = jsonschema.exceptions.best_match(err.context)
        return f"{str(err.message)[:120]} — {str(best.message)[:200]}"
    return str(err.message)[:300]
