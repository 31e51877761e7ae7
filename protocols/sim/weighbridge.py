"""Weighbridge simulator speaking MT-SICS: a state machine with an injectable clock, and two line servers.

One truck per cycle (the load cycle of ``protocols.sim.load``); every phase duration is multiplied by
``time_scale`` (0.01 makes a cycle last 0.11 s)::

    weight
      ^            ______________________
      |           /        settled       \\            S S      24560 kg   (stable at the truck's gross weight)
      |          / drive_on     drive_off \\           S D      13720 kg   (rising / falling, noisy, dynamic)
      |_________/                          \\_________  S S          0 kg   (empty, stable)
      +--------------------------------------------------> time
        empty_s   ramp_s     stable_s     ramp_s   (next truck)

Commands answered (replies exactly as in the device reference, weight field 10 characters right-aligned)::

    S      stable weight        S S <net> <unit>  | S I while moving  | S + overload
    SI     immediate weight     S S / S D <net> <unit>               | S + overload
    Z      zero                 Z A (stable, within the zero range; clears the tare) | Z I moving | Z + outside range
    T      tare                 T S <tare> <unit> (stable; net = gross - tare afterwards) | T I moving | T + overload
    TA     tare memory          TA A <tare> <unit>; ``TA <value> <unit>`` presets the tare (TA L beyond capacity)
    TAC    clear tare           TAC A
    I2/I3/I4, @                 I2 A "<model>" / I3 A "<software>" / I4 A "<serial>"; @ also clears the tare
    other                       ES (syntax error: unknown command - SIR is not simulated -, extra arguments,
                                a line over 256 bytes); bytes that are not printable ASCII: ET

A truck heavier than ``capacity_kg`` answers ``S +`` while the load on the bridge exceeds the capacity (the whole
settled phase, and the part of the ramps above capacity). ``garbage_every=N`` replaces every Nth reply line with
``GARBAGE_LINE`` so that clients exercise their error handling.

``mixed_decimals=True`` makes it a **multi-interval** instrument (Mehrteilungswaage, EN 45501 / OIML R76; Mettler's
DeltaRange works alike): below ``fine_below_kg`` (default 30,000 kg) every value is shown in steps of
``fine_increment_kg`` (default 0.5 kg: one decimal, ``S S    24560.0 kg``, ``TA A     8420.5 kg``), from there in
steps of ``increment_kg`` (``S S      32980 kg``). The interval follows the value shown — a net after a tare, a tare
— so one weighing's frames may carry different decimals (``S S      31580 kg`` net beside ``TA A     8420.5 kg``
preset tare), and a trailing zero is a digit the scale wrote (``8420.0``). Every frame stays within MT-SICS: the
weight field is 10 characters, right-aligned, whatever its decimals. Loads (and a preset tare) are rounded to the
fine step; end-to-end tests use it to show that every value travels with exactly its own digits.

At power-up a scale sends ``I4 A "<serial>"`` once, unasked. ``serve_tcp`` sends it to each client when it
connects. ``PtyServer`` writes it when it starts; since serial libraries flush the input when they open a port
(pyserial does), it writes it once more right after the first such flush, which it sees on the master side of the
pseudo-terminal (packet mode, ``TIOCPKT_FLUSHREAD``) - so the first program to open the port reads it, as it
would from a scale switched on together with the host. Later flushes send nothing. Both servers are the generic
ones of ``protocols.sim.serve``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

from protocols import mtsics
from protocols.sim import load
from protocols.sim.load import LoadCycle, Phase, Reading
from protocols.sim.serve import DEFAULT_HOST, DevicePty, serve_device_tcp

log = logging.getLogger(__name__)

DEFAULT_INCREMENT_KG: Final = 20
DEFAULT_CAPACITY_KG: Final = 60_000
DEFAULT_UNIT: Final = "kg"
DEFAULT_EMPTY_S: Final = load.DEFAULT_EMPTY_S
DEFAULT_RAMP_S: Final = load.DEFAULT_RAMP_S
DEFAULT_STABLE_S: Final = load.DEFAULT_STABLE_S
DEFAULT_SERIAL: Final = "0123456789"
DEFAULT_MODEL: Final = "floorgate SIM-WB 60t"
SOFTWARE_VERSION: Final = "floorgate-sim 1.0"
RANDOM_TRUCK_MIN_KG: Final = 8_000
RANDOM_TRUCK_MAX_KG: Final = 40_000
ZERO_RANGE_FRACTION: Final = Decimal("0.02")  # Z works within +-2 % of capacity
DEFAULT_FINE_INCREMENT_KG: Final = Decimal("0.5")  # mixed_decimals: the fine partial range's step
DEFAULT_FINE_BELOW_KG: Final = 30_000  # mixed_decimals: where the coarse partial range (increment_kg) begins
GARBAGE_LINE: Final = b"\x15#?!garbage\r\n"

_UNIT_PER_KG: Final[dict[str, Decimal]] = {"g": Decimal(1000), "kg": Decimal(1), "t": Decimal("0.001")}


class Weighbridge:
    """Pure MT-SICS weighbridge: ``handle_line(b"SI")`` -> ``[b"S S      24560 kg\\r\\n"]``; time from ``clock``.

    ``trucks`` are gross weights in kg, used in order - a scripted list of visits: "in and out" is the same truck
    twice, loaded then empty (incoming goods) or empty then loaded (outgoing); with a clock in the caller's hand,
    ``time_of(visit, phase)`` puts the bridge where a scenario needs it. After them come random trucks of
    8,000-40,000 kg from ``random.Random(seed)``. All weights are rounded to ``increment_kg`` (the display
    resolution). ``unit`` is the display unit: ``kg`` (default), ``t`` or ``g``. ``mixed_decimals``: a
    multi-interval display (see the module), fine steps of ``fine_increment_kg`` below ``fine_below_kg``.
    """

    def __init__(
        self,
        *,
        trucks: Sequence[int | Decimal] | None = None,
        seed: int | None = None,
        increment_kg: int | Decimal = DEFAULT_INCREMENT_KG,
        capacity_kg: int | Decimal = DEFAULT_CAPACITY_KG,
        unit: str = DEFAULT_UNIT,
        time_scale: float = 1.0,
        empty_s: float = DEFAULT_EMPTY_S,
        ramp_s: float = DEFAULT_RAMP_S,
        stable_s: float = DEFAULT_STABLE_S,
        serial: str = DEFAULT_SERIAL,
        model: str = DEFAULT_MODEL,
        garbage_every: int = 0,
        clock: Callable[[], float] = time.monotonic,
        mixed_decimals: bool = False,
        fine_increment_kg: int | Decimal = DEFAULT_FINE_INCREMENT_KG,
        fine_below_kg: int | Decimal = DEFAULT_FINE_BELOW_KG,
    ) -> None:
        self.fine: tuple[Decimal, Decimal] | None = None  # mixed_decimals: (fine step, fine range below) in kg
        if mixed_decimals:
            self.fine = _fine_range(Decimal(increment_kg), Decimal(fine_increment_kg), Decimal(fine_below_kg),
                                    Decimal(capacity_kg))
        if unit not in _UNIT_PER_KG:
            raise ValueError(f"weighbridge: unit {unit!r}, expected one of {sorted(_UNIT_PER_KG)}")
        if garbage_every < 0:
            raise ValueError(f"weighbridge: garbage_every must be >= 0, got {garbage_every}")
        for text in (serial, model):
            mtsics.encode_ident_response("I4", text)  # raises ValueError for text MT-SICS cannot carry
        self.cycle = LoadCycle(
            loads=trucks,
            seed=seed,
            increment_kg=increment_kg if self.fine is None else self.fine[0],  # loads in the finest step
            capacity_kg=capacity_kg,
            time_scale=time_scale,
            empty_s=empty_s,
            ramp_s=ramp_s,
            stable_s=stable_s,
            random_min_kg=RANDOM_TRUCK_MIN_KG,
            random_max_kg=RANDOM_TRUCK_MAX_KG,
            name="weighbridge",
            load_name="truck",
        )
        self.increment_kg = Decimal(increment_kg)
        self.mixed_decimals = mixed_decimals
        self.capacity_kg = self.cycle.capacity_kg
        self.unit = unit
        self.time_scale = time_scale
        self.empty_s = self.cycle.empty_s
        self.ramp_s = self.cycle.ramp_s
        self.stable_s = self.cycle.stable_s
        self.serial = serial
        self.model = model
        self.garbage_every = garbage_every
        self._clock = clock
        self._t0 = clock()
        self._tare_kg = Decimal(0)
        self._reply_count = 0
        factor = _UNIT_PER_KG[unit]
        self._factor = factor
        self._display_quantum = self._quantum(self.increment_kg)
        self._handlers: dict[str, Callable[[list[str]], list[bytes]]] = {
            "S": self._cmd_s,
            "SI": self._cmd_si,
            "Z": self._cmd_z,
            "T": self._cmd_t,
            "TA": self._cmd_ta,
            "TAC": self._cmd_tac,
            "@": self._cmd_reset,
            "I2": functools.partial(self._cmd_ident, "I2"),
            "I3": functools.partial(self._cmd_ident, "I3"),
            "I4": functools.partial(self._cmd_ident, "I4"),
        }

    # ---------------------------------------------------------------------------------------------- state
    @property
    def cycle_s(self) -> float:
        """Seconds one truck takes (after ``time_scale``)."""
        return self.cycle.cycle_s

    def _elapsed(self) -> float:
        return max(0.0, self._clock() - self._t0)

    @property
    def completed_trucks(self) -> int:
        """Trucks that have fully driven off the bridge."""
        return self.cycle.completed(self._elapsed())

    @property
    def current_phase(self) -> Phase:
        return self.reading().phase

    @property
    def tare_kg(self) -> Decimal:
        return self._tare_kg

    def time_of(self, index: int, phase: Phase, *, fraction: float = 0.5) -> float:
        """The ``clock`` value at which truck ``index`` is ``fraction`` through ``phase``: a scripted visit driven
        by a clock in the caller's hand (``bridge.time_of(4, Phase.SETTLED)``: truck 4 standing still)."""
        return self._t0 + self.cycle.time_of(index, phase, fraction=fraction)

    def truck_weight(self, index: int) -> Decimal:
        """Gross weight in kg of truck ``index`` (0-based), rounded to the increment."""
        return self.cycle.load_weight(index)

    def _round(self, kg: Decimal) -> Decimal:
        return self.cycle.round(kg)

    def reading(self) -> Reading:
        """The load on the bridge now."""
        return self.cycle.at(self._elapsed())

    def _quantum(self, step_kg: Decimal) -> Decimal:
        """The display's last digit for a step: 20 kg → 1, 0.5 kg → 0.1, 5 kg in t → 0.001."""
        exponent = (step_kg * self._factor).normalize().as_tuple().exponent
        return Decimal(1).scaleb(min(0, exponent if isinstance(exponent, int) else 0))

    def _display(self, kg: Decimal) -> Decimal:
        if self.fine is None:
            return (kg * self._factor).quantize(self._display_quantum, rounding=ROUND_HALF_EVEN)
        fine_step, fine_below = self.fine
        step = fine_step if abs(kg) < fine_below else self.increment_kg  # the partial range of the value shown
        shown = (kg / step).to_integral_value(rounding=ROUND_HALF_EVEN) * step
        return (shown * self._factor).quantize(self._quantum(step), rounding=ROUND_HALF_EVEN)

    # ---------------------------------------------------------------------------------------------- lines
    def power_up_line(self) -> bytes:
        """``I4 A "<serial>"`` CR LF, sent unasked at power-up (never replaced by garbage)."""
        return mtsics.encode_ident_response("I4", self.serial)

    def handle_line(self, line: bytes) -> list[bytes]:
        """Complete reply lines (with CR LF) for one command line (with or without its CR LF)."""
        body = line.rstrip(b"\r\n")
        if isinstance(line, mtsics.OverlongLine):  # a command too long to be one: syntax error
            replies = [mtsics.encode_error("ES")]
        elif any(byte < 0x20 or byte > 0x7E for byte in body):
            replies = [mtsics.encode_error("ET")]
        else:
            tokens = body.decode("ascii").split()
            if not tokens:
                return []
            handler = self._handlers.get(tokens[0])
            replies = handler(tokens[1:]) if handler else [mtsics.encode_error("ES")]
        return [self._count_reply(reply) for reply in replies]

    def _count_reply(self, reply: bytes) -> bytes:
        self._reply_count += 1
        if self.garbage_every and self._reply_count % self.garbage_every == 0:
            return GARBAGE_LINE
        return reply

    def _weight(self, command: str, status: str, kg: Decimal) -> bytes:
        return mtsics.encode_weight_response(command, status, self._display(kg), self.unit)

    def _cmd_s(self, args: list[str]) -> list[bytes]:
        if args:
            return [mtsics.encode_error("ES")]
        now = self.reading()
        if now.overload:
            return [mtsics.encode_status_response("S", "+")]
        if not now.stable:
            return [mtsics.encode_status_response("S", "I")]
        return [self._weight("S", "S", now.gross_kg - self._tare_kg)]

    def _cmd_si(self, args: list[str]) -> list[bytes]:
        if args:
            return [mtsics.encode_error("ES")]
        now = self.reading()
        if now.overload:
            return [mtsics.encode_status_response("S", "+")]
        return [self._weight("S", "S" if now.stable else "D", now.gross_kg - self._tare_kg)]

    def _cmd_z(self, args: list[str]) -> list[bytes]:
        if args:
            return [mtsics.encode_error("ES")]
        now = self.reading()
        if not now.stable:
            return [mtsics.encode_status_response("Z", "I")]
        if now.overload or now.gross_kg > self.capacity_kg * ZERO_RANGE_FRACTION:
            return [mtsics.encode_status_response("Z", "+")]
        self._tare_kg = Decimal(0)
        return [mtsics.encode_status_response("Z", "A")]

    def _cmd_t(self, args: list[str]) -> list[bytes]:
        if args:
            return [mtsics.encode_error("ES")]
        now = self.reading()
        if now.overload:
            return [mtsics.encode_status_response("T", "+")]
        if not now.stable:
            return [mtsics.encode_status_response("T", "I")]
        self._tare_kg = now.gross_kg
        return [self._weight("T", "S", self._tare_kg)]

    def _cmd_ta(self, args: list[str]) -> list[bytes]:
        if args:
            if len(args) != 2:
                return [mtsics.encode_error("ES")]
            try:
                value = Decimal(args[0])
            except InvalidOperation:
                return [mtsics.encode_error("ES")]
            if not value.is_finite() or args[1] != self.unit:
                return [mtsics.encode_error("ES")]
            kg = self._round(value / self._factor)
            if not 0 <= kg <= self.capacity_kg:
                return [mtsics.encode_status_response("TA", "L")]
            self._tare_kg = kg
        return [self._weight("TA", "A", self._tare_kg)]

    def _cmd_tac(self, args: list[str]) -> list[bytes]:
        if args:
            return [mtsics.encode_error("ES")]
        self._tare_kg = Decimal(0)
        return [mtsics.encode_status_response("TAC", "A")]

    def _cmd_reset(self, args: list[str]) -> list[bytes]:
        if args:
            return [mtsics.encode_error("ES")]
        self._tare_kg = Decimal(0)
        return [self.power_up_line()]

    def _cmd_ident(self, command: str, args: list[str]) -> list[bytes]:
        if args:
            return [mtsics.encode_error("ES")]
        texts = {"I2": self.model, "I3": SOFTWARE_VERSION, "I4": self.serial}
        return [mtsics.encode_ident_response(command, texts[command])]


def _fine_range(increment: Decimal, fine: Decimal, below: Decimal, capacity: Decimal) -> tuple[Decimal, Decimal]:
    """``(fine step, fine range below)`` of a multi-interval display; ``ValueError`` naming the option."""
    if not (fine.is_finite() and fine > 0 and increment.is_finite() and increment > 0):
        raise ValueError(f"weighbridge: fine_increment_kg must be > 0, got {fine}")
    if fine >= increment or increment % fine != 0:
        raise ValueError(f"weighbridge: fine_increment_kg {fine} must divide increment_kg {increment} (a finer step)")
    if not (below.is_finite() and 0 < below <= capacity):
        raise ValueError(f"weighbridge: fine_below_kg must be within (0, capacity_kg {capacity}], got {below}")
    return fine, below


# --------------------------------------------------------------------------------------------------------------
# Line servers (the I/O)
# --------------------------------------------------------------------------------------------------------------
class _MtsicsSession:
    """One host's MT-SICS conversation: its own line framer, the shared bridge."""

    output_interval_s: float | None = None

    def __init__(self, bridge: Weighbridge, peer: str) -> None:
        self.bridge = bridge
        self.peer = peer
        self.framer = mtsics.LineFramer()

    def received(self, data: bytes) -> bytes:
        """Feed received bytes; the replies to every complete command line, in order."""
        replies: list[bytes] = []
        for line in self.framer.feed(data):
            if isinstance(line, mtsics.OverlongLine):
                log.warning("weighbridge simulator, %s: %s; raw=%r", self.peer, line.reason, bytes(line))
            replies.extend(self.bridge.handle_line(line))
        return b"".join(replies)

    def next_output(self) -> bytes:
        return b""


class _MtsicsDevice:
    """``bridge`` as a ``protocols.sim.serve.StreamDevice``."""

    name = "weighbridge"

    def __init__(self, bridge: Weighbridge) -> None:
        self.bridge = bridge

    def power_up(self) -> bytes:
        return self.bridge.power_up_line()

    def open_session(self, peer: str) -> _MtsicsSession:
        return _MtsicsSession(self.bridge, peer)


async def serve_tcp(bridge: Weighbridge, *, host: str = DEFAULT_HOST, port: int = 0) -> asyncio.Server:
    """Serve ``bridge`` over TCP, one MT-SICS line per command; several clients share the one bridge.

    Each client first receives the power-up line. ``port=0`` binds a free port: read it from
    ``server.sockets[0].getsockname()[1]``. Close with ``server.close(); await server.wait_closed()``.
    """
    return await serve_device_tcp(_MtsicsDevice(bridge), host=host, port=port)


class PtyServer(DevicePty):
    """Serve ``bridge`` on a pseudo-terminal: ``path = await server.start()`` then ``serial.Serial(path, 9600)``.

    The slave side is put into raw mode (CR LF pass unchanged, no echo); the master side is read in packet mode,
    which also reports when the host flushes its input (see the module docstring for the power-up line). The server
    keeps the slave open itself, so hosts may open and close the port any number of times. Replies a host does not
    read pile up in the terminal's buffer; when it is full they are dropped (logged), as a UART would overrun.
    """

    def __init__(self, bridge: Weighbridge) -> None:
        super().__init__(_MtsicsDevice(bridge))
        self.bridge = bridge


__all__ = [
    "GARBAGE_LINE",
    "Phase",
    "PtyServer",
    "Reading",
    "Weighbridge",
    "serve_tcp",
]
