"""The edge agent speaks systemd's notification protocol (``edge.runtime.systemd``): a real ``floorgate edge run``
process
sends ``READY=1`` (once its local /health answers), ``STATUS=…``, ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` and
``STOPPING=1`` on SIGTERM to a real unix datagram socket standing in for systemd — a path or an abstract name, as
``$NOTIFY_SOCKET`` may be either. A loop that hangs stops the pings (that is what makes systemd restart it), and
without ``$NOTIFY_SOCKET`` nothing is sent. The whole chain under a real systemd is in tests/ansible."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.runtime.systemd import Notifier, socket_address, watchdog_interval_s
from tests.downlink_support import TRUST
from tests.procs import Proc, node_yaml
from tools.devservers import free_port

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 400_000  # → a ping every 0.2 s


class NotifySocket:
    """What systemd does: a unix datagram socket bound at a path or an abstract name; collects the datagrams."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[tuple[float, list[str]]] = []  # (monotonic arrival, lines)

    def receive(self, timeout_s: float) -> list[str] | None:
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        lines = data.decode().split("\n")
        self.messages.append((time.monotonic(), lines))
        return lines

    def wait_for(self, line: str, timeout_s: float, proc: Proc) -> list[str]:
        """Messages until one carries ``line`` (exactly, or as ``KEY=`` prefix)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.receive(0.2)
            if lines is not None and any(x == line or (line.endswith("=") and x.startswith(line)) for x in lines):
                return lines
            proc.check_alive()
        raise AssertionError(f"no {line!r} within {timeout_s} s; got {self.messages}\n{proc.tail()}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_path(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    path = f"/tmp/fg-notify-{uuid.uuid4().hex[:12]}.sock"
    s = NotifySocket(path)
    yield path, s
    s.close()
    os.unlink(path)


def _agent(tmp_path: Path, env: dict[str, str], http_port: int) -> Proc:
    cfg = node_yaml(tmp_path, node_id="notify-1", broker_url=f"mqtt://127.0.0.1:{free_port()}",  # nobody listens
                    http={"listen": f"127.0.0.1:{http_port}"}, **TRUST)
    return Proc("edge", ["edge", "run", "--config", str(cfg)], tmp_path, env=env).start()


def test_ready_watchdog_and_stopping(tmp_path: Path, notify_path: tuple[str, NotifySocket]) -> None:
    path, sd = notify_path
    http_port = free_port()
    agent = _agent(tmp_path, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}, http_port)
    try:
        ready = sd.wait_for("READY=1", 30, agent)
        # READY means the local /health is up: it answers at once (the broker is away: degraded, still 200)
        r = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "degraded"
        status = next(x for x in ready if x.startswith("STATUS="))
        assert "broker away" in status, ready
        assert "0 record(s) waiting for central" in status, ready

        pings: list[float] = []
        start = time.monotonic()
        while time.monotonic() - start < 2.0:
            lines = sd.receive(1.0)
            assert lines is not None, f"the pings stopped: {sd.messages[-5:]}\n{agent.tail()}"
            if "WATCHDOG=1" in lines:
                pings.append(sd.messages[-1][0])
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 7 <= len(pings) <= 13, f"{len(pings)} pings in 2 s, expected about 10 (every 0.2 s): {gaps}"
        assert 0.15 <= statistics.median(gaps) <= 0.3, gaps
        assert max(gaps) < WATCHDOG_USEC / 1e6, f"a gap as long as the watchdog itself: {gaps}"
        assert "node notify-1: ready (told systemd; watchdog every 0.2 s)" in agent.log()

        assert agent.popen is not None
        agent.popen.terminate()
        sd.wait_for("STOPPING=1", 10, agent)
        assert agent.popen.wait(10) == 0, agent.tail()
    finally:
        agent.stop()


def test_abstract_socket_and_watchdog_for_another_pid(tmp_path: Path) -> None:
    """``@name`` is an abstract socket; ``$WATCHDOG_PID`` of another process: READY and STATUS, but no pings."""
    name = f"@fg-notify-{uuid.uuid4().hex}"
    sd = NotifySocket(socket_address(name))  # type: ignore[arg-type]
    agent = _agent(tmp_path, {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"},
                   free_port())
    try:
        sd.wait_for("READY=1", 30, agent)
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            sd.receive(0.2)
        assert not any("WATCHDOG=1" in lines for _, lines in sd.messages), sd.messages
        assert "watchdog every" not in agent.log()
    finally:
        agent.stop()
        sd.close()


async def test_a_hung_event_loop_stops_the_pings(notify_path: tuple[str, NotifySocket]) -> None:
    """The pings come from the event loop: while it is blocked for 1 s, none arrive (systemd would restart us)."""
    path, sd = notify_path
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # every 0.1 s
    assert n.watchdog_s == pytest.approx(0.1)
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            sd.receive(0.05)

    receiver = threading.Thread(target=receive)
    receiver.start()
    task = asyncio.create_task(n.keepalive())
    try:
        await asyncio.sleep(0.55)
        time.sleep(1.0)  # a blocking call on the loop: the agent hangs  # noqa: ASYNC251
        await asyncio.sleep(0.55)
    finally:
        task.cancel()
        done.set()
        receiver.join()
        n.close()
    assert all(lines == ["WATCHDOG=1"] for _, lines in sd.messages), sd.messages
    times = [t for t, _ in sd.messages]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert 12 <= len(times) <= 16, f"{len(times)} pings: expected about 6 + 1 + 6"
    assert gaps[-1] >= 0.95, f"no pause in the pings while the loop was blocked: {gaps}"
    assert gaps[-2] < 0.2, f"more than one pause: {gaps}"


def test_nothing_without_notify_socket() -> None:
    n = Notifier({"WATCHDOG_USEC": "200000"})
    assert not n.enabled
    assert n.watchdog_s is None
    assert n.ready("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert socket_address("relative/path") is None
    assert socket_address("") is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
