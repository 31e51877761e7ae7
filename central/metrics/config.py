"""``MetricsSettings`` (the ``metrics:`` section of central's configuration) and ``open_store``.

Examples (YAML)::

    metrics: {kind: influxdb-v1, url: "http://127.0.0.1:8086", database: floorgate}
    metrics: {kind: influxdb-v2, url: "https://influx.example:8086", org: mill, bucket: floorgate, token: "..."}
    metrics: {kind: sqlite, path: var/metrics.sqlite}

The model is frozen, rejects unknown keys, and checks the fields against ``kind``: a missing one is named
("metrics.database is required for kind influxdb-v1"), as is one that the kind does not use, so that a half-edited
configuration fails on load instead of writing somewhere unexpected. Secrets (``password``, ``token``) are
``SecretStr`` and have no defaults. ``timeout_s`` is the HTTP timeout, for SQLite the busy timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from central.metrics.base import MetricsStore
from sync.runtime.config import ConfigModel

__all__ = ["MetricsKind", "MetricsSettings", "open_store"]

MetricsKind = Literal["influxdb-v1", "influxdb-v2", "sqlite"]

DEFAULT_TIMEOUT_S = 5.0

_REQUIRED: dict[str, tuple[str, ...]] = {
    "influxdb-v1": ("url", "database"),
    "influxdb-v2": ("url", "org", "bucket", "token"),
    "sqlite": ("path",),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "influxdb-v1": ("username", "password", "retention_policy", "timeout_s"),
    "influxdb-v2": ("timeout_s",),
    "sqlite": ("timeout_s",),
}


class MetricsSettings(ConfigModel):
    """Where central keeps time series; which fields are needed depends on ``kind``."""

    kind: MetricsKind
    url: str | None = None
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    path: Path | None = None
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"metrics.url must start with http:// or https://, got {url!r}")
        return url

    @model_validator(mode="after")
    def _check_fields_for_kind(self) -> MetricsSettings:
        for name in _REQUIRED[self.kind]:
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text is None or text == "":
                raise ValueError(f"metrics.{name} is required for kind {self.kind}")
        usable = {"kind", *_REQUIRED[self.kind], *_OPTIONAL[self.kind]}
        for name in sorted(self.model_fields_set - usable):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"metrics.{name} is not used for kind {self.kind} "
                    f"(it takes {', '.join(_REQUIRED[self.kind] + _OPTIONAL[self.kind])})"
                )
        if self.password is not None and not self.username:
            raise ValueError("metrics.username is required when metrics.password is set")
        return self


def open_store(settings: MetricsSettings) -> MetricsStore:
    """The store ``settings`` describe (no I/O yet; call ``ensure_ready()`` next)."""
    if settings.kind == "influxdb-v1":
        from central.metrics.influx_v1 import InfluxV1Store

        assert settings.url is not None  # checked by the validator, as below
        assert settings.database is not None
        return InfluxV1Store(
            settings.url,
            settings.database,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            timeout_s=settings.timeout_s,
            retention_policy=settings.retention_policy,
        )
    if settings.kind == "influxdb-v2":
        from central.metrics.influx_v2 import InfluxV2Store

        assert settings.url is not None
        assert settings.token is not None
        assert settings.org is not None
        assert settings.bucket is not None
        return InfluxV2Store(
            settings.url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            bucket=settings.bucket,
            timeout_s=settings.timeout_s,
        )
    from central.metrics.sqlite_store import SQLiteMetricsStore

    assert settings.path is not None
    return SQLiteMetricsStore(settings.path, busy_timeout_s=settings.timeout_s)
