"""Central service settings (YAML), validated on load; errors name the file, key path and expected value.

Example (``firmware-config/examples/central.yaml``)::

    database_url: postgresql+psycopg://floorgate@127.0.0.1/floorgate
    broker: {url: "mqtt://127.0.0.1:1883", protocol: "5"}
    # or over TLS with central's client certificate (floorgate central ca client-cert):
    # broker: {url: "mqtts://broker.example:8883", tls: {ca_file: pki/ca.crt, cert_file: …/tls.crt, key_file: …}}
    metrics: {kind: influxdb-v1, url: "http://127.0.0.1:8086", database: floorgate}
    api: {host: 127.0.0.1, port: 8000}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from central.alerts.config import AlertSettings
from central.fiscal.config import FiscalSettings
from central.metrics.config import MetricsSettings
from central.tickets.config import TicketSettings
from sync.runtime.broker import BrokerBase
from sync.runtime.config import ConfigError, ConfigModel, parse_model
from sync.runtime.limits import read_yaml


class BrokerSettings(BrokerBase):
    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS)")
    client_id: str = "floorgate-central"


class PkiSettings(ConfigModel):
    """The fleet CA (``central.fleet.pki``): ``central ca …`` and ``node add|register|revoke`` work in this directory;
    with it set, ingest and ``verify-alibi`` trust only node keys its ``ca.crt`` bound (``central.fleet.keys``)."""

    dir: Path = Field(description="directory of ca.key (mode 0600), ca.crt and crl.pem; relative to the config file")
    cert_days: int = Field(730, ge=1, le=3650, description="validity of the certificates issued (node, server, "
                           "client) unless --days says otherwise")
    crl_days: int = Field(365, ge=1, le=3650, description="validity of crl.pem: the broker refuses every client once "
                          "it has passed, so run `floorgate central ca crl` well before (e.g. monthly from cron)")

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        v = Path(v).expanduser()
        return Path(base) / v if base is not None and not v.is_absolute() else v


class ApiSettings(ConfigModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    open_read_only: bool = Field(
        False, description="read-only access without login (the demo only): refused unless host is a loopback address")
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest request body (bytes): a larger one is answered 413 while it is "
        "read (Content-Length, or counted as a chunked body streams in), before any authentication work")
    max_upload_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest body of an upload route (a TSE's TAR export): the same "
        "413 while reading, with this larger limit")
    trusted_proxies: tuple[str, ...] = Field(
        (), description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is believed; from "
        "any other peer the header is ignored and the peer's address is the client's (the default: none)")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for i, entry in enumerate(v):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"entry {i} is not an IP address or network (CIDR), e.g. 10.0.0.0/8") from None
        return v

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> ApiSettings:
        if self.open_read_only and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"open_read_only needs host 127.0.0.1 (or ::1), not {self.host!r}: "
                             "unauthenticated access is for a demo on this machine only")
        return self


class AuthSettings(ConfigModel):
    jwt_secret: SecretStr | None = Field(
        None, description="HMAC key for access tokens, the same for every API worker (at least 32 characters); "
                          "set it as FLOORGATE_AUTH__JWT_SECRET rather than in the file")
    token_ttl_s: float = Field(900.0, ge=30, le=86400, description="lifetime of an access token")
    login_max_failures: int = Field(
        5, ge=1, description="failed logins of one user from one address before each further try must wait "
        "(login_delay_s, doubling with each failure up to login_max_delay_s)")
    login_max_failures_per_user: int = Field(
        10, ge=1, description="failed logins of one user from addresses it never logged in from (all of them "
        "together) before those must wait; an address the user logged in from before is not slowed by them")
    login_max_failures_per_address: int = Field(
        20, ge=1, description="failed logins from one address (any user names) before it must wait")
    login_delay_s: float = Field(1.0, gt=0, le=3600, description="the first wait; it doubles with each failure")
    login_max_delay_s: float = Field(300.0, gt=0, le=86400, description="the longest wait")
    login_window_s: float = Field(
        900.0, gt=0, description="failures are forgotten after this long without a failed login (of that user "
        "and address, user or address)")

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


class IngestSettings(ConfigModel):
    share_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="MQTT 5 shared subscription group: several ingest workers with the same group split the load")
    replay_after_s: float = Field(
        30.0, gt=0, description="a gap between central's mark and the node's head that stays this long → replay")
    max_clock_skew_s: float = Field(60.0, gt=0, description="a node clock further off than this is flagged")
    metrics_listen: str | None = Field(
        None, description="HOST:PORT where an ingest-only process (`central ingest`) serves Prometheus /metrics — "
        "the ingest metrics of the API's /metrics, without login (counters only, no business data); default off")
    # the bounded quarantine (central.ingest.quarantine): per source = an enrolled node, or all unauthenticated traffic
    quarantine_keep_bytes: int = Field(
        4096, ge=256, le=1_048_576,
        description="payloads up to this size are kept whole, longer ones as this many bytes + SHA-256 + size")
    quarantine_rate_per_min: float = Field(
        30.0, gt=0, le=100_000, description="quarantined messages stored per source and minute (burst: one minute's "
        "worth); beyond: counted as dropped (rate), not stored")
    quarantine_bytes_per_min: int = Field(
        131_072, ge=16_384, le=1_073_741_824, description="bytes (kept payload + topic + reason) stored per source "
        "and minute; beyond: counted as dropped (bytes), not stored")
    quarantine_retention_days: float = Field(
        30.0, gt=0, le=36_500, description="quarantined messages older than this are deleted by the ingest process "
        "(and by `floorgate central quarantine prune`)")
    quarantine_prune_every_s: float = Field(
        3600.0, gt=0, le=86_400, description="how often an ingest process deletes expired quarantine entries")
    quarantine_max_rows: int = Field(
        100_000, ge=1, le=1_000_000_000, description="after the retention prune, the oldest quarantine entries "
        "beyond this many are deleted too: a hard bound whatever comes in")

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464")
        return v


class CheckpointSettings(ConfigModel):
    """``checkpoint:`` external checkpoints of the chain heads (``central.fleet.checkpoint``): every node's alibi head
    and every TSE's head, signed with central's key, written outside the database — ``floorgate central checkpoint``,
    and every ``interval_s`` by the central processes."""

    interval_s: float | None = Field(
        None, ge=1, le=31_536_000, description="write one this often (e.g. 3600; one process writes it, the next is "
        "due interval_s after the newest in the checkpoints table); none: only `floorgate central checkpoint`")
    directory: Path | None = Field(
        None, description="write each as checkpoint-<UTC time>.json into this directory (made if missing); relative "
        "to the config file. Put it where central's database is not: another disk, a mount of another host")
    channels: tuple[str, ...] = Field(
        (), description="alert channels (names in alerts.rules_file: webhook / email) that receive each checkpoint: "
        "a webhook gets the signed document as its JSON body, an e-mail carries it as an attachment")

    @field_validator("directory")
    @classmethod
    def _dir(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None:
            return v
        base = (info.context or {}).get("base_dir")
        v = Path(v).expanduser()
        return Path(base) / v if base is not None and not v.is_absolute() else v

    @model_validator(mode="after")
    def _somewhere(self) -> CheckpointSettings:
        if self.interval_s is not None and self.directory is None and not self.channels:
            raise ValueError("interval_s needs a destination: directory and/or channels")
        return self


class CentralSettings(ConfigModel):
    database_url: str = Field(description="SQLAlchemy URL: postgresql+psycopg://… or sqlite:///path.db")
    broker: BrokerSettings = BrokerSettings()
    metrics: MetricsSettings = Field(description="where readings go: InfluxDB v1/v2, or an embedded SQLite store")
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    ingest: IngestSettings = IngestSettings()
    alerts: AlertSettings = AlertSettings()
    tickets: TicketSettings = TicketSettings()
    fiscal: FiscalSettings = Field(FiscalSettings(), description="the TSEs trusted without an admin's "
                                   "confirmation (central.fiscal.config)")
    pki: PkiSettings | None = Field(None, description="the fleet CA's directory (floorgate central ca / node add); "
                                    "with it, only node keys bound by its ca.crt are trusted")
    checkpoint: CheckpointSettings = CheckpointSettings()
    device_stale_after_s: float = Field(120.0, gt=0, description="a device not heard of for this long is offline")
    signing_key_file: Path | None = Field(
        None, description="central's Ed25519 key that signs what it sends to nodes (acks, replay requests, commands; "
        "central.fleet.signing_key): default <pki.dir>/central-signing.key, else central-signing.key beside the config "
        "file; made (mode 0600) on first need. Every central process must use the same key")

    @model_validator(mode="before")
    @classmethod
    def _signing_key_default(cls, data: Any, info: ValidationInfo) -> Any:
        """Resolve ``signing_key_file`` against the config file's directory, or default it (see the field)."""
        base = (info.context or {}).get("base_dir")
        if not isinstance(data, dict) or base is None:
            return data
        given = data.get("signing_key_file")
        if given:
            path = Path(str(given)).expanduser()
            return {**data, "signing_key_file": path if path.is_absolute() else Path(base) / path}
        pki = data.get("pki")
        pki_dir = pki.get("dir") if isinstance(pki, dict) else None
        if isinstance(pki_dir, str | Path) and str(pki_dir):
            d = Path(str(pki_dir)).expanduser()
            return {**data, "signing_key_file": (d if d.is_absolute() else Path(base) / d) / "central-signing.key"}
        return {**data, "signing_key_file": Path(base) / "central-signing.key"}

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("postgresql", "sqlite")):
            raise ValueError("expected a postgresql+psycopg://… or sqlite:///… URL")
        return v


def parse_settings(data: object, *, source: str, base_dir: Path | None = None,
                   check_files: bool = True) -> CentralSettings:
    """Validate ``data``; relative TLS and PKI paths are taken relative to ``base_dir``; with ``check_files`` the
    broker's TLS files must exist."""
    return parse_model(CentralSettings, data, source=source, expected="a mapping (database_url, broker, metrics, api)",
                       context={"base_dir": base_dir, "check_files": check_files})


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


def load_settings(path: str | Path, *, environ: Mapping[str, str] | None = None,
                  check_files: bool = True) -> CentralSettings:
    """The file's settings with ``FLOORGATE_…`` environment variables on top (secrets belong there). Relative paths
    of ``broker.tls`` and ``pki.dir`` are relative to the file; ``check_files=False`` skips the check that the TLS
    files exist (the PKI commands, which make them)."""
    p = Path(path)
    data = read_yaml(p)  # bounded: size, nesting, aliases (sync.runtime.limits)
    over = env_overrides(os.environ if environ is None else environ)
    if over and isinstance(data, dict):
        names = ", ".join(sorted(k for k in (os.environ if environ is None else environ) if k.startswith(ENV_PREFIX)
                                 and k[len(ENV_PREFIX):].lower().split("__")[0] in CentralSettings.model_fields))
        return parse_settings(_merge(data, over), source=f"{p} with environment {names}", base_dir=p.resolve().parent,
                              check_files=check_files)
    return parse_settings(data, source=str(p), base_dir=p.resolve().parent, check_files=check_files)
