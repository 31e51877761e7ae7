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

This module must not import from ``tests`` or ``edge``: it is part of the installed ``central`` package.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import psycopg
from psycopg import sql

__all__ = [
    "InfluxServer",
    "MosquittoServer",
    "PostgresServer",
    "free_port",
    "require_binary",
]

LOCALHOST = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 15.0
DEFAULT_STOP_TIMEOUT_S = 10.0
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _postgres_bin_dirs() -> list[str]:
    """Debian's versioned PostgreSQL bin directories, newest major version first."""

    def major(path: str) -> int:
        version = Path(path).parent.name
        return int(version) if version.isdigit() else -1

    return sorted(glob.glob(POSTGRES_BIN_GLOB), key=major, reverse=True)


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


def _wait_for_port(port: int, *, process: subprocess.Popen[bytes] | None, timeout_s: float, what: str) -> None:
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


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group of ``process`` (started with ``start_new_session=True``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _end_process(process: subprocess.Popen[bytes], sig: signal.Signals, timeout_s: float) -> None:
    """Signal the process group and wait; escalate to SIGKILL if it does not end in time."""
    if process.poll() is None:
        _signal_group(process, sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=timeout_s)
    # Children that outlived their parent (none expected) go too.
    _signal_group(process, signal.SIGKILL)


def _processes() -> dict[int, tuple[str, int]]:
    """``{pid: (state, ppid)}`` of every process, from ``/proc`` (Linux only)."""
    table = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue  # ended while we looked
        # "pid (comm) state ppid ..." — comm may contain spaces and parentheses, so split after the last ")"
        fields = text[text.rindex(")") + 2 :].split()
        table[int(text.split(" ", 1)[0])] = (fields[0], int(fields[1]))
    return table


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not count: it holds no port, no file lock and no shared memory."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


def _remove_shared_memory(postmaster_pid_file: Path) -> None:
    """Remove the System V shared memory segment named on line 7 (``key shmid``) of a dead ``postmaster.pid``."""
    try:
        shmid = int(postmaster_pid_file.read_text().splitlines()[6].split()[1])
    except (OSError, ValueError, IndexError):
        return
    import ctypes
    import ctypes.util

    ipc_rmid = 0
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(ipc_rmid), None)  # fails harmlessly if it is gone already


class _TempServer:
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


class PostgresServer(_TempServer):
    """A throwaway PostgreSQL cluster (``initdb --no-sync``, ``fsync=off``) on 127.0.0.1.

    ``fsync=off`` only loses data when the operating system crashes, never when the server's processes are killed:
    every commit is written to the WAL (in the page cache) before it is acknowledged. ``synchronous_commit`` stays
    on for that reason, so that ``kill()`` / ``restart(kill=True)`` keep every committed transaction, as a real
    server would.

    As root, ``initdb`` and ``pg_ctl`` run as the ``postgres`` user (``runuser -u postgres --``) on a temporary
    directory owned by that user, because PostgreSQL refuses to run as root. The unix socket lives in the same
    temporary directory, so no system directory is touched.
    """

    name = "postgres"
    DEBIAN_PACKAGE = "postgresql-15"

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port=port)
        bin_dirs = _postgres_bin_dirs()
        self._initdb = require_binary("initdb", self.DEBIAN_PACKAGE, search_dirs=bin_dirs)
        self._pg_ctl = require_binary("pg_ctl", self.DEBIAN_PACKAGE, search_dirs=bin_dirs)
        require_binary("postgres", self.DEBIAN_PACKAGE, search_dirs=[str(Path(self._pg_ctl).parent)])
        self._running = False
        self._uid: int | None = None
        self._gid: int | None = None
        self._runuser: str | None = None
        if os.geteuid() == 0:
            self._runuser = require_binary("runuser", "util-linux")
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError(
                    "running as root, but there is no `postgres` user to run PostgreSQL as; "
                    f"install the Debian package `{self.DEBIAN_PACKAGE}` (it creates the user)"
                ) from exc
            self._uid, self._gid = entry.pw_uid, entry.pw_gid

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    def _run(self, args: list[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        command = args if self._runuser is None else [self._runuser, "-u", "postgres", "--", *args]
        return subprocess.run(  # noqa: S603 - our resolved server binaries, argument list, no shell
            command, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=self.directory
        )

    def start(self) -> None:
        if self._running:
            return
        directory = self.directory
        if self._uid is not None and self._gid is not None:
            os.chown(directory, self._uid, self._gid)
        if not (self.data_dir / "PG_VERSION").exists():
            result = self._run(
                [self._initdb, "--no-sync", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C",
                 "-D", str(self.data_dir)]
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        last_error = ""
        for _attempt in range(3):
            port = self._port or free_port()  # a restart keeps the port, so URLs handed out stay valid
            options = (
                f"-c fsync=off -c full_page_writes=off "
                f"-c listen_addresses={LOCALHOST} -p {port} -k {directory}"
            )
            result = self._run(
                [self._pg_ctl, "start", "-w", "-t", str(int(DEFAULT_START_TIMEOUT_S)), "-D", str(self.data_dir),
                 "-l", str(self.log_file), "-o", options]
            )
            if result.returncode == 0:
                self._port = port
                self._running = True
                return
            last_error = f"{result.stdout}\n{result.stderr}\n{_tail(self.log_file)}"
            if self._port is not None:
                break  # a fixed port that is taken will not become free by retrying
        raise RuntimeError(f"pg_ctl start failed:\n{last_error}")

    def stop(self, mode: str = "immediate") -> None:
        """Stop with ``pg_ctl stop -m <mode>``; the cluster's files and the port stay until ``close()``.

        ``immediate`` (the default) ends at once without a checkpoint, so the next ``start()`` runs crash recovery;
        ``fast`` is a clean shutdown. If ``pg_ctl`` fails, the server is killed as in ``kill()``.
        """
        if mode not in ("immediate", "fast", "smart"):
            raise ValueError(f"pg_ctl stop mode {mode!r} is not one of immediate, fast, smart")
        if not self._running:
            return
        self._running = False
        result = self._run([self._pg_ctl, "stop", "-m", mode, "-w", "-D", str(self.data_dir)])
        if result.returncode != 0:
            self._kill_cluster()

    def kill(self) -> None:
        """SIGKILL the postmaster and all its child processes at once, like a power cut.

        The data directory and the port stay; the next ``start()`` runs crash recovery. Returns only when no process
        of the cluster runs any more, so ``start()`` may follow at once.
        """
        if not self._running:
            return
        self._running = False
        self._kill_cluster()

    def _kill_cluster(self) -> None:
        pid = self.postmaster_pid
        if pid is None or not _alive(pid):
            return
        # Every backend calls setsid(), so the postmaster's process group holds only the postmaster: its children
        # are found by parent PID instead. SIGSTOP first, so that the postmaster cannot fork while we look.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        victims = [pid, *(child for child, (_state, ppid) in _processes().items() if ppid == pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + DEFAULT_STOP_TIMEOUT_S
        while any(_alive(victim) for victim in victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres: processes {victims} survived SIGKILL for {DEFAULT_STOP_TIMEOUT_S} s")
            time.sleep(0.01)
        # A power cut also ends the System V shared memory segment (PostgreSQL's small header segment), which the
        # killed postmaster could not remove; otherwise every killed cluster that is not started again leaks it.
        _remove_shared_memory(self.data_dir / "postmaster.pid")
        # The orphaned postmaster is reaped by PID 1, which some container inits do late or not at all; until then
        # its zombie keeps the PID in the stale lock files "in use" and a new postmaster refuses to start. Every
        # process of the old server is gone by now, so the stale lock files can go.
        if Path(f"/proc/{pid}").exists():
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
            (self.directory / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def restart(self, kill: bool = False) -> None:
        """``kill()`` (``kill=True``) or ``stop()``, then ``start()`` on the same port with the same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    @property
    def postmaster_pid(self) -> int | None:
        """PID of the postmaster from ``postmaster.pid`` (which a killed server leaves behind), or ``None``."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def is_running(self) -> bool:
        """Started by us, not stopped or killed since, and the postmaster process is alive."""
        pid = self.postmaster_pid
        return self._running and pid is not None and _alive(pid)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URL for ``psycopg.connect`` (no SQLAlchemy driver suffix)."""
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database``: ``postgresql+psycopg://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql+psycopg://postgres@{LOCALHOST}:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        """libpq URL of the ``postgres`` maintenance database (superuser ``postgres``, trust auth)."""
        return self.dsn("postgres")

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        self._check_name(name)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # FILE_COPY is much faster than PG 15's default WAL_LOG for small template databases.
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY file_copy").format(sql.Identifier(name))
            )
        return self.sqlalchemy_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its remaining sessions."""
        self._check_name(name)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    @staticmethod
    def _check_name(name: str) -> None:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"database name {name!r} must match {_IDENTIFIER.pattern}")


class MosquittoServer(_TempServer):
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
                _wait_for_port(port, process=self._process, timeout_s=DEFAULT_START_TIMEOUT_S, what="mosquitto")
            except RuntimeError as exc:
                _end_process(self._process, signal.SIGKILL, DEFAULT_STOP_TIMEOUT_S)
                self._process = None
                if self._port is not None:  # fixed port (requested, or kept for a restart): no retry elsewhere
                    raise RuntimeError(f"{exc}\n{_tail(self.log_file)}") from None
                continue
            self._port = port
            return
        raise RuntimeError(f"mosquitto did not start:\n{_tail(self.log_file)}")

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
            _end_process(self._process, sig, DEFAULT_STOP_TIMEOUT_S)
            self._process = None


class InfluxServer(_TempServer):
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
                _end_process(self._process, signal.SIGKILL, DEFAULT_STOP_TIMEOUT_S)
                self._process = None
                last_error = f"{exc}\n{_tail(self.log_file)}"
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
            _end_process(self._process, sig, DEFAULT_STOP_TIMEOUT_S)
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
