"""Modbus RTU on a simulated serial line with real wire time, RTU over TCP, and the scale simulators on real ptys.

Everything is real: pseudo-terminals bridged by ``PtyLink``, pymodbus's serial server on one end and pymodbus's
``AsyncModbusSerialClient`` (or plain pyserial, to look at the bytes) on the other, TCP sockets on 127.0.0.1, and
``floorgate simulate`` in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from protocols import cli
from protocols.crc import append_crc, check_crc
from protocols.modbus import Point, decode_block, plan_reads
from protocols.sartorius import MODEL, PRINT, TARE, SbiWeight, parse_sbi, parse_sbi_text
from protocols.sim.modbus_devices import (
    LAUMAS_TLU_POINTS,
    SDM120_POINTS,
    SDM630_POINTS,
    SIWAREX_WP_POINTS,
    TH_PROBE_POINTS,
    LaumasStatus,
    LaumasTluModel,
    Sdm120Model,
    Sdm630Model,
    SiwarexStatus,
    SiwarexWpModel,
    ThProbeModel,
    start_modbus_tcp,
)
from protocols.sim.modbus_rtu import start_modbus_rtu, start_modbus_rtu_over_tcp
from protocols.sim.ptylink import PtyLink
from protocols.sim.sartorius import PtyServer as SbiPtyServer
from protocols.sim.sartorius import SartoriusScale
from protocols.sim.toledo import PtyServer as ToledoPtyServer
from protocols.sim.toledo import ToledoIndicator
from protocols.sim.toledo import serve_tcp as serve_toledo_tcp
from protocols.toledo import ToledoFramer, decode_frame

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IO_TIMEOUT_S = 5.0
NO_ANSWER_TIMEOUT_S = 0.25  # client timeout where no answer is the expected outcome
SETTLED_S = 6.0  # default load cycle: empty 3 s, on 2 s, settled 4 s, off 2 s
T = TypeVar("T")


class ManualClock:
    """A clock the test moves by hand (shared with a server running on the event loop)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=30)

    return asyncio.run(bounded())


async def _read_points(client: AsyncModbusSerialClient | AsyncModbusTcpClient, points: tuple[Point, ...],
                       unit_id: int) -> dict[str, float]:  # fmt: skip
    values: dict[str, float] = {}
    for block in plan_reads(points, max_gap=0):
        read = client.read_input_registers if block.register_type == "input" else client.read_holding_registers
        rr = await read(block.address, count=block.count, device_id=unit_id)
        assert not rr.isError(), (unit_id, block.label, rr)
        values.update(decode_block(block, rr.registers))
    return values


def _answer_bytes(points: tuple[Point, ...]) -> tuple[int, int]:
    """(request bytes, answer bytes) on the wire to read ``points``: 8 per request, 5 + 2 n per answer."""
    blocks = plan_reads(points, max_gap=0)
    return 8 * len(blocks), sum(5 + 2 * block.count for block in blocks)


# ---------------------------------------------------------------------------------------------- RTU on a line
def test_three_units_on_one_line_at_19200() -> None:
    clock = ManualClock(SETTLED_S)

    async def scenario() -> None:
        async with PtyLink(baudrate=19200) as link:
            slave_end, agent_end = link.paths
            devices = {1: Sdm630Model(seed=1), 2: ThProbeModel(seed=2), 3: LaumasTluModel(loads=[1250], epoch_s=0.0)}
            handle = await start_modbus_rtu(devices, port_path=slave_end, baudrate=19200, clock=clock)
            client = AsyncModbusSerialClient(agent_end, baudrate=19200, timeout=IO_TIMEOUT_S, retries=0)
            try:
                assert await client.connect()
                meter = await _read_points(client, SDM630_POINTS, 1)
                probe = await _read_points(client, TH_PROBE_POINTS, 2)
                scale = await _read_points(client, LAUMAS_TLU_POINTS, 3)
            finally:
                client.close()
                await handle.stop()
            assert 228.0 <= meter["voltage_l1"] <= 232.0
            assert meter["power_l2"] == pytest.approx(meter["voltage_l2"] * meter["current_l2"], rel=1e-5)
            assert 18.0 <= probe["temperature"] <= 25.0
            assert (scale["gross"], LaumasStatus(int(scale["status"]))) == (1250, LaumasStatus.STABLE)
            sent = [_answer_bytes(points) for points in (SDM630_POINTS, TH_PROBE_POINTS, LAUMAS_TLU_POINTS)]
            assert link.bytes_b_to_a == sum(request for request, _ in sent)  # every byte crossed the line once
            assert link.bytes_a_to_b == sum(answer for _, answer in sent)
            requests = sum(len(plan_reads(p, max_gap=0)) for p in (SDM630_POINTS, TH_PROBE_POINTS, LAUMAS_TLU_POINTS))
            assert (handle.requests, handle.answers, handle.ignored) == (requests, requests, 0)
            assert link.dropped_bytes == 0

    _run(scenario)


def test_request_time_follows_the_baud_rate() -> None:
    # 18 registers: request 8 bytes + answer 41 bytes = 49 bytes on the wire
    async def timings(baudrate: int, stopbits: int, repeat: int) -> tuple[list[float], float]:
        async with PtyLink(baudrate=baudrate, stopbits=stopbits) as link:
            slave_end, agent_end = link.paths
            handle = await start_modbus_rtu({1: Sdm630Model(seed=1)}, port_path=slave_end, baudrate=baudrate,
                                            stopbits=stopbits)  # fmt: skip
            client = AsyncModbusSerialClient(agent_end, baudrate=baudrate, stopbits=stopbits, timeout=IO_TIMEOUT_S,
                                             retries=0)  # fmt: skip
            took = []
            try:
                assert await client.connect()
                for _ in range(repeat):
                    started = time.monotonic()
                    rr = await client.read_input_registers(0, count=18, device_id=1)
                    took.append(time.monotonic() - started)
                    assert not rr.isError()
                    assert len(rr.registers) == 18
            finally:
                client.close()
                await handle.stop()
            return took, link.wire_time_s(8 + 5 + 2 * 18)

    async def scenario() -> None:
        fast, fast_wire = await timings(19200, 1, 8)  # 8N1, 10 bits a byte: 25.5 ms
        slow, slow_wire = await timings(9600, 2, 5)  # 8N2, 11 bits a byte: 56.1 ms
        assert fast_wire == pytest.approx(49 * 10 / 19200)
        assert slow_wire == pytest.approx(49 * 11 / 9600)
        assert min(fast) >= fast_wire  # never faster than the wire
        assert min(slow) >= slow_wire
        assert statistics.median(fast) <= fast_wire + 0.015  # and not much slower: the wire dominates
        assert statistics.median(slow) <= slow_wire + 0.015
        assert 1.8 <= statistics.median(slow) / statistics.median(fast) <= 2.6  # 2.2 on the wire

    _run(scenario)


def test_silent_and_absent_units_time_out_while_the_others_answer() -> None:
    async def scenario() -> None:
        async with PtyLink(baudrate=38400) as link:
            slave_end, agent_end = link.paths
            devices = {1: ThProbeModel(seed=1), 2: ThProbeModel(seed=2), 3: ThProbeModel(seed=3)}
            handle = await start_modbus_rtu(devices, port_path=slave_end, baudrate=38400, silent_units={2})
            client = AsyncModbusSerialClient(agent_end, baudrate=38400, timeout=NO_ANSWER_TIMEOUT_S, retries=0)
            try:
                assert await client.connect()
                for unit_id in (1, 3):
                    assert 18.0 <= (await _read_points(client, TH_PROBE_POINTS, unit_id))["temperature"] <= 25.0
                for unit_id in (2, 9):  # a dead slave and one that is not there: silence, then a timeout
                    started = time.monotonic()
                    with pytest.raises(ModbusIOException, match="No response"):
                        await client.read_input_registers(1, count=2, device_id=unit_id)
                    assert time.monotonic() - started >= NO_ANSWER_TIMEOUT_S * 0.9
                assert (await _read_points(client, TH_PROBE_POINTS, 3))["humidity"] >= 40.0  # the bus still works
                handle.faults.silent_units.discard(2)  # the slave comes back
                assert 18.0 <= (await _read_points(client, TH_PROBE_POINTS, 2))["temperature"] <= 25.0
                assert handle.ignored == 2
            finally:
                client.close()
                await handle.stop()

    _run(scenario)


def _raw_exchange(path: str, request: bytes, expect: int = 0) -> bytes:
    """Send one request with pyserial; collect ``expect`` bytes, then whatever else comes within 0.1 s."""
    with serial.Serial(path, 38400, timeout=IO_TIMEOUT_S if expect else NO_ANSWER_TIMEOUT_S) as port:
        port.write(request)
        answer = port.read(expect) if expect else b""
        port.timeout = 0.1
        return answer + port.read(64)


def test_faults_on_the_wire() -> None:
    request = append_crc(bytes.fromhex("01 04 00 01 00 02"))  # unit 1: input registers 1-2

    async def scenario() -> None:
        async with PtyLink(baudrate=38400) as link:
            slave_end, agent_end = link.paths
            handle = await start_modbus_rtu({1: ThProbeModel(seed=1)}, port_path=slave_end, baudrate=38400)
            try:
                good = await asyncio.to_thread(_raw_exchange, agent_end, request, 9)
                assert (len(good), good[:3], check_crc(good)) == (9, bytes.fromhex("01 04 04"), True)
                handle.faults.corrupt_crc_every = 1
                bad_crc = await asyncio.to_thread(_raw_exchange, agent_end, request, 9)
                assert (len(bad_crc), bad_crc[:3], check_crc(bad_crc)) == (9, good[:3], False)
                handle.faults.corrupt_crc_every = 0
                handle.faults.truncate_every = 1
                cut = await asyncio.to_thread(_raw_exchange, agent_end, request, 4)
                assert (len(cut), cut[:3]) == (4, good[:3])  # the first half, then nothing
                handle.faults.truncate_every = 0
                handle.faults.wrong_unit_every = 1
                other = await asyncio.to_thread(_raw_exchange, agent_end, request, 9)
                assert (other[0], other[1:3], check_crc(other)) == (2, good[1:3], True)  # valid frame, wrong slave
                handle.faults.wrong_unit_every = 0
                absent = append_crc(bytes.fromhex("07 04 00 01 00 02"))
                assert await asyncio.to_thread(_raw_exchange, agent_end, absent) == b""  # RS-485: silence
                broken = request[:-1] + bytes((request[-1] ^ 0x55,))
                assert await asyncio.to_thread(_raw_exchange, agent_end, broken) == b""  # bad CRC: ignored
                assert handle.faults.injected == 3
            finally:
                await handle.stop()

    _run(scenario)


def test_faulty_answers_are_errors_at_the_client_not_values() -> None:
    async def scenario() -> None:
        async with PtyLink(baudrate=38400) as link:
            slave_end, agent_end = link.paths
            handle = await start_modbus_rtu({1: ThProbeModel(seed=1), 2: ThProbeModel(seed=2)},
                                            port_path=slave_end, baudrate=38400)  # fmt: skip
            client = AsyncModbusSerialClient(agent_end, baudrate=38400, timeout=NO_ANSWER_TIMEOUT_S, retries=0)
            try:
                assert await client.connect()
                for fault in ("corrupt_crc_every", "truncate_every", "wrong_unit_every"):
                    setattr(handle.faults, fault, 2)  # answers 2, 4, ... after setting it are faulty
                    outcomes = []
                    for _ in range(4):
                        try:
                            rr = await client.read_input_registers(1, count=2, device_id=1)
                            outcomes.append("ok" if not rr.isError() and len(rr.registers) == 2 else repr(rr))
                        except ModbusIOException:
                            outcomes.append("error")
                    assert outcomes == ["ok", "error", "ok", "error"], fault
                    setattr(handle.faults, fault, 0)
                assert handle.faults.injected == 6
                assert not (await client.read_input_registers(1, count=2, device_id=2)).isError()
            finally:
                client.close()
                await handle.stop()

    _run(scenario)


def test_laumas_commands_and_broadcast_over_rtu() -> None:
    clock = ManualClock(SETTLED_S)

    async def scenario() -> None:
        async with PtyLink(baudrate=19200) as link:
            slave_end, agent_end = link.paths
            devices = {3: LaumasTluModel(loads=[1250], epoch_s=0.0), 4: LaumasTluModel(loads=[800], epoch_s=0.0)}
            handle = await start_modbus_rtu(devices, port_path=slave_end, baudrate=19200, clock=clock)
            client = AsyncModbusSerialClient(agent_end, baudrate=19200, timeout=IO_TIMEOUT_S, retries=0)
            try:
                assert await client.connect()
                for unit_id in (3, 4):
                    rr = await client.write_register(5, 2, device_id=unit_id)  # tare
                    assert (rr.isError(), rr.registers) == (False, [2])
                    values = await _read_points(client, LAUMAS_TLU_POINTS, unit_id)
                    assert LaumasStatus(int(values["status"])) == LaumasStatus.STABLE | LaumasStatus.NET_DISPLAYED
                    assert values["net"] == 0
                rr = await client.write_register(5, 77, device_id=3)
                assert (rr.isError(), rr.exception_code) == (True, 0x03)  # no such command
                rr = await client.write_register(6, 1, device_id=3)
                assert (rr.isError(), rr.exception_code) == (True, 0x02)  # the status is read-only
                rr = await client.read_holding_registers(0, count=40, device_id=3)
                assert (rr.isError(), rr.exception_code) == (True, 0x02)  # not in the map (and more than 32)
                await client.write_register(5, 3, device_id=0, no_response_expected=True)  # broadcast: gross
                await asyncio.sleep(0.05)
                for unit_id in (3, 4):
                    values = await _read_points(client, LAUMAS_TLU_POINTS, unit_id)
                    assert LaumasStatus(int(values["status"])) == LaumasStatus.STABLE
                    assert values["command"] == 3
            finally:
                client.close()
                await handle.stop()

    _run(scenario)


def test_rtu_over_tcp() -> None:
    async def scenario() -> None:
        handle = await start_modbus_rtu_over_tcp({1: ThProbeModel(seed=1), 2: Sdm120Model(seed=2)}, port=0)
        assert handle.port
        client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, framer=FramerType.RTU,
                                      timeout=NO_ANSWER_TIMEOUT_S, retries=0)  # fmt: skip
        try:
            assert await client.connect()
            assert 18.0 <= (await _read_points(client, TH_PROBE_POINTS, 1))["temperature"] <= 25.0
            meter = await _read_points(client, SDM120_POINTS, 2)
            assert 227.0 <= meter["voltage"] <= 233.0
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(1, count=2, device_id=5)  # no such unit: no answer
            handle.faults.corrupt_crc_every = 1
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(1, count=2, device_id=1)
            handle.faults.corrupt_crc_every = 0
            assert not (await client.read_input_registers(1, count=2, device_id=1)).isError()
        finally:
            client.close()
            await handle.stop()

    _run(scenario)


class _WideModel:
    """40 holding registers and the Laumas limit of 32 a request."""

    max_registers = 32
    points = tuple(Point(f"r{k}", k, "holding", "uint16") for k in range(40))

    def sample(self, now_s: float) -> dict[str, float]:
        return {f"r{k}": k for k in range(40)}


def test_modbus_tcp_reserved_registers_and_request_limit() -> None:
    clock = ManualClock()

    async def scenario() -> None:
        handle = await start_modbus_tcp({1: SiwarexWpModel(loads=[8000], epoch_s=0.0), 2: _WideModel()},
                                        port=0, clock=clock)  # fmt: skip
        client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=IO_TIMEOUT_S, retries=0)
        try:
            assert await client.connect()
            clock.now = SETTLED_S
            (block,) = plan_reads(SIWAREX_WP_POINTS, max_gap=8)  # 3004-3013, DR30 fields in between
            rr = await client.read_holding_registers(block.address, count=block.count, device_id=1)
            assert not rr.isError(), rr
            values = decode_block(block, rr.registers)
            assert (values["gross"], SiwarexStatus(int(values["status"]))) == (8000.0, SiwarexStatus.STANDSTILL)
            rr = await client.read_holding_registers(3000, count=4, device_id=1)
            assert rr.registers == [0, 0, 0, 0]
            rr = await client.write_register(3012, 0, device_id=1)
            assert (rr.isError(), rr.exception_code) == (True, 0x02)  # the model takes no writes
            rr = await client.read_holding_registers(0, count=32, device_id=2)
            assert rr.registers == list(range(32))
            rr = await client.read_holding_registers(0, count=33, device_id=2)
            assert (rr.isError(), rr.exception_code) == (True, 0x03)  # more than 32 a request
        finally:
            client.close()
            await handle.stop()

    _run(scenario)


# ---------------------------------------------------------------------------------------------- scales on ptys
def test_sartorius_on_a_pty_read_with_pyserial() -> None:
    clock = ManualClock()
    scale = SartoriusScale(loads=[Decimal("25.50")], form=22, clock=clock)

    def host(path: str) -> list[bytes]:
        with serial.Serial(path, 9600, timeout=IO_TIMEOUT_S) as port:
            port.write(PRINT + b"\r\n")
            lines = [port.readline()]
            clock.now = SETTLED_S
            port.write(TARE + PRINT)  # tare, then print: three lines
            lines += [port.readline() for _ in range(3)]
            port.write(MODEL)
            lines.append(port.readline())
            return lines

    async def scenario() -> list[bytes]:
        async with SbiPtyServer(scale) as server:
            return await asyncio.to_thread(host, server.path)

    empty, gross, tare, net, model = _run(scenario)
    assert parse_sbi(empty) == SbiWeight(Decimal("0.00"), "kg", id="G#")
    assert [parse_sbi(line) for line in (gross, tare, net)] == [
        SbiWeight(Decimal("25.50"), "kg", id="G#"),
        SbiWeight(Decimal("25.50"), "kg", id="T"),
        SbiWeight(Decimal("0.00"), "kg", id="N"),
    ]
    assert parse_sbi_text(model) == "SIM-SBI 150kg"


def test_toledo_streams_on_a_pty_at_the_line_pace() -> None:
    clock = ManualClock()
    indicator = ToledoIndicator(trucks=[24560], clock=clock, baudrate=9600)
    clock.now = SETTLED_S

    def host(path: str) -> tuple[list[bytes], float, list[bytes]]:
        framer = ToledoFramer()
        with serial.Serial(path, 9600, timeout=IO_TIMEOUT_S) as port:  # opening flushes what piled up
            started = time.monotonic()
            first = framer.feed(port.read(18 * 25))
            took = time.monotonic() - started
            port.write(b"TP")  # tare, and a print request
            later: list[bytes] = []
            while len(later) < 10:
                later += framer.feed(port.read(18))
        return first, took, later

    async def scenario() -> tuple[list[bytes], float, list[bytes]]:
        async with ToledoPtyServer(indicator) as server:
            return await asyncio.to_thread(host, server.path)

    first, took, later = _run(scenario)
    assert len(first) == 25
    assert all(decode_frame(raw).encode() == raw for raw in first + later)
    assert decode_frame(first[0]).gross == 24560
    assert 23 * 0.01875 <= took <= 25 * 0.01875 + 0.2  # 24 frame times at 9600 8N1 (the first may be waiting)
    decoded = [decode_frame(raw) for raw in later]
    assert (decoded[-1].is_net, decoded[-1].net, decoded[-1].tare) == (True, 0, 24560)
    assert sum(frame.print_request for frame in decoded) == 1


def test_toledo_over_tcp_each_client_gets_the_stream() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        indicator = ToledoIndicator(trucks=[24560], clock=clock, baudrate=19200)
        clock.now = SETTLED_S
        server = await serve_toledo_tcp(indicator, port=0)
        port = server.sockets[0].getsockname()[1]
        try:
            streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            try:
                for reader, _ in streams:
                    data = await asyncio.wait_for(reader.readexactly(18 * 5), IO_TIMEOUT_S)
                    assert [decode_frame(raw).gross for raw in ToledoFramer().feed(data)] == [24560] * 5
            finally:
                for _, writer in streams:
                    writer.close()
                    await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    _run(scenario)


# ---------------------------------------------------------------------------------------------- the command line
_LAUNCHER = """
import argparse, sys
from protocols import cli
parser = argparse.ArgumentParser(prog="floorgate")
cli.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@contextmanager
def _simulate(*argv: str) -> Iterator[str]:
    """``floorgate simulate ...`` in a subprocess; yields its first stdout line; SIGTERM at the end, exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, "simulate", *argv],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 15)
            assert ready, "simulator printed nothing within 15 s"
            yield proc.stdout.readline().strip()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_cli_laumas_as_rtu_slave_on_a_pty() -> None:
    with _simulate("laumas-tlu", "--pty", "--baudrate", "19200", "--unit-id", "3", "--seed", "1") as first:
        assert first.startswith("pty: /dev/pts/")
        client = ModbusSerialClient(first.removeprefix("pty: "), baudrate=19200, timeout=IO_TIMEOUT_S, retries=0)
        try:
            assert client.connect()
            rr = client.read_holding_registers(5, count=8, device_id=3)
            assert not rr.isError()
            (block,) = plan_reads(LAUMAS_TLU_POINTS)
            values = decode_block(block, rr.registers)
            assert LaumasStatus(int(values["status"])) & LaumasStatus.STABLE  # empty at the start
        finally:
            client.close()


def test_cli_sdm120_rtu_over_tcp_and_toledo_over_tcp() -> None:
    with _simulate("eastron-sdm120", "--rtu-over-tcp", "--listen", "tcp://127.0.0.1:0") as first:
        assert first.startswith("listening: tcp://127.0.0.1:")
        port = int(first.rsplit(":", 1)[1])

        async def meter() -> dict[str, float]:
            client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=2, retries=0)
            try:
                assert await client.connect()
                return await _read_points(client, SDM120_POINTS, 1)
            finally:
                client.close()

        assert 227.0 <= _run(meter)["voltage"] <= 233.0
    with _simulate("toledo-continuous", "--trucks", "24560") as first:
        port = int(first.rsplit(":", 1)[1])

        async def frames() -> list[bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            data = await asyncio.wait_for(reader.readexactly(18 * 3), IO_TIMEOUT_S)
            writer.close()
            await writer.wait_closed()
            return ToledoFramer().feed(data)

        assert [decode_frame(raw).gross for raw in _run(frames)] == [0, 0, 0]  # the bridge starts empty


def test_cli_sartorius_on_a_pty() -> None:
    with (
        _simulate("sartorius-sbi", "--pty", "--form", "22", "--error-every", "2") as first,
        serial.Serial(first.removeprefix("pty: "), 1200, timeout=IO_TIMEOUT_S) as port,
    ):
        port.write(PRINT)
        assert parse_sbi(port.readline()) == SbiWeight(Decimal("0.00"), "kg", id="G#")
        port.write(PRINT)
        assert port.readline() == b"Stat     Err 101    \r\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floorgate")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_names_and_aliases() -> None:
    assert set(cli.ALIASES) == {"weighbridge", "sdm630"}
    assert {"weighbridge", "sdm630", "th-probe"} <= set(cli.SIMULATORS)
    assert all(cli.canonical(alias) in cli.SIMULATORS for alias in cli.ALIASES)
    assert all(description and "\n" not in description for description in cli.SIMULATORS.values())
    profiles = ROOT / "firmware-config" / "profiles"
    for profile in profiles.glob("*.yaml"):  # every device profile has a simulator of the same name
        assert profile.stem in cli.SIMULATORS, profile.name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sdm630", "--trucks", "1000"], "--trucks applies to the scales"),
        (["weighbridge", "--unit-id", "2"], "--unit-id applies to Modbus devices"),
        (["toledo-continuous", "--rtu-over-tcp"], "--rtu-over-tcp applies to Modbus devices"),
        (["weighbridge", "--form", "22"], "--form applies to sartorius-sbi only"),
        (["laumas-tlu", "--pty", "--rtu-over-tcp"], "does not go with --pty"),
        (["laumas-tlu", "--corrupt-crc-every", "2"], "applies to Modbus RTU"),
        (["th-probe", "--baudrate", "19200"], "--baudrate applies to toledo-continuous and to Modbus devices with"),
        (["sartorius-sbi", "--parity", "E"], "--parity applies"),
    ],
)
def test_cli_run_rejects_options_that_do_not_fit(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    args = _parser().parse_args(["simulate", *argv])
    assert args.func(args) == 2
    assert message in capsys.readouterr().err
