"""``floorgate demo`` owns its children: however it ends — Ctrl-C, SIGTERM, a closed terminal (SIGHUP) or SIGKILL —
no broker, central or edge agent it started is left running or holding a port (each child runs in its own session,
so only the demo itself can end them, or the kernel's parent-death signal when the demo dies)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.procs import wait_until
from tests.services import free_port

pytestmark = pytest.mark.e2e


def _gone(proc: psutil.Process) -> bool:
    """Ended: no longer there, or a zombie nobody reaps yet (after SIGKILL its parent is gone)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _port_free(port: int) -> bool:
    """A server could listen here again (as the demo's own servers bind: with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_demo_ends_every_process_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    api_port = free_port()
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "floorgate_cli", "demo", "--duration", "300", "--api-port", str(api_port),
             "--broker", "mosquitto", "--time-scale", "0.15", "--data-dir", str(tmp_path / "data")],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    started: list[psutil.Process] = []
    try:
        def banner() -> str | None:
            if demo.poll() is not None:
                raise AssertionError(f"demo exited early with {demo.returncode}:\n{out.read_text()}")
            text = out.read_text()
            return text if "Ctrl-C to stop" in text else None

        text = wait_until("the demo's banner", banner, timeout_s=90)
        ports = {
            "api": api_port,
            "broker": int(re.search(r"broker: mosquitto on 127\.0\.0\.1:(\d+)", text).group(1)),  # type: ignore[union-attr]
            "node-http": int(re.search(r"node health http://127\.0\.0\.1:(\d+)/", text).group(1)),  # type: ignore[union-attr]
            **{name: int(p) for name, p in re.findall(r"(weighbridge|SDM630|T/H probe) :(\d+)", text)},
        }
        assert len(ports) == 6, ports
        # every child up: the edge agent's own HTTP server answers (it is the last one started)
        wait_until("every port of the demo listening", lambda: all(_listening(p) for p in ports.values()),
                   timeout_s=60)

        def children() -> list[psutil.Process] | None:
            procs = psutil.Process(demo.pid).children(recursive=True)
            cmdlines = [" ".join(p.cmdline()) for p in procs]
            wanted = ("mosquitto -c", "central run", "edge run")
            return procs if all(any(w in c for c in cmdlines) for w in wanted) else None

        started = wait_until("mosquitto, central and the edge agent as the demo's children", children, timeout_s=30)
        assert len(started) == 3, [p.cmdline() for p in started]
        assert all(os.getsid(p.pid) != os.getsid(demo.pid) for p in started)  # own sessions: only the demo ends them

        t0 = time.monotonic()
        os.kill(demo.pid, sig)  # the demo alone, never its children or a group
        code = demo.wait(60)
        wait_until("every process the demo started to end", lambda: all(_gone(p) for p in started) or None,
                   timeout_s=30)
        wait_until("every port of the demo free", lambda: all(_port_free(p) for p in ports.values()), timeout_s=30)
        elapsed = time.monotonic() - t0
        print(f"{sig.name}: demo exited {code}; children and ports gone {elapsed:.1f} s after the signal")
        text = out.read_text()
        assert "Traceback" not in text, text
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:  # a clean stop, as with Ctrl-C: children stopped in order, data dir kept
            assert code == 0, text
            assert "demo stopped" in text, text
            assert "demo data kept in" in text, text
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for p in started:  # a failed run must not leave them behind for the next test
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
