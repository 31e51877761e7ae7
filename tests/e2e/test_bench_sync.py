"""``floorgate bench sync`` on a small backlog: real mosquitto, PostgreSQL and InfluxDB, the agent and central's
ingest as processes. Checks that it finishes and prints every figure as a number — never what the numbers are:
timings belong to the benchmark, not to a test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

NUMBER = r"(\d[\d,]*(?:\.\d+)?)"


def _figures(out: str, name: str) -> tuple[float, float, float]:
    """raw, floorgate and ratio of the table line ``name``."""
    found = re.search(rf"^{re.escape(name)}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s*$", out, re.MULTILINE)
    assert found, f"no figures for {name!r} in:\n{out}"
    raw, ours, ratio = (float(g.replace(",", "")) for g in found.groups())
    return raw, ours, ratio


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_bench_sync_prints_every_figure(tmp_path: Path, transport: str) -> None:
    """``--tls``: every party over mqtts with its own certificate (the bench itself checks in the broker's log that
    each one came in with its certificate's identity, and fails otherwise)."""
    done = subprocess.run(
        [sys.executable, "-m", "floorgate_cli", "bench", "sync", "--readings", "2000", "--business", "500",
         "--dir", str(tmp_path), *(["--tls"] if transport == "tls" else [])],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    out = done.stdout
    for name in ("durable outbox write, fsync each", "drain readings → InfluxDB", "drain business → Postgres"):
        assert min(_figures(out, name)) > 0, name  # records/s raw, floorgate, ratio
    for name in ("reading, MQTT PUBLISH", "reading, payload only"):
        raw, ours, _ = _figures(out, name)
        assert min(raw, ours) > 0, name  # bytes per reading
    assert "drain time: readings raw" in out
    assert ("over TLS (mqtts, client certificates) for both" in out) == (transport == "tls")
    assert "draining readings: 2000/2000 acked" in done.stderr  # progress on stderr
    assert "draining business: 500/500 acked" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir()), "the bench left files behind"
