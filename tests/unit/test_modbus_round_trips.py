"""Modbus round trips: encode -> decode for every data type and word order, masks, scale and offset, strings, bits
and bytes sharing a register (hypothesis)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus import WORD_ORDERS, Point, decode_block, encode_block, encode_point, plan_reads, wire_mask
from tests.modbus_support import decode as _decode
from tests.modbus_support import point as _p

# ---------------------------------------------------------------------------------------------- round trips
_ORDERS = st.sampled_from(WORD_ORDERS)
_INTEGER_RANGES = {
    "int8": (-(2**7), 2**7 - 1), "uint8": (0, 2**8 - 1), "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1), "bcd16": (0, 9999), "bcd32": (0, 99_999_999),
}  # fmt: skip
_FLOAT_WIDTHS = {"float16": 16, "float32": 32, "float64": 64}


def _check_registers(point: Point, registers: list[int]) -> None:
    assert len(registers) == point.count
    assert all(0 <= r <= 0xFFFF for r in registers)


@given(data_type=st.sampled_from(sorted(_INTEGER_RANGES)), order=_ORDERS, data=st.data())
def test_integers_round_trip(data_type: str, order: str, data: st.DataObject) -> None:
    low, high = _INTEGER_RANGES[data_type]
    value = data.draw(st.integers(low, high))
    point = _p(data_type, order)
    registers = encode_point(point, value)
    _check_registers(point, registers)
    decoded = _decode(point, registers)
    assert decoded == value
    assert type(decoded) is int


@given(data_type=st.sampled_from(sorted(_INTEGER_RANGES)), order=_ORDERS, data=st.data())
def test_integers_decode_encode_is_canonical(data_type: str, order: str, data: st.DataObject) -> None:
    """Any registers decode (BCD: any valid digits) and encode back to the point's own bits of them."""
    point = _p(data_type, order)
    if data_type.startswith("bcd"):  # every nibble 0..9, whatever the word order
        digits = data.draw(st.lists(st.integers(0, 9999), min_size=point.count, max_size=point.count))
        registers = [int(f"{d:04d}", 16) for d in digits]
    else:
        registers = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=point.count, max_size=point.count))
    value = _decode(point, registers)
    masks = wire_mask(point)
    assert encode_point(point, value) == [r & m for r, m in zip(registers, masks, strict=True)]


@given(
    data_type=st.sampled_from(["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]),
    order=_ORDERS,
    data=st.data(),
)
def test_masked_integers_round_trip(data_type: str, order: str, data: st.DataObject) -> None:
    bits = {"8": 8, "16": 16, "32": 32, "64": 64}[data_type.lstrip("uint")]
    mask = data.draw(st.integers(1, 2**bits - 1))
    point = _p(data_type, order, mask=mask)
    pattern = data.draw(st.integers(0, 2**bits - 1)) & mask
    negative = data_type.startswith("int") and pattern >> (bits - 1)
    value = pattern - (1 << bits) if negative else pattern
    registers = encode_point(point, value)
    _check_registers(point, registers)
    assert _decode(point, registers) == value
    assert all(r & ~m == 0 for r, m in zip(registers, wire_mask(point), strict=True))


@given(data_type=st.sampled_from(sorted(_FLOAT_WIDTHS)), order=_ORDERS, data=st.data())
def test_floats_round_trip_exactly(data_type: str, order: str, data: st.DataObject) -> None:
    value = data.draw(st.floats(width=_FLOAT_WIDTHS[data_type]))  # type: ignore[arg-type]  # 16 / 32 / 64
    point = _p(data_type, order)
    registers = encode_point(point, value)
    _check_registers(point, registers)
    decoded = _decode(point, registers)
    assert type(decoded) is float
    if math.isnan(value):
        assert math.isnan(decoded)
    else:
        assert decoded == value
        assert math.copysign(1.0, decoded) == math.copysign(1.0, value)  # -0.0 stays -0.0


@given(order=_ORDERS, length=st.integers(1, 8), data=st.data())
def test_strings_round_trip(order: str, length: int, data: st.DataObject) -> None:
    text = data.draw(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=2 * length))
    point = _p("string", order, length=length)
    registers = encode_point(point, text)
    _check_registers(point, registers)
    assert _decode(point, registers) == text.strip(" ")


@given(order=_ORDERS, bit=st.integers(0, 15), value=st.booleans(), register_type=st.sampled_from(["holding", "input"]))
def test_register_bits_round_trip(order: str, bit: int, value: bool, register_type: str) -> None:
    point = _p("bit", order, bit=bit, register_type=register_type)
    registers = encode_point(point, value)
    _check_registers(point, registers)
    assert bin(registers[0]).count("1") == int(value)
    assert _decode(point, registers) is value


@given(
    data_type=st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "bcd16", "uint8"]),
    order=_ORDERS,
    scale=st.sampled_from([0.1, 0.01, 0.001, 0.5, 10.0, 1.0]),
    offset=st.sampled_from([0.0, -40.0, 0.5, 273.15]),
    data=st.data(),
)
def test_scaled_integers_round_trip(
    data_type: str, order: str, scale: float, offset: float, data: st.DataObject
) -> None:
    low, high = _INTEGER_RANGES[data_type]
    high = min(high, 2**40)  # raw * scale stays exact enough in a double for the round trip
    low = max(low, -(2**40))
    raw = data.draw(st.integers(low, high))
    point = _p(data_type, order, scale=scale, offset=offset)
    registers = encode_point(_p(data_type, order), raw)
    value = _decode(point, registers)
    assert encode_point(point, value) == registers
    assert _decode(point, encode_point(point, value)) == value


@given(order=_ORDERS, bits=st.lists(st.booleans(), min_size=16, max_size=16), byte=st.integers(0, 255))
def test_bits_and_bytes_sharing_one_register(order: str, bits: list[bool], byte: int) -> None:
    """encode_block combines points that share a register; decode_block takes them apart again."""
    points = [Point(f"b{n}", 10, "holding", "bit", bit=n, word_order=order) for n in range(8, 16)]  # type: ignore[arg-type]
    points.append(Point("low", 10, "holding", "uint8", word_order=order))  # type: ignore[arg-type]
    (block,) = plan_reads(points)
    values: dict[str, Any] = {f"b{n}": bits[n] for n in range(8, 16)} | {"low": byte}
    registers = encode_block(block, values)
    assert decode_block(block, registers) == values
