"""The bus scheduler against real simulators: recovery after a device restart (TCP and pty), commands ahead of
polls, staggered first polls, and a failing device that sits out instead of eating its bus's time."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from edge.bus.connection import LineConnection, ModbusConnection, SerialParams
from edge.bus.scheduler import BusScheduler
from edge.devices.modbus import ModbusDriver, ModbusOptions
from edge.devices.scale import MtSicsDriver
from edge.store.outbox import NewRecord
from protocols.sim.modbus_devices import TH_PROBE_POINTS, ThProbeModel, start_modbus_tcp
from protocols.sim.weighbridge import PtyServer, Weighbridge, serve_tcp
from tests.services import free_port

pytestmark = pytest.mark.integration


class Collector:
    """The agent's record sink, kept in memory (the outbox has its own tests)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, NewRecord]] = []

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        self.records.extend((stream, r) for r in records)

    def of(self, kind: str, device: str | None = None) -> list[NewRecord]:
        return [r for _, r in self.records if r.kind == kind and (device is None or r.device == device)]


async def until(what: str, cond, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def probe_driver(device_id: str, conn: ModbusConnection, sink: Collector, *, unit_id: int = 1,
                 interval_s: float = 0.1) -> ModbusDriver:
    return ModbusDriver(device_id, "th-probe", conn, TH_PROBE_POINTS, {"default": interval_s}, sink,
                        options=ModbusOptions(unit_id=unit_id, retries=0, report_every_s=0.0))


def statuses(sink: Collector, device: str) -> list[str]:
    return [r.data["status"] for r in sink.of("device_status", device)]


async def test_modbus_tcp_device_restart_is_recovered_without_restarting_anything() -> None:
    port = free_port()
    sim = await start_modbus_tcp({1: ThProbeModel(seed=1)}, port=port)
    sink = Collector()
    conn = ModbusConnection("gw", "tcp", f"tcp://127.0.0.1:{port}", serial=SerialParams(), timeout_s=0.3)
    bus = BusScheduler("gw", conn, [probe_driver("probe-1", conn, sink)], skip_base_s=0.5, skip_max_s=1.0,
                       reconnect_min_s=0.1, reconnect_max_s=0.5)
    task = asyncio.create_task(bus.run())
    try:
        await until("first readings", lambda: len(sink.of("reading")) >= 3)
        await sim.stop()  # the device (or the converter in front of it) reboots
        await until("offline", lambda: statuses(sink, "probe-1")[-1:] == ["offline"])
        before = len(sink.of("reading"))
        sim = await start_modbus_tcp({1: ThProbeModel(seed=2)}, port=port)
        await until("back online", lambda: statuses(sink, "probe-1")[-1:] == ["online"], timeout_s=15)
        await until("readings again", lambda: len(sink.of("reading")) >= before + 3)
        assert statuses(sink, "probe-1") == ["online", "offline", "online"]
        assert bus.stats.reconnects >= 2
        health = bus.drivers["probe-1"].health
        assert health.errors["io"] + health.errors["timeout"] >= 3
        assert health.rtt_ms_avg is not None
        assert health.rtt_ms_avg > 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()


async def test_serial_scale_on_a_pty_survives_the_scale_being_replugged(tmp_path: Path) -> None:
    link = tmp_path / "ttyScale"  # a stable name, as udev's /dev/serial/by-id gives one
    server = PtyServer(Weighbridge(time_scale=0.05, trucks=[24560, 18420, 30000]))
    os.symlink(await server.start(), link)
    sink = Collector()
    conn = LineConnection("scale-line", f"serial://{link}", serial=SerialParams(), timeout_s=0.5)
    driver = MtSicsDriver("bridge-1", conn, sink, interval_s=0.03, timeout_s=0.5, threshold=Decimal(500),
                          empty_below=None)
    bus = BusScheduler("scale-line", conn, [driver], skip_base_s=0.3, skip_max_s=0.6, reconnect_min_s=0.1,
                       reconnect_max_s=0.3)
    task = asyncio.create_task(bus.run())
    try:
        await until("a weighing", lambda: len(sink.of("weighing")) >= 1, timeout_s=15)
        server.close()  # unplugged
        await until("offline", lambda: statuses(sink, "bridge-1")[-1:] == ["offline"])
        server = PtyServer(Weighbridge(time_scale=0.05, trucks=[11120, 22220]))
        link.unlink()
        os.symlink(await server.start(), link)  # plugged in again: a new pty behind the same name
        await until("back online", lambda: statuses(sink, "bridge-1")[-1:] == ["online"], timeout_s=15)
        await until("a weighing after the replug",
                    lambda: any(r.data["gross"] in ("11120", "22220") for r in sink.of("weighing")), timeout_s=15)
        assert driver.serial_number == "0123456789"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()


async def test_commands_jump_ahead_of_polls_and_report_refusals() -> None:
    bridge = Weighbridge(time_scale=0.05, trucks=[24560])
    server = await serve_tcp(bridge, port=0)
    port = server.sockets[0].getsockname()[1]
    sink = Collector()
    conn = LineConnection("l", f"tcp://127.0.0.1:{port}", serial=SerialParams(), timeout_s=0.5)
    driver = MtSicsDriver("bridge-1", conn, sink, interval_s=0.5, timeout_s=0.5, threshold=Decimal(500),
                          empty_below=None)
    bus = BusScheduler("l", conn, [driver])
    task = asyncio.create_task(bus.run())
    try:
        await until("online", lambda: driver.health.online is True)
        t0 = time.monotonic()
        answer = await asyncio.wait_for(bus.submit("bridge-1", "weigh_now", {"reference": "T-1"}), 5)
        assert time.monotonic() - t0 < 0.45, "the command waited for the next poll slot"
        if answer["status"] == "done":  # S answers only with a stable weight: never a moving one
            weighing = sink.of("weighing")[-1]
            assert weighing.data["trigger"] == "command"
            assert weighing.data["reference"] == "T-1"
        else:
            assert answer["answer"].startswith("S I") or answer["answer"].startswith("S +")
        await until("the truck on the bridge", lambda: bridge.reading().gross_kg > 1000, timeout_s=10)
        zero = await asyncio.wait_for(bus.submit("bridge-1", "zero"), 5)
        assert zero["status"] == "refused", zero
        assert zero["answer"][:3] in ("Z I", "Z +"), zero
        with pytest.raises(Exception, match="does not support the command 'explode'"):
            await asyncio.wait_for(bus.submit("bridge-1", "explode"), 5)
        with pytest.raises(KeyError):
            bus.submit("nope", "zero")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()


async def test_first_polls_are_staggered_and_a_dead_device_sits_out() -> None:
    sim = await start_modbus_tcp({1: ThProbeModel(seed=1), 2: ThProbeModel(seed=2), 3: ThProbeModel(seed=3),
                                  4: ThProbeModel(seed=4)}, port=0)
    sink = Collector()
    conn = ModbusConnection("gw", "tcp", f"tcp://127.0.0.1:{sim.port}", serial=SerialParams(), timeout_s=0.3)
    drivers = [probe_driver(f"probe-{u}", conn, sink, unit_id=u, interval_s=0.4) for u in (1, 2, 3, 4)]
    # unit 9 is not behind the gateway: it answers exception 0x0B every time
    drivers.append(probe_driver("probe-9", conn, sink, unit_id=9, interval_s=0.4))
    bus = BusScheduler("gw", conn, drivers, skip_after=3, skip_base_s=2.0)
    task = asyncio.create_task(bus.run())
    try:
        await until("one reading per good device", lambda: {r.device for r in sink.of("reading")} >= {
            "probe-1", "probe-2", "probe-3", "probe-4"})
        await asyncio.sleep(2.0)
        first = {}
        for r in sink.of("reading"):
            first.setdefault(r.device, r.ts_ns)
        spread_s = (max(first.values()) - min(first.values())) / 1e9
        assert spread_s > 0.15, f"first polls not staggered over the interval: {first}"
        dead = bus.drivers["probe-9"].health
        assert dead.online is False
        assert dead.errors["exception_11"] >= 3
        assert dead.skip_episodes >= 1
        assert dead.polls <= 3 + 2, "a device that sits out must not be polled at the full rate"
        good = bus.drivers["probe-1"].health
        assert good.online is True
        assert good.polls >= 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
