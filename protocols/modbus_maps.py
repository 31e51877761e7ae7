"""Modbus register maps, read planning and decoding for the sensors floorgate polls.

Read request and response PDUs (function code 0x03 holding / 0x04 input registers; on RTU framed by device id and
CRC, see ``protocols.crc``; on TCP by the MBAP header ``[ tid ][ pid ][ length ][ uid ]``)::

    request   [ fc ][ start address hi lo ][ register count hi lo ]
    response  [ fc ][ byte count ][ reg 0 hi lo ][ reg 1 hi lo ] ...
    exception [ fc | 0x80 ][ exception code ]                      0x02 = illegal data address

Data types over registers (high word first, each register big-endian, as the Eastron meters send them)::

    int16 / uint16      [ reg n ]
    float32 / (u)int32  [ reg n: bytes A B ][ reg n+1: bytes C D ]   value = struct ">f" / ">i" / ">I" of ABCD

    RTU vector (Eastron SDM630, voltage L1):
        request   01 04 00 00 00 02 71 CB
        response  01 04 04 43 66 19 9A 85 E4    registers 0x4366 0x199A -> float32 230.1 V

A ``Point`` names one value in a map; ``plan_reads`` merges the points of a map into few ``ReadBlock`` requests;
``decode_block`` turns one answer into ``{name: value}``; ``encode_point`` is the reverse, for simulators. Values
are scaled (``raw * scale``) and returned as float; integer points are rounded to the decimals of the scale, so an
int16 of 215 at scale 0.1 is 21.5, not 21.500000000000004.

Merging across a gap (``max_gap`` > 0) reads registers that are not in the map. The SDM630 answers them; a device
that answers "illegal data address" for unmapped registers (floorgate's simulators do) needs ``max_gap=0`` for maps
with gaps. The two maps here have none inside their blocks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeAlias

from protocols.errors import FrameError

RegisterType: TypeAlias = Literal["input", "holding"]
DataType: TypeAlias = Literal["float32", "int16", "uint16", "uint32", "int32"]

DEFAULT_MAX_GAP: Final = 8  # registers read and thrown away rather than sending one more request
DEFAULT_MAX_COUNT: Final = 100  # registers a request; Modbus allows 125 for FC03/FC04
MODBUS_MAX_READ_COUNT: Final = 125
MAX_ADDRESS: Final = 0xFFFF

_STRUCT_FORMAT: Final[dict[str, str]] = {
    "float32": ">f",
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
}
_REGISTER_COUNT: Final[dict[str, int]] = {"float32": 2, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2}
_INT_RANGE: Final[dict[str, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
FUNCTION_CODES: Final[dict[str, int]] = {"holding": 0x03, "input": 0x04}
EXCEPTION_NAMES: Final[dict[int, str]] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "device failure",
    0x05: "acknowledge",
    0x06: "device busy",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


@dataclass(frozen=True)
class Point:
    """One value in a register map: ``Point("voltage_l1", 0x0000, "input", "float32", unit="V")``."""

    name: str
    address: int
    register_type: RegisterType
    data_type: DataType
    scale: float = 1.0
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Point.name must not be empty")
        if self.register_type not in FUNCTION_CODES:
            raise ValueError(f"point {self.name}: register_type {self.register_type!r}, expected input or holding")
        if self.data_type not in _STRUCT_FORMAT:
            raise ValueError(f"point {self.name}: data_type {self.data_type!r}, expected {sorted(_STRUCT_FORMAT)}")
        if not 0 <= self.address <= MAX_ADDRESS - self.count + 1:
            raise ValueError(f"point {self.name}: address {self.address} outside 0..{MAX_ADDRESS - self.count + 1}")
        if self.scale == 0:
            raise ValueError(f"point {self.name}: scale must not be 0")

    @property
    def count(self) -> int:
        """Registers the point occupies."""
        return _REGISTER_COUNT[self.data_type]


@dataclass(frozen=True)
class ReadBlock:
    """One read request covering ``points``: ``count`` registers of ``register_type`` from ``address``."""

    register_type: RegisterType
    address: int
    count: int
    points: tuple[Point, ...]

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.register_type]

    @property
    def label(self) -> str:
        """``input 0x0000-0x0011`` for messages."""
        return f"{self.register_type} 0x{self.address:04X}-0x{self.address + self.count - 1:04X}"


def _float32(name: str, address: int, unit: str) -> Point:
    return Point(name, address, "input", "float32", unit=unit)


SDM630_POINTS: Final[tuple[Point, ...]] = (
    _float32("voltage_l1", 0x0000, "V"),
    _float32("voltage_l2", 0x0002, "V"),
    _float32("voltage_l3", 0x0004, "V"),
    _float32("current_l1", 0x0006, "A"),
    _float32("current_l2", 0x0008, "A"),
    _float32("current_l3", 0x000A, "A"),
    _float32("power_l1", 0x000C, "W"),
    _float32("power_l2", 0x000E, "W"),
    _float32("power_l3", 0x0010, "W"),
    _float32("total_power", 0x0034, "W"),
    _float32("frequency", 0x0046, "Hz"),
    _float32("import_energy", 0x0048, "kWh"),
    _float32("export_energy", 0x004A, "kWh"),
    _float32("total_energy", 0x0156, "kWh"),
)

TH_PROBE_POINTS: Final[tuple[Point, ...]] = (
    Point("temperature", 1, "input", "int16", scale=0.1, unit="°C"),
    Point("humidity", 2, "input", "uint16", scale=0.1, unit="%RH"),
)

DEVICE_MAPS: Final[dict[str, tuple[Point, ...]]] = {
    "sdm630": SDM630_POINTS,
    "th-probe": TH_PROBE_POINTS,
}


def plan_reads(
    points: Iterable[Point], *, max_gap: int = DEFAULT_MAX_GAP, max_count: int = DEFAULT_MAX_COUNT
) -> list[ReadBlock]:
    """Merge points of the same register type into as few reads as possible.

    Two points share a read when the registers between them number at most ``max_gap`` and the read stays within
    ``max_count`` registers. Blocks come sorted by register type, then address.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    if not 1 <= max_count <= MODBUS_MAX_READ_COUNT:
        raise ValueError(f"max_count must be within 1..{MODBUS_MAX_READ_COUNT}, got {max_count}")
    blocks: list[ReadBlock] = []
    current: list[Point] = []
    start = end = 0  # registers [start, end) of the block being built
    for point in sorted(points, key=lambda p: (p.register_type, p.address, p.count)):
        if point.count > max_count:
            raise ValueError(f"point {point.name} needs {point.count} registers, more than max_count={max_count}")
        new_end = max(end, point.address + point.count)
        if current and (
            point.register_type == current[0].register_type
            and point.address - end <= max_gap
            and new_end - start <= max_count
        ):
            current.append(point)
            end = new_end
            continue
        if current:
            blocks.append(ReadBlock(current[0].register_type, start, end - start, tuple(current)))
        current, start, end = [point], point.address, point.address + point.count
    if current:
        blocks.append(ReadBlock(current[0].register_type, start, end - start, tuple(current)))
    return blocks


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """Registers as transmitted (each big-endian); ``ValueError`` for a value outside 0..0xFFFF."""
    for index, register in enumerate(registers):
        if not 0 <= register <= 0xFFFF:
            raise ValueError(f"register {index} = {register} is outside 0..0xFFFF")
    return b"".join(register.to_bytes(2, "big") for register in registers)


def _scale_decimals(scale: float) -> int:
    exponent = Decimal(repr(scale)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _decode_point(point: Point, data: bytes) -> float:
    (raw,) = struct.unpack(_STRUCT_FORMAT[point.data_type], data)
    if point.data_type == "float32":
        return float(raw) * point.scale  # x * 1.0 is x: unscaled float32 values stay exact
    return float(round(raw * point.scale, _scale_decimals(point.scale)))


def decode_block(block: ReadBlock, registers: Sequence[int]) -> dict[str, float]:
    """``{point name: scaled value}`` for the registers answered to ``block``.

    Raises ``FrameError`` (naming the block) if the number of registers is not ``block.count`` or a register is
    not a 16-bit value.
    """
    if len(registers) != block.count:
        try:
            raw = registers_to_bytes(registers)
        except ValueError:
            raw = b""
        raise FrameError(raw, f"Modbus {block.label}: expected {block.count} registers, got {len(registers)}")
    try:
        data = registers_to_bytes(registers)
    except ValueError as exc:
        raise FrameError(b"", f"Modbus {block.label}: {exc}") from None
    values: dict[str, float] = {}
    for point in block.points:
        offset = (point.address - block.address) * 2
        values[point.name] = _decode_point(point, data[offset : offset + point.count * 2])
    return values


def encode_point(point: Point, value: float) -> list[int]:
    """The registers that hold ``value`` for ``point`` (the inverse of decoding; used by simulators).

    Raises ``ValueError`` naming the point if the value cannot be represented.
    """
    scaled = value / point.scale
    if point.data_type == "float32":
        try:
            data = struct.pack(">f", scaled)
        except OverflowError:
            raise ValueError(f"point {point.name}: {value} does not fit a float32") from None
    else:
        if scaled != scaled or scaled in (float("inf"), float("-inf")):
            raise ValueError(f"point {point.name}: {value} is not a finite number")
        raw = round(scaled)
        low, high = _INT_RANGE[point.data_type]
        if not low <= raw <= high:
            raise ValueError(
                f"point {point.name}: {value} is {raw} raw, outside the {point.data_type} range {low}..{high}"
            )
        data = struct.pack(_STRUCT_FORMAT[point.data_type], raw)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


__all__ = [
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_GAP",
    "DEVICE_MAPS",
    "EXCEPTION_NAMES",
    "SDM630_POINTS",
    "TH_PROBE_POINTS",
    "DataType",
    "Point",
    "ReadBlock",
    "RegisterType",
    "decode_block",
    "encode_point",
    "plan_reads",
    "registers_to_bytes",
]
