"""``floorgate bench bus``: what the bus layer costs, measured against a raw baseline in the same run.

1. **Line efficiency on a serial bus** (pseudo-terminal link with real wire timing, see
   ``protocols.sim.ptylink``): the agent's scheduler polls Modbus RTU slaves back to back at 19200 and 115200 baud;
   efficiency = wire time of the request and answer bytes / elapsed time (target ≥ 85 %).
2. **Scale on TCP**: ``floorgate edge run`` polls N Modbus TCP devices × R registers every second — decoded and
   committed to the outbox — while this process plays the devices. Reported: points/s, the agent's CPU share of
   one core and its peak RSS, next to a raw pymodbus loop (no scheduler, no outbox) reading the same devices.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from edge.store.outbox import read_stats
from protocols.modbus import Point
from protocols.sim.modbus_devices import start_modbus_tcp
from sync.signing import generate_key, public_key_text

RAW_WORKER_ENV = "FLOORGATE_BENCH_RAW_WORKER"


class _Bank:
    """A device with ``n`` int16 input registers that count up (so every poll sees new values)."""

    def __init__(self, n: int) -> None:
        self._points = tuple(Point(f"r{i}", i, "input", "int16") for i in range(n))

    @property
    def points(self) -> tuple[Point, ...]:
        return self._points

    def sample(self, now_s: float) -> dict[str, float]:
        base = int(now_s * 10) % 1000
        return {p.name: float((base + i) % 3000) for i, p in enumerate(self._points)}


def _profile(registers: int) -> dict[str, Any]:
    return {
        "profile": "bench-bank", "vendor": "floorgate", "model": "bench bank", "protocol": "modbus",
        "description": f"{registers} int16 input registers (benchmark)",
        "transport": {"kind": "tcp", "timeout_s": 2.0, "retries": 0},
        "modbus": {"address_base": 0, "max_gap": 0, "max_registers": 125},
        "poll_groups": {"fast": {"interval_s": 1.0}},
        "points": [{"name": f"r{i}", "register_type": "input", "address": i, "data_type": "int16",
                    "poll_group": "fast"} for i in range(registers)],
    }


def _measure(proc: psutil.Process, seconds: float) -> tuple[float, int]:
    """CPU share of one core over ``seconds`` and the peak RSS (bytes) of ``proc``."""
    t0 = time.monotonic()
    c0 = proc.cpu_times()
    peak = 0
    while time.monotonic() - t0 < seconds:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.2)
    c1 = proc.cpu_times()
    cpu = (c1.user + c1.system - c0.user - c0.system) / (time.monotonic() - t0)
    return cpu, peak


async def _serve(n_devices: int, registers: int) -> list[Any]:
    return [await start_modbus_tcp({1: _Bank(registers)}, port=0) for _ in range(n_devices)]


def bench_tcp(n_devices: int, registers: int, seconds: float, *, progress: bool = True) -> dict[str, float]:
    """Run the sims in a background loop of this process; the agent and the raw loop are children."""
    loop = asyncio.new_event_loop()
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sims = asyncio.run_coroutine_threadsafe(_serve(n_devices, registers), loop).result(60)
    ports = [s.port for s in sims]
    results: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="floorgate-bench-bus-") as tmp:
            d = Path(tmp)
            (d / "profiles").mkdir()
            (d / "profiles" / "bench-bank.yaml").write_text(yaml.safe_dump(_profile(registers)))
            node = {
                "node_id": "bench", "data_dir": str(d / "edge"), "profiles_dir": str(d / "profiles"),
                "broker": {"url": "mqtt://127.0.0.1:1"},  # no broker: records stay in the outbox
                "central_keys": [public_key_text(generate_key())],  # no central either: any key to start with
                "health_interval_s": 3600,
                "buses": [{"id": f"b{i}", "kind": "tcp", "address": f"tcp://127.0.0.1:{p}", "timeout_s": 2}
                          for i, p in enumerate(ports)],
                "devices": [{"id": f"d{i}", "profile": "bench-bank", "bus": f"b{i}", "report_every_s": 0.001}
                            for i in range(len(ports))],
            }
            (d / "node.yaml").write_text(yaml.safe_dump(node))
            if progress:
                print(f"  agent: {n_devices} devices × {registers} registers at 1 s for {seconds:.0f} s …", flush=True)
            agent = subprocess.Popen([sys.executable, "-m", "floorgate_cli", "--log-level", "warning", "edge", "run",
                                      "--config", str(d / "node.yaml")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            try:
                time.sleep(4)  # start-up and first polls
                _, before = read_stats(d / "edge" / "outbox.db")
                t0 = time.monotonic()
                cpu, peak = _measure(psutil.Process(agent.pid), seconds)
                _, after = read_stats(d / "edge" / "outbox.db")
                elapsed = time.monotonic() - t0
            finally:
                agent.terminate()
                agent.wait(20)
            records = after["readings"].produced - before["readings"].produced
            results.update(agent_points_s=records * registers / elapsed, agent_cpu=cpu, agent_rss_mb=peak / 2**20)
            if progress:
                print(f"  raw pymodbus loop on the same devices for {seconds:.0f} s …", flush=True)
            raw = subprocess.Popen([sys.executable, "-m", "tools.bench.bus"], stdout=subprocess.PIPE,
                                   env={**os.environ, RAW_WORKER_ENV: json.dumps({"ports": ports,
                                                                                  "registers": registers})})
            try:
                time.sleep(4)
                cpu, peak = _measure(psutil.Process(raw.pid), seconds)
            finally:
                raw.terminate()
                out, _ = raw.communicate(timeout=20)
            stats = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {"points_s": 0.0}
            results.update(raw_points_s=stats["points_s"], raw_cpu=cpu, raw_rss_mb=peak / 2**20)
    finally:
        for s in sims:
            asyncio.run_coroutine_threadsafe(s.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    return results


async def _raw_worker(ports: list[int], registers: int) -> None:
    """The baseline: one plain pymodbus client per device, one read a second, values decoded to int16."""
    import signal

    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=2, retries=0) for p in ports]
    for c in clients:
        await c.connect()
    points = 0
    t0 = time.monotonic()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def poll(c: AsyncModbusTcpClient) -> None:
        nonlocal points
        while not stop.is_set():
            t = time.monotonic()
            rr = await c.read_input_registers(0, count=registers, device_id=1)
            values = [v - 65536 if v > 32767 else v for v in rr.registers]
            points += len(values)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t)))

    tasks = [asyncio.create_task(poll(c)) for c in clients]
    await stop.wait()
    for t in tasks:
        t.cancel()
    print(json.dumps({"points_s": points / (time.monotonic() - t0)}), flush=True)


if __name__ == "__main__" and os.environ.get(RAW_WORKER_ENV):
    spec = json.loads(os.environ[RAW_WORKER_ENV])
    asyncio.run(_raw_worker(spec["ports"], spec["registers"]))


def _serial_sim_child(baudrate: int, units: int, registers: int, conn: Any) -> None:
    """Child process: the pty link with real wire timing and the RTU slaves, apart from the agent's process
    (as real slaves are); sends the agent's end of the link through ``conn``, runs until terminated."""

    async def main() -> None:
        from protocols.sim.modbus_rtu import start_modbus_rtu
        from protocols.sim.ptylink import PtyLink

        async with PtyLink(baudrate=baudrate) as link:
            sim_end, agent_end = link.paths
            await start_modbus_rtu({u: _Bank(registers) for u in range(1, units + 1)}, port_path=sim_end,
                                   baudrate=baudrate)
            conn.send((agent_end, link.byte_time_s))
            while True:
                await asyncio.sleep(0.2)
                if conn.poll():
                    conn.recv()
                    conn.send(link.bytes_a_to_b + link.bytes_b_to_a)

    asyncio.run(main())


async def _serial_run(baudrate: int, seconds: float, *, units: int = 4, registers: int = 20) -> tuple[float, int]:
    import multiprocessing

    from edge.bus.connection import ModbusConnection, SerialParams
    from edge.bus.scheduler import BusScheduler
    from edge.devices.modbus import ModbusDriver, ModbusOptions

    class _Nowhere:
        def emit(self, stream: str, records: object) -> None:
            pass

    parent, child = multiprocessing.Pipe()
    sim = multiprocessing.get_context("fork").Process(target=_serial_sim_child,
                                                      args=(baudrate, units, registers, child), daemon=True)
    sim.start()
    try:
        agent_end, byte_time_s = await asyncio.to_thread(parent.recv)

        async def line_bytes() -> int:
            parent.send("count")
            return int(await asyncio.to_thread(parent.recv))

        conn = ModbusConnection("rtu", "rtu", f"serial://{agent_end}", serial=SerialParams(baudrate=baudrate),
                                timeout_s=0.5)
        points = list(_Bank(registers).points)
        drivers = [ModbusDriver(f"u{u}", "bank", conn, points, {"default": 0.001}, _Nowhere(),
                                options=ModbusOptions(unit_id=u, retries=0, report_every_s=0.0))
                   for u in range(1, units + 1)]
        bus = BusScheduler("rtu", conn, drivers)
        task = asyncio.create_task(bus.run())
        try:
            await asyncio.sleep(1.0)  # open, first exchanges
            b0, e0, t0 = await line_bytes(), bus.stats.exchanges, time.monotonic()
            await asyncio.sleep(seconds)
            b1, e1, t1 = await line_bytes(), bus.stats.exchanges, time.monotonic()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return (b1 - b0) * byte_time_s / (t1 - t0), e1 - e0
    finally:
        sim.terminate()
        sim.join(10)


def bench_serial(*, seconds: float = 5.0, baudrates: tuple[int, ...] = (19200, 115200),
                 registers: tuple[int, ...] = (20, 100)) -> list[tuple[int, int, float, int]]:
    """(baud, registers a request, efficiency, exchanges): wire time of all bytes on the line / elapsed time.

    Every exchange carries the fixed costs of Modbus RTU — the t3.5 silence (1.75 ms above 19200 baud), the
    slave's turnaround — so short answers at high baud rates cannot reach the wire's full rate; both a short
    (20 registers) and a long (100 registers) read are measured."""
    out = []
    for baud in baudrates:
        for regs in registers:
            eff, exchanges = asyncio.run(_serial_run(baud, seconds, registers=regs))
            out.append((baud, regs, eff, exchanges))
    return out
