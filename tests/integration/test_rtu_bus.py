"""Several unit ids on one real serial line (a pty link with the wire timing of its baud rate): a dead slave does
not starve its neighbours, and garbage on the line is counted by kind and never turned into a value."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from edge.bus.connection import ModbusConnection, SerialParams
from edge.bus.scheduler import BusScheduler
from edge.devices.modbus import ModbusDriver, ModbusOptions
from edge.store.outbox import NewRecord
from protocols.sim.modbus_devices import TH_PROBE_POINTS, ThProbeModel
from protocols.sim.modbus_rtu import start_modbus_rtu
from protocols.sim.ptylink import PtyLink

pytestmark = pytest.mark.integration

BAUD = 19200


class Collector:
    def __init__(self) -> None:
        self.records: list[tuple[str, NewRecord]] = []

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        self.records.extend((stream, r) for r in records)

    def readings(self, device: str, since_ns: int = 0) -> list[NewRecord]:
        return [r for s, r in self.records if r.kind == "reading" and r.device == device and r.ts_ns >= since_ns]


def drivers(conn: ModbusConnection, sink: Collector, units: Sequence[int], interval_s: float) -> list[ModbusDriver]:
    return [ModbusDriver(f"probe-{u}", "th-probe", conn, TH_PROBE_POINTS, {"default": interval_s}, sink,
                         options=ModbusOptions(unit_id=u, retries=1, report_every_s=0.0)) for u in units]


async def test_one_dead_slave_of_five_does_not_slow_the_other_four() -> None:
    interval_s, window_s = 0.4, 6.0
    async with PtyLink(baudrate=BAUD) as link:
        sim_end, agent_end = link.paths
        sim = await start_modbus_rtu({u: ThProbeModel(seed=u) for u in range(1, 6)}, port_path=sim_end,
                                     baudrate=BAUD, silent_units={3})  # unit 3 is dead: it never answers
        sink = Collector()
        conn = ModbusConnection("rs485", "rtu", f"serial://{agent_end}", serial=SerialParams(baudrate=BAUD),
                                timeout_s=0.2)
        bus = BusScheduler("rs485", conn, drivers(conn, sink, range(1, 6), interval_s), skip_base_s=2.0)
        task = asyncio.create_task(bus.run())
        try:
            await asyncio.sleep(1.5)  # the dead one fails its first polls and starts sitting out
            start_ns = time.time_ns()
            await asyncio.sleep(window_s)
            expected = window_s / interval_s
            for u in (1, 2, 4, 5):
                got = len(sink.readings(f"probe-{u}", start_ns))
                assert got >= 0.9 * expected, f"probe-{u} polled {got} times in {window_s} s, expected {expected}"
            dead = bus.drivers["probe-3"].health
            assert dead.online is False
            assert dead.errors["timeout"] >= 3
            assert not sink.readings("probe-3")
            assert dead.skip_episodes >= 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()


@pytest.mark.parametrize(("fault", "kind"), [("corrupt_crc_every", "crc"), ("truncate_every", "framing"),
                                             ("wrong_unit_every", "wrong_unit")])
async def test_garbage_on_the_line_is_counted_by_kind_and_never_a_value(fault: str, kind: str) -> None:
    async with PtyLink(baudrate=BAUD) as link:
        sim_end, agent_end = link.paths
        sim = await start_modbus_rtu({1: ThProbeModel(seed=1)}, port_path=sim_end, baudrate=BAUD, **{fault: 3})
        sink = Collector()
        conn = ModbusConnection("rs485", "rtu", f"serial://{agent_end}", serial=SerialParams(baudrate=BAUD),
                                timeout_s=0.15)
        (driver,) = drivers(conn, sink, [1], 0.05)
        bus = BusScheduler("rs485", conn, [driver], skip_after=100)
        task = asyncio.create_task(bus.run())
        try:
            deadline = time.monotonic() + 15
            while driver.health.errors[kind] < 2 or driver.health.ok < 5:
                assert time.monotonic() < deadline, f"expected {kind} errors, got {dict(driver.health.errors)}"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
        values = [r.data["values"] for r in sink.readings("probe-1")]
        assert values
        assert all(15 <= v["temperature"] <= 30 and 30 <= v["humidity"] <= 70 for v in values), values
        assert driver.health.online is True  # a retry got a good answer each time
