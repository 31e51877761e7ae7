"""A throwaway Mosquitto broker on 127.0.0.1 for tests and benchmarks (see ``tools.devservers``)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tools.devservers import (
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    LOCALHOST,
    TempServer,
    end_process,
    free_port,
    require_binary,
    tail,
    wait_for_port,
)


class MosquittoServer(TempServer):
    """A throwaway Mosquitto broker: anonymous listener on 127.0.0.1, persistence in its temporary directory.

    ``restart()`` keeps the port and the persistence directory, so tests can check what survives a broker crash
    (``kill=True``: SIGKILL, no final snapshot) or a clean stop (SIGTERM: the snapshot is written).
    ``extra_config`` lines are appended to the generated configuration (TLS, ACLs, limits).
    """

    name = "mosquitto"
    DEBIAN_PACKAGE = "mosquitto"

    def __init__(self, *, port: int | None = None, extra_config: Sequence[str] = ()) -> None:
        super().__init__(port=port)
        self._binary = require_binary("mosquitto", self.DEBIAN_PACKAGE)
        self._extra_config = list(extra_config)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{LOCALHOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def persistence_dir(self) -> Path:
        return self.directory / "persistence"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self, port: int) -> None:
        self.persistence_dir.mkdir(exist_ok=True)
        lines = [
            f"listener {port} {LOCALHOST}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to `mosquitto`, which cannot read our 0700 temp dir
        lines.extend(self._extra_config)
        self.config_file.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        if self.is_running:
            return
        for _attempt in range(3):
            port = self._port or free_port()
            self._write_config(port)
            self._process = subprocess.Popen(  # noqa: S603 - resolved server binary, generated config
                [self._binary, "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                wait_for_port(port, process=self._process, timeout_s=DEFAULT_START_TIMEOUT_S, what="mosquitto")
            except RuntimeError as exc:
                end_process(self._process, signal.SIGKILL, DEFAULT_STOP_TIMEOUT_S)
                self._process = None
                if self._port is not None:  # fixed port (requested, or kept for a restart): no retry elsewhere
                    raise RuntimeError(f"{exc}\n{tail(self.log_file)}") from None
                continue
            self._port = port
            return
        raise RuntimeError(f"mosquitto did not start:\n{tail(self.log_file)}")

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence snapshot and exits."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: like a power cut; messages since the last snapshot are lost."""
        self._end(signal.SIGKILL)

    def restart(self, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port with the same persistence directory."""
        self._end(signal.SIGKILL if kill else signal.SIGTERM)
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        if self._process is not None:
            end_process(self._process, sig, DEFAULT_STOP_TIMEOUT_S)
            self._process = None
