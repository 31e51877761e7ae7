"""SIWAREX WP231 legal log (the alibi memory) over Modbus: DR45 protocol request, DR46 protocol contents.

The module keeps every logged weighing unchanged under a consecutive protocol ID. A host writes the ID it wants to
DR45 (0: the newest) and reads the log back from DR46 (device reference §2; SIWAREX WP231 manual, DR 45 / DR 46).
Holding registers, wire address = register number::

    DR45  6012/13    protocol ID to read, uint32 (0: DR46 shows the newest log)                 R/W
    DR46  6104/05    oldest protocol ID, uint32 (0: no log yet)                                R
          6106/07    newest protocol ID, uint32
          6108/09    selected protocol ID, uint32 (the log shown below)
          6132-6145  protocol string, 28 ASCII characters (14 registers, in address order):
                     [G/N 2];[weight 8];[unit 4];[tare id 2];[tare 8]
                     b"N ;   18420;kg  ;pT;   14960"    net 18420 kg, preset tare 14960 kg
                     b"G ;   24560;kg  ;  ;        "    gross 24560 kg, not tared
                     tare id: "  " not tared, "T " tared (weighed), "pT" preset tare (tare specification)
          6146/47    CRC16 checksum of the log, 4 ASCII hex characters (CRC-16/Modbus of the protocol string,
                     upper case; floorgate's simulator - a module's own checksum is checked by SecureDisplay)

    The other registers of both records (6000-6011, 6100-6103, 6110-6131: headers, reserves) read as 0 on
    floorgate's simulator, so 6104-6147 is one request. Date and time (from 6148) are not modelled.

The weight and tare keep exactly the characters the module logged (``"18420"``, ``"2.5"``): ``parse_log`` only
strips the padding. Anything that is not the layout above raises ``FrameError``.

Commands: a real WP231 takes commands through its command mailbox (command codes in its manual). floorgate's
simulator and driver use one command register instead (holding 2000, uint16; ``COMMANDS``): check the module's
manual before connecting a real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from protocols.crc import crc16_modbus
from protocols.errors import FrameError
from protocols.modbus import Point

COMMAND_REGISTER: Final = 2000
COMMANDS: Final[dict[str, int]] = {"zero": 1, "tare": 2, "clear_tare": 3, "log": 10}
REQUEST_ID: Final = 6012
OLDEST_ID: Final = 6104
NEWEST_ID: Final = 6106
SELECTED_ID: Final = 6108
LOG_STRING: Final = 6132
LOG_REGISTERS: Final = 14
LOG_CHARS: Final = 2 * LOG_REGISTERS
CHECKSUM: Final = 6146
FIELD_WIDTHS: Final = (2, 8, 4, 2, 8)
TareKind = Literal["tare", "preset_tare"]
TARE_IDS: Final[dict[str, TareKind | None]] = {"": None, "T": "tare", "pT": "preset_tare"}

COMMAND_POINT: Final = Point("command", COMMAND_REGISTER, "holding", "uint16")
REQUEST_POINT: Final = Point("log_request_id", REQUEST_ID, "holding", "uint32")
LOG_POINTS: Final[tuple[Point, ...]] = (
    Point("log_oldest_id", OLDEST_ID, "holding", "uint32"),
    Point("log_newest_id", NEWEST_ID, "holding", "uint32"),
    Point("log_selected_id", SELECTED_ID, "holding", "uint32"),
    Point("log", LOG_STRING, "holding", "string", length=LOG_REGISTERS),
    Point("log_checksum", CHECKSUM, "holding", "string", length=2),
)
# DR45 / DR46 fields the simulator does not model (headers, reserves): read as 0
RESERVED: Final[tuple[tuple[str, int, int], ...]] = (
    ("holding", 6000, 12), ("holding", 6100, 4), ("holding", 6110, LOG_STRING - 6110),
)

_NUMBER_RE: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class LogEntry:
    """One logged weighing: ``weight`` is the gross or the net (``kind``), strings exactly as logged."""

    kind: Literal["gross", "net"]
    weight: str
    unit: str
    tare_kind: TareKind | None = None
    tare: str | None = None


def format_log(entry: LogEntry) -> str:
    """The 28-character protocol string of ``entry`` (``ValueError`` if a field does not fit)."""
    tare_id = next(k for k, v in TARE_IDS.items() if v == entry.tare_kind)
    fields = ("G" if entry.kind == "gross" else "N", entry.weight, entry.unit, tare_id, entry.tare or "")
    out = []
    for text, width, numeric in zip(fields, FIELD_WIDTHS, (False, True, False, False, True), strict=True):
        if len(text) > width or not text.isascii():
            raise ValueError(f"SIWAREX log: {text!r} does not fit {width} ASCII characters")
        out.append(text.rjust(width) if numeric else text.ljust(width))  # numbers right-aligned
    return ";".join(out)


def parse_log(text: str) -> LogEntry:
    """Decode a protocol string as read (the Modbus string codec may have stripped its padding at the ends)."""
    raw = text.encode("ascii", "replace")
    fields = [f.strip(" ") for f in text.split(";")]
    if len(fields) != len(FIELD_WIDTHS):
        raise FrameError(raw, f"SIWAREX log: {len(fields)} fields, expected {len(FIELD_WIDTHS)} separated by ';'")
    gn, weight, unit, tare_id, tare = fields
    if gn not in ("G", "N"):
        raise FrameError(raw, f"SIWAREX log: gross/net id {gn!r}, expected 'G' or 'N'")
    if not _NUMBER_RE.fullmatch(weight):
        raise FrameError(raw, f"SIWAREX log: weight {weight!r} is not a number")
    if not unit or not unit.isprintable():
        raise FrameError(raw, f"SIWAREX log: unit {unit!r}")
    if tare_id not in TARE_IDS:
        raise FrameError(raw, f"SIWAREX log: tare id {tare_id!r}, expected one of {list(TARE_IDS)}")
    tare_kind = TARE_IDS[tare_id]
    if (tare_kind is None) != (tare == ""):
        raise FrameError(raw, f"SIWAREX log: tare id {tare_id!r} with tare {tare!r}")
    if tare and not _NUMBER_RE.fullmatch(tare):
        raise FrameError(raw, f"SIWAREX log: tare {tare!r} is not a number")
    return LogEntry(kind="gross" if gn == "G" else "net", weight=weight, unit=unit,
                    tare_kind=tare_kind, tare=tare or None)


def checksum(text: str) -> str:
    """The log's checksum as the simulator shows it: CRC-16/Modbus of the 28 characters, 4 upper-case hex digits."""
    return f"{crc16_modbus(text.ljust(LOG_CHARS).encode('ascii')):04X}"


__all__ = [
    "CHECKSUM",
    "COMMANDS",
    "COMMAND_POINT",
    "COMMAND_REGISTER",
    "LOG_POINTS",
    "LOG_STRING",
    "NEWEST_ID",
    "REQUEST_ID",
    "REQUEST_POINT",
    "RESERVED",
    "LogEntry",
    "checksum",
    "format_log",
    "parse_log",
]
