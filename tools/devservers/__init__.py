"""Start throwaway servers on 127.0.0.1 for tests and benchmarks: PostgreSQL, Mosquitto and InfluxDB 1.x.

Used by the pytest fixtures (``tests/conftest.py``, re-exported by ``tests/services.py``) and by benchmarks such as
``floorgate bench sync``. Nothing here is for production: the servers run without authentication, PostgreSQL
with ``fsync=off``, and everything lives in a temporary directory.

Every server listens on 127.0.0.1 on a free random port, keeps all its files in its own temporary directory and
is torn down completely by ``close()`` (or by leaving the ``with`` block), also when a test failed::

    with PostgresServer() as pg, MosquittoServer() as broker, InfluxServer() as influx:
        url = pg.create_database("demo")       # postgresql+psycopg://postgres@127.0.0.1:PORT/demo
        broker.restart(kill=True)              # SIGKILL, then start again on the same port and persistence dir
        pg.restart(kill=True)                  # SIGKILL the postmaster and its backends; crash recovery on start
        influx.create_database("metrics")

A missing server binary is an error, never a reason to skip: ``require_binary`` raises a ``RuntimeError`` naming
the Debian package to install (``scripts/ensure-services.sh`` installs all of them). PostgreSQL's server binaries
are looked up in ``/usr/lib/postgresql/<version>/bin`` (newest first) as well as on ``PATH``, since Debian does not
put ``initdb`` / ``pg_ctl`` on ``PATH``.

Lifecycle of every class: ``start()`` → ``stop()`` (process ends, files stay, ``start()`` may run again) →
``close()`` (stops and deletes the temporary directory). For fault injection every class also has ``kill()``
(SIGKILL of all the server's processes at once, files stay) and ``restart(kill=False)``; a server that was started
once keeps its port across ``stop()`` / ``kill()`` / ``start()``, so URLs handed out stay valid, and keeps its data
until ``close()``. Servers are started in their own session so that a stop can signal the whole process group.

The servers are ``tools.devservers.postgres.PostgresServer``, ``tools.devservers.mosquitto.MosquittoServer`` and
``tools.devservers.influx.InfluxServer``; this module holds what they share (``free_port``, ``require_binary``, the
process handling and the ``TempServer`` lifecycle). Nothing here imports from ``tests``, ``edge`` or ``central``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

LOCALHOST = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 15.0
DEFAULT_STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(name: str, debian_package: str, *, search_dirs: Sequence[str] = ()) -> str:
    """Return the absolute path of the program ``name``, or raise ``RuntimeError`` saying what to install.

    ``search_dirs`` are tried first, then ``PATH`` and the sbin directories (which are not on every ``PATH``).
    """
    for directory in search_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    found = shutil.which(name, path=path)
    if found is not None:
        return found
    where = "PATH" + "".join(f", {d}" for d in search_dirs)
    raise RuntimeError(
        f"`{name}` was not found (looked in {where}). These tests start a real server and need it: install the "
        f"Debian package `{debian_package}` (apt-get install -y --no-install-recommends {debian_package}) "
        f"or run scripts/ensure-services.sh as root."
    )


def wait_for_port(port: int, *, process: subprocess.Popen[bytes] | None, timeout_s: float, what: str) -> None:
    """Block until 127.0.0.1:port accepts a TCP connection; fail early if ``process`` has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {LOCALHOST}:{port} within {timeout_s:.0f} s")
        time.sleep(0.01)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group of ``process`` (started with ``start_new_session=True``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def end_process(process: subprocess.Popen[bytes], sig: signal.Signals, timeout_s: float) -> None:
    """Signal the process group and wait; escalate to SIGKILL if it does not end in time."""
    if process.poll() is None:
        signal_group(process, sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait(timeout=timeout_s)
    # Children that outlived their parent (none expected) go too.
    signal_group(process, signal.SIGKILL)


class TempServer:
    """Shared parts: a temporary directory, context-manager protocol, ``close()``."""

    name = "server"

    def __init__(self, *, port: int | None = None) -> None:
        self._requested_port = port
        self._port: int | None = port
        self._tmp: Path | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._port

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def directory(self) -> Path:
        """The temporary directory holding the server's configuration, data and log."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"floorgate-{self.name}-"))
        return self._tmp

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server and delete its temporary directory."""
        try:
            self.stop()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            self._port = self._requested_port

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
