"""A throwaway Prometheus (Debian package ``prometheus``) on 127.0.0.1 with a random port and a temporary TSDB.

The scrape configuration is the one shipped in ``grafana/prometheus/floorgate-central.yml`` (job
``floorgate-central``, bearer credentials from a file), with the target and the credentials file of the test and a
1 s scrape interval, so that a test proves the documented configuration scrapes central for real.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from tools.devservers import free_port, require_binary

LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


class PrometheusServer:
    """``prometheus`` scraping the given ``scrape_configs`` every ``scrape_interval``; ``url``, ``query``,
    ``query_range``; ``close()`` (also on leaving the ``with`` block) stops it and removes its directory."""

    DEBIAN_PACKAGE = "prometheus"

    def __init__(self, scrape_configs: list[dict[str, Any]], *, scrape_interval: str = "1s") -> None:
        self._binary = require_binary("prometheus", self.DEBIAN_PACKAGE)
        self.directory = Path(tempfile.mkdtemp(prefix="floorgate-prometheus-"))
        self.port = free_port()
        self.config_file = self.directory / "prometheus.yml"
        self.log_file = self.directory / "prometheus.log"
        self.config_file.write_text(yaml.safe_dump({
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": scrape_interval},
            "scrape_configs": scrape_configs,
        }, sort_keys=False))
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10.0)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self) -> Self:
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self._binary, f"--config.file={self.config_file}",
                 f"--storage.tsdb.path={self.directory / 'data'}", f"--web.listen-address={LOCALHOST}:{self.port}",
                 "--storage.tsdb.retention.time=1d", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if self._http.get("/-/ready").status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        body = self._http.get("/api/v1/query", params=params).json()
        if body.get("status") != "success":
            raise RuntimeError(f"PromQL {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._http.get("/api/v1/targets").json()["data"]["activeTargets"]
        return active

    def close(self) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
        finally:
            self._process = None
            self._http.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
