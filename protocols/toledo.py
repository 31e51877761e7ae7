"""Toledo Continuous codec: the 18-byte frames weighing indicators stream without being asked.

An indicator in this mode sends one frame after the other, as fast as the line allows (9600 baud 8N1: 18 bytes in
18.75 ms), and listens for single-letter commands (``P`` print, ``T`` tare, ``Z`` zero, ``C`` clear tare). This module
only turns bytes into values and back; reading the port and pacing belong to the caller.

Frame (all bytes 7-bit ASCII)::

    [ STX ][ SWA ][ SWB ][ SWC ][ weight: 6 digits ][ tare: 6 digits ][ CR ][ CHK ]
      02                          "024560"           "000000"           0D

    CHK = two's complement of the 7-bit sum of every byte from STX through CR:  (sum(frame[:17]) + CHK) & 0x7F == 0

    SWA  bit 0-2  decimal point / dummy zeros (code 0..7)        bit 3-4  increment: 01 x1, 10 x2, 11 x5
         code 000 XXXX00   001 XXXXX0   010 XXXXXX   011 XXXXX.X  100 XXXX.XX   (101 XXX.XXX, 110 XX.XXXX,
                                                                                 111 X.XXXXX from vendor tables)
         bit 5 always 1, bit 6 always 0
    SWB  bit 0 net   bit 1 negative   bit 2 out of range   bit 3 motion   bit 4 kg (0: lb)   bit 5 always 1
         bit 6 not zeroed since power-up
    SWC  bit 3 print request   bit 4 x10 (expanded) display   bit 5 always 1   (other bits: not decoded)

    Vectors (device reference):
        02 2A 30 20 "024560" "000000" 0D 26     gross 24560 kg, stable
        02 2A 31 20 "018420" "014960" 0D 13     net 18420 kg, tare 14960 kg
        02 2B 38 20 "001205" "000000" 0D 26     gross 120.5 kg, in motion

The weight field is the *displayed* weight, gross or net (SWB bit 0), without sign (SWB bit 1) and without decimal
point; the tare field is the tare. With codes 000 / 001 the display shows dummy zeros that are not sent: the digits
are worth x100 / x10 (``"000246"`` with code 000 is 24600). Values stay ``Decimal`` exactly as delivered: ``"001205"``
with code 011 is ``Decimal("120.5")``, ``"000000"`` with code 100 is ``Decimal("0.00")``. ``gross``, ``tare`` and
``net`` are all given: the one not sent is computed (gross = net + tare, net = gross - tare), exact in ``Decimal``.
Out of range (SWB bit 2): the digits are decoded but mean nothing; check ``out_of_range`` first. The x10 display
(SWC bit 4) is a flag only: the value is not rescaled, and it is never legal for trade.

``ToledoFramer`` finds frames in the byte stream: it resynchronises on STX after garbage or a truncated frame and
counts the bytes it drops; ``decode_frame`` verifies the checksum and every status bit, raising ``FrameError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, TypeAlias

from protocols.errors import FrameError

STX: Final = 0x02
CR: Final = 0x0D
FRAME_LENGTH: Final = 18
DIGITS: Final = 6
MAX_DIGITS_VALUE: Final = 999_999
CR_OFFSET: Final = 16
ALWAYS_ONE: Final = 0x20  # bit 5 of every status byte
COMMANDS: Final[dict[str, bytes]] = {"print": b"P", "tare": b"T", "zero": b"Z", "clear": b"C"}

Unit: TypeAlias = Literal["kg", "lb"]

# SWA
_DP_MASK: Final = 0x07
_INCREMENT_SHIFT: Final = 3
_INCREMENT_CODES: Final[dict[int, int]] = {1: 1, 2: 2, 3: 5}
_INCREMENT_OF: Final[dict[int, int]] = {value: code for code, value in _INCREMENT_CODES.items()}
_SWA_RESERVED: Final = 0x40  # bit 6 always 0
# SWB
NET: Final = 0x01
NEGATIVE: Final = 0x02
OUT_OF_RANGE: Final = 0x04
MOTION: Final = 0x08
KG: Final = 0x10
NOT_ZEROED: Final = 0x40
# SWC
PRINT_REQUEST: Final = 0x08
EXPANDED: Final = 0x10


def checksum(data: bytes) -> int:
    """Two's complement of the 7-bit sum of ``data`` (STX through CR): ``checksum(frame[:17]) == frame[17]``."""
    return -sum(data) & 0x7F


@dataclass(frozen=True)
class ToledoFrame:
    """One decoded frame. ``weight`` is the displayed (signed) weight, gross or net; see ``gross`` / ``net``.

    ``decimal_code`` is SWA bits 0-2 (2 = no decimal point, 3 = one decimal, 0 / 1 = two / one dummy zeros);
    ``increment`` the display step in digits (1, 2 or 5).
    """

    weight: Decimal
    tare: Decimal
    is_net: bool = False
    decimal_code: int = 2
    increment: int = 1
    motion: bool = False
    out_of_range: bool = False
    unit: Unit = "kg"
    not_zeroed: bool = False
    print_request: bool = False
    expanded: bool = False
    raw: bytes = field(default=b"", compare=False)

    @property
    def stable(self) -> bool:
        """No motion and in range: the only weights that count."""
        return not self.motion and not self.out_of_range

    @property
    def negative(self) -> bool:
        return self.weight.is_signed()

    @property
    def gross(self) -> Decimal:
        return self.weight + self.tare if self.is_net else self.weight

    @property
    def net(self) -> Decimal:
        return self.weight if self.is_net else self.weight - self.tare

    def encode(self) -> bytes:
        """The 18 bytes of this frame (``decode_frame(f.encode()) == f``)."""
        return encode_frame(
            self.weight,
            tare=self.tare,
            net=self.is_net,
            decimal_code=self.decimal_code,
            increment=self.increment,
            motion=self.motion,
            out_of_range=self.out_of_range,
            unit=self.unit,
            not_zeroed=self.not_zeroed,
            print_request=self.print_request,
            expanded=self.expanded,
        )


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------
def _value(digits: int, decimal_code: int) -> Decimal:
    exponent = 2 - decimal_code  # code 0: x100, 2: x1, 3: one decimal ...
    return Decimal(digits * 10**exponent) if exponent >= 0 else Decimal(digits).scaleb(exponent)


def _digits(frame: bytes, start: int, name: str) -> int:
    field_bytes = frame[start : start + DIGITS]
    if not all(0x30 <= byte <= 0x39 for byte in field_bytes):
        raise FrameError(frame, f"Toledo: {name} field {field_bytes!r} is not 6 digits")
    return int(field_bytes)


def decode_frame(frame: bytes) -> ToledoFrame:
    """Decode one 18-byte frame; ``FrameError`` says what is wrong (checksum: expected vs got)."""
    if len(frame) != FRAME_LENGTH:
        raise FrameError(frame, f"Toledo: a frame has {FRAME_LENGTH} bytes, got {len(frame)}")
    for offset, byte in enumerate(frame):
        if byte > 0x7F:
            raise FrameError(
                frame, f"Toledo: byte {offset} is 0x{byte:02X} with bit 7 set (parity on a 7E1 line read as 8N1?)"
            )
    if frame[0] != STX:
        raise FrameError(frame, f"Toledo: frame starts with 0x{frame[0]:02X}, expected STX 0x02")
    if frame[CR_OFFSET] != CR:
        raise FrameError(frame, f"Toledo: byte 16 is 0x{frame[CR_OFFSET]:02X}, expected CR 0x0D")
    expected = checksum(frame[:17])
    if frame[17] != expected:
        raise FrameError(frame, f"Toledo: checksum expected 0x{expected:02X}, got 0x{frame[17]:02X}")
    swa, swb, swc = frame[1], frame[2], frame[3]
    for name, status in (("SWA", swa), ("SWB", swb), ("SWC", swc)):
        if not status & ALWAYS_ONE:
            raise FrameError(frame, f"Toledo: {name} 0x{status:02X} lacks bit 5, which is always 1")
    if swa & _SWA_RESERVED:
        raise FrameError(frame, f"Toledo: SWA 0x{swa:02X} has bit 6 set, which is always 0")
    increment_code = (swa >> _INCREMENT_SHIFT) & 0x03
    if increment_code not in _INCREMENT_CODES:
        raise FrameError(frame, f"Toledo: SWA 0x{swa:02X} increment bits 3-4 are 00, expected 01, 10 or 11")
    decimal_code = swa & _DP_MASK
    weight = _value(_digits(frame, 4, "weight"), decimal_code)
    tare = _value(_digits(frame, 10, "tare"), decimal_code)
    if swb & NEGATIVE:
        weight = weight.copy_negate()  # keeps the sign of a negative zero, as delivered
    return ToledoFrame(
        weight=weight,
        tare=tare,
        is_net=bool(swb & NET),
        decimal_code=decimal_code,
        increment=_INCREMENT_CODES[increment_code],
        motion=bool(swb & MOTION),
        out_of_range=bool(swb & OUT_OF_RANGE),
        unit="kg" if swb & KG else "lb",
        not_zeroed=bool(swb & NOT_ZEROED),
        print_request=bool(swc & PRINT_REQUEST),
        expanded=bool(swc & EXPANDED),
        raw=bytes(frame),
    )


# --------------------------------------------------------------------------------------------------------------
# Encoding (simulators, tests)
# --------------------------------------------------------------------------------------------------------------
def _field(value: Decimal, decimal_code: int, name: str) -> bytes:
    if not value.is_finite():
        raise ValueError(f"Toledo {name} {value!r} is not a finite number")
    scaled = abs(value).scaleb(decimal_code - 2)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"Toledo {name} {value} does not fit decimal code {decimal_code} (too many decimals)")
    digits = int(scaled)
    if digits > MAX_DIGITS_VALUE:
        raise ValueError(f"Toledo {name} {value} needs more than {DIGITS} digits with decimal code {decimal_code}")
    return b"%06d" % digits


def encode_frame(
    weight: Decimal,
    *,
    tare: Decimal = Decimal(0),
    net: bool = False,
    decimal_code: int = 2,
    increment: int = 1,
    motion: bool = False,
    out_of_range: bool = False,
    unit: Unit = "kg",
    not_zeroed: bool = False,
    print_request: bool = False,
    expanded: bool = False,
) -> bytes:
    """The 18 bytes for the displayed ``weight`` (signed; gross, or net with ``net=True``) and ``tare``.

    ``encode_frame(Decimal(24560))`` is the first vector of the module docstring. Raises ``ValueError`` for a value
    that the 6 digits cannot carry with ``decimal_code``, a negative tare, or an unknown increment / unit.
    """
    if not 0 <= decimal_code <= _DP_MASK:
        raise ValueError(f"Toledo decimal_code {decimal_code}: expected 0..7")
    if increment not in _INCREMENT_OF:
        raise ValueError(f"Toledo increment {increment}: expected 1, 2 or 5")
    if unit not in ("kg", "lb"):
        raise ValueError(f"Toledo unit {unit!r}: expected 'kg' or 'lb'")
    if tare.is_signed() and tare != 0:
        raise ValueError(f"Toledo tare {tare} must not be negative")
    swa = ALWAYS_ONE | (_INCREMENT_OF[increment] << _INCREMENT_SHIFT) | decimal_code
    swb = ALWAYS_ONE
    for flag, bit in (
        (net, NET), (weight.is_signed(), NEGATIVE), (out_of_range, OUT_OF_RANGE), (motion, MOTION),
        (unit == "kg", KG), (not_zeroed, NOT_ZEROED),
    ):  # fmt: skip
        if flag:
            swb |= bit
    swc = ALWAYS_ONE | (PRINT_REQUEST if print_request else 0) | (EXPANDED if expanded else 0)
    body = (
        bytes((STX, swa, swb, swc))
        + _field(weight, decimal_code, "weight")
        + _field(tare, decimal_code, "tare")
        + bytes((CR,))
    )
    return body + bytes((checksum(body),))


# --------------------------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------------------------
class ToledoFramer:
    """Cut a continuous byte stream into 18-byte frame candidates; keeps partial data between calls.

    A candidate starts with STX and has CR at offset 16 (no digit or status byte can be either, so a frame that
    was cut short shows up as a missing CR). Bytes before an STX, and a candidate without its CR, are dropped up to
    the next STX and counted in ``dropped_bytes`` (``resyncs`` counts the times it had to skip). The checksum and
    the status bits are ``decode_frame``'s job, so a candidate with a bad checksum still comes out, in stream
    order, and surfaces as a ``FrameError`` there. ``feed`` never raises.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.dropped_bytes = 0
        self.resyncs = 0
        self.frames = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def _drop(self, count: int) -> None:
        if count:
            del self._buffer[:count]
            self.dropped_bytes += count
            self.resyncs += 1

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every complete frame candidate (18 bytes each), in order."""
        self._buffer += data
        frames: list[bytes] = []
        while True:
            start = self._buffer.find(STX)
            if start < 0:
                self._drop(len(self._buffer))
                return frames
            self._drop(start)
            if len(self._buffer) < FRAME_LENGTH:
                nxt = self._buffer.find(STX, 1)
                if nxt > 0:  # a new frame began before this one ended: no STX fits before the checksum
                    self._drop(nxt)
                    continue
                return frames
            if self._buffer[CR_OFFSET] != CR:
                nxt = self._buffer.find(STX, 1)
                self._drop(nxt if nxt > 0 else len(self._buffer))
                continue
            frames.append(bytes(self._buffer[:FRAME_LENGTH]))
            self.frames += 1
            del self._buffer[:FRAME_LENGTH]


__all__ = [
    "COMMANDS",
    "FRAME_LENGTH",
    "ToledoFrame",
    "ToledoFramer",
    "Unit",
    "checksum",
    "decode_frame",
    "encode_frame",
]
