"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks (see ``tools.devservers``)."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from tools.devservers import (
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    LOCALHOST,
    TempServer,
    free_port,
    require_binary,
    tail,
)

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _postgres_bin_dirs() -> list[str]:
    """Debian's versioned PostgreSQL bin directories, newest major version first."""

    def major(path: str) -> int:
        version = Path(path).parent.name
        return int(version) if version.isdigit() else -1

    return sorted(glob.glob(POSTGRES_BIN_GLOB), key=major, reverse=True)


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


class PostgresServer(TempServer):
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
            last_error = f"{result.stdout}\n{result.stderr}\n{tail(self.log_file)}"
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
