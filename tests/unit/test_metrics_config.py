"""``MetricsSettings`` validation messages and ``open_store`` (no server needed: stores do no I/O until used)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from central.metrics import (
    InfluxV1Store,
    InfluxV2Store,
    MetricsSettings,
    MetricsStore,
    SQLiteMetricsStore,
    open_store,
)

V1: dict[str, Any] = {"kind": "influxdb-v1", "url": "http://127.0.0.1:8086", "database": "floorgate"}
V2: dict[str, Any] = {
    "kind": "influxdb-v2", "url": "https://influx.example:8086", "org": "mill", "bucket": "floorgate",
    "token": "s3cr3t-token",
}
SQLITE: dict[str, Any] = {"kind": "sqlite", "path": "var/metrics.sqlite"}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        MetricsSettings.model_validate(data)
    return str(caught.value)


@pytest.mark.parametrize(
    ("base", "missing"),
    [
        (V1, "url"), (V1, "database"),
        (V2, "url"), (V2, "org"), (V2, "bucket"), (V2, "token"),
        (SQLITE, "path"),
    ],
)
def test_missing_field_is_named_with_the_kind(base: dict[str, Any], missing: str) -> None:
    data = {k: v for k, v in base.items() if k != missing}
    assert f"metrics.{missing} is required for kind {base['kind']}" in _error(data)


@pytest.mark.parametrize("missing", ["database", "token"])
def test_empty_string_counts_as_missing(missing: str) -> None:
    base = V1 if missing == "database" else V2
    assert f"metrics.{missing} is required for kind {base['kind']}" in _error({**base, missing: ""})


@pytest.mark.parametrize(
    ("base", "extra", "used"),
    [
        (SQLITE, {"token": "x"}, "path, timeout_s"),
        (SQLITE, {"url": "http://127.0.0.1:8086"}, "path, timeout_s"),
        (V1, {"bucket": "b"}, "url, database, username, password, retention_policy, timeout_s"),
        (V2, {"database": "d"}, "url, org, bucket, token, timeout_s"),
        (V2, {"path": "x.sqlite"}, "url, org, bucket, token, timeout_s"),
    ],
)
def test_field_not_used_by_the_kind_is_named(base: dict[str, Any], extra: dict[str, Any], used: str) -> None:
    (name,) = extra
    assert f"metrics.{name} is not used for kind {base['kind']} (it takes {used})" in _error({**base, **extra})


def test_unknown_key_is_rejected() -> None:
    message = _error({**SQLITE, "pth": "typo.sqlite"})
    assert "pth" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_kind_is_rejected() -> None:
    message = _error({"kind": "influxdb-v4", "url": "http://x"})
    assert "kind" in message
    assert "'influxdb-v1', 'influxdb-v2' or 'sqlite'" in message


def test_url_must_be_http() -> None:
    assert "metrics.url must start with http:// or https://" in _error({**V1, "url": "127.0.0.1:8086"})


def test_password_needs_username() -> None:
    assert "metrics.username is required when metrics.password is set" in _error({**V1, "password": "pw"})


@pytest.mark.parametrize("timeout_s", [0, -1, 301])
def test_timeout_must_be_positive_and_bounded(timeout_s: float) -> None:
    assert "timeout_s" in _error({**V1, "timeout_s": timeout_s})


def test_settings_are_frozen_and_hide_secrets() -> None:
    settings = MetricsSettings.model_validate(V2)
    with pytest.raises(ValidationError, match="frozen"):
        settings.bucket = "other"
    assert "s3cr3t-token" not in repr(settings)
    assert "s3cr3t-token" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("data", "store_type"),
    [
        ({**V1, "username": "central", "password": "pw", "retention_policy": "autogen", "timeout_s": 2.5},
         InfluxV1Store),
        (V2, InfluxV2Store),
        (SQLITE, SQLiteMetricsStore),
    ],
)
def test_open_store_builds_the_configured_backend(
    data: dict[str, Any], store_type: type[MetricsStore], tmp_path: Path
) -> None:
    if data["kind"] == "sqlite":
        data = {**data, "path": str(tmp_path / "metrics.sqlite")}
    settings = MetricsSettings.model_validate(data)
    with open_store(settings) as store:
        assert isinstance(store, store_type)
        assert store.kind == settings.kind
    assert not (tmp_path / "metrics.sqlite").exists()  # no I/O before first use
