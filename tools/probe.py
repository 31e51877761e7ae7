"""``floorgate probe``: read a range of Modbus registers once and show them decoded every plausible way.

For the commissioning engineer who does not know a device's layout yet: one FC03 / FC04 request, then a table::

    floorgate probe tcp://192.168.10.20:502 --unit-id 1 --register-type input --address 0 --count 4

    tcp://192.168.10.20:502 unit 1: input registers 0..3 (wire 0x0000-0x0003), FC04, 4 registers
    address  wire    hex    int16  uint16  chars           every register: hex, 16-bit values, characters
          0  0x0000  4366   17254   17254  'Cf'
          1  0x0001  199A    6554    6554  '..'
          ...
    32-bit (registers n, n+1)                               every pair in the four word orders
    address  order  int32          uint32         float32
          0  ABCD   1130764698     1130764698     230.1     <- an SDM630's voltage L1
          0  CDAB   429540198      429540198      1.595045e-23
          ...
    64-bit (registers n..n+3)                               every quad in the four word orders
    address  order  int64                   float64
          0  ABCD   4856597398512140288     4.97647986729288e+16
          ...
    text ABCD 'Cf..Cg..'  BADC 'fC..gC..'                   the range as ASCII (non-printable bytes as '.')

Targets (``--timeout-s`` for the answer; the request is sent once, without retries)::

    tcp://HOST:PORT                                   Modbus TCP (MBAP header)
    rtu-over-tcp://HOST:PORT                          RTU frames through a transparent serial device server
    rtu:///dev/ttyUSB0?baudrate=9600&parity=N&stopbits=1&bytesize=8     RS-485 line (those are the defaults)

``--address-base 1`` takes ``--address`` as printed in manuals (1-based; 30001 / 40001 numbers are stripped).
Every value in the table comes from the codec in ``protocols.modbus`` (``decode_block``): the probe shows what a
profile with that data type and word order would read. A Modbus exception, no answer or no connection prints one
line naming the device address, the unit id and the function code, and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from protocols.errors import FrameError
from protocols.modbus import (
    EXCEPTION_NAMES,
    FUNCTION_CODES,
    MAX_ADDRESS,
    MODBUS_MAX_READ_COUNT,
    AddressBase,
    Point,
    ReadBlock,
    Value,
    decode_block,
    decode_point,
    registers_to_bytes,
    reorder,
    wire_address,
)

DEFAULT_TIMEOUT_S: Final = 2.0
DEFAULT_COUNT: Final = 10
DEFAULT_TCP_PORT: Final = 502
SERIAL_DEFAULTS: Final[dict[str, int | str]] = {"baudrate": 9600, "parity": "N", "stopbits": 1, "bytesize": 8}

TargetKind = Literal["tcp", "rtu-over-tcp", "rtu"]
ProbeRegisterType = Literal["holding", "input"]
PAIR_TYPES: Final = ("int32", "uint32", "float32")
QUAD_TYPES: Final = ("int64", "float64")
_FLOAT_DIGITS: Final = {"float32": 7, "float64": 15}
DISPLAY_ORDERS: Final = ("ABCD", "CDAB", "BADC", "DCBA")  # as-is, word swap, byte swap, both


class ProbeError(Exception):
    """The read failed; ``str()`` is the one line to print."""


# ---------------------------------------------------------------------------------------------- the target
@dataclass(frozen=True)
class Target:
    """Where the device is: ``tcp://HOST:PORT``, ``rtu-over-tcp://HOST:PORT`` or ``rtu:///dev/ttyX?baudrate=…``."""

    url: str
    kind: TargetKind
    host: str = ""
    port: int = DEFAULT_TCP_PORT
    device: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


def parse_target(text: str) -> Target:
    """The ``Target`` for ``text``; ``ValueError`` saying what was expected."""
    parts = urlsplit(text)
    if parts.scheme in ("tcp", "rtu-over-tcp"):
        kind: TargetKind = "tcp" if parts.scheme == "tcp" else "rtu-over-tcp"
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{text!r}: expected {kind}://HOST:PORT")
        return Target(text, kind, host=parts.hostname, port=port or DEFAULT_TCP_PORT)
    if parts.scheme == "rtu":
        device = parts.netloc + parts.path
        if not device:
            raise ValueError(f"{text!r}: expected rtu:///dev/ttyXXX[?baudrate=9600&parity=N&stopbits=1&bytesize=8]")
        settings: dict[str, int | str] = dict(SERIAL_DEFAULTS)
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            if key not in SERIAL_DEFAULTS:
                raise ValueError(f"{text!r}: unknown option {key!r} (expected {', '.join(SERIAL_DEFAULTS)})")
            settings[key] = values[-1]
        try:
            baudrate, stopbits, bytesize = (int(settings[k]) for k in ("baudrate", "stopbits", "bytesize"))
        except ValueError:
            raise ValueError(f"{text!r}: baudrate, stopbits and bytesize must be numbers") from None
        parity = str(settings["parity"]).upper()
        if parity not in ("N", "E", "O") or stopbits not in (1, 2) or bytesize not in (7, 8) or baudrate <= 0:
            raise ValueError(f"{text!r}: expected parity N|E|O, stopbits 1|2, bytesize 7|8, a positive baudrate")
        return Target(
            text, "rtu", device=device, baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize
        )
    raise ValueError(f"{text!r}: expected tcp://HOST:PORT, rtu-over-tcp://HOST:PORT or rtu:///dev/ttyXXX?baudrate=…")


# ---------------------------------------------------------------------------------------------- the read
@dataclass(frozen=True)
class ProbeRequest:
    target: Target
    unit_id: int
    register_type: ProbeRegisterType
    address: int  # as given, in ``address_base``
    count: int
    address_base: AddressBase = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def wire_address(self) -> int:
        return wire_address(self.address, self.register_type, address_base=self.address_base)

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.register_type]

    @property
    def label(self) -> str:
        """``tcp://127.0.0.1:502 unit 1 FC04 (input 0..9, wire 0x0000-0x0009)`` for error lines."""
        wire = self.wire_address
        return (
            f"{self.target.url} unit {self.unit_id} FC{self.function_code:02d} ({self.register_type} "
            f"{self.address}..{self.address + self.count - 1}, wire 0x{wire:04X}-0x{wire + self.count - 1:04X})"
        )


@contextlib.contextmanager
def _quiet_pymodbus() -> Iterator[None]:
    """pymodbus logs each failure itself; the probe prints its own one line instead (unless debugging)."""
    logger = logging.getLogger("pymodbus")
    level = logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _client(request: ProbeRequest) -> ModbusTcpClient | ModbusSerialClient:
    target = request.target
    if target.kind == "rtu":
        return ModbusSerialClient(
            target.device,
            framer=FramerType.RTU,
            baudrate=target.baudrate,
            parity=target.parity,
            stopbits=target.stopbits,
            bytesize=target.bytesize,
            timeout=request.timeout_s,
            retries=0,
        )
    framer = FramerType.RTU if target.kind == "rtu-over-tcp" else FramerType.SOCKET
    return ModbusTcpClient(target.host, port=target.port, framer=framer, timeout=request.timeout_s, retries=0)


def read_registers(request: ProbeRequest) -> list[int]:
    """One FC03 / FC04 request; ``ProbeError`` with one line for no connection, no answer or an exception."""
    with _quiet_pymodbus():
        client = _client(request)
        try:
            if not client.connect():
                raise ProbeError(f"{request.label}: cannot connect")
            read = client.read_holding_registers if request.register_type == "holding" else client.read_input_registers
            try:
                response = read(request.wire_address, count=request.count, device_id=request.unit_id)
            except ModbusException as exc:
                reason = " ".join(str(exc).split())
                raise ProbeError(f"{request.label}: no answer within {request.timeout_s:g} s ({reason})") from None
        finally:
            client.close()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
    if response.isError():
        code = int(getattr(response, "exception_code", 0))
        name = EXCEPTION_NAMES.get(code, "unknown exception code")
        raise ProbeError(f"{request.label}: Modbus exception 0x{code:02X} ({name})")
    registers = list(response.registers)
    if len(registers) != request.count:
        raise ProbeError(f"{request.label}: asked for {request.count} registers, got {len(registers)}")
    return registers


# ---------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class RegisterRow:
    address: int  # as given (in the request's address base)
    wire: int
    register: int
    int16: int
    uint16: int
    chars: str


@dataclass(frozen=True)
class WideRow:
    """A 32- or 64-bit value starting at ``address`` in one word order: ``values`` by data type."""

    address: int
    wire: int
    word_order: str
    values: dict[str, Value]


@dataclass(frozen=True)
class ProbeTable:
    registers: tuple[RegisterRow, ...]
    pairs: tuple[WideRow, ...]
    quads: tuple[WideRow, ...]
    text: dict[str, str]  # word order ABCD / BADC -> the range as ASCII


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)


def build_table(
    registers: Sequence[int], *, register_type: ProbeRegisterType, wire: int, address: int | None = None
) -> ProbeTable:
    """Decode ``registers`` (read from ``wire`` on) as every type the probe shows, with the codec.

    ``address`` is the first register's number as the user gave it (default: ``wire``).
    """
    count = len(registers)
    first = wire if address is None else address
    points: list[Point] = []
    for offset in range(count):
        points += [Point(f"{offset}:{t}", wire + offset, register_type, t) for t in ("int16", "uint16")]
    for width, types in ((2, PAIR_TYPES), (4, QUAD_TYPES)):
        for offset in range(count - width + 1):
            points += [
                Point(f"{offset}:{order}:{t}", wire + offset, register_type, t, word_order=order)  # type: ignore[arg-type]
                for order in DISPLAY_ORDERS
                for t in types
            ]
    values = decode_block(ReadBlock(register_type, wire, count, tuple(points)), registers)
    data = registers_to_bytes(registers)

    rows = tuple(
        RegisterRow(
            first + offset,
            wire + offset,
            registers[offset],
            int(values[f"{offset}:int16"]),
            int(values[f"{offset}:uint16"]),
            _printable(data[2 * offset : 2 * offset + 2]),
        )
        for offset in range(count)
    )

    def wide(width: int, types: tuple[str, ...]) -> tuple[WideRow, ...]:
        return tuple(
            WideRow(first + offset, wire + offset, order, {t: values[f"{offset}:{order}:{t}"] for t in types})
            for offset in range(count - width + 1)
            for order in DISPLAY_ORDERS
        )

    text: dict[str, str] = {}
    for order in ("ABCD", "BADC"):
        string = Point("text", wire, register_type, "string", length=count, word_order=order)
        try:
            text[order] = str(decode_point(string, registers))
        except FrameError:  # not clean ASCII: show the bytes, non-printable ones as '.'
            text[order] = _printable(reorder(data, order, string=True))
    return ProbeTable(rows, wide(2, PAIR_TYPES), wide(4, QUAD_TYPES), text)


def _show(value: Value, data_type: str) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return format(value, f".{_FLOAT_DIGITS[data_type]}g")
    return str(value)


def format_table(request: ProbeRequest, table: ProbeTable) -> str:
    """The table as text, one line per register, per pair and per quad (and word order)."""
    wire = request.wire_address
    last = request.address + request.count - 1
    lines = [
        f"{request.target.url} unit {request.unit_id}: {request.register_type} registers {request.address}..{last} "
        f"(wire 0x{wire:04X}-0x{wire + request.count - 1:04X}), FC{request.function_code:02d}, "
        f"{request.count} register{'s' if request.count != 1 else ''}",
        f"{'address':>7}  {'wire':6}  {'hex':4}  {'int16':>6}  {'uint16':>6}  chars",
    ]
    lines += [
        f"{r.address:>7}  0x{r.wire:04X}  {r.register:04X}  {r.int16:>6}  {r.uint16:>6}  {r.chars!r}"
        for r in table.registers
    ]
    for title, rows, types, width in (
        ("32-bit (registers n, n+1)", table.pairs, PAIR_TYPES, 13),
        ("64-bit (registers n..n+3)", table.quads, QUAD_TYPES, 22),
    ):
        lines.append(title)
        if not rows:
            lines.append("  (the range is too short)")
            continue
        lines.append(f"{'address':>7}  order  " + "  ".join(f"{t:<{width}}" for t in types).rstrip())
        lines += [
            f"{r.address:>7}  {r.word_order}   "
            + "  ".join(f"{_show(r.values[t], t):<{width}}" for t in types).rstrip()
            for r in rows
        ]
    lines.append("text " + "  ".join(f"{order} {text!r}" for order, text in table.text.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the command
def _target(text: str) -> Target:
    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number (decimal or 0x hex)") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds within (0, 60]")
    return value


_DESCRIPTION: Final = """\
Read COUNT registers of a Modbus device with one request and print
  - for each register: its hex, int16 and uint16 value and its two characters,
  - for each pair of registers: int32, uint32 and float32 in the four word orders (ABCD, CDAB, BADC, DCBA),
  - for each quad of registers: int64 and float64 in the four word orders,
  - and the whole range as ASCII text.
For finding the layout of a device without documentation. A Modbus exception, no answer or no connection prints
one line naming the device, the unit id and the function code, and exits 1.
"""

_EPILOG: Final = """\
targets:
  tcp://HOST:PORT            Modbus TCP
  rtu-over-tcp://HOST:PORT   RTU frames through a transparent serial device server
  rtu:///dev/ttyUSB0?baudrate=9600&parity=N&stopbits=1&bytesize=8
                             an RS-485 line (these are the defaults; quote the URL in a shell)

examples:
  floorgate probe tcp://192.168.10.20:502 --unit-id 1 --register-type input --address 0 --count 10
  floorgate probe 'rtu:///dev/ttyUSB0?baudrate=2400' --unit-id 1 --register-type input --address 0x0156 --count 2
  floorgate probe rtu-over-tcp://10.0.0.5:4001 --unit-id 3 --register-type holding --address 40007 \\
      --address-base 1 --count 7
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe = subparsers.add_parser(
        "probe",
        help="read Modbus registers once and show them decoded every plausible way",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument(
        "target",
        type=_target,
        metavar="TARGET",
        help="the device: tcp://HOST:PORT, rtu-over-tcp://HOST:PORT or rtu:///dev/ttyX?baudrate=… (see below)",
    )
    probe.add_argument("--unit-id", type=_int(0, 255), default=1, help="Modbus unit (slave) id (default 1)")
    probe.add_argument(
        "--register-type",
        choices=get_args(ProbeRegisterType),
        default="holding",
        help="FC03 holding (default) or FC04 input",
    )
    probe.add_argument(
        "--address", type=_int(0, 465_536), default=0, help="first register (decimal or 0x hex; default 0)"
    )
    probe.add_argument(
        "--count",
        type=_int(1, MODBUS_MAX_READ_COUNT),
        default=DEFAULT_COUNT,
        help=f"registers to read, 1..{MODBUS_MAX_READ_COUNT} (default {DEFAULT_COUNT})",
    )
    probe.add_argument(
        "--address-base",
        type=int,
        choices=(0, 1),
        default=0,
        help="0: --address is the wire address (default); 1: as printed in manuals (1-based, 3xxxx/4xxxx stripped)",
    )
    probe.add_argument(
        "--timeout-s",
        type=_timeout,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    probe.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read, print the table on stdout; one line on stderr and 1 if the read fails."""
    try:
        request = ProbeRequest(
            args.target,
            args.unit_id,
            args.register_type,
            args.address,
            args.count,
            address_base=args.address_base,
            timeout_s=args.timeout_s,
        )
        start = request.wire_address
        if start + request.count - 1 > MAX_ADDRESS:
            raise ValueError(f"registers {start}..{start + request.count - 1} go beyond {MAX_ADDRESS}")
    except ValueError as exc:
        print(f"floorgate probe: {exc}", file=sys.stderr)
        return 2
    try:
        registers = read_registers(request)
    except ProbeError as exc:
        print(f"floorgate probe: {exc}", file=sys.stderr)
        return 1
    table = build_table(registers, register_type=request.register_type, wire=start, address=request.address)
    print(format_table(request, table))
    return 0


__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_TIMEOUT_S",
    "ProbeError",
    "ProbeRequest",
    "ProbeTable",
    "RegisterRow",
    "Target",
    "WideRow",
    "build_table",
    "format_table",
    "parse_target",
    "read_registers",
    "register",
    "run",
]
