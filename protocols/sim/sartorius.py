"""Sartorius scale simulator speaking SBI: a state machine with an injectable clock, over TCP and a pseudo-terminal.

A platform scale for sacks and bags (150 kg, 0.02 kg steps by default) on the load cycle of ``protocols.sim.load``:
one load after the other, each stable for a while, noisy and unstable while it is put on and taken off.

Commands (``ESC`` + letter, or ``ESC`` + letter, digits, ``_``; see ``protocols.sartorius``) and what the scale does::

    ESC P     prints the displayed weight, at once (SBI "print without stability"):
              form 16  b"+    25.50 kg \\r\\n"  stable     b"+    13.72    \\r\\n"  unstable (unit blank)
              form 22  b"G#    +    25.50 kg \\r\\n"  untared; tared: three lines G#, T (PT2 for a preset tare), N
              b"      High    \\r\\n"  load above capacity    b"      Low     \\r\\n"  more than 20 steps below zero
              (form 22: with the id "Stat")
    ESC T     tare/zero: zero if the load is within the zero range (+-2 % of capacity), else tare
    ESC U     tare (the displayed value becomes the net weight)       ESC V   zero (also clears the tare)
    ESC x1_   prints the model, ESC x2_ the serial number (text lines, 14 / 20 characters)
    others    ignored, as a real scale does (logged at debug level)

Tare and zero answer nothing; asked for while the weight moves they are carried out as soon as it is stable
(``protocols.sim.load.StableActions``). Zeroing with a small load on (within the zero range) and taking it off makes
the scale show ``Low``, as a real one does. ``error_every=N`` replaces every Nth print by ``Err <error_code>``
(``   Err 101    ``) and ``garbage_every=N`` every Nth reply line by ``GARBAGE_LINE``, so that clients exercise their
error handling. A load heavier than ``capacity_kg`` prints ``High``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from protocols import sartorius
from protocols.sim.load import LoadCycle, Reading, StableActions
from protocols.sim.serve import DEFAULT_HOST, DevicePty, serve_device_tcp
from protocols.sim.weighbridge import GARBAGE_LINE

log = logging.getLogger(__name__)

DEFAULT_CAPACITY_KG: Final = Decimal(150)
DEFAULT_INCREMENT_KG: Final = Decimal("0.02")
DEFAULT_LOAD_MIN_KG: Final = 10
DEFAULT_LOAD_MAX_KG: Final = 60
DEFAULT_MODEL: Final = "SIM-SBI 150kg"
DEFAULT_SERIAL: Final = "91234567"
DEFAULT_ERROR_CODE: Final = 101
ZERO_RANGE_FRACTION: Final = Decimal("0.02")
UNDERLOAD_STEPS: Final = 20  # below -20 display steps the scale shows "Low"
FORMS: Final = (16, 22)

_UNIT_PER_KG: Final[dict[str, Decimal]] = {"g": Decimal(1000), "kg": Decimal(1)}


class SartoriusScale:
    """Pure SBI scale: ``handle_command(b"P")`` -> ``[b"+    25.50 kg \\r\\n"]`` (command without ESC).

    ``loads`` are weights in kg put on the scale one after the other (then random ones between ``random_min_kg`` and
    ``random_max_kg``), see ``protocols.sim.load.LoadCycle`` for the timing options. ``form`` is 16 or 22 (with the
    id codes). ``preset_tare_kg`` starts the scale with a preset tare (printed with the id ``PT2``).
    """

    def __init__(
        self,
        *,
        loads: Sequence[int | Decimal] | None = None,
        seed: int | None = None,
        form: int = 16,
        unit: str = "kg",
        increment_kg: int | Decimal = DEFAULT_INCREMENT_KG,
        capacity_kg: int | Decimal = DEFAULT_CAPACITY_KG,
        random_min_kg: int | Decimal = DEFAULT_LOAD_MIN_KG,
        random_max_kg: int | Decimal = DEFAULT_LOAD_MAX_KG,
        time_scale: float = 1.0,
        empty_s: float = 3.0,
        ramp_s: float = 2.0,
        stable_s: float = 4.0,
        preset_tare_kg: int | Decimal | None = None,
        model: str = DEFAULT_MODEL,
        serial: str = DEFAULT_SERIAL,
        error_every: int = 0,
        error_code: int = DEFAULT_ERROR_CODE,
        garbage_every: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if form not in FORMS:
            raise ValueError(f"sartorius: form must be 16 or 22, got {form}")
        if unit not in _UNIT_PER_KG:
            raise ValueError(f"sartorius: unit {unit!r}, expected one of {sorted(_UNIT_PER_KG)}")
        for option, every in (("error_every", error_every), ("garbage_every", garbage_every)):
            if every < 0:
                raise ValueError(f"sartorius: {option} must be >= 0, got {every}")
        sartorius.format_error(error_code)  # raises ValueError for a code SBI cannot print
        for text in (model, serial):
            sartorius.format_text(text, long_form=False)  # 1-14 printable characters
        self.cycle = LoadCycle(
            loads=loads,
            seed=seed,
            increment_kg=increment_kg,
            capacity_kg=capacity_kg,
            time_scale=time_scale,
            empty_s=empty_s,
            ramp_s=ramp_s,
            stable_s=stable_s,
            random_min_kg=random_min_kg,
            random_max_kg=random_max_kg,
            name="sartorius",
        )
        self.form = form
        self.unit = unit
        self.model = model
        self.serial = serial
        self.error_every = error_every
        self.error_code = error_code
        self.garbage_every = garbage_every
        self._clock = clock
        self._t0 = clock()
        self._factor = _UNIT_PER_KG[unit]
        exponent = (self.cycle.increment_kg * self._factor).normalize().as_tuple().exponent
        self._quantum = Decimal(1).scaleb(min(0, exponent if isinstance(exponent, int) else 0))
        self._pending = StableActions(self.cycle)
        self.zero_kg = Decimal(0)
        self.tare_kg = self.cycle.round(Decimal(preset_tare_kg)) if preset_tare_kg is not None else Decimal(0)
        if self.tare_kg < 0 or self.tare_kg > self.cycle.capacity_kg:
            raise ValueError(f"sartorius: preset_tare_kg {preset_tare_kg} outside 0..{self.cycle.capacity_kg}")
        self.preset_tare = preset_tare_kg is not None and self.tare_kg > 0
        self._prints = 0
        self._lines = 0

    # ---------------------------------------------------------------------------------------------- state
    def _elapsed(self) -> float:
        return max(0.0, self._clock() - self._t0)

    def reading(self) -> Reading:
        """The load on the scale now, after the tare and zero commands that are due."""
        now = self._elapsed()
        self._pending.run_due(now)
        return self.cycle.at(now)

    @property
    def tared(self) -> bool:
        return self.tare_kg != 0

    def _display(self, kg: Decimal) -> Decimal:
        return (kg * self._factor).quantize(self._quantum, rounding=ROUND_HALF_EVEN)

    def _in_zero_range(self, gross_kg: Decimal) -> bool:
        return abs(gross_kg) <= self.cycle.capacity_kg * ZERO_RANGE_FRACTION

    def _zero(self, at: Reading) -> None:
        if at.overload or not self._in_zero_range(at.gross_kg):
            log.debug("sartorius simulator: zero refused, %s kg is outside the zero range", at.gross_kg)
            return
        self.zero_kg, self.tare_kg, self.preset_tare = at.gross_kg, Decimal(0), False

    def _tare(self, at: Reading) -> None:
        if at.overload:
            log.debug("sartorius simulator: tare refused while overloaded")
            return
        self.tare_kg, self.preset_tare = max(Decimal(0), at.gross_kg - self.zero_kg), False

    def _tare_or_zero(self, at: Reading) -> None:
        if self._in_zero_range(at.gross_kg - self.zero_kg):
            self._zero(at)
        else:
            self._tare(at)

    # ---------------------------------------------------------------------------------------------- commands
    def handle_command(self, command: bytes) -> list[bytes]:
        """Reply lines (with CR LF) for one command, given without its ESC: ``b"P"``, ``b"x1_"``."""
        actions = {b"T": self._tare_or_zero, b"U": self._tare, b"V": self._zero}
        if command == b"P":
            return [self._count_line(line) for line in self._print()]
        if command in actions:
            self._pending.add(self._elapsed(), actions[command])
            return []
        long_form = self.form == 22
        if command == b"x1_":
            return [self._count_line(sartorius.format_text(self.model, long_form=long_form))]
        if command == b"x2_":
            return [self._count_line(sartorius.format_text(self.serial, long_form=long_form))]
        log.debug("sartorius simulator: ignored command ESC %r", command)
        return []

    def _count_line(self, line: bytes) -> bytes:
        self._lines += 1
        if self.garbage_every and self._lines % self.garbage_every == 0:
            return GARBAGE_LINE
        return line

    def _print(self) -> list[bytes]:
        long_form = self.form == 22
        self._prints += 1
        if self.error_every and self._prints % self.error_every == 0:
            return [sartorius.format_error(self.error_code, long_form=long_form)]
        now = self.reading()
        gross = now.gross_kg - self.zero_kg
        if now.overload:
            return [sartorius.format_status("high", long_form=long_form)]
        if gross < -UNDERLOAD_STEPS * self.cycle.increment_kg:
            return [sartorius.format_status("low", long_form=long_form)]
        unit = self.unit if now.stable else None
        if not long_form:
            return [sartorius.format_weight(self._display(gross - self.tare_kg), unit)]
        lines = [sartorius.format_weight(self._display(gross), unit, id="G#")]
        if self.tared:
            tare_id = "PT2" if self.preset_tare else "T"
            lines.append(sartorius.format_weight(self._display(self.tare_kg), unit, id=tare_id))
            lines.append(sartorius.format_weight(self._display(gross - self.tare_kg), unit, id="N"))
        return lines


# --------------------------------------------------------------------------------------------------------------
# Servers (the I/O)
# --------------------------------------------------------------------------------------------------------------
class _SbiSession:
    """One host's SBI conversation: its own command framer, the shared scale."""

    output_interval_s: float | None = None

    def __init__(self, scale: SartoriusScale, peer: str) -> None:
        self.scale = scale
        self.peer = peer
        self.framer = sartorius.SbiCommandFramer()

    def received(self, data: bytes) -> bytes:
        dropped = self.framer.dropped_bytes
        replies = [line for command in self.framer.feed(data) for line in self.scale.handle_command(command)]
        if self.framer.dropped_bytes != dropped:
            log.debug("sartorius simulator, %s: skipped %d bytes outside commands", self.peer,
                      self.framer.dropped_bytes - dropped)  # fmt: skip
        return b"".join(replies)

    def next_output(self) -> bytes:
        return b""


class _SbiDevice:
    """``scale`` as a ``protocols.sim.serve.StreamDevice`` (a Sartorius sends nothing at power-up)."""

    name = "sartorius"

    def __init__(self, scale: SartoriusScale) -> None:
        self.scale = scale

    def power_up(self) -> bytes:
        return b""

    def open_session(self, peer: str) -> _SbiSession:
        return _SbiSession(self.scale, peer)


async def serve_tcp(scale: SartoriusScale, *, host: str = DEFAULT_HOST, port: int = 0) -> asyncio.Server:
    """Serve ``scale`` over TCP (``port=0``: a free port); several clients share the one scale."""
    return await serve_device_tcp(_SbiDevice(scale), host=host, port=port)


class PtyServer(DevicePty):
    """Serve ``scale`` on a pseudo-terminal: ``path = await server.start()`` then ``serial.Serial(path, 9600)``."""

    def __init__(self, scale: SartoriusScale) -> None:
        super().__init__(_SbiDevice(scale))
        self.scale = scale


__all__ = ["FORMS", "PtyServer", "SartoriusScale", "serve_tcp"]
