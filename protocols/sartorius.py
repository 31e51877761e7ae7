"""Sartorius SBI codec: the ESC commands a host sends, and the 16- / 22-character lines a scale prints.

This module only turns bytes into values and back; when to send and how long to wait belong to the caller.

Commands (host -> scale); the scale executes them without answering, except print and the identification::

    [ ESC ][ letter ]                    format 1   ESC P print, ESC T tare/zero, ESC U tare, ESC V zero
    [ ESC ][ letter ][ digits ][ _ ]     format 2   ESC x1_ model, ESC x2_ serial number
    an optional CR LF may follow either (the scale ignores it)

16-character output (one line; ``*`` = space)::

    pos   1      2    3 .. 10              11   12 .. 14      15   16
          sign   *    value, right-aligned  *    unit, left   CR   LF
          + - *       leading zeros as spaces    blank while the weight is not stable

    b"+   123.56 g  \\r\\n"      stable 123.56 g
    b"+   123.56    \\r\\n"      NOT stable (unit blank)
    b"      High    \\r\\n"      overload           b"      Low     \\r\\n"    underload
    b"   Err 101    \\r\\n"      error 101 -> DeviceErrorResponse(code="Err 101")   (2 digits: b"   Err  54    ")

22-character output: a 6-character id code, left-aligned, precedes the 16 characters::

    pos   1 .. 6    7 .. 22
          id        the 16-character line
    b"G#    +   123.56 g  \\r\\n"   gross        b"N     +    98.06 g  \\r\\n"   net
    b"T     +    25.50 g  \\r\\n"   tare         b"PT2   +    25.50 g  \\r\\n"   preset tare
    b"Stat        High    \\r\\n"   status and error lines carry the id "Stat" (Sartorius manuals, e.g. Entris)

Weights stay ``Decimal`` exactly as printed (``"123.56"`` is ``Decimal("123.56")``, a value printed without a
decimal point has none); a blank sign is a positive value. The value may begin at position 2 (some balances print
nine characters there). Anything else - another length, a bad id, a unit with a space inside, a value that is not a
number, control characters - raises ``FrameError`` saying what is wrong. Lines may be passed with or without CR LF;
``protocols.mtsics.LineFramer`` cuts a byte stream into them (it keeps the trailing spaces, which count).
``SbiCommandFramer`` is the scale's side: it finds the commands in what the host sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, TypeAlias

from protocols.errors import DeviceErrorResponse, FrameError

ESC: Final = 0x1B
TERMINATOR: Final = b"\r\n"
SHORT_WIDTH: Final = 14  # printable characters of the 16-character form
ID_WIDTH: Final = 6
LONG_WIDTH: Final = ID_WIDTH + SHORT_WIDTH
VALUE_WIDTH: Final = 8  # positions 3-10
UNIT_WIDTH: Final = 3
MAX_COMMAND_BYTES: Final = 20

PRINT: Final = b"\x1bP"
TARE_ZERO: Final = b"\x1bT"
TARE: Final = b"\x1bU"
ZERO: Final = b"\x1bV"
MODEL: Final = b"\x1bx1_"
SERIAL: Final = b"\x1bx2_"
COMMANDS: Final[dict[str, bytes]] = {
    "print": PRINT,
    "tare_zero": TARE_ZERO,
    "tare": TARE,
    "zero": ZERO,
    "model": MODEL,
    "serial": SERIAL,
}

ID_KINDS: Final[dict[str, str]] = {"G#": "gross", "N": "net", "T": "tare", "PT2": "preset_tare"}
STATUS_ID: Final = "Stat"
STATUS_TEXTS: Final[dict[str, str]] = {"high": "      High    ", "low": "      Low     "}

StatusKind: TypeAlias = Literal["high", "low"]

_VALUE_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UNIT_RE: Final = re.compile(r"[!-~]{1,3} *")
_ERROR_RE: Final = re.compile(r"   Err (?: ([0-9]{2})|([0-9]{3}))    ")
_FORMAT2_RE: Final = re.compile(rb"[a-z][0-9&]*_")


@dataclass(frozen=True)
class SbiWeight:
    """A printed weight: ``unit`` is None while the scale is not stable; ``id`` is set in the 22-character form."""

    value: Decimal
    unit: str | None
    id: str | None = None
    raw: bytes = field(default=b"", compare=False)

    @property
    def stable(self) -> bool:
        return self.unit is not None

    @property
    def kind(self) -> str | None:
        """``gross`` / ``net`` / ``tare`` / ``preset_tare`` from the id; None in the 16-character form."""
        return ID_KINDS.get(self.id) if self.id is not None else None


@dataclass(frozen=True)
class SbiStatus:
    """``High`` (overload) or ``Low`` (underload): no weight. ``id`` is ``"Stat"`` in the 22-character form."""

    status: StatusKind
    id: str | None = None
    raw: bytes = field(default=b"", compare=False)

    @property
    def overload(self) -> bool:
        return self.status == "high"

    @property
    def underload(self) -> bool:
        return self.status == "low"


SbiReading: TypeAlias = SbiWeight | SbiStatus


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------
def _text(line: bytes) -> str:
    body = line[:-1] if line.endswith(b"\n") else line
    body = body[:-1] if body.endswith(b"\r") else body
    for offset, byte in enumerate(body):
        if not 0x20 <= byte <= 0x7E:
            raise FrameError(line, f"Sartorius SBI: byte 0x{byte:02X} at offset {offset} is not printable ASCII")
    return body.decode("ascii")


def parse_sbi(line: bytes) -> SbiWeight | SbiStatus:
    """Decode one printed line (with or without CR LF).

    Raises ``DeviceErrorResponse`` (code ``"Err 101"``) for an error line and ``FrameError`` for anything that is
    not one of the forms in the module docstring.
    """
    text = _text(line)
    ident: str | None = None
    if len(text) == LONG_WIDTH:
        ident, text = text[:ID_WIDTH].rstrip(" "), text[ID_WIDTH:]
        if ident != STATUS_ID and ident not in ID_KINDS:
            raise FrameError(line, f"Sartorius SBI: id {ident!r}, expected one of {[*ID_KINDS, STATUS_ID]}")
    elif len(text) != SHORT_WIDTH:
        raise FrameError(
            line, f"Sartorius SBI: {len(text)} characters before CR LF, expected {SHORT_WIDTH} or {LONG_WIDTH}"
        )
    for status, status_text in STATUS_TEXTS.items():
        if text == status_text:
            if ident is not None and ident != STATUS_ID:
                raise FrameError(line, f"Sartorius SBI: status line with id {ident!r}, expected {STATUS_ID!r}")
            return SbiStatus(status="high" if status == "high" else "low", id=ident, raw=line)
    error = _ERROR_RE.fullmatch(text)
    if error:
        if ident is not None and ident != STATUS_ID:
            raise FrameError(line, f"Sartorius SBI: error line with id {ident!r}, expected {STATUS_ID!r}")
        code = f"Err {error.group(1) or error.group(2)}"
        raise DeviceErrorResponse(f"Sartorius SBI {code}", code=code, raw=line)
    if ident == STATUS_ID:
        raise FrameError(line, "Sartorius SBI: id 'Stat' on a line that is no status")
    return _parse_weight(line, text, ident)


def _parse_weight(line: bytes, text: str, ident: str | None) -> SbiWeight:
    sign, number, gap, unit = text[0], text[1:10].strip(" "), text[10], text[11:]
    if sign not in "+- ":
        raise FrameError(line, f"Sartorius SBI: sign {sign!r}, expected '+', '-' or a space")
    if not text[1:10].endswith(number) or not _VALUE_RE.fullmatch(number):
        raise FrameError(line, f"Sartorius SBI: value field {text[1:10]!r} is not a right-aligned number")
    if gap != " ":
        raise FrameError(line, f"Sartorius SBI: position 11 is {gap!r}, expected a space")
    if unit.strip(" ") and not _UNIT_RE.fullmatch(unit):
        raise FrameError(line, f"Sartorius SBI: unit field {unit!r} is not a left-aligned unit")
    value = Decimal(("-" if sign == "-" else "") + number)
    return SbiWeight(value=value, unit=unit.strip(" ") or None, id=ident, raw=line)


def parse_sbi_text(line: bytes) -> str:
    """The text of an identification line (answer to ``ESC x1_`` / ``ESC x2_``), without padding."""
    text = _text(line).strip(" ")
    if not text:
        raise FrameError(line, "Sartorius SBI: empty identification line")
    return text


# --------------------------------------------------------------------------------------------------------------
# Encoding (simulators, tests)
# --------------------------------------------------------------------------------------------------------------
def _with_id(text: str, ident: str | None) -> bytes:
    if ident is None:
        return text.encode("ascii") + TERMINATOR
    return ident.ljust(ID_WIDTH).encode("ascii") + text.encode("ascii") + TERMINATOR


def format_weight(value: Decimal, unit: str | None, *, id: str | None = None) -> bytes:
    """``format_weight(Decimal("123.56"), "g") == b"+   123.56 g  \\r\\n"``; ``unit=None`` prints an unstable weight.

    Raises ``ValueError`` for a value that does not fit the 8 positions, a unit that is not 1-3 printable
    characters, or an id that is not one of ``G#``, ``N``, ``T``, ``PT2``.
    """
    if not value.is_finite():
        raise ValueError(f"Sartorius SBI value {value!r} is not a finite number")
    digits = format(abs(value), "f")
    if len(digits) > VALUE_WIDTH:
        raise ValueError(f"Sartorius SBI value {digits} does not fit {VALUE_WIDTH} positions")
    if unit is not None and not re.fullmatch(r"[!-~]{1,3}", unit):
        raise ValueError(f"Sartorius SBI unit {unit!r}: 1 to 3 printable characters without spaces")
    if id is not None and id not in ID_KINDS:
        raise ValueError(f"Sartorius SBI weight id {id!r}: expected one of {list(ID_KINDS)}")
    sign = "-" if value.is_signed() else "+"
    text = f"{sign} {digits.rjust(VALUE_WIDTH)} {(unit or '').ljust(UNIT_WIDTH)}"
    return _with_id(text, id)


def format_status(status: StatusKind, *, long_form: bool = False) -> bytes:
    """``format_status("high") == b"      High    \\r\\n"``; ``long_form`` adds the ``Stat`` id."""
    if status not in STATUS_TEXTS:
        raise ValueError(f"Sartorius SBI status {status!r}: expected 'high' or 'low'")
    return _with_id(STATUS_TEXTS[status], STATUS_ID if long_form else None)


def format_error(code: int, *, long_form: bool = False) -> bytes:
    """``format_error(101) == b"   Err 101    \\r\\n"`` (two-digit codes: ``b"   Err  54    \\r\\n"``)."""
    if not 10 <= code <= 999:
        raise ValueError(f"Sartorius SBI error code {code}: expected 2 or 3 digits (10..999)")
    return _with_id(f"   Err {code:>3}    ", STATUS_ID if long_form else None)


def format_sbi(reading: SbiWeight | SbiStatus) -> bytes:
    """The line that ``parse_sbi`` decodes to ``reading`` (22 characters when it has an id)."""
    if isinstance(reading, SbiStatus):
        if reading.id not in (None, STATUS_ID):
            raise ValueError(f"Sartorius SBI status id {reading.id!r}: expected None or {STATUS_ID!r}")
        return format_status(reading.status, long_form=reading.id is not None)
    return format_weight(reading.value, reading.unit, id=reading.id)


def format_text(text: str, *, long_form: bool = False) -> bytes:
    """An identification line: ``text`` left-aligned in 14 (``long_form``: 20) characters, then CR LF."""
    width = LONG_WIDTH if long_form else SHORT_WIDTH
    if not text.strip(" ") or len(text) > width or not all(" " <= ch <= "~" for ch in text):
        raise ValueError(f"Sartorius SBI text {text!r}: 1 to {width} printable ASCII characters")
    return text.ljust(width).encode("ascii") + TERMINATOR


# --------------------------------------------------------------------------------------------------------------
# Command framing (the scale's side)
# --------------------------------------------------------------------------------------------------------------
class SbiCommandFramer:
    """Find ESC commands in the bytes a host sends: ``feed(b"\\x1bP\\r\\n\\x1bx1_")`` -> ``[b"P", b"x1_"]``.

    Returned commands are without ESC. Format 1 is an upper-case letter; format 2 a lower-case letter, digits and
    ``_``. CR, LF and bytes outside a command are skipped; a format-2 command cut off by the next ESC or longer than
    20 bytes is dropped. Everything skipped is counted in ``dropped_bytes`` (CR and LF are not). Never raises.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.dropped_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        commands: list[bytes] = []
        while self._buffer:
            start = self._buffer.find(ESC)
            if start < 0:
                self._skip(len(self._buffer))
                break
            self._skip(start)
            if len(self._buffer) < 2:
                break
            letter = self._buffer[1]
            if 0x41 <= letter <= 0x5A:  # format 1: ESC + upper-case letter
                commands.append(bytes(self._buffer[1:2]))
                del self._buffer[:2]
                continue
            if not 0x61 <= letter <= 0x7A:
                self._skip(1)  # ESC followed by something that is no command
                continue
            end = self._buffer.find(b"_", 2)
            nxt = self._buffer.find(ESC, 1)
            if end < 0 or (0 < nxt < end):
                if nxt > 0 or len(self._buffer) > MAX_COMMAND_BYTES:
                    self._skip(nxt if nxt > 0 else len(self._buffer))
                    continue
                break  # wait for the rest
            command = bytes(self._buffer[1 : end + 1])
            if len(command) + 1 > MAX_COMMAND_BYTES or not _FORMAT2_RE.fullmatch(command):
                self._skip(end + 1)
                continue
            commands.append(command)
            del self._buffer[: end + 1]
        return commands

    def _skip(self, count: int) -> None:
        self.dropped_bytes += sum(1 for byte in self._buffer[:count] if byte not in (0x0D, 0x0A))
        del self._buffer[:count]


__all__ = [
    "COMMANDS",
    "ID_KINDS",
    "MODEL",
    "PRINT",
    "SERIAL",
    "STATUS_ID",
    "TARE",
    "TARE_ZERO",
    "ZERO",
    "SbiCommandFramer",
    "SbiReading",
    "SbiStatus",
    "SbiWeight",
    "StatusKind",
    "format_error",
    "format_sbi",
    "format_status",
    "format_text",
    "format_weight",
    "parse_sbi",
    "parse_sbi_text",
]
