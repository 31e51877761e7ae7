"""Small helpers of the Modbus codec tests (``tests/unit/test_modbus_*.py``): a point with defaults, the read block
of one point, and one point's value from its registers."""

from __future__ import annotations

from typing import Any

from protocols.modbus import Point, ReadBlock, decode_block


def point(data_type: str, order: str = "ABCD", *, register_type: str = "holding", address: int = 100,
          **kw: Any) -> Point:
    """The point ``p`` of ``data_type`` at holding register 100 (by default) in word ``order``."""
    return Point("p", address, register_type, data_type, word_order=order, **kw)  # type: ignore[arg-type]


def single(p: Point) -> ReadBlock:
    """The read of ``p`` alone."""
    return ReadBlock(p.register_type, p.address, p.count, (p,))


def decode(p: Point, registers: list[int]) -> Any:
    """``p``'s value from its registers."""
    return decode_block(single(p), registers)[p.name]
