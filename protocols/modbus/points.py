"""What a Modbus point is: register types, data types, word orders, and the validated ``Point`` record.

A ``Point`` names one value in a device's register map. Its registers (or bits) on the wire::

    register_type   function code (read)   unit      addresses
    coil            FC01                   1 bit     0..65535   read / write
    discrete        FC02                   1 bit     0..65535   read only
    holding         FC03                   16 bits   0..65535   read / write
    input           FC04                   16 bits   0..65535   read only

    data_type   registers   value bytes (A = most significant)
    int8/uint8      1       [ - B ]          the low byte of the register (after the byte order; see below)
    int16/uint16    1       [ A B ]
    float16         1       [ A B ]          IEEE 754 half precision
    bcd16           1       [ A B ]          packed BCD, 4 digits 0..9999 (a nibble > 9 is a frame error)
    int32/uint32    2       [ A B ][ C D ]
    float32         2       [ A B ][ C D ]
    bcd32           2       [ A B ][ C D ]   packed BCD, 8 digits 0..99999999
    int64/uint64    4       [ A B ][ C D ][ E F ][ G H ]
    float64         4       [ A B ][ C D ][ E F ][ G H ]
    string        length    [ c0 c1 ][ c2 c3 ] ...  ASCII, NULs and spaces stripped from both ends
    bit           1 / 1 bit a coil or discrete input, or bit N (0 = least significant) of a register

``word_order`` says how the value bytes lie in the registers on the wire (``ABCD`` is Modbus' own big-endian)::

    word_order   32 bit on the wire        64 bit on the wire           16 bit     meaning
    ABCD         [ A B ][ C D ]            [AB][CD][EF][GH]             [ A B ]    big-endian words and bytes
    CDAB         [ C D ][ A B ]            [GH][EF][CD][AB]             [ A B ]    word-swapped (low word first)
    BADC         [ B A ][ D C ]            [BA][DC][FE][HG]             [ B A ]    byte-swapped within words
    DCBA         [ D C ][ B A ]            [HG][FE][DC][BA]             [ B A ]    fully little-endian

For a 16-bit value (and for int8/uint8, bit, bcd16, float16) only the byte order within the register matters:
DCBA and BADC swap its two bytes. So an ``int8``/``uint8`` point reads the low byte of the register with ABCD /
CDAB and the high byte with BADC / DCBA. A ``string`` keeps its registers in address order whatever the word
order; BADC / DCBA swap the two characters within each register.

``mask`` selects bits of the raw value (the value bytes above, as an unsigned number) before they are read as
``data_type`` and before scale and offset: ``uint16`` 0x1234 with mask 0x0FF0 is 0x0230 = 560 (no shift). It is
allowed on the integer and BCD types only. The value of a number is ``raw * scale + offset``; integers stay ``int``
when scale is 1 and offset 0, otherwise they become ``float`` rounded to the decimals of scale and offset (an int16
of 215 at scale 0.1 is 21.5, not 21.500000000000004).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import Final, Literal, TypeAlias, get_args

RegisterType: TypeAlias = Literal["coil", "discrete", "holding", "input"]
DataType: TypeAlias = Literal[
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
    "bit",
    "string",
    "bcd16",
    "bcd32",
]
WordOrder: TypeAlias = Literal["ABCD", "DCBA", "BADC", "CDAB"]
PointKind: TypeAlias = Literal["metric", "event"]
AddressBase: TypeAlias = Literal[0, 1]
Value: TypeAlias = int | float | bool | str
"""A decoded value: ``int`` / ``float`` for numbers, ``bool`` for bits, ``str`` for strings."""

REGISTER_TYPES: Final[tuple[str, ...]] = get_args(RegisterType)
DATA_TYPES: Final[tuple[str, ...]] = get_args(DataType)
WORD_ORDERS: Final[tuple[str, ...]] = get_args(WordOrder)
POINT_KINDS: Final[tuple[str, ...]] = get_args(PointKind)

BIT_REGISTER_TYPES: Final = frozenset({"coil", "discrete"})
WRITABLE_REGISTER_TYPES: Final = frozenset({"coil", "holding"})
FUNCTION_CODES: Final[dict[str, int]] = {"coil": 0x01, "discrete": 0x02, "holding": 0x03, "input": 0x04}

MAX_ADDRESS: Final = 0xFFFF
MODBUS_MAX_READ_COUNT: Final = 125  # registers a FC03 / FC04 request may ask for
MODBUS_MAX_READ_BITS: Final = 2000  # bits a FC01 / FC02 request may ask for

SIGNED_TYPES: Final = frozenset({"int8", "int16", "int32", "int64"})
INTEGER_TYPES: Final = SIGNED_TYPES | {"uint8", "uint16", "uint32", "uint64"}
FLOAT_TYPES: Final = frozenset({"float16", "float32", "float64"})
BCD_TYPES: Final = frozenset({"bcd16", "bcd32"})
NUMBER_TYPES: Final = INTEGER_TYPES | FLOAT_TYPES | BCD_TYPES
MASKABLE_TYPES: Final = INTEGER_TYPES | BCD_TYPES

REGISTERS_OF_TYPE: Final[dict[str, int]] = {
    "int8": 1,
    "uint8": 1,
    "int16": 1,
    "uint16": 1,
    "float16": 1,
    "bcd16": 1,
    "bit": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "bcd32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
VALUE_BITS: Final[dict[str, int]] = {
    "int8": 8,
    "uint8": 8,
    "int16": 16,
    "uint16": 16,
    "float16": 16,
    "bcd16": 16,
    "bit": 16,
    "int32": 32,
    "uint32": 32,
    "float32": 32,
    "bcd32": 32,
    "int64": 64,
    "uint64": 64,
    "float64": 64,
}
"""Width of the raw value in bits (a ``bit`` point's raw value is its whole register)."""

# Address ranges of the "as printed" register numbers of address base 1: 5-digit (4xxxx) and 6-digit (4xxxxx).
_PRINTED_PREFIXES: Final[dict[str, tuple[tuple[int, int], ...]]] = {
    "coil": (),
    "discrete": ((10_001, 19_999), (100_001, 165_536)),
    "input": ((30_001, 39_999), (300_001, 365_536)),
    "holding": ((40_001, 49_999), (400_001, 465_536)),
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wire_address(address: int, register_type: RegisterType, *, address_base: AddressBase) -> int:
    """The address sent on the wire for ``address`` as a manual prints it.

    ``address_base`` 0: ``address`` already is the wire address. 1: register numbers start at 1; the 5- and
    6-digit forms with the register type's prefix are accepted and stripped (holding 40001 / 400001 -> 0,
    input 30001 -> 0, discrete 10001 -> 0; coils are plain 1-based numbers). Raises ``ValueError`` saying what
    was expected for an address below the base, a prefix of another register type, or a result beyond 65535.
    """
    if not _is_int(address):
        raise ValueError(f"expected an integer address, got {address!r}")
    if address_base not in (0, 1):
        raise ValueError(f"address_base must be 0 or 1, got {address_base!r}")
    if address < address_base:
        raise ValueError(f"address {address} is below address_base {address_base}")
    wire = address
    if address_base == 1:
        wire = address - 1
        for low, high in _PRINTED_PREFIXES[register_type]:
            if low <= address <= high:
                wire = address - low
                break
        else:
            for other, ranges in _PRINTED_PREFIXES.items():
                if other != register_type and any(low <= address <= high for low, high in ranges):
                    article = "an" if other[0] in "aeiou" else "a"
                    raise ValueError(
                        f"address {address} is {article} {other} register number but register_type is {register_type} "
                        "(use address_base 0 and the wire address if the device really numbers it so)"
                    )
    if wire > MAX_ADDRESS:
        raise ValueError(f"address {address} is wire address {wire}, beyond {MAX_ADDRESS}")
    return wire


@dataclass(frozen=True)
class Point:
    """One value in a register map: ``Point("voltage_l1", 0x0000, "input", "float32", unit="V")``.

    ``address`` is the wire address (0-based). Options after ``unit`` are keyword-only: ``word_order``,
    ``offset``, ``mask``, ``bit`` (register bit of a ``bit`` point on a holding / input register), ``length``
    (registers of a ``string``), ``kind`` (``metric``: a reading; ``event``: record changes), ``poll_group``,
    ``deadband`` (report a metric again only when it moved more than this). Raises ``ValueError`` naming the
    point for anything inconsistent.
    """

    name: str
    address: int
    register_type: RegisterType
    data_type: DataType
    scale: float = 1.0
    unit: str = ""
    _: KW_ONLY
    word_order: WordOrder = "ABCD"
    offset: float = 0.0
    mask: int | None = None
    bit: int | None = None
    length: int | None = None
    kind: PointKind = "metric"
    poll_group: str = "default"
    deadband: float | None = None

    def __post_init__(self) -> None:
        name, data_type, register_type = self.name, self.data_type, self.register_type
        if not isinstance(name, str) or not name:
            raise ValueError("Point.name must not be empty")
        if register_type not in REGISTER_TYPES:
            raise ValueError(f"point {name}: register_type {register_type!r}, expected one of {list(REGISTER_TYPES)}")
        if data_type not in DATA_TYPES:
            raise ValueError(f"point {name}: data_type {data_type!r}, expected one of {list(DATA_TYPES)}")
        if register_type in BIT_REGISTER_TYPES and data_type != "bit":
            raise ValueError(
                f"point {name}: register_type {register_type!r} holds single bits: data_type must be 'bit', "
                f"got {data_type!r}"
            )
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"point {name}: word_order {self.word_order!r}, expected one of {list(WORD_ORDERS)}")
        if self.kind not in POINT_KINDS:
            raise ValueError(f"point {name}: kind {self.kind!r}, expected one of {list(POINT_KINDS)}")
        if not isinstance(self.poll_group, str) or not self.poll_group:
            raise ValueError(f"point {name}: poll_group must be a non-empty name")
        self._check_bit()
        self._check_length()
        self._check_mask()
        self._check_numbers()
        if not _is_int(self.address) or not 0 <= self.address <= MAX_ADDRESS - self.count + 1:
            raise ValueError(f"point {name}: address {self.address} outside 0..{MAX_ADDRESS - self.count + 1}")

    def _check_bit(self) -> None:
        if self.data_type != "bit" or self.register_type in BIT_REGISTER_TYPES:
            if self.bit is not None:
                where = "a bit point on a holding or input register" if self.data_type != "bit" else "a register"
                raise ValueError(f"point {self.name}: bit is only for {where}, got bit={self.bit}")
            return
        if self.bit is None:
            raise ValueError(f"point {self.name}: data_type 'bit' on a {self.register_type} register needs bit 0..15")
        if not _is_int(self.bit) or not 0 <= self.bit <= 15:
            raise ValueError(f"point {self.name}: bit {self.bit!r} outside 0..15")

    def _check_length(self) -> None:
        if self.data_type != "string":
            if self.length is not None:
                raise ValueError(f"point {self.name}: length is only for data_type 'string', got {self.length}")
            return
        if self.length is None:
            raise ValueError(f"point {self.name}: data_type 'string' needs length (registers, 2 characters each)")
        if not _is_int(self.length) or not 1 <= self.length <= MODBUS_MAX_READ_COUNT:
            raise ValueError(f"point {self.name}: length {self.length!r} outside 1..{MODBUS_MAX_READ_COUNT}")

    def _check_mask(self) -> None:
        if self.mask is None:
            return
        if self.data_type not in MASKABLE_TYPES:
            raise ValueError(f"point {self.name}: mask is only for integer and BCD types, not {self.data_type}")
        top = (1 << VALUE_BITS[self.data_type]) - 1
        if not _is_int(self.mask) or not 1 <= self.mask <= top:
            raise ValueError(f"point {self.name}: mask {self.mask!r} outside 1..0x{top:X} for {self.data_type}")

    def _check_numbers(self) -> None:
        name = self.name
        for field_name, number in (("scale", self.scale), ("offset", self.offset)):
            if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
                raise ValueError(f"point {name}: {field_name} must be a finite number, got {number!r}")
        if self.scale == 0:
            raise ValueError(f"point {name}: scale must not be 0")
        if self.deadband is not None and (
            isinstance(self.deadband, bool)
            or not isinstance(self.deadband, int | float)
            or not math.isfinite(self.deadband)
            or self.deadband < 0
        ):
            raise ValueError(f"point {name}: deadband must be a number >= 0, got {self.deadband!r}")
        if self.data_type not in NUMBER_TYPES:
            if self.scale != 1 or self.offset != 0:
                raise ValueError(f"point {name}: scale and offset are only for numbers, not {self.data_type}")
            if self.deadband is not None:
                raise ValueError(f"point {name}: deadband is only for numbers, not {self.data_type}")

    @property
    def count(self) -> int:
        """Registers the point occupies (bits for a coil or discrete input)."""
        if self.data_type == "string":
            assert self.length is not None  # checked on construction
            return self.length
        return REGISTERS_OF_TYPE[self.data_type]

    @property
    def is_bits(self) -> bool:
        """True for a coil or discrete input (read in bits, not registers)."""
        return self.register_type in BIT_REGISTER_TYPES

    @property
    def is_number(self) -> bool:
        return self.data_type in NUMBER_TYPES


__all__ = [
    "BCD_TYPES",
    "BIT_REGISTER_TYPES",
    "DATA_TYPES",
    "FLOAT_TYPES",
    "FUNCTION_CODES",
    "INTEGER_TYPES",
    "MASKABLE_TYPES",
    "MAX_ADDRESS",
    "MODBUS_MAX_READ_BITS",
    "MODBUS_MAX_READ_COUNT",
    "NUMBER_TYPES",
    "POINT_KINDS",
    "REGISTERS_OF_TYPE",
    "REGISTER_TYPES",
    "SIGNED_TYPES",
    "VALUE_BITS",
    "WORD_ORDERS",
    "WRITABLE_REGISTER_TYPES",
    "AddressBase",
    "DataType",
    "Point",
    "PointKind",
    "RegisterType",
    "Value",
    "WordOrder",
    "wire_address",
]
