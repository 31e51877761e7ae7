"""``floorgate probe`` against real pymodbus servers on 127.0.0.1: the SDM630 simulator (Modbus TCP), RTU frames
over TCP, an RTU line over a pair of pseudo-terminals; Modbus exceptions, silence and refused connections.

The servers run in an event loop of their own thread, as a device would, while the probe (a synchronous pymodbus
client, as on the command line) runs in the test's thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus import Point
from protocols.sim.modbus_devices import SDM630_POINTS, Sdm630Model, start_modbus_tcp
from tools.probe import register

pytestmark = pytest.mark.integration

T = TypeVar("T")
FIXED = {
    "voltage_l1": 230.1, "voltage_l2": 231.0, "voltage_l3": 229.5, "current_l1": 10.0, "current_l2": 12.5,
    "current_l3": 8.0, "power_l1": 2301.0, "power_l2": 2887.5, "power_l3": 1836.0, "total_power": 7024.5,
    "frequency": 50.0, "import_energy": 12345.6, "export_energy": 17.3, "total_energy": 12362.9,
}  # fmt: skip


class FixedMeter:
    """An SDM630 whose values do not move, so that the table can be checked digit for digit."""

    @property
    def points(self) -> tuple[Point, ...]:
        return SDM630_POINTS

    def sample(self, now_s: float) -> dict[str, float]:
        return dict(FIXED)


class LoopThread:
    """An event loop in a thread of its own, for the servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, make: Callable[[], Awaitable[T]], timeout_s: float = 10.0) -> T:
        async def wrapper() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


@contextlib.contextmanager
def _simulator(loop_thread: LoopThread, devices: dict[int, Any]) -> Iterator[int]:
    handle = loop_thread.run(lambda: start_modbus_tcp(devices, port=0))
    try:
        yield handle.port
    finally:
        loop_thread.run(handle.stop)


def _probe(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="floorgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["probe", *argv])
    code = int(args.func(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


_SECTIONS = {"registers": 0, "32-bit": 1, "64-bit": 2}


def _row(out: str, *start: str, section: str = "32-bit") -> list[str]:
    """The row of ``section`` (registers, 32-bit, 64-bit) whose first columns are ``start``, split into columns."""
    parts: list[list[str]] = [[]]
    for line in out.splitlines()[1:]:
        if line.startswith(("32-bit", "64-bit", "text ")):
            parts.append([])
        parts[-1].append(line)
    rows = [line.split() for line in parts[_SECTIONS[section]] if line.split()[: len(start)] == list(start)]
    assert len(rows) == 1, (start, out)
    return rows[0]


# ---------------------------------------------------------------------------------------------- Modbus TCP
def test_probe_shows_the_simulated_voltage(loop_thread: LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    with _simulator(loop_thread, {1: FixedMeter()}) as port:
        url = f"tcp://127.0.0.1:{port}"
        code, out, err = _probe([url, "--unit-id", "1", "--register-type", "input", "--address", "0",
                                 "--count", "10"], capsys)  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{url} unit 1: input registers 0..9 (wire 0x0000-0x0009), FC04, 10 registers"
    assert _row(out, "0", "ABCD") == ["0", "ABCD", "1130764698", "1130764698", "230.1"]  # 0x4366199A
    assert _row(out, "2", "ABCD")[-1] == "231"
    assert _row(out, "4", "ABCD")[-1] == "229.5"
    assert _row(out, "6", "ABCD")[-1] == "10"
    assert _row(out, "8", "ABCD")[-1] == "12.5"
    assert _row(out, "0", section="registers")[:4] == ["0", "0x0000", "4366", "17254"]
    assert _row(out, "1", section="registers")[:4] == ["1", "0x0001", "199A", "6554"]
    assert _row(out, "0", "ABCD", section="64-bit")[-1] == "4.97647986729288e+16"  # 4366 199A 4367 0000 as float64
    assert _row(out, "0", "CDAB")[-1] != "230.1"  # the word order matters
    abcd = [line for line in lines if line.split()[1:2] == ["ABCD"] and not line.startswith("text")]
    assert len(abcd) == 9 + 7  # pairs at 0..8, quads at 0..6


def test_probe_a_moving_meter_and_a_hex_address(loop_thread: LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    with _simulator(loop_thread, {3: Sdm630Model(seed=5)}) as port:
        code, out, _ = _probe([f"tcp://127.0.0.1:{port}", "--unit-id", "3", "--register-type", "input",
                               "--address", "0x0046", "--count", "6"], capsys)  # fmt: skip
    assert code == 0
    frequency = float(_row(out, "70", "ABCD")[-1])  # 0x0046
    import_energy = float(_row(out, "72", "ABCD")[-1])
    assert 49.9 < frequency < 50.1
    assert import_energy == pytest.approx(12_345.6, abs=1.0)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--unit-id", "1", "--register-type", "holding"],
         "unit 1 FC03 (holding 0..9, wire 0x0000-0x0009): Modbus exception 0x02 (illegal data address)"),
        (["--unit-id", "1", "--register-type", "input", "--address", "0x0012", "--count", "2"],
         "unit 1 FC04 (input 18..19, wire 0x0012-0x0013): Modbus exception 0x02 (illegal data address)"),
        (["--unit-id", "9", "--register-type", "input"],
         "unit 9 FC04 (input 0..9, wire 0x0000-0x0009): Modbus exception 0x0B (gateway target device failed to "
         "respond)"),
    ],
)  # fmt: skip
def test_modbus_exception_is_one_line_and_exit_1(
    loop_thread: LoopThread, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    with _simulator(loop_thread, {1: FixedMeter()}) as port:
        url = f"tcp://127.0.0.1:{port}"
        code, out, err = _probe([url, *argv], capsys)
    assert (code, out) == (1, "")
    assert err == f"floorgate probe: {url} {error}\n"


def test_no_answer_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A TCP peer that accepts the connection (the kernel does) but never answers."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        code, out, err = _probe([url, "--unit-id", "5", "--register-type", "input", "--timeout-s", "0.3"], capsys)
        elapsed = time.monotonic() - started
    assert (code, out) == (1, "")
    assert err.startswith(
        f"floorgate probe: {url} unit 5 FC04 (input 0..9, wire 0x0000-0x0009): no answer within 0.3 s"
    )
    assert err.count("\n") == 1
    assert elapsed < 5


def test_refused_connection_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    code, out, err = _probe([f"tcp://127.0.0.1:{port}", "--timeout-s", "0.5"], capsys)
    assert (code, out) == (1, "")
    assert err == (
        f"floorgate probe: tcp://127.0.0.1:{port} unit 1 FC03 (holding 0..9, wire 0x0000-0x0009): cannot connect\n"
    )


# ---------------------------------------------------------------------------------------------- RTU framing
LAUMAS_REGISTERS = [0x0000, 0x0C00, 0x0001, 0x86A0, 0x0000, 0x3039, 0x0000, 0x0000]  # 40006..40013


def _laumas_device(unit_id: int) -> list[SimDevice]:
    return [SimDevice(unit_id, simdata=[SimData(5, values=LAUMAS_REGISTERS, datatype=DataType.REGISTERS)])]


def test_rtu_over_tcp_with_printed_addresses(loop_thread: LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    """A serial device server passing RTU frames (with CRC, no MBAP header) through TCP."""

    async def start() -> ModbusTcpServer:  # pymodbus servers belong to the loop they are made in
        server = ModbusTcpServer(_laumas_device(4), framer=FramerType.RTU, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        return server

    server = loop_thread.run(start)
    try:
        port = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"rtu-over-tcp://127.0.0.1:{port}"
        code, out, err = _probe([url, "--unit-id", "4", "--address", "40007", "--address-base", "1",
                                 "--count", "7"], capsys)  # fmt: skip
    finally:
        loop_thread.run(server.shutdown)
    assert (code, err) == (0, "")
    assert (
        out.splitlines()[0] == f"{url} unit 4: holding registers 40007..40013 (wire 0x0006-0x000C), FC03, 7 registers"
    )
    assert _row(out, "40007", section="registers")[1:5] == [
        "0x0006",
        "0C00",
        "3072",
        "3072",
    ]  # the status word: stable, net displayed
    assert _row(out, "40008", "ABCD")[2] == "100000"  # gross, uint32 high word first
    assert _row(out, "40010", "ABCD")[2] == "12345"  # net


@contextlib.contextmanager
def _serial_line() -> Iterator[tuple[str, str]]:
    """Two pseudo-terminals joined like the two ends of an RS-485 line: bytes written to one are read at the other."""
    master_a, slave_a = os.openpty()
    master_b, slave_b = os.openpty()
    stop = threading.Event()

    def relay() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([master_a, master_b], [], [], 0.05)
            for source in ready:
                try:
                    data = os.read(source, 4096)
                except OSError:
                    continue
                os.write(master_b if source == master_a else master_a, data)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield os.ttyname(slave_a), os.ttyname(slave_b)
    finally:
        stop.set()
        thread.join(5)
        for fd in (master_a, slave_a, master_b, slave_b):
            os.close(fd)


def test_rtu_on_a_serial_line(loop_thread: LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    with _serial_line() as (device_end, probe_end):

        async def start() -> ModbusSerialServer:
            server = ModbusSerialServer(_laumas_device(2), framer=FramerType.RTU, port=device_end, baudrate=19200)
            await server.serve_forever(background=True)
            return server

        server = loop_thread.run(start)
        try:
            url = f"rtu://{probe_end}?baudrate=19200&parity=N"
            code, out, err = _probe([url, "--unit-id", "2", "--address", "6", "--count", "5", "--timeout-s", "2"],
                                    capsys)  # fmt: skip
        finally:
            loop_thread.run(server.shutdown)
    assert (code, err) == (0, "")
    assert _row(out, "7", "ABCD")[2] == "100000"
    assert _row(out, "9", "ABCD")[2] == "12345"
