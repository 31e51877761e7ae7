"""Modbus write requests (FC05 / 06 / 15 / 16 / 22 for every kind of point) and read planning (gaps, max_count,
register types, one request per point; properties with hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus import Point, ReadBlock, decode_block, encode_block, plan_reads, write_request
from protocols.sim.modbus_devices import SDM630_POINTS
from tests.modbus_support import decode as _decode
from tests.modbus_support import point as _p

U64 = 0x0123456789ABCDEF


# ---------------------------------------------------------------------------------------------- writes
@pytest.mark.parametrize(
    ("point", "value", "options", "expected"),
    [
        (Point("c", 7, "coil", "bit"), True, {}, (5, 7, True)),
        (Point("c", 7, "coil", "bit"), False, {"force_multiple": True}, (15, 7, [False])),
        (_p("uint16"), 1234, {}, (6, 100, 1234)),
        (_p("int16"), -2, {}, (6, 100, 0xFFFE)),
        (_p("uint16"), 1234, {"force_multiple": True}, (16, 100, [1234])),
        (_p("float32"), 230.1, {}, (16, 100, [0x4366, 0x199A])),
        (_p("float32", "CDAB"), 230.1, {}, (16, 100, [0x199A, 0x4366])),
        (_p("uint64", "DCBA"), U64, {}, (16, 100, [0xEFCD, 0xAB89, 0x6745, 0x2301])),
        (_p("string", length=2), "AB", {}, (16, 100, [0x4142, 0x0000])),
        # a part of one register: FC22 mask write, register := (register AND and) OR (or AND NOT and)
        (_p("bit", bit=3), True, {}, (22, 100, [0xFFF7, 0x0008])),
        (_p("bit", bit=3), False, {}, (22, 100, [0xFFF7, 0x0000])),
        (_p("bit", "BADC", bit=3), True, {}, (22, 100, [0xF7FF, 0x0800])),
        (_p("uint8"), 0x7F, {}, (22, 100, [0xFF00, 0x007F])),
        (_p("uint8", "DCBA"), 0x7F, {}, (22, 100, [0x00FF, 0x7F00])),
        (_p("uint16", mask=0x0FF0), 0x0230, {}, (22, 100, [0xF00F, 0x0230])),
    ],
)
def test_write_request(point: Point, value: Any, options: dict[str, bool], expected: tuple[int, int, Any]) -> None:
    assert write_request(point, value, **options) == expected


def test_mask_write_keeps_the_other_bits() -> None:
    """Apply the FC22 payload as a device does and decode the result: only the point's bits changed."""
    status = 0b1010_0000_0000_0101
    for point, value in [(_p("bit", bit=3), True), (_p("bit", bit=0), False), (_p("uint8"), 0x42)]:
        function_code, _, payload = write_request(point, value)
        assert function_code == 22
        assert isinstance(payload, list)
        and_mask, or_mask = payload
        after = (status & and_mask) | (or_mask & ~and_mask & 0xFFFF)
        assert _decode(point, [after]) == value
        assert after & and_mask == status & and_mask


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (_p("uint16", register_type="input"), "input registers are read-only"),
        (Point("d", 0, "discrete", "bit"), "discrete registers are read-only"),
        (_p("uint32", mask=0xFFFF), r"a masked uint32 spans 2 registers"),
    ],
)
def test_write_request_rejects(point: Point, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_request(point, 1)


# ---------------------------------------------------------------------------------------------- planning
def _spans(blocks: list[ReadBlock]) -> list[tuple[str, int, int]]:
    return [(b.register_type, b.address, b.address + b.count - 1) for b in blocks]


def _u16(name: str, address: int, register_type: str = "holding") -> Point:
    return Point(name, address, register_type, "uint16")  # type: ignore[arg-type]


def test_sdm630_is_still_four_reads() -> None:
    assert _spans(plan_reads(SDM630_POINTS)) == [
        ("input", 0x0000, 0x0011),
        ("input", 0x0034, 0x0035),
        ("input", 0x0046, 0x004B),
        ("input", 0x0156, 0x0157),
    ]


@pytest.mark.parametrize(
    ("second", "options", "spans"),
    [
        (9, {}, [("holding", 0, 9)]),  # hole of 8 registers (1..8) = max_gap: merged
        (10, {}, [("holding", 0, 0), ("holding", 10, 10)]),  # hole of 9
        (1, {"max_gap": 0}, [("holding", 0, 1)]),  # adjacent
        (2, {"max_gap": 0}, [("holding", 0, 0), ("holding", 2, 2)]),
        (124, {"max_gap": 200}, [("holding", 0, 124)]),  # 125 registers = max_count
        (125, {"max_gap": 200}, [("holding", 0, 0), ("holding", 125, 125)]),  # 126 would be too many
        (31, {"max_gap": 200, "max_count": 32}, [("holding", 0, 31)]),
        (32, {"max_gap": 200, "max_count": 32}, [("holding", 0, 0), ("holding", 32, 32)]),
    ],
)
def test_plan_gaps_and_max_count(second: int, options: dict[str, Any], spans: list[tuple[str, int, int]]) -> None:
    assert _spans(plan_reads([_u16("a", 0), _u16("b", second)], **options)) == spans


def test_plan_shared_registers_bits_of_a_status_word() -> None:
    """Laumas-like: the status word, three of its bits and a uint32 after it are one read."""
    points = [
        Point("gross", 7, "holding", "uint32"),
        Point("stable", 6, "holding", "bit", bit=11, kind="event"),
        Point("status", 6, "holding", "uint16"),
        Point("net_displayed", 6, "holding", "bit", bit=10, kind="event"),
    ]
    (block,) = plan_reads(points)
    assert (block.address, block.count) == (6, 3)
    assert [p.name for p in block.points] == ["stable", "status", "net_displayed", "gross"]  # given order at 6
    decoded = decode_block(block, [0x0C00, 0x0001, 0x86A0])
    assert decoded == {"stable": True, "status": 0x0C00, "net_displayed": True, "gross": 100000}
    assert encode_block(block, decoded) == [0x0C00, 0x0001, 0x86A0]
    # one request per point: the bits and the word share theirs, the uint32 has its own
    assert _spans(plan_reads(points, one_request_per_point=True)) == [("holding", 6, 6), ("holding", 7, 8)]


def test_plan_one_request_per_point() -> None:
    blocks = plan_reads(SDM630_POINTS, one_request_per_point=True)
    assert len(blocks) == len(SDM630_POINTS)
    assert all(b.count == 2 and len(b.points) == 1 for b in blocks)


def test_plan_mixed_register_types_in_function_code_order() -> None:
    points = [
        _u16("i0", 0, "input"),
        _u16("h0", 0),
        Point("c9", 9, "coil", "bit"),
        Point("c0", 0, "coil", "bit"),
        Point("d5", 5, "discrete", "bit"),
        Point("c1999", 1999, "coil", "bit"),
        Point("c2000", 2000, "coil", "bit"),
    ]
    blocks = plan_reads(points, max_gap=2000)
    assert _spans(blocks) == [
        ("coil", 0, 1999),  # 2000 bits: the most one FC01 read may ask for
        ("coil", 2000, 2000),
        ("discrete", 5, 5),
        ("holding", 0, 0),
        ("input", 0, 0),
    ]
    assert [b.function_code for b in blocks] == [1, 1, 2, 3, 4]
    assert [p.name for p in blocks[0].points] == ["c0", "c9", "c1999"]
    assert _spans(plan_reads(points, max_gap=2000, max_bits=10))[:3] == [
        ("coil", 0, 9), ("coil", 1999, 2000), ("discrete", 5, 5),
    ]  # fmt: skip
    assert _spans(plan_reads(points))[:2] == [("coil", 0, 9), ("coil", 1999, 2000)]  # a hole of 8 bits: merged
    assert _spans(plan_reads(points, max_gap=7))[:3] == [("coil", 0, 0), ("coil", 9, 9), ("coil", 1999, 2000)]


def test_plan_rejects() -> None:
    with pytest.raises(ValueError, match="max_gap must be >= 0"):
        plan_reads([], max_gap=-1)
    with pytest.raises(ValueError, match=r"max_count must be within 1\.\.125"):
        plan_reads([], max_count=126)
    with pytest.raises(ValueError, match=r"max_bits must be within 1\.\.2000"):
        plan_reads([], max_bits=2001)
    with pytest.raises(ValueError, match="point p needs 4 registers, more than max_count=3"):
        plan_reads([_p("float64")], max_count=3)
    with pytest.raises(ValueError, match="point name 'a' is used twice"):
        plan_reads([_u16("a", 0), _u16("a", 5, "input")])
    with pytest.raises(ValueError, match="lies outside holding 0x0000-0x0000"):
        ReadBlock("holding", 0, 1, (_p("uint32", address=0),))
    with pytest.raises(ValueError, match="point p is input, the block holding"):
        ReadBlock("holding", 100, 1, (_p("uint16", register_type="input"),))


_PLAN_TYPES = ["uint16", "int32", "float64", "bit"]


@st.composite
def _maps(draw: st.DrawFn) -> list[Point]:
    count = draw(st.integers(min_value=0, max_value=25))
    points = []
    for index in range(count):
        register_type = draw(st.sampled_from(["coil", "holding", "input"]))
        data_type = "bit" if register_type == "coil" else draw(st.sampled_from(_PLAN_TYPES))
        bit = draw(st.integers(0, 15)) if data_type == "bit" and register_type != "coil" else None
        address = draw(st.integers(min_value=0, max_value=300))
        points.append(Point(f"p{index}", address, register_type, data_type, bit=bit))  # type: ignore[arg-type]
    return points


@given(points=_maps(), max_gap=st.integers(0, 20), max_count=st.integers(4, 125), data=st.data())
def test_plan_properties(points: list[Point], max_gap: int, max_count: int, data: st.DataObject) -> None:
    blocks = plan_reads(points, max_gap=max_gap, max_count=max_count)
    assert sorted(p.name for b in blocks for p in b.points) == sorted(p.name for p in points)  # each exactly once
    for block in blocks:
        assert block.count <= max_count or block.is_bits
        assert all(p.register_type == block.register_type for p in block.points)
        assert block.address == min(p.address for p in block.points)
        assert block.address + block.count == max(p.address + p.count for p in block.points)
        covered = {a for p in block.points for a in range(p.address, p.address + p.count)}
        holes = [a for a in range(block.address, block.address + block.count) if a not in covered]
        run = longest = 0
        for address in range(block.address, block.address + block.count):
            run = run + 1 if address in holes else 0
            longest = max(longest, run)
        assert longest <= max_gap
    keys = [(b.function_code, b.address) for b in blocks]
    assert keys == sorted(keys)
    # deterministic: the order the points come in does not change the reads
    shuffled = data.draw(st.permutations(points))
    assert _spans(plan_reads(shuffled, max_gap=max_gap, max_count=max_count)) == _spans(blocks)
    # and every plan still decodes what it encodes (where no two whole values claim the same register)
    values = {p.name: _example_value(p) for p in points}
    for block in blocks:
        claimed = [a for p in block.points if p.data_type != "bit" for a in range(p.address, p.address + p.count)]
        bits = {(p.address, p.bit) for p in block.points if p.data_type == "bit" and not p.is_bits}
        if len(claimed) != len(set(claimed)) or set(claimed) & {a for a, _ in bits}:
            continue
        if len(bits) != sum(1 for p in block.points if p.data_type == "bit" and not p.is_bits):
            continue  # two points on the same bit
        if len({p.address for p in block.points if p.is_bits}) != sum(1 for p in block.points if p.is_bits):
            continue  # two points on the same coil
        assert decode_block(block, encode_block(block, values)) == {p.name: values[p.name] for p in block.points}


def _example_value(point: Point) -> Any:
    if point.data_type == "bit":
        return point.address % 2 == 0
    return {"uint16": 7, "int32": -7, "float64": 0.25}[point.data_type]
