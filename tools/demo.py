"""``floorgate demo``: the whole system on one machine with embedded defaults, and a live view of what flows.

    simulators (in this process)      weighbridge (MT-SICS over TCP), SDM630 meter and T/H probe (Modbus TCP)
    broker                            mosquitto when it is installed, else amqtt embedded in this process
    central (child process)           API on 127.0.0.1:8000 + ingest, SQLite database, SQLite metrics store, a fleet
                                      CA in the data dir that binds the node's signing key (verify-alibi trusts it)
    edge agent (child process)        polls the simulators, outbox in the data dir, syncs over MQTT

Central and the edge agent run as their own ``floorgate`` processes, as they would on two machines (and because
``edge`` never imports ``central``). Everything binds to 127.0.0.1. The API is open read-only without login here.

The demo owns its children: Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop them in order; if the demo dies
without that chance (SIGKILL, a crash), Linux sends each child SIGTERM through ``PR_SET_PDEATHSIG``, so no broker,
central or agent is left holding its port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from edge.store.outbox import read_stats
from protocols.sim.modbus_devices import Sdm630Model, ThProbeModel, start_modbus_tcp
from protocols.sim.weighbridge import Weighbridge, serve_tcp
from sync.signing import load_or_create_private_key, public_key_text
from sync.streams import STREAMS

NODE_ID = "demo-node"
DEFAULT_API_PORT = 8000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole system on this machine and show what flows",
        description="Start simulated devices, a broker, central (SQLite) and one edge agent on 127.0.0.1 and "
        "print a live view: records produced → buffered → acknowledged → stored, per stream. Runs until Ctrl-C "
        "or --duration. The API is open read-only without login, bound to 127.0.0.1.",
    )
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="central API port (default 8000)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="keep databases and logs here (default: a temporary directory removed at the end)")
    p.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto",
                   help="auto: mosquitto if installed, else amqtt embedded (MQTT 3.1.1)")
    p.add_argument("--time-scale", type=float, default=0.5,
                   help="weighbridge pace: phase durations are multiplied by this (default 0.5 ≈ a truck per 7 s)")
    p.add_argument("--refresh", type=float, default=1.0, metavar="SECONDS", help="live view refresh interval")
    p.set_defaults(func=_run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


async def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _owned() -> Callable[[], None] | None:
    """``preexec_fn`` for every child: it gets SIGTERM when the demo dies, even by SIGKILL (Linux; elsewhere None).

    Each child runs in its own session (Ctrl-C in the terminal reaches only the demo, which stops them in order), so
    neither the terminal's SIGINT/SIGHUP nor a signal to the demo's group reaches them; the parent-death signal does.
    It fires when the *thread* that forked the child ends: children are started from the main thread (the event
    loop's), which lives as long as the demo. The libc handle is loaded before the fork, so the child only calls it.
    """
    if _LIBC is None:
        return None
    libc, demo_pid, sig = _LIBC, os.getpid(), int(signal.SIGTERM)  # taken in the demo, before the fork

    def die_with_demo() -> None:  # runs in the child between fork and exec
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != demo_pid:  # the demo died between fork and prctl: no death signal will come
            os._exit(1)

    return die_with_demo


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


class _Broker:
    """mosquitto as a child process, or amqtt in this event loop."""

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.port = _free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.amqtt: Any = None
        binary = _mosquitto_binary()
        if kind == "mosquitto" and binary is None:
            raise SystemExit("--broker mosquitto: mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.kind = "mosquitto" if kind == "mosquitto" or (kind == "auto" and binary) else "amqtt"
        self.protocol = "5" if self.kind == "mosquitto" else "3.1.1"
        self.binary = binary

    async def start(self) -> None:
        if self.kind == "mosquitto":
            persist = self.data_dir / "mosquitto"
            persist.mkdir(exist_ok=True)
            conf = self.data_dir / "mosquitto.conf"
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                     f"persistence_location {persist}/", f"log_dest file {self.data_dir / 'mosquitto.log'}",
                     "max_queued_messages 100000"]
            if os.geteuid() == 0:
                lines.append("user root")
            conf.write_text("\n".join(lines) + "\n")
            self.proc = subprocess.Popen([str(self.binary), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_owned())
        else:
            from amqtt.broker import Broker

            self.amqtt = Broker(
                {
                    "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
                }
            )
            await self.amqtt.start()
            return
        await _wait_port(self.port, 10)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
        if self.amqtt is not None:
            with contextlib.suppress(Exception):
                await self.amqtt.shutdown()


def _write_configs(data_dir: Path, *, broker: _Broker, api_port: int, ports: dict[str, int]) -> tuple[Path, Path]:
    central = {
        "database_url": f"sqlite:///{data_dir / 'central.db'}",
        "broker": {"url": f"mqtt://127.0.0.1:{broker.port}", "protocol": broker.protocol},
        "metrics": {"kind": "sqlite", "path": str(data_dir / "metrics.db")},
        # the demo only: read without login, on 127.0.0.1 (central refuses open_read_only on any other address);
        # a fresh token key each run — there is no user until `floorgate central create-admin`
        "api": {"host": "127.0.0.1", "port": api_port, "open_read_only": True},
        "auth": {"jwt_secret": secrets.token_hex(32)},
        "device_stale_after_s": 30,
        # the fleet CA (made below with `central ca init`): it binds the node's key, so verify-alibi trusts it
        "pki": {"dir": str(data_dir / "pki")},
        # what the records' trust rests on (GET /api/v1/alerts): a chain whose end central lacks, an unbound key
        "alerts": {"rules_file": str(data_dir / "alert-rules.yaml"), "evaluate_every_s": 10},
    }
    node = {
        "node_id": NODE_ID,
        "data_dir": str(data_dir / "edge"),
        "broker": {"url": f"mqtt://127.0.0.1:{broker.port}", "protocol": broker.protocol},
        "uplink": {"ack_timeout_s": 5},
        "health_interval_s": 10,
        "http": {"listen": f"127.0.0.1:{ports['node-http']}"},
        "devices": [
            {"id": "bridge-1", "type": "mtsics-scale", "address": f"tcp://127.0.0.1:{ports['weighbridge']}",
             "interval_s": 0.3, "weighing": {"threshold": 500}},
            {"id": "meter-1", "type": "sdm630", "address": f"tcp://127.0.0.1:{ports['sdm630']}", "unit_id": 1,
             "interval_s": 2},
            {"id": "probe-1", "type": "th-probe", "address": f"tcp://127.0.0.1:{ports['th-probe']}", "unit_id": 1,
             "interval_s": 5},
        ],
    }
    central_path, node_path = data_dir / "central.yaml", data_dir / "node.yaml"
    central_path.write_text(yaml.safe_dump(central, sort_keys=False))
    (data_dir / "alert-rules.yaml").write_text(yaml.safe_dump({"rules": [
        {"name": "records-integrity", "kind": "integrity", "severity": "critical"}]}, sort_keys=False))
    node_path.write_text(yaml.safe_dump(node, sort_keys=False))
    return central_path, node_path


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    with log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "floorgate_cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_owned())


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _View:
    def __init__(self, *, tty: bool) -> None:
        self.tty = tty
        self.lines = 0

    def show(self, text: str) -> None:
        if self.tty and self.lines:
            sys.stdout.write(f"\x1b[{self.lines}F\x1b[J")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self.lines = text.count("\n") + 1 if self.tty else 0


async def _snapshot(client: httpx.AsyncClient, outbox: Path) -> str:
    try:
        epoch, stats = read_stats(outbox)
    except Exception:
        epoch, stats = "-", {}
    stored: dict[str, int] = {}
    health, last, online = "starting", "none yet", "-"
    try:
        streams = (await client.get("/api/v1/ingest/streams", params={"node_id": NODE_ID})).json()["items"]
        stored = {s["stream"]: s["acked_seq"] for s in streams if s["epoch"] == epoch}
        h = (await client.get("/health")).json()
        health = h["status"] + "".join(
            f" · {k} {'ok' if v['ok'] else 'DOWN'}" for k, v in h["dependencies"].items()
        )
        w = (await client.get("/api/v1/weighings", params={"limit": 1})).json()["items"]
        if w:
            t = w[0]["weighed_at"][11:19]
            last = f"{w[0]['device_id']} {w[0]['gross']} {w[0]['unit']} at {t} UTC (seq {w[0]['seq']})"
        devs = (await client.get("/api/v1/devices")).json()["items"]
        online = f"{sum(d['online'] for d in devs)}/{len(devs)}"
    except (httpx.HTTPError, KeyError, ValueError):
        pass
    rows = [f"  {'stream':<9} {'produced':>9} {'buffered':>9} {'acked':>9} {'stored':>9}"]
    for name in STREAMS:
        s = stats.get(name)
        if s is None:
            continue
        rows.append(f"  {name:<9} {s.produced:>9} {s.pending:>9} {s.acked:>9} {stored.get(name, 0):>9}")
    rows.append(f"  last weighing: {last}")
    rows.append(f"  devices online: {online} · central: {health}")
    return "\n".join(rows)


async def _demo(args: argparse.Namespace, data_dir: Path) -> int:
    if _port_in_use(args.api_port):
        print(f"port {args.api_port} on 127.0.0.1 is in use: stop what uses it or pass --api-port", file=sys.stderr)
        return 1
    broker = _Broker(args.broker, data_dir)
    bridge = Weighbridge(time_scale=args.time_scale, seed=7)
    ports = {"weighbridge": _free_port(), "sdm630": _free_port(), "th-probe": _free_port(), "node-http": _free_port()}
    wb_server = await serve_tcp(bridge, host="127.0.0.1", port=ports["weighbridge"])
    meter = await start_modbus_tcp({1: Sdm630Model()}, host="127.0.0.1", port=ports["sdm630"])
    probe = await start_modbus_tcp({1: ThProbeModel()}, host="127.0.0.1", port=ports["th-probe"])
    central_proc = edge_proc = None
    try:
        await broker.start()
        central_cfg, node_cfg = _write_configs(data_dir, broker=broker, api_port=args.api_port, ports=ports)
        migrate = subprocess.run(
            [sys.executable, "-m", "floorgate_cli", "central", "migrate", "--config", str(central_cfg)],
            capture_output=True, text=True, check=False, preexec_fn=_owned(),
        )
        if migrate.returncode:
            print(migrate.stdout + migrate.stderr, file=sys.stderr)
            return 1
        # the fleet CA (once per data directory): its key binds the node's signing key to the node
        if not (data_dir / "pki" / "ca.crt").exists():
            ca = subprocess.run(
                [sys.executable, "-m", "floorgate_cli", "central", "ca", "init", "--config", str(central_cfg),
                 "--name", "floorgate demo CA"],
                capture_output=True, text=True, check=False, preexec_fn=_owned(),
            )
            if ca.returncode:
                print(ca.stdout + ca.stderr, file=sys.stderr)
                return 1
        # enrolment, as an admin would do it: the node makes its key, central registers the public half (the CA
        # binds it; bindings.json and ca.crt go beside node.key) and prints its own public signing key, which the
        # node trusts (central.pub beside node.key)
        key, _ = load_or_create_private_key(data_dir / "edge" / "node.key")
        enrol = subprocess.run(
            [sys.executable, "-m", "floorgate_cli", "central", "node", "register", NODE_ID, "--public-key",
             public_key_text(key), "--config", str(central_cfg), "--out", str(data_dir / "bundle")],
            capture_output=True, text=True, check=False, preexec_fn=_owned(),
        )
        if enrol.returncode:
            print(enrol.stdout + enrol.stderr, file=sys.stderr)
            return 1
        for name in ("bindings.json", "ca.crt"):
            shutil.copyfile(data_dir / "bundle" / NODE_ID / name, data_dir / "edge" / name)
        central_keys = [line.split()[2] for line in enrol.stdout.splitlines() if line.startswith("central key ")]
        (data_dir / "edge" / "central.pub").write_text("".join(f"{k}\n" for k in central_keys), encoding="utf-8")
        central_proc = _spawn(["central", "run", "--config", str(central_cfg)], data_dir / "central.log")
        await _wait_port(args.api_port, 30)  # central's durable session exists before the first batch
        edge_proc = _spawn(["edge", "run", "--config", str(node_cfg)], data_dir / "edge.log")
        api = f"http://127.0.0.1:{args.api_port}"
        print(
            f"floorgate demo — API {api} (docs {api}/docs, open read-only without login on 127.0.0.1)\n"
            f"  broker: {broker.kind} on 127.0.0.1:{broker.port} (MQTT {broker.protocol}) · "
            f"simulators: weighbridge :{ports['weighbridge']}, SDM630 :{ports['sdm630']}, "
            f"T/H probe :{ports['th-probe']} · node health http://127.0.0.1:{ports['node-http']}/health\n"
            f"  data and logs: {data_dir} · try: curl {api}/api/v1/weighings · Ctrl-C to stop",
            flush=True,
        )
        view = _View(tty=sys.stdout.isatty())
        outbox = data_dir / "edge" / "outbox.db"
        deadline = time.monotonic() + args.duration if args.duration else None
        last_plain, last_weighing = 0.0, ""
        async with httpx.AsyncClient(base_url=api, timeout=2) as client:
            while deadline is None or time.monotonic() < deadline:
                for name, proc in (("central", central_proc), ("edge agent", edge_proc)):
                    if proc.poll() is not None:
                        log = data_dir / ("central.log" if name == "central" else "edge.log")
                        print(f"{name} exited with {proc.returncode}; see {log}:", file=sys.stderr)
                        print(log.read_text()[-2000:], file=sys.stderr)
                        return 1
                text = await _snapshot(client, outbox)
                weighing_line = next(ln for ln in text.splitlines() if "last weighing" in ln)
                # on a terminal: redraw in place; in a log or pipe: on every new weighing, else every 5 s
                if view.tty or weighing_line != last_weighing or time.monotonic() - last_plain >= 5:
                    view.show(f"[{time.strftime('%H:%M:%S')}]\n{text}")
                    last_plain, last_weighing = time.monotonic(), weighing_line
                await asyncio.sleep(args.refresh)
        return 0
    finally:
        _stop(edge_proc)
        _stop(central_proc)
        await broker.stop()
        wb_server.close()
        await meter.stop()
        await probe.stop()


async def _until_signal(args: argparse.Namespace, data_dir: Path) -> int:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) end the demo cleanly: children stopped, broker and
    simulators shut down."""
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(_demo(args, data_dir))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, main.cancel)
    try:
        return await main
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):  # after a hang-up the terminal is gone
            print("demo stopped", flush=True)
        return 0


def _run(args: argparse.Namespace) -> int:
    keep = args.data_dir is not None
    data_dir = args.data_dir.resolve() if keep else Path(tempfile.mkdtemp(prefix="floorgate-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_until_signal(args, data_dir))
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"demo data kept in {data_dir}")
