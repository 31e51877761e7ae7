"""The processes of ``floorgate bench sync``: ``floorgate …`` children (agent, central) and the raw-baseline
workers (``python -m tools.bench.sync`` with their job in ``FLOORGATE_BENCH_SYNC_WORKER``), each in its own session
so that a stop ends its whole process group."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WORKER_ENV = "FLOORGATE_BENCH_SYNC_WORKER"
STALL_S = 120.0  # nothing moved this long: the run is stuck


class BenchError(Exception):
    """The run cannot go on; the message says why (and shows the component's log)."""



class Child:
    """``floorgate …`` as a child process in its own session, JSON logs to a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "floorgate_cli", "--log-level", "info", "--log-format", "json", *args]
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,  # noqa: S603
                                          stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def logged_at(self, message_prefix: str) -> float | None:
        """Wall time (epoch s) of the first log line whose message starts with ``message_prefix``."""
        if not self.log_path.exists():
            return None
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                if str(entry["msg"]).startswith(message_prefix):
                    return datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        return None

    def wait_logged(self, message_prefix: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            at = self.logged_at(message_prefix)
            if at is not None:
                return at
            self.check_alive()
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not log {message_prefix!r} within {timeout_s:.0f} s\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}\n{self.tail()}")

    def stop(self) -> None:
        stop_group(self.popen)
        self.popen = None


def stop_group(popen: subprocess.Popen[Any] | None, timeout_s: float = 20.0) -> None:
    if popen is None or popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout_s)


class Worker:
    """A raw-baseline process (``python -m tools.bench.sync`` with a job in the environment); its stdout lines
    arrive through a queue, so waiting for them can time out."""

    def __init__(self, name: str, job: dict[str, Any], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tools.bench.sync"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, start_new_session=True, env={**os.environ, WORKER_ENV: json.dumps(job)})
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self, timeout_s: float) -> str:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise BenchError(f"{self.name}: no output for {timeout_s:.0f} s\n{self._tail()}") from None
        if line is None:
            self.popen.wait(10)
            raise BenchError(f"{self.name} exited with {self.popen.returncode}\n{self._tail()}")
        return line

    def expect(self, prefix: str, timeout_s: float) -> str:
        line = self.next_line(timeout_s)
        if not line.startswith(prefix):
            raise BenchError(f"{self.name}: expected {prefix!r}, got {line!r}\n{self._tail()}")
        return line[len(prefix):].strip()

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def _tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.log_path} ---\n" + "\n".join(text.splitlines()[-30:])

    def stop(self) -> None:
        stop_group(self.popen, 10.0)
