"""Register maps (the simulators' SDM630 and T/H probe): the SDM630 RTU vector with its CRCs, table-driven
decoding, read planning, round trips."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.crc import append_crc, check_crc, crc16_modbus
from protocols.errors import FrameError
from protocols.modbus import Point, ReadBlock, decode_block, encode_point, plan_reads
from protocols.sim.modbus_devices import SDM630_POINTS, TH_PROBE_POINTS

REQUEST = bytes.fromhex("01 04 00 00 00 02 71 CB")
RESPONSE = bytes.fromhex("01 04 04 43 66 19 9A 85 E4")


def _point(name: str) -> Point:
    return next(p for p in (*SDM630_POINTS, *TH_PROBE_POINTS) if p.name == name)


def _single(point: Point) -> ReadBlock:
    return ReadBlock(point.register_type, point.address, point.count, (point,))


# ---------------------------------------------------------------------------------------------- the vector
def test_crc_check_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # CRC-16/MODBUS catalogue check value


def test_vector_crcs() -> None:
    assert check_crc(REQUEST)
    assert check_crc(RESPONSE)
    assert crc16_modbus(REQUEST[:-2]) == 0xCB71  # sent low byte first: 71 CB
    assert append_crc(RESPONSE[:-2]) == RESPONSE
    assert not check_crc(REQUEST[:-1] + b"\xcc")
    assert not check_crc(bytes.fromhex("01 04 04 43 66 19 9B 85 E4"))  # one bit of data flipped
    assert not check_crc(b"\x01")


def test_vector_request_is_what_the_plan_asks_for() -> None:
    voltage = _point("voltage_l1")
    block = _single(voltage)
    pdu = bytes([block.function_code]) + block.address.to_bytes(2, "big") + block.count.to_bytes(2, "big")
    assert append_crc(bytes([0x01]) + pdu) == REQUEST


def test_vector_response_decodes_to_230_1_volt() -> None:
    device_id, function_code, byte_count = RESPONSE[0], RESPONSE[1], RESPONSE[2]
    assert (device_id, function_code, byte_count) == (1, 0x04, 4)
    registers = list(struct.unpack(">2H", RESPONSE[3 : 3 + byte_count]))
    assert registers == [0x4366, 0x199A]
    values = decode_block(_single(_point("voltage_l1")), registers)
    assert values == {"voltage_l1": pytest.approx(230.1, rel=1e-7)}  # float32 precision
    assert encode_point(_point("voltage_l1"), 230.1) == registers


# ---------------------------------------------------------------------------------------------- decoding
DECODING = [
    # (point, registers, value)
    (Point("v", 0, "input", "float32", unit="V"), [0x4366, 0x199A], 230.1),
    (Point("f", 0, "input", "float32"), [0x4248, 0x0000], 50.0),
    (Point("neg", 0, "input", "float32"), [0xC2C8, 0x0000], -100.0),
    (Point("scaled", 0, "input", "float32", scale=1000.0), [0x3F80, 0x0000], 1000.0),
    (Point("t", 1, "input", "int16", scale=0.1), [0x00D7], 21.5),
    (Point("t", 1, "input", "int16", scale=0.1), [0xFFDF], -3.3),
    (Point("t", 1, "input", "int16", scale=0.1), [0x7FFF], 3276.7),
    (Point("t", 1, "input", "int16", scale=0.1), [0x8000], -3276.8),
    (Point("rh", 2, "input", "uint16", scale=0.1), [0x01F4], 50.0),
    (Point("rh", 2, "input", "uint16", scale=0.1), [0xFFFF], 6553.5),
    (Point("x", 2, "holding", "uint16", scale=0.01), [0x0003], 0.03),
    (Point("gross", 40008, "holding", "uint32"), [0x0001, 0x86A0], 100000.0),  # Laumas vector
    (Point("n", 0, "holding", "int32"), [0xFFFF, 0xFFFE], -2.0),
    (Point("n", 0, "holding", "uint32"), [0xFFFF, 0xFFFE], 4294967294.0),
]


@pytest.mark.parametrize(("point", "registers", "value"), DECODING)
def test_decode_table(point: Point, registers: list[int], value: float) -> None:
    decoded = decode_block(_single(point), registers)[point.name]
    if point.data_type == "float32":
        assert decoded == pytest.approx(value, rel=1e-7)
    else:
        assert decoded == value  # exact: 21.5, not 21.500000000000004


def test_decode_sdm630_block_in_order() -> None:
    block = plan_reads(SDM630_POINTS)[0]
    wanted = [230.1, 231.0, 229.5, 10.0, 12.5, 8.0, 2301.0, 2887.5, 1836.0]
    registers = [r for value in wanted for r in struct.unpack(">2H", struct.pack(">f", value))]
    decoded = decode_block(block, registers)
    assert list(decoded) == [p.name for p in block.points]
    assert list(decoded.values()) == pytest.approx(wanted, rel=1e-7)


@pytest.mark.parametrize("registers", [[], [0x4366], [0x4366, 0x199A, 0]])
def test_decode_wrong_register_count(registers: list[int]) -> None:
    block = _single(_point("voltage_l1"))
    with pytest.raises(FrameError) as info:
        decode_block(block, registers)
    assert info.value.reason == f"Modbus input 0x0000-0x0001: expected 2 registers, got {len(registers)}"


def test_decode_register_out_of_range() -> None:
    with pytest.raises(FrameError, match=r"outside 0\.\.0xFFFF"):
        decode_block(_single(_point("temperature")), [0x10000])


def test_encode_rejects_unrepresentable_values() -> None:
    with pytest.raises(ValueError, match=r"temperature.*outside the int16 range"):
        encode_point(_point("temperature"), 4000.0)
    with pytest.raises(ValueError, match=r"humidity.*outside the uint16 range"):
        encode_point(_point("humidity"), -1.0)
    with pytest.raises(ValueError, match="does not fit a float32"):
        encode_point(_point("voltage_l1"), 1e39)
    with pytest.raises(ValueError, match="not a finite number"):
        encode_point(_point("humidity"), math.nan)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": 70000}, "address 70000 outside"),
        ({"address": 0xFFFF}, "address 65535 outside 0..65534"),  # float32 needs two registers
        ({"data_type": "float128"}, "data_type 'float128'"),
        ({"register_type": "coil"}, "register_type 'coil'"),
        ({"scale": 0.0}, "scale must not be 0"),
        ({"name": ""}, "name must not be empty"),
    ],
)
def test_point_validation(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "p", "address": 0, "register_type": "input", "data_type": "float32"}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Point(**fields)  # type: ignore[arg-type]


def test_point_counts() -> None:
    assert [Point("p", 0, "input", t).count for t in ("float32", "int16", "uint16", "uint32", "int32")] == [
        2, 1, 1, 2, 2,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- planning
def _spans(blocks: list[ReadBlock]) -> list[tuple[str, int, int]]:
    return [(b.register_type, b.address, b.address + b.count - 1) for b in blocks]


def test_sdm630_plan_is_four_reads() -> None:
    blocks = plan_reads(SDM630_POINTS)
    assert _spans(blocks) == [
        ("input", 0x0000, 0x0011),
        ("input", 0x0034, 0x0035),
        ("input", 0x0046, 0x004B),
        ("input", 0x0156, 0x0157),
    ]
    assert sorted(p.name for b in blocks for p in b.points) == sorted(p.name for p in SDM630_POINTS)
    assert all(b.function_code == 0x04 for b in blocks)


def test_th_probe_plan_is_one_read() -> None:
    assert _spans(plan_reads(TH_PROBE_POINTS)) == [("input", 1, 2)]


def test_th_probe_units() -> None:
    assert [p.unit for p in TH_PROBE_POINTS] == ["°C", "%RH"]


@pytest.mark.parametrize(
    ("options", "spans"),
    [
        ({"max_gap": 0}, [("input", 0x00, 0x11), ("input", 0x34, 0x35), ("input", 0x46, 0x4B),
                          ("input", 0x156, 0x157)]),
        ({"max_gap": 16}, [("input", 0x00, 0x11), ("input", 0x34, 0x4B), ("input", 0x156, 0x157)]),
        ({"max_gap": 100}, [("input", 0x00, 0x4B), ("input", 0x156, 0x157)]),
        ({"max_gap": 400, "max_count": 125}, [("input", 0x00, 0x4B), ("input", 0x156, 0x157)]),  # 0x158 > 125
        ({"max_count": 10}, [("input", 0x00, 0x09), ("input", 0x0A, 0x11), ("input", 0x34, 0x35),
                             ("input", 0x46, 0x4B), ("input", 0x156, 0x157)]),
        ({"max_count": 2}, [("input", a, a + 1)
                            for a in (0, 2, 4, 6, 8, 10, 12, 14, 16, 0x34, 0x46, 0x48, 0x4A, 0x156)]),
    ],
)  # fmt: skip
def test_plan_options(options: dict[str, int], spans: list[tuple[str, int, int]]) -> None:
    assert _spans(plan_reads(SDM630_POINTS, **options)) == spans


def test_plan_never_mixes_register_types_and_sorts() -> None:
    points = [
        Point("b", 9, "input", "uint16"),  # 8 registers after d: merged
        Point("a", 0, "holding", "uint16"),
        Point("c", 1, "holding", "int32"),
        Point("d", 0, "input", "uint16"),
    ]
    blocks = plan_reads(points)
    assert _spans(blocks) == [("holding", 0, 2), ("input", 0, 9)]
    assert [p.name for p in blocks[1].points] == ["d", "b"]
    points[0] = Point("b", 10, "input", "uint16")  # 9 registers after d: a read of its own
    assert _spans(plan_reads(points)) == [("holding", 0, 2), ("input", 0, 0), ("input", 10, 10)]
    assert plan_reads([]) == []


def test_plan_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads(SDM630_POINTS, max_gap=-1)
    with pytest.raises(ValueError, match="max_count"):
        plan_reads(SDM630_POINTS, max_count=126)
    with pytest.raises(ValueError, match="needs 2 registers"):
        plan_reads(SDM630_POINTS, max_count=1)


# ---------------------------------------------------------------------------------------------- round trips
_INT_RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
               "uint32": (0, 2**32 - 1)}  # fmt: skip


@given(
    data_type=st.sampled_from(sorted(_INT_RANGES)),
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0]),
    data=st.data(),
)
def test_integer_points_round_trip(data_type: str, scale: float, data: st.DataObject) -> None:
    low, high = _INT_RANGES[data_type]
    raw = data.draw(st.integers(min_value=low, max_value=high))
    point = Point("p", 100, "holding", data_type, scale=scale)  # type: ignore[arg-type]
    value = decode_block(_single(point), _registers_of(point, raw))["p"]
    registers = encode_point(point, value)
    assert registers == _registers_of(point, raw)
    assert decode_block(_single(point), registers)["p"] == value


def _registers_of(point: Point, raw: int) -> list[int]:
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}[point.data_type]
    data = struct.pack(fmt, raw)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_points_round_trip_exactly(value: float) -> None:
    point = _point("total_energy")
    registers = encode_point(point, value)
    assert len(registers) == 2
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode_block(_single(point), registers) == {"total_energy": value}
