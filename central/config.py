"""Central service settings (YAML), validated on load; errors name the file, key path and expected value.

Example (``firmware-config/examples/central.yaml``)::

    database_url: postgresql+psycopg://floorgate@127.0.0.1/floorgate
    broker: {url: "mqtt://127.0.0.1:1883", protocol: "5"}
    metrics: {kind: influxdb-v1, url: "http://127.0.0.1:8086", database: floorgate}
    api: {host: 127.0.0.1, port: 8000}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from central.alerts.config import AlertSettings
from central.metrics.config import MetricsSettings
from central.tickets.config import TicketSettings
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
    open_read_only: bool = Field(
        False, description="read-only access without login (the demo only): refused unless host is a loopback address")

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> ApiSettings:
        if self.open_read_only and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"open_read_only needs host 127.0.0.1 (or ::1), not {self.host!r}: "
                             "unauthenticated access is for a demo on this machine only")
        return self


class AuthSettings(_Model):
    jwt_secret: SecretStr | None = Field(
        None, description="HMAC key for access tokens, the same for every API worker (at least 32 characters); "
                          "set it as FLOORGATE_AUTH__JWT_SECRET rather than in the file")
    token_ttl_s: float = Field(900.0, ge=30, le=86400, description="lifetime of an access token")
    login_max_failures: int = Field(5, ge=1, description="failed logins of one user within the window → wait")
    login_window_s: float = Field(300.0, gt=0)

    @field_validator("jwt_secret")
    @classmethod
    def _secret_len(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("expected at least 32 characters (e.g. `openssl rand -hex 32`)")
        return v

    def secret(self) -> str:
        if self.jwt_secret is None:
            raise RuntimeError("auth.jwt_secret is not set")
        return self.jwt_secret.get_secret_value()


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
    auth: AuthSettings = AuthSettings()
    ingest: IngestSettings = IngestSettings()
    alerts: AlertSettings = AlertSettings()
    tickets: TicketSettings = TicketSettings()
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


ENV_PREFIX = "FLOORGATE_"


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``FLOORGATE_DATABASE_URL`` → ``database_url``, ``FLOORGATE_AUTH__JWT_SECRET`` → ``auth.jwt_secret``: every
    variable whose first part names a top-level setting; others (``FLOORGATE_FAULT_…``) are not settings."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if path[0] not in CentralSettings.model_fields or not all(path):
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}", [f"{'.'.join(path)}: conflicts with another"])
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: str | Path, *, environ: Mapping[str, str] | None = None) -> CentralSettings:
    """The file's settings with ``FLOORGATE_…`` environment variables on top (secrets belong there)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [f"not valid YAML: {exc}"]) from None
    over = env_overrides(os.environ if environ is None else environ)
    if over and isinstance(data, dict):
        names = ", ".join(sorted(k for k in (os.environ if environ is None else environ) if k.startswith(ENV_PREFIX)
                                 and k[len(ENV_PREFIX):].lower().split("__")[0] in CentralSettings.model_fields))
        return parse_settings(_merge(data, over), source=f"{p} with environment {names}")
    return parse_settings(data, source=str(p))
