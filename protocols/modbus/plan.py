"""Read planning, block decoding and write requests for Modbus points (pure; the I/O lives in ``edge``).

Read request and response PDUs (on RTU framed by device id and CRC, see ``protocols.crc``; on TCP by the MBAP
header ``[ tid ][ pid ][ length ][ uid ]``)::

    request    [ fc ][ start address hi lo ][ count hi lo ]         fc 01 coils, 02 discrete, 03 holding, 04 input
    response   [ fc ][ byte count ][ reg 0 hi lo ][ reg 1 hi lo ] ...   (03 / 04)
               [ fc ][ byte count ][ bits 7..0 ][ bits 15..8 ] ...       (01 / 02, padded to whole bytes)
    exception  [ fc | 0x80 ][ exception code ]                      0x02 = illegal data address

Write requests (``write_request`` returns the function code, the address and the payload)::

    FC05 write single coil         [ 05 ][ address ][ FF 00 | 00 00 ]          payload: bool
    FC06 write single register     [ 06 ][ address ][ value ]                  payload: int
    FC15 write multiple coils      [ 0F ][ address ][ count ][ n ][ bits ]     payload: list[bool]
    FC16 write multiple registers  [ 10 ][ address ][ count ][ n ][ regs ]     payload: list[int]
    FC22 mask write register       [ 16 ][ address ][ and mask ][ or mask ]    payload: [and_mask, or_mask]
         register := (register AND and_mask) OR (or_mask AND NOT and_mask)

``plan_reads`` merges the points of a map into few ``ReadBlock`` requests. Two points of the same register type
share a read when the hole between them is at most ``max_gap`` registers (bits for coils / discrete inputs) and the
read stays within ``max_count`` registers (``max_bits`` bits). Points may overlap: the bits of one status word and
the word itself are one read. Merging across a gap reads registers that are not in the map; a device that answers
"illegal data address" for them (floorgate's simulators do) needs ``max_gap=0`` for maps with gaps.

    SDM630 (input, float32):  0x00-0x11 | 0x34-0x35 | 0x46-0x4B | 0x156-0x157     four reads with max_gap 8

``decode_block`` turns one answer into ``{name: value}``; ``encode_block`` is its inverse (simulators).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from protocols.errors import FrameError
from protocols.modbus.points import (
    BIT_REGISTER_TYPES,
    FUNCTION_CODES,
    MODBUS_MAX_READ_BITS,
    MODBUS_MAX_READ_COUNT,
    REGISTER_TYPES,
    Point,
    RegisterType,
    Value,
)
from protocols.modbus.values import decode_point, encode_point, registers_to_bytes, wire_mask

DEFAULT_MAX_GAP: Final = 8  # registers read and thrown away rather than sending one more request
DEFAULT_MAX_COUNT: Final = MODBUS_MAX_READ_COUNT  # registers a request

FC_WRITE_SINGLE_COIL: Final = 0x05
FC_WRITE_SINGLE_REGISTER: Final = 0x06
FC_WRITE_MULTIPLE_COILS: Final = 0x0F
FC_WRITE_MULTIPLE_REGISTERS: Final = 0x10
FC_MASK_WRITE_REGISTER: Final = 0x16

EXCEPTION_NAMES: Final[dict[int, str]] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "device failure",
    0x05: "acknowledge",
    0x06: "device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

WritePayload = list[int] | list[bool] | int | bool


@dataclass(frozen=True)
class ReadBlock:
    """One read request covering ``points``: ``count`` registers (bits) of ``register_type`` from ``address``."""

    register_type: RegisterType
    address: int
    count: int
    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        for point in self.points:
            if point.register_type != self.register_type:
                raise ValueError(f"point {point.name} is {point.register_type}, the block {self.register_type}")
            if point.address < self.address or point.address + point.count > self.address + self.count:
                raise ValueError(f"point {point.name} lies outside {self.label}")

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.register_type]

    @property
    def is_bits(self) -> bool:
        """True for coils and discrete inputs: ``count`` is in bits and the answer is a list of bools."""
        return self.register_type in BIT_REGISTER_TYPES

    @property
    def label(self) -> str:
        """``input 0x0000-0x0011`` for messages."""
        return f"{self.register_type} 0x{self.address:04X}-0x{self.address + self.count - 1:04X}"


def plan_reads(
    points: Iterable[Point],
    *,
    max_gap: int = DEFAULT_MAX_GAP,
    max_count: int = DEFAULT_MAX_COUNT,
    one_request_per_point: bool = False,
    max_bits: int = MODBUS_MAX_READ_BITS,
) -> list[ReadBlock]:
    """Merge points of the same register type into as few reads as possible.

    Blocks come sorted by function code (coil, discrete, holding, input), then address; within a block the points
    keep address order (and their given order at the same address). ``one_request_per_point``: a read per point,
    for devices that refuse multi-register reads; points on exactly the same registers (bits of one status word)
    still share it. Raises ``ValueError`` for bad options, a point larger than a read, or a repeated name.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    if not 1 <= max_count <= MODBUS_MAX_READ_COUNT:
        raise ValueError(f"max_count must be within 1..{MODBUS_MAX_READ_COUNT}, got {max_count}")
    if not 1 <= max_bits <= MODBUS_MAX_READ_BITS:
        raise ValueError(f"max_bits must be within 1..{MODBUS_MAX_READ_BITS}, got {max_bits}")
    ordered = sorted(points, key=lambda p: (REGISTER_TYPES.index(p.register_type), p.address, p.count))
    seen: set[str] = set()
    blocks: list[ReadBlock] = []
    current: list[Point] = []
    start = end = 0  # registers [start, end) of the block being built
    for point in ordered:
        if point.name in seen:
            raise ValueError(f"point name {point.name!r} is used twice")
        seen.add(point.name)
        limit, unit = (max_bits, "bits") if point.is_bits else (max_count, "registers")
        if point.count > limit:
            option = "max_bits" if point.is_bits else "max_count"
            raise ValueError(f"point {point.name} needs {point.count} {unit}, more than {option}={limit}")
        point_end = point.address + point.count
        if current and point.register_type == current[0].register_type:
            if one_request_per_point:
                fits = point.address == start and point_end == end
            else:
                fits = point.address - end <= max_gap and max(end, point_end) - start <= limit
            if fits:
                current.append(point)
                end = max(end, point_end)
                continue
        if current:
            blocks.append(ReadBlock(current[0].register_type, start, end - start, tuple(current)))
        current, start, end = [point], point.address, point_end
    if current:
        blocks.append(ReadBlock(current[0].register_type, start, end - start, tuple(current)))
    return blocks


def _check_answer(block: ReadBlock, values: Sequence[int]) -> None:
    if block.is_bits:
        padded = -(-block.count // 8) * 8  # FC01 / FC02 answer whole bytes; pymodbus returns the padding bits
        if not block.count <= len(values) <= padded:
            raise FrameError(b"", f"Modbus {block.label}: expected {block.count} bits, got {len(values)}")
        return
    if len(values) != block.count:
        try:
            raw = registers_to_bytes(values)
        except ValueError:
            raw = b""
        raise FrameError(raw, f"Modbus {block.label}: expected {block.count} registers, got {len(values)}")
    try:
        registers_to_bytes(values)
    except ValueError as exc:
        raise FrameError(b"", f"Modbus {block.label}: {exc}") from None


def decode_block(block: ReadBlock, values: Sequence[int]) -> dict[str, Value]:
    """``{point name: value}`` for the answer to ``block``, in the block's point order.

    ``values`` are the registers (``list[int]``) or, for coils / discrete inputs, the bits (``list[bool]``; the
    padding to whole bytes that FC01 / FC02 answers carry is ignored). Raises ``FrameError`` naming the block if
    the answer has the wrong size, a register is not a 16-bit value, or a point cannot be decoded (a BCD nibble
    above 9, text that is not ASCII).
    """
    _check_answer(block, values)
    decoded: dict[str, Value] = {}
    for point in block.points:
        offset = point.address - block.address
        try:
            decoded[point.name] = decode_point(point, values[offset : offset + point.count])
        except FrameError as exc:
            raw = b"" if block.is_bits else registers_to_bytes(values)
            raise FrameError(raw, f"Modbus {block.label}: {exc.reason}") from None
    return decoded


def encode_block(block: ReadBlock, values: Mapping[str, Value]) -> list[int]:
    """The registers (bits as 0 / 1) that answer ``block`` with ``values`` - the inverse of ``decode_block``.

    Points sharing registers are combined bit by bit (``wire_mask``); registers of the block that no point covers
    are 0. Raises ``ValueError`` if a point has no value or its value cannot be represented.
    """
    out = [0] * block.count
    for point in block.points:
        if point.name not in values:
            raise ValueError(f"no value for point {point.name}")
        offset = point.address - block.address
        for index, (register, mask) in enumerate(
            zip(encode_point(point, values[point.name]), wire_mask(point), strict=True)
        ):
            out[offset + index] = (out[offset + index] & ~mask) | (register & mask)
    return out


def write_request(point: Point, value: Value, *, force_multiple: bool = False) -> tuple[int, int, WritePayload]:
    """``(function code, address, payload)`` that writes ``value`` to ``point``.

    A coil is FC05 (payload ``bool``); a register point that owns its whole register(s) is FC06 (one register,
    payload ``int``) or FC16 (payload ``list[int]``); a point that owns only part of its register (a register bit,
    int8 / uint8, a mask within one register) is FC22 mask write (payload ``[and_mask, or_mask]``), which leaves
    the other bits alone. ``force_multiple``: FC15 / FC16 even for one coil / register (devices that only implement
    those). Raises ``ValueError`` for a read-only register type, a masked multi-register point, or a value the
    point cannot represent.
    """
    if point.register_type not in ("coil", "holding"):
        raise ValueError(f"point {point.name}: {point.register_type} registers are read-only")
    registers = encode_point(point, value)
    if point.register_type == "coil":
        bit = bool(registers[0])
        if force_multiple:
            return FC_WRITE_MULTIPLE_COILS, point.address, [bit]
        return FC_WRITE_SINGLE_COIL, point.address, bit
    masks = wire_mask(point)
    if any(mask != 0xFFFF for mask in masks):
        if point.count != 1:
            raise ValueError(
                f"point {point.name}: a masked {point.data_type} spans {point.count} registers; only a part of "
                "one register can be written without touching the rest (FC22)"
            )
        return FC_MASK_WRITE_REGISTER, point.address, [~masks[0] & 0xFFFF, registers[0] & masks[0]]
    if point.count == 1 and not force_multiple:
        return FC_WRITE_SINGLE_REGISTER, point.address, registers[0]
    return FC_WRITE_MULTIPLE_REGISTERS, point.address, registers


__all__ = [
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_GAP",
    "EXCEPTION_NAMES",
    "FC_MASK_WRITE_REGISTER",
    "FC_WRITE_MULTIPLE_COILS",
    "FC_WRITE_MULTIPLE_REGISTERS",
    "FC_WRITE_SINGLE_COIL",
    "FC_WRITE_SINGLE_REGISTER",
    "ReadBlock",
    "WritePayload",
    "decode_block",
    "encode_block",
    "plan_reads",
    "write_request",
]
