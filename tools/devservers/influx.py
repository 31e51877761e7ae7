"""A throwaway InfluxDB 1.x on 127.0.0.1 for tests and benchmarks (see ``tools.devservers``)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tools.devservers import (
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    LOCALHOST,
    TempServer,
    end_process,
    free_port,
    require_binary,
    tail,
)


class InfluxServer(TempServer):
    """A throwaway InfluxDB 1.x (``influxd``) with temporary meta/data/wal directories, HTTP on 127.0.0.1.

    Debian 12 ships 1.6.7: the v1 API (``/write``, ``/query`` with InfluxQL) works, ``/api/v2/write`` does not
    exist. The RPC ``bind-address`` (backup/restore) also gets a private port on 127.0.0.1, and reporting,
    the ``_internal`` monitor database and the HTTP access log are off.
    """

    name = "influxd"
    DEBIAN_PACKAGE = "influxdb"

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port=port)
        self._binary = require_binary("influxd", self.DEBIAN_PACKAGE)
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=10.0)

    @property
    def data_dir(self) -> Path:
        """Parent of ``meta/``, ``data/`` and ``wal/``: kept across ``stop()`` / ``kill()`` / ``start()``."""
        return self.directory

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "influxdb.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "influxd.log"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self, http_port: int, rpc_port: int) -> None:
        d = self.directory
        self.config_file.write_text(
            f"""reporting-disabled = true
bind-address = "{LOCALHOST}:{rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  log-enabled = false

[http]
  enabled = true
  bind-address = "{LOCALHOST}:{http_port}"
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""
        )

    def start(self) -> None:
        """Start ``influxd``; after a ``stop()`` / ``kill()`` on the same HTTP port, with the same meta/data/wal."""
        if self.is_running:
            return
        if self._http.is_closed:  # started again after close()
            self._http = httpx.Client(timeout=10.0)
        last_error = ""
        for _attempt in range(3):
            port = self._port or free_port()  # a restart keeps the HTTP port; the RPC port is internal only
            self._write_config(port, free_port())
            with self.log_file.open("ab") as log:
                self._process = subprocess.Popen(  # noqa: S603 - resolved server binary, generated config
                    [self._binary, "-config", str(self.config_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self._wait_ready(port)
            except RuntimeError as exc:
                end_process(self._process, signal.SIGKILL, DEFAULT_STOP_TIMEOUT_S)
                self._process = None
                last_error = f"{exc}\n{tail(self.log_file)}"
                if self._port is not None:
                    break
                continue
            self._port = port
            return
        raise RuntimeError(f"influxd did not start:\n{last_error}")

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + DEFAULT_START_TIMEOUT_S
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"influxd exited with code {self._process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if self._http.get(f"http://{LOCALHOST}:{port}/ping").status_code == 204:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"influxd did not answer /ping within {DEFAULT_START_TIMEOUT_S:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a grace period); data and port stay until ``close()``."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, like a power cut. Acknowledged writes survive: InfluxDB appends them to its WAL before it answers
        204, and replays the WAL on the next start."""
        self._end(signal.SIGKILL)

    def restart(self, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same HTTP port with the same meta, data and WAL directories."""
        self._end(signal.SIGKILL if kill else signal.SIGTERM)
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        if self._process is not None:
            end_process(self._process, sig, DEFAULT_STOP_TIMEOUT_S)
            self._process = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._http.close()

    def query(self, database: str | None, influxql: str) -> dict[str, Any]:
        """Run InfluxQL through ``POST /query`` (times as ns epochs); raise ``RuntimeError`` on any error."""
        params = {"q": influxql, "epoch": "ns"}
        if database is not None:
            params["db"] = database
        response = self._http.post(f"{self.url}/query", params=params)
        body: dict[str, Any] = response.json()
        errors = [r["error"] for r in body.get("results", []) if "error" in r]
        if response.status_code != 200 or "error" in body or errors:
            raise RuntimeError(f"InfluxQL {influxql!r} failed ({response.status_code}): {body}")
        return body

    def write(self, database: str, lines: str, *, precision: str = "ns") -> None:
        """Write line protocol through ``POST /write``; raise ``RuntimeError`` unless InfluxDB answers 204."""
        response = self._http.post(
            f"{self.url}/write", params={"db": database, "precision": precision}, content=lines.encode()
        )
        if response.status_code != 204:
            raise RuntimeError(f"write to {database} failed ({response.status_code}): {response.text}")

    def create_database(self, name: str) -> None:
        self.query(None, f'CREATE DATABASE "{_quote_ident(name)}"')

    def drop_database(self, name: str) -> None:
        self.query(None, f'DROP DATABASE "{_quote_ident(name)}"')


def _quote_ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')
