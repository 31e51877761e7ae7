"""Run ``floorgate`` sub-commands as real child processes in tests: simulators, the edge agent, central.

Each process logs to a file in the test's temp dir; ``Proc.fail`` puts the tail of that log into the assertion
message so a failing end-to-end test says what the component said. ``central_yaml`` and ``node_yaml`` write the
config files such a test starts them with (fast uplink retries and heartbeats; ``extra`` keys added or replaced).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

T = TypeVar("T")


class Proc:
    def __init__(self, name: str, args: list[str], log_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "floorgate_cli", "--log-level", "debug", *self.args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env} if self.env else None,
            )
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_for_line(self, prefix: str, timeout_s: float = 15) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            self.check_alive()
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not print {prefix!r} within {timeout_s} s\n{self.tail()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.log_path} ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a power cut of the process."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout_s: float = 10) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


def floorgate(args: list[str], *, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floorgate_cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def wait_until(what: str, probe: Callable[[], T | None], *, timeout_s: float, procs: list[Proc] = (),  # type: ignore[assignment]
               interval_s: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the components' logs otherwise."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as exc:  # not up yet: keep waiting
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(interval_s)
    logs = "\n".join(p.tail() for p in procs)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last probe: {last!r}\n{logs}")


def enrol(node_cfg: Path, central_cfg: Path) -> str:
    """What an admin does: make the node's key (``edge enrol``), register its public key at central (which prints
    central's public signing key), and give the node central's key (``edge enrol --central-key``). Returns the
    node's public key text."""
    made = floorgate(["edge", "enrol", "--config", str(node_cfg)])
    assert made.returncode == 0, made.stdout + made.stderr
    key = next(line.split()[-1] for line in made.stdout.splitlines() if line.startswith("public key"))
    reg = floorgate(["central", "node", "register", _node_id(node_cfg), "--public-key", key,
                     "--config", str(central_cfg)])
    assert reg.returncode == 0, reg.stdout + reg.stderr
    central_keys = [line.split()[2] for line in reg.stdout.splitlines() if line.startswith("central key ")]
    assert central_keys, reg.stdout
    trust = floorgate(["edge", "enrol", "--config", str(node_cfg),
                       *(arg for k in central_keys for arg in ("--central-key", k))])
    assert trust.returncode == 0, trust.stdout + trust.stderr
    return key


E2E_ADMIN_PASSWORD = "e2e-admin-password"  # noqa: S105 — a throwaway test database


def create_admin(central_cfg: Path, username: str = "admin", password: str = E2E_ADMIN_PASSWORD) -> None:
    """What an admin does first: ``floorgate central create-admin`` (the password read from stdin)."""
    done = subprocess.run([sys.executable, "-m", "floorgate_cli", "central", "create-admin", "--config",
                           str(central_cfg), "--username", username, "--password-stdin"], input=password + "\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def login(api: httpx.Client, username: str = "admin", password: str = E2E_ADMIN_PASSWORD) -> None:
    """Log ``api`` in (OAuth2 password flow): its later requests carry the bearer token."""
    r = api.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    api.headers["Authorization"] = f"Bearer {r.json()['access_token']}"


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def central_yaml(tmp_path: Path, *, database_url: str, broker_url: str, client_id: str, api_port: int,
                 **extra: Any) -> Path:
    """``tmp_path/central.yaml``: the database, the broker, SQLite metrics in ``tmp_path``, the API on
    127.0.0.1:``api_port`` with the tests' JWT secret."""
    from tests.api_support import TEST_JWT_SECRET

    return write_yaml(tmp_path / "central.yaml", {
        "database_url": database_url,
        "broker": {"url": broker_url, "protocol": "5", "client_id": client_id},
        "metrics": {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")},
        "api": {"host": "127.0.0.1", "port": api_port},
        "auth": {"jwt_secret": TEST_JWT_SECRET},
        **extra,
    })


def node_yaml(tmp_path: Path, *, node_id: str, broker_url: str, **extra: Any) -> Path:
    """``tmp_path/node.yaml``: data in ``tmp_path/edge``, quick retries and 1 s heartbeats, no HTTP endpoint."""
    return write_yaml(tmp_path / "node.yaml", {
        "node_id": node_id,
        "data_dir": str(tmp_path / "edge"),
        "broker": {"url": broker_url, "protocol": "5"},
        "uplink": {"ack_timeout_s": 2, "retry_min_s": 0.2, "retry_max_s": 2},
        "health_interval_s": 1,
        "heartbeat_interval_s": 1,
        "http": {"listen": None},
        **extra,
    })


def _node_id(node_cfg: Path) -> str:
    return str(yaml.safe_load(node_cfg.read_text())["node_id"])
