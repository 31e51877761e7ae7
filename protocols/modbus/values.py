"""Decoding and encoding the value of one ``Point`` from / to its registers (pure functions, no I/O).

Registers travel big-endian, so the wire bytes of a point are its registers in address order, high byte first::

    registers  [ 0x4366 ][ 0x199A ]  ->  wire bytes 43 66 19 9A
    word order ABCD      value bytes = wire bytes          -> float32 ">f" 43 66 19 9A = 230.1
    word order CDAB      value bytes = 19 9A 43 66 reversed words
    word order BADC      value bytes = 66 43 9A 19 swapped bytes
    word order DCBA      value bytes = 9A 19 66 43 both

The word-order transform is its own inverse, so encoding applies the same transform to the value bytes.
Then, by data type (see ``protocols.modbus.points`` for the table)::

    pattern = value bytes as an unsigned big-endian number
    int8/uint8   pattern & 0xFF                  bit   (pattern >> bit) & 1
    masked       pattern & mask                  then: signed types two's complement, floats IEEE 754,
    bcd16/32     nibbles, each 0..9              string: ASCII, NULs and spaces stripped at both ends

``decode_point`` raises ``FrameError`` for registers that cannot hold the point (a nibble above 9, a byte that is
not printable ASCII, a register outside 0..0xFFFF); ``encode_point`` raises ``ValueError`` naming the point for a
value the point cannot represent and ``TypeError`` for a value of the wrong kind.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from decimal import Decimal
from typing import Final

from protocols.errors import FrameError
from protocols.modbus.points import (
    BCD_TYPES,
    FLOAT_TYPES,
    SIGNED_TYPES,
    VALUE_BITS,
    Point,
    Value,
    WordOrder,
)

_FLOAT_FORMAT: Final[dict[str, str]] = {"float16": ">e", "float32": ">f", "float64": ">d"}
_BCD_DIGITS: Final[dict[str, int]] = {"bcd16": 4, "bcd32": 8}
_STRIP: Final = "\x00 "
_PRINTABLE: Final = range(0x20, 0x7F)


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """Registers as transmitted (each big-endian); ``ValueError`` for a value outside 0..0xFFFF."""
    for index, register in enumerate(registers):
        if isinstance(register, bool) or not isinstance(register, int) or not 0 <= register <= 0xFFFF:
            raise ValueError(f"register {index} = {register!r} is outside 0..0xFFFF")
    return b"".join(register.to_bytes(2, "big") for register in registers)


def bytes_to_registers(data: bytes) -> list[int]:
    """The registers that carry ``data`` (an even number of bytes), high byte first."""
    if len(data) % 2:
        raise ValueError(f"{len(data)} bytes do not fill whole registers")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def reorder(data: bytes, word_order: WordOrder, *, string: bool = False) -> bytes:
    """Wire bytes <-> value bytes for ``word_order`` (the transform is its own inverse).

    CDAB / DCBA reverse the order of the 16-bit words, BADC / DCBA swap the bytes within each word. A string
    (``string=True``) keeps its words in address order; only the byte swap applies.
    """
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if word_order in ("CDAB", "DCBA") and not string:
        words.reverse()
    if word_order in ("BADC", "DCBA"):
        words = [word[::-1] for word in words]
    return b"".join(words)


def _decimals(number: float) -> int:
    exponent = Decimal(repr(float(number))).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _apply_scale(point: Point, raw: int | float) -> int | float:
    if isinstance(raw, float):
        value = raw * point.scale if point.scale != 1 else raw
        return value + point.offset if point.offset else value
    if point.scale == 1 and point.offset == 0:
        return raw
    decimals = max(_decimals(point.scale), _decimals(point.offset))
    return float(round(raw * point.scale + point.offset, decimals))


def _value_mask(point: Point) -> int:
    """The bits of the value pattern (``VALUE_BITS`` wide, before the word order) that the point owns."""
    if point.data_type == "bit":
        assert point.bit is not None
        return 1 << point.bit
    if point.mask is not None:
        return point.mask
    return (1 << (point.count * 16)) - 1 if point.data_type == "string" else (1 << VALUE_BITS[point.data_type]) - 1


def wire_mask(point: Point) -> list[int]:
    """Per register of ``point``, the bits its value occupies on the wire (0xFFFF unless bit / 8-bit / masked).

    Used to combine several points that share registers (the bits of a status word) and for FC22 mask writes.
    """
    if point.is_bits:
        return [1]
    width = point.count * 2
    return bytes_to_registers(reorder(_value_mask(point).to_bytes(width, "big"), point.word_order))


def _pattern(point: Point, registers: Sequence[int]) -> tuple[bytes, int]:
    if len(registers) != point.count:
        raise ValueError(f"point {point.name} needs {point.count} register(s), got {len(registers)}")
    try:
        wire = registers_to_bytes(registers)
    except ValueError as exc:
        raise FrameError(b"", f"point {point.name}: {exc}") from None
    data = reorder(wire, point.word_order, string=point.data_type == "string")
    return wire, int.from_bytes(data, "big")


def _decode_bcd(point: Point, pattern: int, wire: bytes) -> int:
    digits = _BCD_DIGITS[point.data_type]
    value = 0
    for index in range(digits):
        nibble = (pattern >> (4 * (digits - 1 - index))) & 0xF
        if nibble > 9:
            raise FrameError(
                wire, f"point {point.name}: {point.data_type} 0x{pattern:0{digits}X} has nibble 0x{nibble:X} > 9"
            )
        value = value * 10 + nibble
    return value


def _decode_string(point: Point, wire: bytes) -> str:
    data = reorder(wire, point.word_order, string=True)
    strip = _STRIP.encode()
    text = data.strip(strip)
    start = len(data) - len(data.lstrip(strip))
    for index, byte in enumerate(text):
        if byte not in _PRINTABLE:
            raise FrameError(
                wire, f"point {point.name}: byte 0x{byte:02X} at offset {start + index} is not printable ASCII"
            )
    return text.decode("ascii")


def decode_point(point: Point, registers: Sequence[int]) -> Value:
    """The value of ``point`` from its own ``point.count`` registers (or one bit of a coil / discrete input).

    Raises ``FrameError`` for registers that cannot hold the point, ``ValueError`` for the wrong number of them.
    """
    if point.is_bits:
        if len(registers) != 1:
            raise ValueError(f"point {point.name} needs 1 bit, got {len(registers)}")
        bit = registers[0]
        if bit not in (0, 1):  # True / False are 1 / 0
            raise FrameError(b"", f"point {point.name}: bit value {bit!r} is not 0 or 1")
        return bool(bit)
    wire, pattern = _pattern(point, registers)
    data_type = point.data_type
    if data_type == "string":
        return _decode_string(point, wire)
    if data_type == "bit":
        assert point.bit is not None
        return bool((pattern >> point.bit) & 1)
    bits = VALUE_BITS[data_type]
    pattern &= (1 << bits) - 1  # int8 / uint8: the low byte
    if point.mask is not None:
        pattern &= point.mask
    raw: int | float
    if data_type in FLOAT_TYPES:
        (raw,) = struct.unpack(_FLOAT_FORMAT[data_type], pattern.to_bytes(bits // 8, "big"))
    elif data_type in BCD_TYPES:
        raw = _decode_bcd(point, pattern, wire)
    elif data_type in SIGNED_TYPES and pattern >> (bits - 1):
        raw = pattern - (1 << bits)
    else:
        raw = pattern
    return _apply_scale(point, raw)


def _number(point: Point, value: Value) -> int | float:
    if isinstance(value, str) or not isinstance(value, int | float):
        raise TypeError(f"point {point.name}: {point.data_type} needs a number, got {value!r}")
    return value


def _raw_integer(point: Point, value: Value) -> int:
    number = _number(point, value)
    if isinstance(number, int) and point.scale == 1 and point.offset == 0:
        return int(number)  # exact, also beyond 2**53
    if not math.isfinite(number):
        raise ValueError(f"point {point.name}: {value} is not a finite number")
    return round((number - point.offset) / point.scale)


def _integer_range(point: Point) -> tuple[int, int]:
    data_type = point.data_type
    if data_type in BCD_TYPES:
        return 0, 10 ** _BCD_DIGITS[data_type] - 1
    bits = VALUE_BITS[data_type]
    if data_type in SIGNED_TYPES:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _encode_pattern(point: Point, value: Value) -> int:
    data_type = point.data_type
    if data_type == "bit":
        assert point.bit is not None
        return _bit(point, value) << point.bit
    if data_type in FLOAT_TYPES:
        number = _number(point, value)
        try:
            scaled = (number - point.offset) / point.scale if (point.scale != 1 or point.offset) else float(number)
            data = struct.pack(_FLOAT_FORMAT[data_type], scaled)
        except OverflowError:
            raise ValueError(f"point {point.name}: {value} does not fit a {data_type}") from None
        return int.from_bytes(data, "big")
    raw = _raw_integer(point, value)
    low, high = _integer_range(point)
    if not low <= raw <= high:
        raise ValueError(f"point {point.name}: {value} is {raw} raw, outside the {data_type} range {low}..{high}")
    pattern = int(str(raw), 16) if data_type in BCD_TYPES else raw & ((1 << VALUE_BITS[data_type]) - 1)
    if point.mask is not None and pattern & ~point.mask:
        raise ValueError(
            f"point {point.name}: {value} is raw 0x{pattern:X}, which has bits outside mask 0x{point.mask:X}"
        )
    return pattern


def _bit(point: Point, value: Value) -> int:
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return int(value)
    raise TypeError(f"point {point.name}: a bit needs True / False (or 1 / 0), got {value!r}")


def _encode_string(point: Point, value: Value) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"point {point.name}: a string needs str, got {value!r}")
    size = point.count * 2
    for index, char in enumerate(value):
        if ord(char) not in _PRINTABLE:
            raise ValueError(f"point {point.name}: character {char!r} at {index} is not printable ASCII")
    if len(value) > size:
        raise ValueError(f"point {point.name}: {len(value)} characters do not fit {point.count} registers ({size})")
    return value.encode("ascii").ljust(size, b"\x00")


def encode_point(point: Point, value: Value) -> list[int]:
    """The registers that hold ``value`` for ``point`` (the inverse of decoding; for simulators and writes).

    A coil / discrete input gives ``[0]`` or ``[1]``. A point that owns only part of its register (a register bit,
    int8 / uint8, a mask) gives the register with the other bits 0; ``wire_mask`` says which bits are its own.
    A string is padded with NULs. Raises ``ValueError`` naming the point if the value cannot be represented,
    ``TypeError`` if it is of the wrong kind (text for a number, 2 for a bit).
    """
    if point.is_bits:
        return [_bit(point, value)]
    if point.data_type == "string":
        return bytes_to_registers(reorder(_encode_string(point, value), point.word_order, string=True))
    pattern = _encode_pattern(point, value)
    return bytes_to_registers(reorder(pattern.to_bytes(point.count * 2, "big"), point.word_order))


__all__ = [
    "bytes_to_registers",
    "decode_point",
    "encode_point",
    "registers_to_bytes",
    "reorder",
    "wire_mask",
]
