"""Modbus register maps of the sensors floorgate polls, and the public names of the Modbus codec.

The codec lives in ``protocols.modbus`` (points and data types, word orders, read planning, decoding, writes);
this module re-exports it so that ``from protocols.modbus_maps import Point, plan_reads, decode_block`` keeps
working, and holds the two built-in maps. Device profiles (``firmware-config/profiles/*.yaml``) describe further
devices with the same ``Point`` fields.

Read request and response PDUs (function code 0x03 holding / 0x04 input registers; on RTU framed by device id and
CRC, see ``protocols.crc``; on TCP by the MBAP header ``[ tid ][ pid ][ length ][ uid ]``)::

    request   [ fc ][ start address hi lo ][ register count hi lo ]
    response  [ fc ][ byte count ][ reg 0 hi lo ][ reg 1 hi lo ] ...
    exception [ fc | 0x80 ][ exception code ]                      0x02 = illegal data address

Eastron meters send float32 high word first, each register big-endian (word order ABCD)::

    float32   [ reg n: bytes A B ][ reg n+1: bytes C D ]   value = struct ">f" of ABCD

    RTU vector (Eastron SDM630, voltage L1):
        request   01 04 00 00 00 02 71 CB
        response  01 04 04 43 66 19 9A 85 E4    registers 0x4366 0x199A -> float32 230.1 V

``plan_reads(SDM630_POINTS)`` is four reads (0x00-0x11, 0x34-0x35, 0x46-0x4B, 0x156-0x157). The two maps have no
gaps inside their blocks, so floorgate's simulators (which answer "illegal data address" for unmapped registers)
serve them with the default ``max_gap``.
"""

from __future__ import annotations

from typing import Final

from protocols.modbus import (
    DATA_TYPES,
    DEFAULT_MAX_COUNT,
    DEFAULT_MAX_GAP,
    EXCEPTION_NAMES,
    FC_MASK_WRITE_REGISTER,
    FC_WRITE_MULTIPLE_COILS,
    FC_WRITE_MULTIPLE_REGISTERS,
    FC_WRITE_SINGLE_COIL,
    FC_WRITE_SINGLE_REGISTER,
    FUNCTION_CODES,
    MAX_ADDRESS,
    MODBUS_MAX_READ_BITS,
    MODBUS_MAX_READ_COUNT,
    POINT_KINDS,
    REGISTER_TYPES,
    WORD_ORDERS,
    AddressBase,
    DataType,
    Point,
    PointKind,
    ReadBlock,
    RegisterType,
    Value,
    WordOrder,
    WritePayload,
    bytes_to_registers,
    decode_block,
    decode_point,
    encode_block,
    encode_point,
    plan_reads,
    registers_to_bytes,
    reorder,
    wire_address,
    wire_mask,
    write_request,
)


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

__all__ = [
    "DATA_TYPES",
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_GAP",
    "DEVICE_MAPS",
    "EXCEPTION_NAMES",
    "FC_MASK_WRITE_REGISTER",
    "FC_WRITE_MULTIPLE_COILS",
    "FC_WRITE_MULTIPLE_REGISTERS",
    "FC_WRITE_SINGLE_COIL",
    "FC_WRITE_SINGLE_REGISTER",
    "FUNCTION_CODES",
    "MAX_ADDRESS",
    "MODBUS_MAX_READ_BITS",
    "MODBUS_MAX_READ_COUNT",
    "POINT_KINDS",
    "REGISTER_TYPES",
    "SDM630_POINTS",
    "TH_PROBE_POINTS",
    "WORD_ORDERS",
    "AddressBase",
    "DataType",
    "Point",
    "PointKind",
    "ReadBlock",
    "RegisterType",
    "Value",
    "WordOrder",
    "WritePayload",
    "bytes_to_registers",
    "decode_block",
    "decode_point",
    "encode_block",
    "encode_point",
    "plan_reads",
    "registers_to_bytes",
    "reorder",
    "wire_address",
    "wire_mask",
    "write_request",
]
