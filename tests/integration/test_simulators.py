"""Simulators over real transports: a pseudo-terminal opened with pyserial, TCP sockets, a pymodbus server and
client on 127.0.0.1 with random ports, and the ``simulate`` command line in a real subprocess."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
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
from pymodbus.client import AsyncModbusTcpClient

from protocols import cli
from protocols.modbus import decode_block, plan_reads
from protocols.mtsics import WeightResponse, parse_response
from protocols.sim.modbus_devices import SDM630_POINTS, TH_PROBE_POINTS, Sdm630Model, ThProbeModel, start_modbus_tcp
from protocols.sim.weighbridge import GARBAGE_LINE, PtyServer, Weighbridge, serve_tcp

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POWER_UP = b'I4 A "0123456789"\r\n'
IO_TIMEOUT_S = 5.0
T = TypeVar("T")


class ManualClock:
    """A clock the test moves by hand (shared with a server running on the event loop)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=15)

    return asyncio.run(bounded())


# ---------------------------------------------------------------------------------------------- pty
def test_pty_power_up_line_then_si_over_pyserial() -> None:
    clock = ManualClock()
    bridge = Weighbridge(trucks=[24560], clock=clock)

    def host(path: str) -> list[bytes]:
        with serial.Serial(path, 9600, timeout=IO_TIMEOUT_S) as port:
            seen = [port.readline()]  # pyserial flushed the input on open; the line still arrives
            port.write(b"SI\r\n")
            seen.append(port.readline())
            clock.now = 6.0  # truck standing on the bridge
            port.write(b"SI\r\nS\r\n")
            seen += [port.readline(), port.readline()]
            port.write(b"I2\r\n")
            seen.append(port.readline())
        with serial.Serial(path, 9600, timeout=0.3) as again:  # the scale is already powered: nothing unasked
            seen.append(again.read(64))
            again.write(b"I4\r\n")
            seen.append(again.readline())
        return seen

    async def scenario() -> list[bytes]:
        async with PtyServer(bridge) as server:
            assert server.path.startswith("/dev/pts/")
            return await asyncio.to_thread(host, server.path)

    seen = _run(scenario)
    assert seen == [
        POWER_UP,
        b"S S          0 kg\r\n",
        b"S S      24560 kg\r\n",
        b"S S      24560 kg\r\n",
        b'I2 A "floorgate SIM-WB 60t"\r\n',
        b"",
        POWER_UP,
    ]


def test_pty_answers_garbage_and_overlong_lines_and_closes() -> None:
    bridge = Weighbridge(trucks=[24560], clock=ManualClock(), garbage_every=2)

    def host(path: str) -> list[bytes]:
        with serial.Serial(path, 9600, timeout=IO_TIMEOUT_S) as port:
            assert port.readline() == POWER_UP
            port.write(b"SI\r\nSI\r\n" + b"X" * 300 + b"\r\nSI\r\n")
            return [port.readline() for _ in range(4)]

    async def scenario() -> tuple[list[bytes], str]:
        server = PtyServer(bridge)
        path = await server.start()
        try:
            return await asyncio.to_thread(host, path), path
        finally:
            server.close()

    replies, path = _run(scenario)
    # replies in order: SI, SI (every 2nd reply garbled), the overlong line -> ES, SI (garbled)
    assert replies == [b"S S          0 kg\r\n", GARBAGE_LINE, b"ES\r\n", GARBAGE_LINE]
    assert not os.path.exists(path)


# ---------------------------------------------------------------------------------------------- TCP
async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


def test_tcp_several_clients_share_one_bridge() -> None:
    clock = ManualClock()
    bridge = Weighbridge(trucks=[24560], clock=clock)

    async def scenario() -> None:
        server = await serve_tcp(bridge, port=0)
        port = server.sockets[0].getsockname()[1]
        try:
            clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            for reader, _ in clients:
                assert await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S) == POWER_UP
            (reader_a, writer_a), (reader_b, writer_b) = clients
            clock.now = 6.0
            writer_a.write(b"T\r\n")
            assert await asyncio.wait_for(reader_a.readline(), IO_TIMEOUT_S) == b"T S      24560 kg\r\n"
            writer_b.write(b"S")  # a command split over two segments
            await writer_b.drain()
            await asyncio.sleep(0.05)
            writer_b.write(b"I\r\nI4\r\n")
            assert await asyncio.wait_for(reader_b.readline(), IO_TIMEOUT_S) == b"S S          0 kg\r\n"  # net
            assert await asyncio.wait_for(reader_b.readline(), IO_TIMEOUT_S) == POWER_UP
            for _, writer in clients:
                writer.close()
                await writer.wait_closed()
        finally:
            await _close_server(server)

    _run(scenario)


def test_tcp_real_time_truck_cycle() -> None:
    bridge = Weighbridge(trucks=[24560], time_scale=0.05)  # real clock: one truck in 0.55 s

    async def scenario() -> list[WeightResponse]:
        server = await serve_tcp(bridge, port=0)
        port = server.sockets[0].getsockname()[1]
        readings: list[WeightResponse] = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            while bridge.completed_trucks < 1:
                writer.write(b"SI\r\n")
                parsed = parse_response(await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S))
                assert isinstance(parsed, WeightResponse)
                readings.append(parsed)
                await asyncio.sleep(0.005)
            writer.close()
            await writer.wait_closed()
        finally:
            await _close_server(server)
        return readings

    readings = _run(scenario)
    statuses = {(r.status, r.value) for r in readings if r.stable}
    assert ("S", Decimal(24560)) in statuses
    assert ("S", Decimal(0)) in statuses
    assert any(r.status == "D" for r in readings)


# ---------------------------------------------------------------------------------------------- Modbus
async def _read_all(client: AsyncModbusTcpClient, points: tuple, unit_id: int) -> dict[str, float]:  # type: ignore[type-arg]
    values: dict[str, float] = {}
    for block in plan_reads(points):
        rr = await client.read_input_registers(block.address, count=block.count, device_id=unit_id)
        assert not rr.isError(), (block.label, rr)
        values.update(decode_block(block, rr.registers))
    return values


def test_modbus_sdm630_and_probe_over_real_tcp() -> None:
    clock = ManualClock()

    async def scenario() -> None:
        handle = await start_modbus_tcp({1: Sdm630Model(seed=1), 7: ThProbeModel(seed=2)}, port=0, clock=clock)
        assert handle.port != 0
        client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
        try:
            assert await client.connect()
            meter = await _read_all(client, SDM630_POINTS, 1)
            assert set(meter) == {p.name for p in SDM630_POINTS}
            for phase in (1, 2, 3):
                assert 228.0 <= meter[f"voltage_l{phase}"] <= 232.0
                assert 4.0 <= meter[f"current_l{phase}"] <= 16.0
                assert meter[f"power_l{phase}"] == pytest.approx(
                    meter[f"voltage_l{phase}"] * meter[f"current_l{phase}"], rel=1e-5
                )
            assert meter["total_power"] == pytest.approx(sum(meter[f"power_l{k}"] for k in (1, 2, 3)), rel=0.02)
            assert 49.9 <= meter["frequency"] <= 50.1
            assert meter["total_energy"] == pytest.approx(meter["import_energy"] + meter["export_energy"], rel=1e-6)

            clock.now += 3600.0  # one hour later: about 8 kWh more, and other voltages
            later = await _read_all(client, SDM630_POINTS, 1)
            assert 4.0 <= later["import_energy"] - meter["import_energy"] <= 14.0
            assert later["voltage_l1"] != meter["voltage_l1"]

            probe = await _read_all(client, TH_PROBE_POINTS, 7)
            assert 18.0 <= probe["temperature"] <= 25.0
            assert 40.0 <= probe["humidity"] <= 60.0
            assert probe["temperature"] == round(probe["temperature"], 1)
        finally:
            client.close()
            await handle.stop()

    _run(scenario)


def test_modbus_exceptions_and_unknown_unit() -> None:
    async def scenario() -> None:
        handle = await start_modbus_tcp({1: Sdm630Model(seed=1)}, port=0)
        client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
        try:
            assert await client.connect()
            cases = [
                (client.read_input_registers(0x0012, count=2, device_id=1), 0x02),  # not in the map
                (client.read_input_registers(0x0000, count=20, device_id=1), 0x02),  # runs past the block
                (client.read_input_registers(0x0200, count=1, device_id=1), 0x02),  # past the last register
                (client.read_holding_registers(0x0000, count=2, device_id=1), 0x02),  # input, not holding
                (client.write_register(0x0000, 1, device_id=1), 0x02),  # read-only
                (client.read_coils(0, count=8, device_id=1), 0x01),
            ]
            for call, code in cases:
                rr = await call
                assert rr.isError()
                assert rr.exception_code == code
            started = time.monotonic()
            rr = await client.read_input_registers(0, count=2, device_id=9)  # nobody there
            assert rr.isError()
            assert rr.exception_code == 0x0B  # gateway target device failed to respond
            assert time.monotonic() - started < 1.0
            ok = await client.read_input_registers(0, count=2, device_id=1)  # the connection still works
            assert not ok.isError()
        finally:
            client.close()
            await handle.stop()
        with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens any more
            await asyncio.open_connection("127.0.0.1", handle.port)

    _run(scenario)


def test_modbus_rejects_bad_unit_ids() -> None:
    async def scenario() -> None:
        for unit_id in (0, 248):
            with pytest.raises(ValueError, match=f"unit id {unit_id}"):
                await start_modbus_tcp({unit_id: ThProbeModel()}, port=0)

    _run(scenario)


# ---------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floorgate")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    return parser


def test_cli_parses_options() -> None:
    args = _parser().parse_args(
        ["simulate", "weighbridge", "--pty", "--time-scale", "0.5", "--trucks", "24560,18420", "--seed", "3"]
    )
    assert (args.device, args.pty, args.time_scale, args.seed) == ("weighbridge", True, 0.5, 3)
    assert args.trucks == [Decimal(24560), Decimal(18420)]
    assert args.func is cli.run
    args = _parser().parse_args(["simulate", "sdm630", "--listen", "tcp://127.0.0.1:5020", "--unit-id", "3"])
    assert (args.listen, args.unit_id) == (("127.0.0.1", 5020), 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "scale"], "invalid choice"),
        (["simulate", "sdm630", "--listen", "http://127.0.0.1:1"], "expected tcp://HOST:PORT"),
        (["simulate", "sdm630", "--listen", "tcp://127.0.0.1"], "expected tcp://HOST:PORT"),
        (["simulate", "sdm630", "--unit-id", "300"], "outside 1..247"),
        (["simulate", "weighbridge", "--trucks", "24560,abc"], "'abc' is not a number"),
        (["simulate", "weighbridge", "--time-scale", "0"], "must be a positive number"),
        (["simulate", "weighbridge", "--pty", "--listen", "tcp://127.0.0.1:1"], "not allowed with argument"),
    ],
)
def test_cli_rejects_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "sdm630", "--time-scale", "2"], "--time-scale applies to the scales"),
        (["simulate", "th-probe", "--trucks", "1000"], "--trucks applies to the scales"),
        (["simulate", "weighbridge", "--unit-id", "2"], "--unit-id applies to Modbus devices"),
    ],
)
def test_cli_run_rejects_options_that_do_not_fit(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(argv)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


def test_cli_help_describes_everything(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["simulate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("weighbridge", "sdm630", "th-probe", "--listen", "--pty", "--unit-id", "--time-scale",
                 "--trucks", "--seed", "--garbage-every", "listening: tcp://", "pty: /dev/pts/"):  # fmt: skip
        assert word in out


_LAUNCHER = """
import argparse, sys
from protocols import cli
parser = argparse.ArgumentParser(prog="floorgate")
cli.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@contextmanager
def _simulate(*argv: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``floorgate simulate ...`` in a subprocess; yields it and its first stdout line; SIGTERM at the end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, "simulate", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 15)
            assert ready, "simulator printed nothing within 15 s"
            yield proc, proc.stdout.readline().strip()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_cli_weighbridge_over_tcp_until_sigterm() -> None:
    with _simulate("weighbridge", "--listen", "tcp://127.0.0.1:0", "--trucks", "24560") as (_, first):
        assert first.startswith("listening: tcp://127.0.0.1:")
        port = int(first.rsplit(":", 1)[1])
        assert port > 0

        async def talk() -> list[bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            lines = [await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S)]
            writer.write(b"SI\r\n")
            lines.append(await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S))
            writer.close()
            await writer.wait_closed()
            return lines

        power_up, reply = _run(talk)
    assert power_up == POWER_UP
    assert reply == b"S S          0 kg\r\n"  # the first 3 s the bridge is empty


def test_cli_weighbridge_on_pty_until_sigint() -> None:
    with _simulate("weighbridge", "--pty") as (proc, first):
        assert first.startswith("pty: /dev/pts/")
        with serial.Serial(first.removeprefix("pty: "), 9600, timeout=IO_TIMEOUT_S) as port:
            assert port.readline() == POWER_UP
            port.write(b"I4\r\n")
            assert port.readline() == POWER_UP
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_cli_modbus_until_sigterm() -> None:
    with _simulate("th-probe", "--unit-id", "5", "--seed", "1") as (_, first):
        assert first.startswith("listening: tcp://127.0.0.1:")
        port = int(first.rsplit(":", 1)[1])

        async def read() -> dict[str, float]:
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            try:
                assert await client.connect()
                return await _read_all(client, TH_PROBE_POINTS, 5)
            finally:
                client.close()

        probe = _run(read)
    assert 18.0 <= probe["temperature"] <= 25.0
    assert 40.0 <= probe["humidity"] <= 60.0
