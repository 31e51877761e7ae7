"""Central service settings (YAML), validated on load; errors name the file, key path and expected value.

Example (``firmware-config/examples/central.yaml``)::

    database_url: postgresql+psycopg://floorgate@127.0.0.1/floorgate
    broker: {url: "mqtt://127.0.0.1:1883", protocol: "5"}
    metrics: {kind: influxdb-v1, url: "http://127.0.0.1:8086", database: floorgate}
    api: {host: 127.0.0.1, port: 8000}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from central.metrics.config import MetricsSettings
from sync.config_errors import ConfigError, problems_from_pydantic


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSettings(_Model):
    url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: str | None = None
    client_id: str = "floorgate-central"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError("expected mqtt://HOST[:PORT]")
        return v

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883


class ApiSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)


class IngestSettings(_Model):
    share_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="MQTT 5 shared subscription group: several ingest workers with the same group split the load")
    replay_after_s: float = Field(
        30.0, gt=0, description="a gap between central's mark and the node's head that stays this long → replay")
    max_clock_skew_s: float = Field(60.0, gt=0, description="a node clock further off than this is flagged")


class CentralSettings(_Model):
    database_url: str = Field(description="SQLAlchemy URL: postgresql+psycopg://… or sqlite:///path.db")
    broker: BrokerSettings = BrokerSettings()
    metrics: MetricsSettings = Field(description="where readings go: InfluxDB v1/v2, or an embedded SQLite store")
    api: ApiSettings = ApiSettings()
    ingest: IngestSettings = IngestSettings()
    device_stale_after_s: float = Field(120.0, gt=0, description="a device not heard of for this long is offline")

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("postgresql", "sqlite")):
            raise ValueError("expected a postgresql+psycopg://… or sqlite:///… URL")
        return v


def parse_settings(data: object, *, source: str) -> CentralSettings:
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping (database_url, broker, metrics, api)"])
    try:
        return CentralSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_pydantic(exc.errors())) from None


def load_settings(path: str | Path) -> CentralSettings:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [f"not valid YAML: {exc}"]) from None
    return parse_settings(data, source=str(p))
