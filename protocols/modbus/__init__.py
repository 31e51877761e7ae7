"""The Modbus codec: points, value decoding / encoding in every word order, read planning and write requests.

    protocols/modbus/
    ├── points.py    register and data types, word orders, ``Point`` (validated), ``wire_address`` (address bases)
    ├── values.py    one point's value <-> its registers: ``decode_point``, ``encode_point``, ``wire_mask``
    └── plan.py      ``plan_reads`` -> ``ReadBlock``; ``decode_block`` / ``encode_block``; ``write_request``

``protocols.modbus_maps`` re-exports these names and adds the built-in device maps (SDM630, T/H probe).
Pure code over registers and bytes: no sockets, no serial ports, no sleeping.
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
