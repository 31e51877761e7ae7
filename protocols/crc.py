"""CRC-16/Modbus, the checksum that ends every Modbus RTU frame.

RTU frame (serial line; the CRC covers device id, function code and data, and is sent low byte first)::

    [ device id ][ function code ][ data ... ][ crc lo ][ crc hi ]
      1 byte       1 byte           0-252       1 byte    1 byte

    01 04 00 00 00 02 | 71 CB      read 2 input registers from 0x0000 of device 1 (CRC 0xCB71)

CRC-16/Modbus: polynomial 0x8005 reflected (0xA001), initial value 0xFFFF, no final XOR.
"""

from __future__ import annotations

from typing import Final

CRC16_MODBUS_INIT: Final = 0xFFFF
CRC16_MODBUS_POLY_REFLECTED: Final = 0xA001


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC16_MODBUS_POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE: Final = _make_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/Modbus of ``data`` as an integer (``crc16_modbus(b"123456789") == 0x4B37``)."""
    crc = CRC16_MODBUS_INIT
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def append_crc(frame: bytes) -> bytes:
    """``frame`` followed by its CRC, low byte first, as sent on the wire."""
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def check_crc(frame: bytes) -> bool:
    """True if the last two bytes of an RTU ``frame`` are the CRC of the bytes before them."""
    return len(frame) >= 3 and crc16_modbus(frame[:-2]) == int.from_bytes(frame[-2:], "little")


__all__ = ["append_crc", "check_crc", "crc16_modbus"]
