"""Minimal DER (X.690 Distinguished Encoding Rules) for the TSE log messages: TLVs, INTEGER, OID, time strings.

Only what TR-03151 log messages use, written out because it is small and every byte matters (the signature covers
the encodings themselves, so an encoder that "normalises" anything breaks verification)::

    [ tag ][ length ][ content ]
      1 B    1 B if < 128, else 0x80|n followed by n big-endian bytes (minimal: no leading zero byte)

Tags used (single byte; class in bits 8-7, constructed bit 6):

    0x02 INTEGER   0x04 OCTET STRING   0x06 OBJECT IDENTIFIER   0x13 PrintableString   0x17 UTCTime
    0x18 GeneralizedTime   0x30 SEQUENCE   0x80 | n  [n] IMPLICIT primitive   0xA0 | n  [n] constructed

The decoder is strict: indefinite lengths, non-minimal lengths, non-minimal INTEGERs, multi-byte tags and
trailing bytes are refused with a :class:`DerError` that says where (offset) and what.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from protocols.tse.errors import DerError

INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
OBJECT_IDENTIFIER: Final = 0x06
PRINTABLE_STRING: Final = 0x13
UTC_TIME: Final = 0x17
GENERALIZED_TIME: Final = 0x18
SEQUENCE: Final = 0x30
CONTEXT: Final = 0x80
CONSTRUCTED: Final = 0x20

PRINTABLE_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")


def context(number: int) -> int:
    """The tag of ``[number] IMPLICIT`` over a primitive type (``[0]`` -> 0x80)."""
    if not 0 <= number <= 30:
        raise ValueError(f"context tag number {number} is outside 0..30")
    return CONTEXT | number


@dataclass(frozen=True)
class Tlv:
    """One decoded element: its tag, its content, and where it sat in the input (``raw`` is header + content)."""

    tag: int
    content: bytes
    offset: int
    raw: bytes


def encode_length(length: int) -> bytes:
    if length < 0:
        raise ValueError(f"negative length {length}")
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > 0x7E:
        raise ValueError(f"length {length} is too large for DER")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """The DER encoding of one element."""
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise ValueError(f"tag 0x{tag:x} is not a single-byte DER tag")
    return bytes([tag]) + encode_length(len(content)) + content


def integer_content(value: int) -> bytes:
    """Two's complement, big-endian, as few bytes as possible (0 -> 00, 128 -> 00 80, -1 -> ff)."""
    magnitude = value if value >= 0 else ~value  # the bits besides the sign bit
    return value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


def encode_integer(value: int, tag: int = INTEGER) -> bytes:
    return tlv(tag, integer_content(value))


def decode_integer(element: Tlv) -> int:
    data = element.content
    if not data:
        raise DerError(element.raw, f"INTEGER at offset {element.offset} has no content")
    if len(data) > 1 and ((data[0] == 0x00 and data[1] < 0x80) or (data[0] == 0xFF and data[1] >= 0x80)):
        raise DerError(element.raw, f"INTEGER at offset {element.offset} is not minimally encoded")
    return int.from_bytes(data, "big", signed=True)


def oid_content(dotted: str) -> bytes:
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError:
        raise ValueError(f"OID {dotted!r} is not dotted decimal") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or any(a < 0 for a in arcs):
        raise ValueError(f"OID {dotted!r} is not valid")
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def encode_oid(dotted: str) -> bytes:
    return tlv(OBJECT_IDENTIFIER, oid_content(dotted))


def decode_oid(element: Tlv) -> str:
    data = element.content
    if not data or data[-1] & 0x80:
        raise DerError(element.raw, f"OBJECT IDENTIFIER at offset {element.offset} is empty or truncated")
    arcs: list[int] = []
    value = 0
    start = True
    for byte in data:
        if start and byte == 0x80:
            raise DerError(element.raw, f"OBJECT IDENTIFIER at offset {element.offset} has a non-minimal arc")
        value = (value << 7) | (byte & 0x7F)
        start = not byte & 0x80
        if start:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def decode_one(data: bytes, offset: int = 0) -> Tlv:
    """The element starting at ``offset`` (which may be followed by more)."""
    if offset >= len(data):
        raise DerError(data, f"expected an element at offset {offset}, found the end of the data")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError(data, f"multi-byte tag at offset {offset} (not used in TSE log messages)")
    pos = offset + 1
    if pos >= len(data):
        raise DerError(data, f"element at offset {offset} (tag 0x{tag:02x}) has no length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(data, f"indefinite length at offset {offset + 1} is not DER")
    else:
        count = first & 0x7F
        if pos + count > len(data):
            raise DerError(data, f"length of the element at offset {offset} is truncated")
        body = data[pos : pos + count]
        pos += count
        if body[0] == 0 or (count == 1 and body[0] < 0x80):
            raise DerError(data, f"length at offset {offset + 1} is not minimally encoded")
        length = int.from_bytes(body, "big")
    end = pos + length
    if end > len(data):
        raise DerError(
            data, f"element at offset {offset} (tag 0x{tag:02x}) claims {length} bytes, only {len(data) - pos} follow"
        )
    return Tlv(tag=tag, content=data[pos:end], offset=offset, raw=data[offset:end])


def iter_elements(data: bytes, *, base_offset: int = 0) -> Iterator[Tlv]:
    """Every element in ``data`` one after another (the content of a SEQUENCE); offsets relative to the input."""
    pos = 0
    while pos < len(data):
        element = decode_one(data, pos)
        yield Tlv(element.tag, element.content, base_offset + pos, element.raw)
        pos += len(element.raw)


def decode_single(data: bytes, tag: int) -> Tlv:
    """``data`` must be exactly one element with ``tag``, nothing before or after."""
    element = decode_one(data)
    if element.tag != tag:
        raise DerError(data, f"expected tag 0x{tag:02x} at offset 0, found 0x{element.tag:02x}")
    if len(element.raw) != len(data):
        raise DerError(data, f"{len(data) - len(element.raw)} trailing bytes after the element")
    return element


def header_length(data: bytes) -> int:
    """How many bytes the tag and length of the element at the start of ``data`` take."""
    element = decode_one(data)
    return len(element.raw) - len(element.content)


__all__ = [
    "GENERALIZED_TIME", "INTEGER", "OBJECT_IDENTIFIER", "OCTET_STRING", "PRINTABLE_CHARS", "PRINTABLE_STRING",
    "SEQUENCE", "UTC_TIME", "Tlv", "context", "decode_integer", "decode_oid", "decode_one", "decode_single",
    "encode_integer", "encode_length", "encode_oid", "header_length", "integer_content", "iter_elements",
    "oid_content", "tlv",
]  # fmt: skip
