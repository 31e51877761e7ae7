"""``floorgate probe`` without a device: target URLs, the decoding table (built with the codec), the text, options.

The reads against real pymodbus servers are in ``tests/integration/test_probe_servers.py``.
"""

from __future__ import annotations

import argparse
import struct
from typing import Any

import pytest

from tools.probe import (
    ProbeRequest,
    Target,
    build_table,
    format_table,
    parse_target,
    register,
)

VOLTAGE = [0x4366, 0x199A]  # float32 230.1, device reference (SDM630)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:5020", Target("tcp://127.0.0.1:5020", "tcp", host="127.0.0.1", port=5020)),
        ("tcp://meter.local", Target("tcp://meter.local", "tcp", host="meter.local", port=502)),
        ("rtu-over-tcp://10.0.0.5:4001", Target("rtu-over-tcp://10.0.0.5:4001", "rtu-over-tcp", host="10.0.0.5",
                                                port=4001)),
        ("rtu:///dev/ttyUSB0", Target("rtu:///dev/ttyUSB0", "rtu", device="/dev/ttyUSB0")),
        ("rtu:///dev/ttyUSB0?baudrate=2400&parity=e&stopbits=2&bytesize=7",
         Target("rtu:///dev/ttyUSB0?baudrate=2400&parity=e&stopbits=2&bytesize=7", "rtu", device="/dev/ttyUSB0",
                baudrate=2400, parity="E", stopbits=2, bytesize=7)),
    ],
)  # fmt: skip
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:502", "expected tcp://HOST:PORT, rtu-over-tcp://HOST:PORT or rtu:///dev/ttyXXX"),
        ("udp://127.0.0.1:502", "expected tcp://HOST:PORT, rtu-over-tcp"),
        ("tcp://:502", "expected tcp://HOST:PORT"),
        ("tcp://host:99999", "Port out of range"),
        ("tcp://host:502/path", "expected tcp://HOST:PORT"),
        ("rtu://", "expected rtu:///dev/ttyXXX"),
        ("rtu:///dev/ttyUSB0?baud=9600", r"unknown option 'baud' \(expected baudrate, parity, stopbits, bytesize\)"),
        ("rtu:///dev/ttyUSB0?parity=X", "expected parity N|E|O"),
        ("rtu:///dev/ttyUSB0?baudrate=fast", "must be numbers"),
    ],
)
def test_parse_target_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(text)


def _words(value: float, fmt: str) -> list[int]:
    data = struct.pack(fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def test_table_of_the_sdm630_vector() -> None:
    table = build_table([*VOLTAGE, 0x0000, 0x0000], register_type="input", wire=0)
    assert [(r.address, r.wire, r.register, r.int16, r.uint16) for r in table.registers] == [
        (0, 0, 0x4366, 17254, 17254),
        (1, 1, 0x199A, 6554, 6554),
        (2, 2, 0, 0, 0),
        (3, 3, 0, 0, 0),
    ]
    first = [r for r in table.pairs if r.address == 0]
    assert [r.word_order for r in first] == ["ABCD", "CDAB", "BADC", "DCBA"]
    by_order = {r.word_order: r.values for r in first}
    assert by_order["ABCD"]["float32"] == pytest.approx(230.1, rel=1e-7)
    assert by_order["ABCD"]["uint32"] == by_order["ABCD"]["int32"] == 0x4366199A
    assert by_order["CDAB"]["uint32"] == 0x199A4366
    assert by_order["BADC"]["uint32"] == 0x66439A19
    assert by_order["DCBA"]["uint32"] == 0x9A196643
    assert by_order["DCBA"]["int32"] == 0x9A196643 - 2**32
    assert len(table.pairs) == 3 * 4  # pairs at 0, 1, 2 in four orders
    assert len(table.quads) == 1 * 4
    assert {r.word_order: r.values["int64"] for r in table.quads}["ABCD"] == 0x4366199A00000000


def test_table_float64_in_every_order() -> None:
    registers = _words(230.1, ">d")  # 406C C333 3333 3333
    table = build_table(registers, register_type="holding", wire=100, address=40101)
    assert [r.address for r in table.registers] == [40101, 40102, 40103, 40104]
    assert [r.wire for r in table.registers] == [100, 101, 102, 103]
    assert {r.word_order: r.values["float64"] for r in table.quads}["ABCD"] == 230.1
    cdab = build_table(list(reversed(registers)), register_type="holding", wire=0)
    assert {r.word_order: r.values["float64"] for r in cdab.quads}["CDAB"] == 230.1


def test_table_text() -> None:
    table = build_table([0x5844, 0x2D30, 0x3220, 0x7631], register_type="holding", wire=0)  # "XD-02 v1"
    assert table.text == {"ABCD": "XD-02 v1", "BADC": "DX0- 21v"}
    assert [r.chars for r in table.registers] == ["XD", "-0", "2 ", "v1"]
    binary = build_table(VOLTAGE, register_type="holding", wire=0)
    assert binary.text == {"ABCD": "Cf..", "BADC": "fC.."}  # not ASCII: the bytes, non-printable as '.'


def test_format_table() -> None:
    request = ProbeRequest(parse_target("tcp://127.0.0.1:5020"), 1, "input", 0, 4)
    text = format_table(request, build_table([*VOLTAGE, 0x4367, 0x0000], register_type="input", wire=0))
    lines = text.splitlines()
    assert lines[0] == "tcp://127.0.0.1:5020 unit 1: input registers 0..3 (wire 0x0000-0x0003), FC04, 4 registers"
    assert lines[1].split() == ["address", "wire", "hex", "int16", "uint16", "chars"]
    assert lines[2].split() == ["0", "0x0000", "4366", "17254", "17254", "'Cf'"]
    row = next(line for line in lines if line.split()[:2] == ["0", "ABCD"])
    assert row.split() == ["0", "ABCD", "1130764698", "1130764698", "230.1"]
    row = next(line for line in lines if line.split()[:2] == ["2", "ABCD"])
    assert row.split()[-1] == "231"  # 0x43670000
    assert lines[-1] == "text ABCD 'Cf..Cg..'  BADC 'fC..gC..'"  # not clean ASCII: every byte, '.' if not printable


def test_format_short_range() -> None:
    request = ProbeRequest(parse_target("tcp://127.0.0.1:5020"), 7, "holding", 40001, 1, address_base=1)
    text = format_table(request, build_table([0x0041], register_type="holding", wire=0, address=40001))
    assert text.splitlines()[0] == (
        "tcp://127.0.0.1:5020 unit 7: holding registers 40001..40001 (wire 0x0000-0x0000), FC03, 1 register"
    )
    assert text.count("(the range is too short)") == 2
    assert text.splitlines()[-1] == "text ABCD 'A'  BADC 'A'"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="floorgate")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_options() -> None:
    args = _parse(["probe", "tcp://127.0.0.1:5020"])
    assert (args.unit_id, args.register_type, args.address, args.count, args.address_base, args.timeout_s) == (
        1, "holding", 0, 10, 0, 2.0,
    )  # fmt: skip
    args = _parse(["probe", "rtu:///dev/ttyUSB0?baudrate=2400", "--unit-id", "3", "--register-type", "input",
                   "--address", "0x0156", "--count", "2", "--timeout-s", "0.5"])  # fmt: skip
    assert (args.target.baudrate, args.unit_id, args.address, args.count, args.timeout_s) == (2400, 3, 0x156, 2, 0.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["probe", "modbus://x"], "expected tcp://HOST:PORT"),
        (["probe", "tcp://h:1", "--count", "126"], "126 is outside 1..125"),
        (["probe", "tcp://h:1", "--count", "0"], "0 is outside 1..125"),
        (["probe", "tcp://h:1", "--unit-id", "256"], "256 is outside 0..255"),
        (["probe", "tcp://h:1", "--address", "abc"], "'abc' is not a number"),
        (["probe", "tcp://h:1", "--register-type", "coil"], "invalid choice: 'coil'"),
        (["probe", "tcp://h:1", "--address-base", "2"], "invalid choice: 2"),
        (["probe", "tcp://h:1", "--timeout-s", "0"], "expected seconds within"),
    ],
)
def test_bad_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"address": 0, "address_base": 1}, "floorgate probe: address 0 is below address_base 1\n"),
        ({"address": 40001, "address_base": 1, "register_type": "input"},
         "floorgate probe: address 40001 is a holding register number but register_type is input (use address_base 0 "
         "and the wire address if the device really numbers it so)\n"),
        ({"address": 65530, "count": 10}, "floorgate probe: registers 65530..65539 go beyond 65535\n"),
    ],
)  # fmt: skip
def test_addresses_that_cannot_be_read_exit_2(
    options: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["probe", "tcp://127.0.0.1:1"])
    vars(args).update(options)
    assert args.func(args) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", message)


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["probe", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "in the four word orders (ABCD, CDAB, BADC, DCBA)" in text
    assert "rtu:///dev/ttyUSB0?baudrate=9600" in text
    assert "--address-base {0,1}" in text
