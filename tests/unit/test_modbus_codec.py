"""The Modbus codec: every data type in every word order against hand-computed registers, BCD, strings, masks,
bits, the rules of a point, and wire addresses. Write requests and read planning: ``test_modbus_plans.py``; round
trips encode -> decode for every type and order (hypothesis): ``test_modbus_round_trips.py``.

Vectors are written out by hand from the byte layouts in ``protocols.modbus.points`` (value bytes ABCD...,
A = most significant): e.g. uint32 0x12345678 in CDAB is the registers [0x5678, 0x1234].
"""

from __future__ import annotations

import math
import struct
from typing import Any, get_args

import pytest

from protocols.errors import FrameError
from protocols.modbus import (
    DATA_TYPES,
    WORD_ORDERS,
    DataType,
    Point,
    ReadBlock,
    WordOrder,
    decode_block,
    decode_point,
    encode_point,
    plan_reads,
    wire_address,
)
from protocols.sim.modbus_devices import SDM630_POINTS
from tests.modbus_support import decode as _decode
from tests.modbus_support import point as _p

# ---------------------------------------------------------------------------------------------- decoding table
# (data type, word order, registers as on the wire, value, extra Point fields, registers are canonical)
# canonical: encode_point(value) gives exactly these registers back.
U32 = 0x12345678  # = 305419896
U64 = 0x0123456789ABCDEF  # = 81985529216486895
DECODING: list[tuple[str, str, list[int], Any, dict[str, Any], bool]] = [
    # 8 bit: the low byte of the register; with a byte swap (BADC / DCBA) the high byte on the wire
    ("int8", "ABCD", [0x00FE], -2, {}, True),
    ("int8", "ABCD", [0x12FE], -2, {}, False),  # high byte ignored
    ("int8", "CDAB", [0x0080], -128, {}, True),
    ("int8", "BADC", [0xFE00], -2, {}, True),
    ("int8", "DCBA", [0x7F12], 127, {}, False),
    ("uint8", "ABCD", [0xAB7F], 127, {}, False),
    ("uint8", "ABCD", [0x00FF], 255, {}, True),
    ("uint8", "BADC", [0xFF00], 255, {}, True),
    # 16 bit: only AB / BA matters
    ("int16", "ABCD", [0xFF38], -200, {}, True),
    ("int16", "CDAB", [0xFF38], -200, {}, True),
    ("int16", "BADC", [0x38FF], -200, {}, True),
    ("int16", "DCBA", [0x38FF], -200, {}, True),
    ("int16", "ABCD", [0x8000], -32768, {}, True),
    ("uint16", "ABCD", [0x1234], 0x1234, {}, True),
    ("uint16", "CDAB", [0x1234], 0x1234, {}, True),
    ("uint16", "BADC", [0x3412], 0x1234, {}, True),
    ("uint16", "DCBA", [0x3412], 0x1234, {}, True),
    ("float16", "ABCD", [0x3C00], 1.0, {}, True),
    ("float16", "CDAB", [0xC000], -2.0, {}, True),
    ("float16", "BADC", [0xFF7B], 65504.0, {}, True),
    ("float16", "DCBA", [0x0038], 0.5, {}, True),
    ("bcd16", "ABCD", [0x1234], 1234, {}, True),
    ("bcd16", "BADC", [0x3412], 1234, {}, True),
    ("bcd16", "DCBA", [0x9999], 9999, {}, True),
    ("bcd16", "CDAB", [0x0000], 0, {}, True),
    # 32 bit
    ("uint32", "ABCD", [0x1234, 0x5678], U32, {}, True),
    ("uint32", "CDAB", [0x5678, 0x1234], U32, {}, True),
    ("uint32", "BADC", [0x3412, 0x7856], U32, {}, True),
    ("uint32", "DCBA", [0x7856, 0x3412], U32, {}, True),
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2, {}, True),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2, {}, True),
    ("int32", "BADC", [0xFFFF, 0xFEFF], -2, {}, True),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2, {}, True),
    ("int32", "ABCD", [0x8000, 0x0000], -(2**31), {}, True),
    ("float32", "ABCD", [0x4366, 0x199A], struct.unpack(">f", bytes.fromhex("4366199A"))[0], {}, True),  # 230.1
    ("float32", "CDAB", [0x199A, 0x4366], struct.unpack(">f", bytes.fromhex("4366199A"))[0], {}, True),
    ("float32", "BADC", [0x6643, 0x9A19], struct.unpack(">f", bytes.fromhex("4366199A"))[0], {}, True),
    ("float32", "DCBA", [0x9A19, 0x6643], struct.unpack(">f", bytes.fromhex("4366199A"))[0], {}, True),
    ("float32", "CDAB", [0x0000, 0xC2C8], -100.0, {}, True),
    ("bcd32", "ABCD", [0x1234, 0x5678], 12345678, {}, True),
    ("bcd32", "CDAB", [0x5678, 0x1234], 12345678, {}, True),
    ("bcd32", "BADC", [0x3412, 0x7856], 12345678, {}, True),
    ("bcd32", "DCBA", [0x7856, 0x3412], 12345678, {}, True),
    # 64 bit: CDAB = low word first, BADC = bytes swapped within words, DCBA = fully little-endian
    ("uint64", "ABCD", [0x0123, 0x4567, 0x89AB, 0xCDEF], U64, {}, True),
    ("uint64", "CDAB", [0xCDEF, 0x89AB, 0x4567, 0x0123], U64, {}, True),
    ("uint64", "BADC", [0x2301, 0x6745, 0xAB89, 0xEFCD], U64, {}, True),
    ("uint64", "DCBA", [0xEFCD, 0xAB89, 0x6745, 0x2301], U64, {}, True),
    ("uint64", "ABCD", [0xFFFF] * 4, 2**64 - 1, {}, True),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2, {}, True),
    ("int64", "CDAB", [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], -2, {}, True),
    ("int64", "BADC", [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], -2, {}, True),
    ("int64", "DCBA", [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF], -2, {}, True),
    ("int64", "ABCD", [0xFEDC, 0xBA98, 0x7654, 0x3211], -U64, {}, True),
    ("float64", "ABCD", [0x406C, 0xC333, 0x3333, 0x3333], 230.1, {}, True),
    ("float64", "CDAB", [0x3333, 0x3333, 0xC333, 0x406C], 230.1, {}, True),
    ("float64", "BADC", [0x6C40, 0x33C3, 0x3333, 0x3333], 230.1, {}, True),
    ("float64", "DCBA", [0x3333, 0x3333, 0x33C3, 0x6C40], 230.1, {}, True),
    ("float64", "DCBA", [0x0000, 0x0000, 0x0000, 0xF03F], 1.0, {}, True),
    # masks: applied to the raw bits before they are read as the type, then scale / offset; no shift
    ("uint16", "ABCD", [0x1234], 0x0230, {"mask": 0x0FF0}, False),
    ("uint16", "ABCD", [0xFF10], 8.0, {"mask": 0x00FF, "scale": 0.5}, False),
    ("int16", "ABCD", [0xFFFF], 4095, {"mask": 0x0FFF}, False),
    ("int16", "ABCD", [0x8001], -32767, {"mask": 0x8001}, True),
    ("uint32", "ABCD", [0xAB12, 0x3456], 0x123456, {"mask": 0x00FFFFFF}, False),
    ("uint32", "CDAB", [0x3456, 0xAB12], 0x123456, {"mask": 0x00FFFFFF}, False),
    ("bcd16", "ABCD", [0xF123], 123, {"mask": 0x0FFF}, False),  # a flag in the top nibble
    # scale and offset: raw * scale + offset
    ("int16", "ABCD", [0x00D7], 21.5, {"scale": 0.1}, True),
    ("int16", "ABCD", [0xFFDF], -3.3, {"scale": 0.1}, True),
    ("int16", "ABCD", [0x01F4], 10.0, {"scale": 0.1, "offset": -40.0}, True),
    ("uint16", "ABCD", [0x0064], 100.5, {"offset": 0.5}, True),
    ("uint32", "ABCD", [0x0001, 0x86A0], 1000.0, {"scale": 0.01}, True),
    ("bcd16", "ABCD", [0x0215], 21.5, {"scale": 0.1}, True),
    ("float32", "ABCD", [0x3F80, 0x0000], 1000.0, {"scale": 1000.0}, True),
    ("float32", "ABCD", [0x3F80, 0x0000], 1.5, {"offset": 0.5}, True),
    # bits of a register: bit 0 = least significant bit of the value
    ("bit", "ABCD", [0x0800], True, {"bit": 11}, True),
    ("bit", "ABCD", [0xF7FF], False, {"bit": 11}, False),
    ("bit", "ABCD", [0x0001], True, {"bit": 0}, True),
    ("bit", "ABCD", [0x8000], True, {"bit": 15}, True),
    ("bit", "BADC", [0x0100], True, {"bit": 0}, True),
    ("bit", "DCBA", [0x0080], True, {"bit": 15}, True),
    # strings: ASCII, NULs and spaces stripped at both ends, BADC / DCBA swap the characters of each register
    ("string", "ABCD", [0x4142, 0x4344, 0x0000], "ABCD", {"length": 3}, True),
    ("string", "ABCD", [0x2020, 0x4142, 0x2000], "AB", {"length": 3}, False),
    ("string", "CDAB", [0x4142, 0x4344], "ABCD", {"length": 2}, True),
    ("string", "BADC", [0x4241, 0x4443], "ABCD", {"length": 2}, True),
    ("string", "DCBA", [0x4241, 0x0043], "ABC", {"length": 2}, True),
    ("string", "ABCD", [0x5844, 0x2D30, 0x3220, 0x7631], "XD-02 v1", {"length": 4}, True),
    ("string", "ABCD", [0x0000], "", {"length": 1}, True),
]


@pytest.mark.parametrize(
    ("data_type", "order", "registers", "value", "extra", "canonical"),
    DECODING,
    ids=[f"{d[0]}-{d[1]}-{'-'.join(f'{r:04X}' for r in d[2])}" for d in DECODING],
)
def test_decode_table(
    data_type: str, order: str, registers: list[int], value: Any, extra: dict[str, Any], canonical: bool
) -> None:
    point = _p(data_type, order, **extra)
    decoded = _decode(point, registers)
    assert decoded == value
    assert type(decoded) is type(value)  # ints stay ints unscaled, floats, bools, str
    if canonical:
        assert encode_point(point, value) == registers


def test_the_table_covers_every_type_and_order() -> None:
    covered = {(d[0], d[1]) for d in DECODING}
    for data_type in DATA_TYPES:
        assert any(t == data_type for t, _ in covered), data_type
    for data_type in ("uint32", "int32", "float32", "bcd32", "uint64", "int64", "float64", "int16", "uint16"):
        assert {o for t, o in covered if t == data_type} == set(WORD_ORDERS), data_type


def test_literal_lists_match_the_types() -> None:
    assert set(DATA_TYPES) == set(get_args(DataType))
    assert set(WORD_ORDERS) == set(get_args(WordOrder)) == {"ABCD", "DCBA", "BADC", "CDAB"}


def test_coils_and_discrete_inputs() -> None:
    coil = Point("run", 3, "coil", "bit")
    assert (coil.count, coil.is_bits) == (1, True)
    assert decode_point(coil, [True]) is True
    assert decode_point(coil, [0]) is False
    assert encode_point(coil, True) == [1]
    assert encode_point(coil, 0) == [0]
    discrete = Point("door", 0, "discrete", "bit")
    block = ReadBlock("discrete", 0, 3, (discrete, Point("alarm", 2, "discrete", "bit")))
    assert block.function_code == 0x02
    # FC02 answers whole bytes: pymodbus returns 8 bits for 3; the padding is ignored
    padded = [True, False, False, False, False, False, False, False]
    assert decode_block(block, padded) == {"door": True, "alarm": False}
    assert decode_block(block, [False, True, True]) == {"door": False, "alarm": True}
    with pytest.raises(FrameError, match=r"expected 3 bits, got 9"):
        decode_block(block, [False] * 9)
    with pytest.raises(FrameError, match=r"expected 3 bits, got 2"):
        decode_block(block, [False] * 2)
    with pytest.raises(FrameError, match="is not 0 or 1"):
        decode_block(block, [2, 0, 0])


@pytest.mark.parametrize(
    ("point", "registers", "message"),
    [
        (_p("bcd16"), [0x12A4], r"bcd16 0x12A4 has nibble 0xA > 9"),
        (_p("bcd16"), [0xF000], r"nibble 0xF > 9"),
        (_p("bcd32", "CDAB"), [0x0000, 0x00F0], r"bcd32 0x00F00000 has nibble 0xF > 9"),
        (_p("string", length=1), [0x41C3], r"byte 0xC3 at offset 1 is not printable ASCII"),
        (_p("string", length=2), [0x4101, 0x4200], r"byte 0x01 at offset 1 is not printable ASCII"),
        (_p("string", "BADC", length=2), [0x2041, 0x0A42], r"byte 0x0A at offset 3"),
        (_p("uint16"), [0x10000], r"register 0 = 65536 is outside 0\.\.0xFFFF"),
        (_p("uint16"), [-1], r"outside 0\.\.0xFFFF"),
    ],
)
def test_undecodable_registers_are_frame_errors(point: Point, registers: list[int], message: str) -> None:
    with pytest.raises(FrameError, match=message) as info:
        _decode(point, registers)
    assert info.value.reason.startswith("Modbus holding 0x0064-")  # names the block


def test_wrong_register_count_names_the_block() -> None:
    block = plan_reads(SDM630_POINTS)[0]
    with pytest.raises(FrameError) as info:
        decode_block(block, [0] * 17)
    assert info.value.reason == "Modbus input 0x0000-0x0011: expected 18 registers, got 17"


# ---------------------------------------------------------------------------------------------- encoding errors
@pytest.mark.parametrize(
    ("point", "value", "error", "message"),
    [
        (_p("int8"), 128, ValueError, r"128 is 128 raw, outside the int8 range -128\.\.127"),
        (_p("uint8"), -1, ValueError, r"outside the uint8 range 0\.\.255"),
        (_p("int16", scale=0.1), 3276.8, ValueError, r"outside the int16 range"),
        (_p("uint64"), 2**64, ValueError, r"outside the uint64 range"),
        (_p("int64"), -(2**63) - 1, ValueError, r"outside the int64 range"),
        (_p("bcd16"), 10000, ValueError, r"outside the bcd16 range 0\.\.9999"),
        (_p("bcd32"), -1, ValueError, r"outside the bcd32 range 0\.\.99999999"),
        (_p("float16"), 70000.0, ValueError, "does not fit a float16"),
        (_p("float32"), 1e39, ValueError, "does not fit a float32"),
        (_p("float32"), 10**400, ValueError, "does not fit a float32"),
        (_p("uint16"), math.inf, ValueError, "not a finite number"),
        (_p("uint16", scale=0.1), math.nan, ValueError, "not a finite number"),
        (_p("uint16", mask=0x00FF), 0x100, ValueError, r"raw 0x100, which has bits outside mask 0xFF"),
        (_p("int16", mask=0x0FFF), -1, ValueError, r"raw 0xFFFF, which has bits outside mask 0xFFF"),
        (_p("string", length=2), "ABCDE", ValueError, r"5 characters do not fit 2 registers \(4\)"),
        (_p("string", length=2), "Grüße", ValueError, r"'ü' at 2 is not printable ASCII"),
        (_p("string", length=2), 12, TypeError, "needs str"),
        (_p("uint16"), "12", TypeError, "needs a number"),
        (_p("bit", bit=3), 2, TypeError, "needs True / False"),
        (Point("c", 0, "coil", "bit"), "on", TypeError, "needs True / False"),
    ],
)
def test_encode_rejects(point: Point, value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        encode_point(point, value)


# ---------------------------------------------------------------------------------------------- points
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"register_type": "coil"}, r"register_type 'coil' holds single bits: data_type must be 'bit', got 'uint16'"),
        ({"register_type": "discrete", "data_type": "float32"}, r"register_type 'discrete' holds single bits"),
        ({"register_type": "register"}, r"register_type 'register', expected one of \['coil'"),
        ({"data_type": "flot32"}, r"data_type 'flot32', expected one of \['int8'"),
        ({"data_type": "bit"}, r"data_type 'bit' on a holding register needs bit 0\.\.15"),
        ({"data_type": "bit", "bit": 16}, r"bit 16 outside 0\.\.15"),
        ({"register_type": "coil", "data_type": "bit", "bit": 0}, r"bit is only for a register"),
        ({"bit": 3}, r"bit is only for a bit point on a holding or input register"),
        ({"data_type": "string"}, r"data_type 'string' needs length"),
        ({"data_type": "string", "length": 126}, r"length 126 outside 1\.\.125"),
        ({"length": 2}, r"length is only for data_type 'string'"),
        ({"data_type": "float32", "mask": 0xFF}, r"mask is only for integer and BCD types, not float32"),
        ({"data_type": "int8", "mask": 0x1FF}, r"mask 511 outside 1\.\.0xFF for int8"),
        ({"mask": 0}, r"mask 0 outside 1\.\.0xFFFF"),
        ({"data_type": "bit", "bit": 1, "scale": 2.0}, r"scale and offset are only for numbers, not bit"),
        ({"data_type": "string", "length": 1, "offset": 1.0}, r"scale and offset are only for numbers"),
        ({"data_type": "string", "length": 1, "deadband": 1.0}, r"deadband is only for numbers"),
        ({"deadband": -0.5}, r"deadband must be a number >= 0"),
        ({"scale": 0.0}, r"scale must not be 0"),
        ({"scale": math.inf}, r"scale must be a finite number"),
        ({"word_order": "ABDC"}, r"word_order 'ABDC', expected one of"),
        ({"kind": "alarm"}, r"kind 'alarm', expected one of \['metric', 'event'\]"),
        ({"poll_group": ""}, r"poll_group must be a non-empty name"),
        ({"data_type": "float64", "address": 65533}, r"address 65533 outside 0\.\.65532"),
        ({"data_type": "string", "length": 10, "address": 65530}, r"address 65530 outside 0\.\.65526"),
        ({"address": -1}, r"address -1 outside 0\.\.65535"),
        ({"name": ""}, r"name must not be empty"),
    ],
)
def test_point_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"name": "p", "address": 0, "register_type": "holding", "data_type": "uint16"}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Point(**fields)


def test_point_positional_order_and_defaults() -> None:
    point = Point("v", 2, "input", "float32", 0.5, "V")
    assert (point.name, point.address, point.register_type, point.data_type, point.scale, point.unit) == (
        "v", 2, "input", "float32", 0.5, "V",
    )  # fmt: skip
    assert (point.word_order, point.offset, point.mask, point.bit, point.length) == ("ABCD", 0.0, None, None, None)
    assert (point.kind, point.poll_group, point.deadband) == ("metric", "default", None)
    with pytest.raises(TypeError):
        Point("v", 2, "input", "float32", 0.5, "V", "CDAB")  # type: ignore[call-arg]  # options are keyword-only


@pytest.mark.parametrize(
    ("data_type", "count"),
    [("int8", 1), ("uint8", 1), ("int16", 1), ("uint16", 1), ("float16", 1), ("bcd16", 1), ("int32", 2),
     ("uint32", 2), ("float32", 2), ("bcd32", 2), ("int64", 4), ("uint64", 4), ("float64", 4)],
)  # fmt: skip
def test_point_counts(data_type: str, count: int) -> None:
    assert _p(data_type).count == count
    assert _p("string", length=7).count == 7
    assert _p("bit", bit=1).count == 1


@pytest.mark.parametrize(
    ("address", "register_type", "base", "wire"),
    [
        (0, "holding", 0, 0),
        (40006, "holding", 0, 40006),  # base 0: as given
        (1, "holding", 1, 0),
        (40001, "holding", 1, 0),
        (40006, "holding", 1, 5),
        (49999, "holding", 1, 9998),
        (400001, "holding", 1, 0),
        (465536, "holding", 1, 65535),
        (30001, "input", 1, 0),
        (300010, "input", 1, 9),
        (10001, "discrete", 1, 0),
        (1, "coil", 1, 0),
        (9999, "coil", 1, 9998),
        (3009, "holding", 1, 3008),
    ],
)
def test_wire_address(address: int, register_type: Any, base: Any, wire: int) -> None:
    assert wire_address(address, register_type, address_base=base) == wire


@pytest.mark.parametrize(
    ("address", "register_type", "base", "message"),
    [
        (0, "holding", 1, "address 0 is below address_base 1"),
        (-1, "holding", 0, "address -1 is below address_base 0"),
        (30001, "holding", 1, "address 30001 is an input register number but register_type is holding"),
        (40001, "coil", 1, "is a holding register number but register_type is coil"),
        (65536, "holding", 0, "address 65536 is wire address 65536, beyond 65535"),
        (70000, "holding", 1, "wire address 69999, beyond 65535"),
    ],
)
def test_wire_address_rejects(address: int, register_type: Any, base: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wire_address(address, register_type, address_base=base)
