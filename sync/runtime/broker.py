"""How the edge agent and central reach the broker: the URL (``mqtt://`` or ``mqtts://``), MQTT version, user name
and password, and for TLS the PEM files (the fleet CA, the client certificate and its key) — validated when the
config is loaded — and the ``ssl.SSLContext`` the MQTT client is given.

The edge's ``broker`` section (``edge.config.BrokerConfig``) and central's (``central.config.BrokerSettings``) both
extend ``BrokerBase``. TLS file paths are relative to the config file (validation context ``base_dir``); with
``check_files=False`` in the context they need not exist yet (the ``floorgate central ca`` commands make them).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sync.runtime.config import ConfigModel


def _tls_file(v: Path | None, info: ValidationInfo) -> Path | None:
    """A TLS file: relative to the config file's directory, and it must exist when the config is loaded (unless the
    loader says otherwise)."""
    if v is None:
        return v
    ctx = info.context or {}
    base = ctx.get("base_dir")
    path = Path(v).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if ctx.get("check_files", True):
        if not path.exists():
            raise ValueError(f"file not found: {path}")
        if not path.is_file():
            raise ValueError(f"not a file: {path}")
    return path


def _check_pem(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> None:
    """Load the files the way the MQTT client will, so a wrong file is named now and not at the first connect."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"ca_file {ca_file}: not a PEM CA certificate ({exc})") from None
    if cert_file is not None and key_file is not None:
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cert_file {cert_file} / key_file {key_file}: not a PEM certificate with its "
                             f"private key ({exc})") from None


class BrokerTls(ConfigModel):
    """PEM files for mqtts://: the fleet CA the broker's certificate chains to, and the client certificate and key
    (a node's: ``floorgate central node add`` writes ca.crt, tls.crt, tls.key; central's:
    ``floorgate central ca client-cert``)."""

    ca_file: Path | None = Field(None, description="CA certificate(s) the broker's certificate must chain to")
    cert_file: Path | None = Field(None, description="the client certificate (a node's CN is its node id)")
    key_file: Path | None = Field(None, description="its private key")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _files(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _tls_file(v, info)

    @model_validator(mode="after")
    def _pair(self, info: ValidationInfo) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client certificate and its key)")
        if (info.context or {}).get("check_files", True):
            _check_pem(self.ca_file, self.cert_file, self.key_file)
        return self


class BrokerBase(ConfigModel):
    url: str = Field(description="mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS)")
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: str | None = None
    tls: BrokerTls | None = Field(None, description="TLS files; needed with mqtts://")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError:
            raise ValueError("the port must be 0-65535") from None
        return v

    @model_validator(mode="after")
    def _tls_fits_url(self) -> Self:
        if self.uses_tls and (self.tls is None or self.tls.ca_file is None):
            raise ValueError("url mqtts:// needs tls.ca_file (the fleet CA certificate, ca.crt)")
        if not self.uses_tls and self.tls is not None:
            raise ValueError("tls is set but url is mqtt:// (plain text): use mqtts://HOST[:8883]")
        return self

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.uses_tls else 1883)


def tls_context(broker: BrokerBase) -> ssl.SSLContext | None:
    """For mqtts://: TLS 1.2 or newer, the broker's certificate checked against ``tls.ca_file`` and its host name,
    and the client certificate presented when one is configured. None for plain mqtt://."""
    if not broker.uses_tls or broker.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(broker.tls.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if broker.tls.cert_file is not None and broker.tls.key_file is not None:
        ctx.load_cert_chain(str(broker.tls.cert_file), str(broker.tls.key_file))
    return ctx


__all__ = ["BrokerBase", "BrokerTls", "tls_context"]
