"""MT-SICS (Mettler Toledo Standard Interface Command Set) codec: commands, line framing, responses.

MT-SICS is ASCII, one line per command and per response, each ending CR LF (typically 9600 baud 8N1). This module
only turns bytes into values and back; when to send, how long to wait and what to retry belong to the caller.

Command (host -> scale)::

    [ command ][ SP argument ]* [ CR ][ LF ]          b"SI\\r\\n", b"TA 2.486 g\\r\\n"

Weight response (scale -> host); the weight field is 10 characters, right-aligned::

    [ command ][ SP ][ status ][ SP ][ weight (10) ][ SP ][ unit ][ CR ][ LF ]
      "S"        " "   "S"      " "   "    100.00"   " "   "g"

    b"S S     100.00 g\\r\\n"     S  stable weight          (answer to S, SI, SIR)
    b"S D     129.07 g\\r\\n"     S  dynamic, NOT stable    (answer to SI, SIR)
    b"T S      2.486 g\\r\\n"     T  tare taken
    b"TA A      2.486 g\\r\\n"    TA tare memory

Status response, identification and errors::

    [ command ][ SP ][ status ][ CR ][ LF ]                    b"S I\\r\\n", b"Z A\\r\\n", b"TAC A\\r\\n"
    [ Ix ][ SP ][ A ][ SP ][ "text" ][ CR ][ LF ]              b'I4 A "0123456789"\\r\\n'
    [ ES | ET | EL ][ CR ][ LF ]                               syntax / transmission / logical error

Responses are parsed by whitespace (the last token of a weight line is the unit); the weight is kept exactly as
delivered as a ``Decimal`` (``"100.00"`` stays ``Decimal("100.00")``, never a float, never rounded). The scale
cannot tell ``S`` from ``SI`` in its answer: both come back with command ``"S"``.

At power-up, and after ``@`` (reset), a scale sends ``I4 A "<serial number>"`` unasked: clients flush or skip it.

``LineFramer`` cuts the byte stream into lines; a line longer than its limit comes back in place as an
``OverlongLine`` marker, for which ``parse_response`` raises ``FrameError`` - the framer itself never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeAlias

from protocols.errors import DeviceErrorResponse, FrameError

TERMINATOR: Final = b"\r\n"
DEFAULT_MAX_LINE_BYTES: Final = 256
WEIGHT_FIELD_WIDTH: Final = 10

ERROR_CODES: Final[dict[str, str]] = {
    "ES": "syntax error (command not understood)",
    "ET": "transmission error (parity, overrun, broken frame)",
    "EL": "logical error (command understood but not executable)",
}

# (command, status) pairs that carry a weight and a unit.
WEIGHT_FORMS: Final[frozenset[tuple[str, str]]] = frozenset(
    {("S", "S"), ("S", "D"), ("T", "S"), ("TI", "S"), ("TI", "D"), ("TA", "A")}
)
# (command, status) pairs that stand alone.
STATUS_FORMS: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("S", "I"), ("S", "+"), ("S", "-"),
        ("Z", "A"), ("Z", "I"), ("Z", "+"), ("Z", "-"),
        ("ZI", "D"), ("ZI", "S"), ("ZI", "I"), ("ZI", "+"), ("ZI", "-"),
        ("T", "I"), ("T", "+"), ("T", "-"),
        ("TI", "I"), ("TI", "+"), ("TI", "-"),
        ("TA", "I"), ("TA", "L"),
        ("TAC", "A"), ("TAC", "I"),
        *((f"I{n}", "I") for n in range(5)),
    }
)  # fmt: skip
IDENT_COMMANDS: Final[frozenset[str]] = frozenset(f"I{n}" for n in range(5))
IDENT_STATUSES: Final[frozenset[str]] = frozenset({"A", "B"})  # B: more lines follow (I0)

_COMMAND_RE: Final = re.compile(r"[A-Z@][A-Z0-9]*")
_NUMBER_RE: Final = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_UNIT_RE: Final = re.compile(r"[!-~]+")  # printable ASCII without space
_QUOTED_RE: Final = re.compile(r'"([^"]*)"')


# --------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------
def encode_command(command: str, *args: str) -> bytes:
    """One command line: ``encode_command("SI") == b"SI\\r\\n"``, ``encode_command("TA", "2.486", "g")``.

    Raises ``ValueError`` for a command that is not MT-SICS-shaped (upper-case letters / digits, or ``@``) or an
    argument with a control character, a non-ASCII character or nothing in it.
    """
    if not _COMMAND_RE.fullmatch(command):
        raise ValueError(f"MT-SICS command {command!r}: expected upper-case letters and digits, e.g. 'SI'")
    for arg in args:
        if not arg or not all(" " <= ch <= "~" for ch in arg):
            raise ValueError(f"MT-SICS command {command!r}: argument {arg!r} must be non-empty printable ASCII")
    return " ".join((command, *args)).encode("ascii") + TERMINATOR


# --------------------------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------------------------
class OverlongLine(bytes):
    """Marker that ``LineFramer.feed`` returns in place of a line longer than its limit.

    Its value is the first ``max_line_bytes`` bytes of the dropped line; ``parse_response`` raises ``FrameError``
    for it, so the error surfaces where the line would have been parsed, in stream order.
    """

    max_line_bytes: int

    def __new__(cls, prefix: bytes, max_line_bytes: int) -> OverlongLine:
        marker = super().__new__(cls, prefix)
        marker.max_line_bytes = max_line_bytes
        return marker

    @property
    def reason(self) -> str:
        return f"MT-SICS: line longer than {self.max_line_bytes} bytes without LF, dropped up to its LF"


class LineFramer:
    """Split a byte stream into lines (without CR LF); keeps partial data between calls.

    A line ends at LF; one CR in front of it is removed, so a lone LF is tolerated. Empty lines are skipped.

    A line longer than ``max_line_bytes`` (terminator not counted) is dropped up to its LF and reported in place,
    as an ``OverlongLine`` marker in the returned list (a ``bytes`` holding its first ``max_line_bytes`` bytes;
    ``parse_response`` raises ``FrameError`` for it). ``feed`` itself never raises, holds nothing back but an
    incomplete line, and keeps the order of the stream; the marker comes as soon as the limit is passed, once per
    overlong line.
    """

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._discarding = False  # inside an overlong line, dropping up to its LF

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete line held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every line completed by it, in order (``OverlongLine`` for a dropped one)."""
        self._buffer += data
        lines: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n")
            if self._discarding:
                if end < 0:
                    self._buffer.clear()
                    return lines
                del self._buffer[: end + 1]
                self._discarding = False
                continue
            line_len = end if end >= 0 else len(self._buffer)
            if line_len > 0 and self._buffer[line_len - 1] == 0x0D:
                line_len -= 1  # the CR of CR LF (or a CR whose LF has not arrived yet)
            if line_len > self.max_line_bytes:
                lines.append(OverlongLine(bytes(self._buffer[: self.max_line_bytes]), self.max_line_bytes))
                if end < 0:
                    self._buffer.clear()
                    self._discarding = True
                    return lines
                del self._buffer[: end + 1]
                continue
            if end < 0:
                return lines
            line = bytes(self._buffer[:line_len])
            del self._buffer[: end + 1]
            if line:
                lines.append(line)


# --------------------------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightResponse:
    """``S S     100.00 g`` and friends: a weight with its unit, exactly as delivered."""

    command: str
    status: str
    value: Decimal
    unit: str
    raw: bytes

    @property
    def stable(self) -> bool:
        """True for status ``S`` (a stable measurement); ``D`` is dynamic, ``TA A`` is stored tare."""
        return self.status == "S"


@dataclass(frozen=True)
class StatusResponse:
    """A command status without data: ``S I`` busy, ``S +`` overload, ``Z A`` zeroed, ``TAC A`` tare cleared."""

    command: str
    status: str
    raw: bytes

    @property
    def overload(self) -> bool:
        return self.status == "+"

    @property
    def underload(self) -> bool:
        return self.status == "-"


@dataclass(frozen=True)
class IdentResponse:
    """``I2 A "XS204 Excellence 220.0090 g"``: ``text`` is the quoted text without its quotes.

    When the answer holds several quoted strings (``I1 A "0" "2.20" …``) ``text`` is everything after the
    status; ``fields`` gives the strings one by one.
    """

    command: str
    status: str
    text: str
    raw: bytes

    @property
    def fields(self) -> tuple[str, ...]:
        found = tuple(_QUOTED_RE.findall(self.text))
        return found if found else (self.text,)


@dataclass(frozen=True)
class ErrorResponse:
    """``ES`` / ``ET`` / ``EL``: the scale did not execute the command."""

    code: str
    raw: bytes

    @property
    def description(self) -> str:
        return ERROR_CODES[self.code]

    def to_exception(self, *, device: str | None = None) -> DeviceErrorResponse:
        return DeviceErrorResponse(
            f"MT-SICS {self.code}: {self.description}", code=self.code, raw=self.raw, device=device
        )


Response: TypeAlias = WeightResponse | StatusResponse | IdentResponse | ErrorResponse


def parse_response(line: bytes) -> Response:
    """Decode one response line (with or without its CR LF). Raises ``FrameError`` saying what is wrong."""
    if isinstance(line, OverlongLine):
        raise FrameError(bytes(line), line.reason)
    body = line[:-1] if line.endswith(b"\n") else line
    body = body[:-1] if body.endswith(b"\r") else body
    for offset, byte in enumerate(body):
        if byte > 0x7E:
            raise FrameError(line, f"MT-SICS: non-ASCII byte 0x{byte:02X} at offset {offset}")
        if byte < 0x20:
            raise FrameError(line, f"MT-SICS: control character 0x{byte:02X} at offset {offset}")
    text = body.decode("ascii")
    tokens = text.split()
    if not tokens:
        raise FrameError(line, "MT-SICS: empty line")
    command = tokens[0]
    if len(tokens) == 1:
        if command in ERROR_CODES:
            return ErrorResponse(code=command, raw=line)
        raise FrameError(line, f"MT-SICS: {command!r} is neither an error code (ES/ET/EL) nor command + status")
    status = tokens[1]
    form = (command, status)
    if form in WEIGHT_FORMS:
        return _parse_weight(line, command, status, tokens[2:])
    if form in STATUS_FORMS:
        if len(tokens) > 2:
            raise FrameError(line, f"MT-SICS: unexpected data {' '.join(tokens[2:])!r} after '{command} {status}'")
        return StatusResponse(command=command, status=status, raw=line)
    if command in IDENT_COMMANDS and status in IDENT_STATUSES:
        rest = text.split(None, 2)[2].strip() if len(tokens) > 2 else ""
        if not rest:
            raise FrameError(line, f"MT-SICS: '{command} {status}' without text")
        single = _QUOTED_RE.fullmatch(rest)
        return IdentResponse(command=command, status=status, text=single.group(1) if single else rest, raw=line)
    raise FrameError(line, f"MT-SICS: unknown response '{command} {status}'")


def _parse_weight(line: bytes, command: str, status: str, fields: list[str]) -> WeightResponse:
    form = f"'{command} {status}'"
    if len(fields) != 2:
        raise FrameError(line, f"MT-SICS: {form} needs a weight and a unit, got {len(fields)} field(s)")
    number, unit = fields
    if not _NUMBER_RE.fullmatch(number):
        raise FrameError(line, f"MT-SICS: {form} weight field {number!r} is not a number")
    if not _UNIT_RE.fullmatch(unit) or _NUMBER_RE.fullmatch(unit):
        raise FrameError(line, f"MT-SICS: {form} unit {unit!r} is not a unit")
    return WeightResponse(command=command, status=status, value=Decimal(number), unit=unit, raw=line)


# --------------------------------------------------------------------------------------------------------------
# Response encoding (for simulators and tests)
# --------------------------------------------------------------------------------------------------------------
def format_weight(value: Decimal) -> str:
    """The 10-character right-aligned weight field; ``ValueError`` if the value does not fit or is not finite."""
    if not value.is_finite():
        raise ValueError(f"MT-SICS weight {value!r} is not a finite number")
    digits = format(value, "f")
    if len(digits) > WEIGHT_FIELD_WIDTH:
        raise ValueError(f"MT-SICS weight {digits} does not fit the {WEIGHT_FIELD_WIDTH}-character field")
    return digits.rjust(WEIGHT_FIELD_WIDTH)


def encode_weight_response(command: str, status: str, value: Decimal, unit: str) -> bytes:
    """``encode_weight_response("S", "S", Decimal("100.00"), "g") == b"S S     100.00 g\\r\\n"``."""
    if (command, status) not in WEIGHT_FORMS:
        raise ValueError(f"'{command} {status}' is not an MT-SICS weight response")
    if not _UNIT_RE.fullmatch(unit):
        raise ValueError(f"MT-SICS unit {unit!r} must be printable ASCII without spaces")
    return f"{command} {status} {format_weight(value)} {unit}".encode("ascii") + TERMINATOR


def encode_status_response(command: str, status: str) -> bytes:
    """``encode_status_response("S", "I") == b"S I\\r\\n"``."""
    if (command, status) not in STATUS_FORMS:
        raise ValueError(f"'{command} {status}' is not an MT-SICS status response")
    return f"{command} {status}".encode("ascii") + TERMINATOR


def encode_ident_response(command: str, text: str, *, status: str = "A") -> bytes:
    """``encode_ident_response("I4", "0123456789") == b'I4 A "0123456789"\\r\\n'``."""
    if command not in IDENT_COMMANDS or status not in IDENT_STATUSES:
        raise ValueError(f"'{command} {status}' is not an MT-SICS identification response")
    if '"' in text or not all(" " <= ch <= "~" for ch in text):
        raise ValueError(f"MT-SICS identification text {text!r} must be printable ASCII without quotes")
    return f'{command} {status} "{text}"'.encode("ascii") + TERMINATOR


def encode_error(code: str) -> bytes:
    """``encode_error("ES") == b"ES\\r\\n"``."""
    if code not in ERROR_CODES:
        raise ValueError(f"MT-SICS error code {code!r}: expected one of {sorted(ERROR_CODES)}")
    return code.encode("ascii") + TERMINATOR


__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ERROR_CODES",
    "TERMINATOR",
    "ErrorResponse",
    "IdentResponse",
    "LineFramer",
    "OverlongLine",
    "Response",
    "StatusResponse",
    "WeightResponse",
    "encode_command",
    "encode_error",
    "encode_ident_response",
    "encode_status_response",
    "encode_weight_response",
    "format_weight",
    "parse_response",
]
