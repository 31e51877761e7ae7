"""The Modbus codec: points, value decoding / encoding in every word order, read planning and write requests.

    protocols/modbus/
    ├── points.py    register and data types, word orders, ``Point`` (validated), ``wire_address`` (address bases)
    ├── values.py    one point's value <-> its registers: ``decode_point``, ``encode_point``, ``wire_mask``
    └── plan.py      ``plan_reads`` -> ``ReadBlock``; ``decode_block`` / ``encode_block``; ``write_request``

Pure code over registers and bytes: no sockets, no serial ports, no sleeping. Register maps of device models are
data (``firmware-config/profiles``; the simulators' in ``protocols.sim``).

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

The SDM630's map (``protocols.sim.modbus_devices.SDM630_POINTS``) plans into four reads (0x00-0x11, 0x34-0x35,
0x46-0x4B, 0x156-0x157).
"""

from protocols.modbus.plan import (
    DEFAULT_MAX_COUNT,
    DEFAULT_MAX_GAP,
    EXCEPTION_NAMES,
    FC_MASK_WRITE_REGISTER,
    FC_WRITE_MULTIPLE_COILS,
    FC_WRITE_MULTIPLE_REGISTERS,
    FC_WRITE_SINGLE_COIL,
    FC_WRITE_SINGLE_REGISTER,
    ReadBlock,
    WritePayload,
    decode_block,
    encode_block,
    plan_reads,
    write_request,
)
from protocols.modbus.points import (
    DATA_TYPES,
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
    RegisterType,
    Value,
    WordOrder,
    wire_address,
)
from protocols.modbus.values import (
    bytes_to_registers,
    decode_point,
    encode_point,
    registers_to_bytes,
    reorder,
    wire_mask,
)

__all__ = [
    "DATA_TYPES",
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_GAP",
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
