"""Toledo Continuous indicator simulator: streams frames at the pace of its serial line, over TCP and a pty.

A weighbridge terminal (60 t; display ``XXXXXX`` in 1 kg steps - SWA 0x2A, as in the device reference) on the load
cycle of ``protocols.sim.load``: one truck per cycle, motion while it drives on and off. It sends frame after frame
as fast as the line allows - 18 bytes of ``bits_per_byte`` bits each: 18.75 ms at 9600 8N1 - whether anyone listens
or not (see ``protocols.toledo`` for the frame)::

    truck settled, gross        02 2A 30 20 "024560" "000000" 0D 26
    after T, next truck         02 2A 31 20 "018420" "014960" 0D 13      net 18420 kg, tare 14960 kg
    driving on                  02 2A 38 20 "013720" "000000" 0D ..      SWB bit 3: motion
    Z with a small load, empty  SWB 0x32 (gross negative)               overload: SWB 0x34 (out of range)

Input commands, single letters (anything else, CR and LF included, is ignored)::

    P   print request: SWC bit 3 is set in the next frame to the host that asked
    T   tare: the displayed gross becomes the tare, frames turn net (waits for stability; refused in overload)
    Z   zero, within +-2 % of capacity (waits for stability); clears the tare and the not-zeroed flag
    C   clear the tare: frames turn gross again

``zeroed_at_power_up=False`` starts with SWB bit 6 ("not zeroed since power-up") set until the first ``Z``.
``garbage_every=N`` sends every Nth frame cut off after 9 bytes and followed by three garbage bytes, so that readers
exercise their resynchronisation. A weight the six digits cannot carry is sent as out of range.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Final

from protocols import toledo
from protocols.sim.load import LoadCycle, Reading, StableActions
from protocols.sim.serve import DEFAULT_HOST, DevicePty, serve_device_tcp

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE: Final = 9600
DEFAULT_BITS_PER_BYTE: Final = 10  # 8N1: start, 8 data, stop
DEFAULT_CAPACITY_KG: Final = 60_000
ZERO_RANGE_FRACTION: Final = Decimal("0.02")
GARBAGE: Final = b"\x15#?"
TRUNCATED_BYTES: Final = 9


class ToledoIndicator:
    """Pure Toledo Continuous indicator: ``frame()`` -> the 18 bytes to send now; time from ``clock``.

    ``decimal_code`` and ``increment`` are the SWA settings (display step = increment x 10^(2 - decimal_code) kg;
    the truck weights are rounded to it). ``trucks`` are gross weights in kg used in order, then random ones of
    8,000-40,000 kg from ``seed``. See ``protocols.sim.load.LoadCycle`` for the timing options.
    """

    def __init__(
        self,
        *,
        trucks: Sequence[int | Decimal] | None = None,
        seed: int | None = None,
        decimal_code: int = 2,
        increment: int = 1,
        unit: toledo.Unit = "kg",
        capacity_kg: int | Decimal = DEFAULT_CAPACITY_KG,
        time_scale: float = 1.0,
        empty_s: float = 3.0,
        ramp_s: float = 2.0,
        stable_s: float = 4.0,
        baudrate: int = DEFAULT_BAUDRATE,
        bits_per_byte: int = DEFAULT_BITS_PER_BYTE,
        zeroed_at_power_up: bool = True,
        garbage_every: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        toledo.encode_frame(Decimal(0), decimal_code=decimal_code, increment=increment, unit=unit)  # checks them
        if baudrate <= 0 or not 7 <= bits_per_byte <= 12:
            raise ValueError(f"toledo: baudrate {baudrate} / bits_per_byte {bits_per_byte} out of range")
        if garbage_every < 0:
            raise ValueError(f"toledo: garbage_every must be >= 0, got {garbage_every}")
        step = Decimal(increment).scaleb(2 - decimal_code)
        self.cycle = LoadCycle(
            loads=trucks,
            seed=seed,
            increment_kg=step,
            capacity_kg=capacity_kg,
            time_scale=time_scale,
            empty_s=empty_s,
            ramp_s=ramp_s,
            stable_s=stable_s,
            name="toledo",
            load_name="truck",
        )
        self.decimal_code = decimal_code
        self.increment = increment
        self.unit: toledo.Unit = unit
        self.baudrate = baudrate
        self.bits_per_byte = bits_per_byte
        self.garbage_every = garbage_every
        self.not_zeroed = not zeroed_at_power_up
        self.zero_kg = Decimal(0)
        self.tare_kg = Decimal(0)
        self.tared = False
        self._clock = clock
        self._t0 = clock()
        self._pending = StableActions(self.cycle)
        self._frames = 0

    @property
    def frame_interval_s(self) -> float:
        """Wire time of one frame: 18 bytes at ``baudrate`` (18.75 ms at 9600 8N1)."""
        return toledo.FRAME_LENGTH * self.bits_per_byte / self.baudrate

    def _elapsed(self) -> float:
        return max(0.0, self._clock() - self._t0)

    def reading(self) -> Reading:
        """The load now, after the tare and zero commands that are due."""
        now = self._elapsed()
        self._pending.run_due(now)
        return self.cycle.at(now)

    # ---------------------------------------------------------------------------------------------- commands
    def _zero(self, at: Reading) -> None:
        if at.overload or abs(at.gross_kg) > self.cycle.capacity_kg * ZERO_RANGE_FRACTION:
            log.debug("toledo simulator: zero refused, %s kg is outside the zero range", at.gross_kg)
            return
        self.zero_kg, self.tare_kg, self.tared, self.not_zeroed = at.gross_kg, Decimal(0), False, False

    def _tare(self, at: Reading) -> None:
        if at.overload:
            log.debug("toledo simulator: tare refused while out of range")
            return
        self.tare_kg, self.tared = max(Decimal(0), at.gross_kg - self.zero_kg), True

    def handle_command(self, command: int) -> None:
        """``T``, ``Z`` or ``C`` (``P`` is the session's: see ``frame``); other bytes are ignored."""
        if command == ord("T"):
            self._pending.add(self._elapsed(), self._tare)
        elif command == ord("Z"):
            self._pending.add(self._elapsed(), self._zero)
        elif command == ord("C"):
            self.reading()  # commands asked for before come first
            self.tare_kg, self.tared = Decimal(0), False

    # ---------------------------------------------------------------------------------------------- frames
    def frame(self, *, print_request: bool = False) -> bytes:
        """The frame to send now (cut short and followed by garbage every ``garbage_every``-th frame)."""
        now = self.reading()
        gross = now.gross_kg - self.zero_kg
        shown = gross - self.tare_kg if self.tared else gross
        out_of_range = now.overload
        try:
            data = self._encode(shown, out_of_range=out_of_range, motion=not now.stable, print_request=print_request)
        except ValueError:  # more than six digits: out of range, like the display's dashes
            data = self._encode(Decimal(0), out_of_range=True, motion=not now.stable, print_request=print_request)
        self._frames += 1
        if self.garbage_every and self._frames % self.garbage_every == 0:
            return data[:TRUNCATED_BYTES] + GARBAGE
        return data

    def _encode(self, shown: Decimal, *, out_of_range: bool, motion: bool, print_request: bool) -> bytes:
        return toledo.encode_frame(
            shown,
            tare=self.tare_kg if self.tared else Decimal(0),
            net=self.tared,
            decimal_code=self.decimal_code,
            increment=self.increment,
            motion=motion,
            out_of_range=out_of_range,
            unit=self.unit,
            not_zeroed=self.not_zeroed,
            print_request=print_request,
        )


# --------------------------------------------------------------------------------------------------------------
# Servers (the I/O)
# --------------------------------------------------------------------------------------------------------------
class _ToledoSession:
    """One host's stream: frames at the line's pace; ``P`` sets the print request in this host's next frame."""

    def __init__(self, indicator: ToledoIndicator, peer: str) -> None:
        self.indicator = indicator
        self.peer = peer
        self.output_interval_s: float | None = indicator.frame_interval_s
        self._print_request = False

    def received(self, data: bytes) -> bytes:
        for byte in data:
            if byte == ord("P"):
                self._print_request = True
            else:
                self.indicator.handle_command(byte)
        return b""

    def next_output(self) -> bytes:
        print_request, self._print_request = self._print_request, False
        return self.indicator.frame(print_request=print_request)


class _ToledoDevice:
    """``indicator`` as a ``protocols.sim.serve.StreamDevice`` (nothing at power-up: it just starts streaming)."""

    name = "toledo"

    def __init__(self, indicator: ToledoIndicator) -> None:
        self.indicator = indicator

    def power_up(self) -> bytes:
        return b""

    def open_session(self, peer: str) -> _ToledoSession:
        return _ToledoSession(self.indicator, peer)


async def serve_tcp(indicator: ToledoIndicator, *, host: str = DEFAULT_HOST, port: int = 0) -> asyncio.Server:
    """Stream ``indicator`` to every TCP client (``port=0``: a free port), at the pace of its serial line."""
    return await serve_device_tcp(_ToledoDevice(indicator), host=host, port=port)


class PtyServer(DevicePty):
    """Stream ``indicator`` on a pseudo-terminal: ``path = await server.start()`` then ``serial.Serial(path)``.

    Frames nobody reads fill the terminal's buffer and are then dropped (``dropped_bytes``); a host opening the port
    flushes what piled up and reads fresh frames.
    """

    def __init__(self, indicator: ToledoIndicator) -> None:
        super().__init__(_ToledoDevice(indicator))
        self.indicator = indicator


__all__ = ["PtyServer", "ToledoIndicator", "serve_tcp"]
