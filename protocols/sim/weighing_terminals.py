"""Weighing terminals on Modbus: Laumas TLU / W100 and Siemens SIWAREX WP2xx models on the shared load cycle.

Both put the load cycle of ``protocols.sim.load`` (one load after the other: empty, moving on, settled, moving
off) into registers; ``protocols.sim.modbus_devices`` serves them over Modbus TCP and ``protocols.sim.modbus_rtu``
over RTU. Times come in through ``sample(now_s)``; the cycle starts at ``epoch_s`` (default: the first sample).

Laumas TLU (holding registers; register numbers are 1-based, 4xxxx style; wire address = number - 40001)::

    register  wire  content                                   access
    40006     5     command (codes below; reads back the last)   R/W   FC06 / FC16, the only writable register
    40007     6     status (bits below)                         R
    40008/09  7-8   gross  uint32, high word first              R     magnitude without decimal point;
    40010/11  9-10  net    uint32, high word first              R     the sign is in the status word
    40012/13  11-12 peak   uint32, high word first              R     highest gross since power-up / reset
    at most 32 registers a request (more: exception 0x03)

    status bit  0 load-cell error   1 A/D fault   2 gross > capacity + 9 d   3 gross > 110 % of capacity
                4 gross beyond +-999999   5 net beyond +-999999   7 gross negative   8 net negative
                10 net displayed (after a tare)   11 stable   12 gross within 1/4 d of zero

    vector (device reference): 40007.. = 0C00 0001 86A0 0000 3039 -> stable, net displayed, gross 100000, net 12345

    command codes (floorgate's simulator; a real TLU's list is in its manual - check before relying on it):
        0 no command   1 semi-automatic zero (within +-2 % of capacity)   2 tare (net displayed)
        3 gross displayed (clears the tare)   4 reset the peak          other values: exception 0x03
    zero and tare wait for stability, as on the instrument; writing any other register: exception 0x02.

SIWAREX WP2xx, data record DR30 from register 3000 (holding; wire address = register number)::

    3000-3003  other DR30 fields, read as 0     3004  status: bit 0 within 1/4 d of zero, 1 out of range,
    3005-3007  other DR30 fields, read as 0            2 tared, 6 standstill
    3008/09 gross, 3010/11 net, 3012/13 tare: float32 in kg, high word first (ABCD)
    so 3000-3013 read in one request, as on the instrument.

The WP231's legal log (alibi memory, DR45 / DR46 from 6012 / 6104; layout in ``protocols.siwarex``): command
``log`` writes the stable weight on the scale as the next protocol ID - ``G`` and the gross, or ``N``, the net, the
tare id (``T`` weighed, ``pT`` preset) and the tare, each as the display shows it (division steps) - with its CRC16.
Writing an ID to 6012/13 (FC16, uint32; 0: the newest) selects the log DR46 shows. Commands go to register 2000
(floorgate's simulator: ``protocols.siwarex.COMMANDS`` - 1 zero, 2 tare, 3 clear the tare, 10 log; zero and tare
wait for stability); ``log`` while the weight moves or is out of range answers exception 0x06 (busy) and logs
nothing. Writes anywhere else: exception 0x02.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from protocols import siwarex
from protocols.modbus.points import Point
from protocols.sim.load import LoadCycle, Phase, Reading, StableActions

LAUMAS_COMMAND_ADDRESS: Final = 5  # register 40006
LAUMAS_MAX_REGISTERS: Final = 32
LAUMAS_DIGITS_LIMIT: Final = 999_999
ZERO_RANGE_FRACTION: Final = Decimal("0.02")
MODBUS_ILLEGAL_ADDRESS: Final = 0x02
MODBUS_ILLEGAL_VALUE: Final = 0x03
MODBUS_DEVICE_BUSY: Final = 0x06

LAUMAS_COMMANDS: Final[dict[str, int]] = {"none": 0, "zero": 1, "tare": 2, "gross": 3, "reset_peak": 4}

LAUMAS_TLU_POINTS: Final[tuple[Point, ...]] = (
    Point("command", 5, "holding", "uint16"),
    Point("status", 6, "holding", "uint16"),
    Point("gross", 7, "holding", "uint32", unit="kg"),
    Point("net", 9, "holding", "uint32", unit="kg"),
    Point("peak", 11, "holding", "uint32", unit="kg"),
)

SIWAREX_WP_POINTS: Final[tuple[Point, ...]] = (
    Point("status", 3004, "holding", "uint16"),
    Point("gross", 3008, "holding", "float32", unit="kg"),
    Point("net", 3010, "holding", "float32", unit="kg"),
    Point("tare", 3012, "holding", "float32", unit="kg"),
)
# a WP231 also serves its command register and its legal log (DR45 / DR46)
SIWAREX_WP231_POINTS: Final[tuple[Point, ...]] = (
    *SIWAREX_WP_POINTS, siwarex.COMMAND_POINT, siwarex.REQUEST_POINT, *siwarex.LOG_POINTS,
)


class LaumasStatus(enum.IntFlag):
    """Bits of the Laumas status register (40007)."""

    LOAD_CELL_ERROR = 1 << 0
    AD_FAULT = 1 << 1
    OVER_MAX_9D = 1 << 2
    OVER_110_PERCENT = 1 << 3
    GROSS_BEYOND_DIGITS = 1 << 4
    NET_BEYOND_DIGITS = 1 << 5
    GROSS_NEGATIVE = 1 << 7
    NET_NEGATIVE = 1 << 8
    NET_DISPLAYED = 1 << 10
    STABLE = 1 << 11
    NEAR_ZERO = 1 << 12


class SiwarexStatus(enum.IntFlag):
    """Bits of the SIWAREX WP status word (3004)."""

    NEAR_ZERO = 1 << 0
    OUT_OF_RANGE = 1 << 1
    TARED = 1 << 2
    STANDSTILL = 1 << 6


class _Terminal:
    """What both terminals share: the load cycle, its clock origin, zero and tare."""

    def __init__(self, cycle: LoadCycle, epoch_s: float | None) -> None:
        self.cycle = cycle
        self.epoch_s = epoch_s
        self.zero_kg = Decimal(0)
        self.tare_kg = Decimal(0)
        self.tared = False
        self._pending = StableActions(cycle)

    def _elapsed(self, now_s: float) -> float:
        if self.epoch_s is None:
            self.epoch_s = now_s
        return now_s - self.epoch_s

    def reading_at(self, now_s: float) -> Reading:
        """The load at ``now_s``, after the zero and tare commands that are due."""
        elapsed = self._elapsed(now_s)
        self._pending.run_due(elapsed)
        return self.cycle.at(elapsed)

    def _zero(self, at: Reading) -> None:
        if not at.overload and abs(at.gross_kg) <= self.cycle.capacity_kg * ZERO_RANGE_FRACTION:
            self.zero_kg, self.tare_kg, self.tared = at.gross_kg, Decimal(0), False

    def _tare(self, at: Reading) -> None:
        if not at.overload and at.gross_kg >= self.zero_kg:  # no tare in overload or below zero
            self.tare_kg, self.tared = at.gross_kg - self.zero_kg, True


class LaumasTluModel(_Terminal):
    """A Laumas TLU weight transmitter under a feed hopper (5,000 kg, 1 kg steps by default).

    Register values are the displayed weight without decimal point: kg x 10^``decimals``. ``load_cell_error`` and
    ``ad_fault`` may be set at any time to raise status bits 0 and 1.
    """

    max_registers: int = LAUMAS_MAX_REGISTERS

    def __init__(
        self,
        *,
        loads: Sequence[int | Decimal] | None = None,
        seed: int | None = None,
        capacity_kg: int | Decimal = 5_000,
        division_kg: int | Decimal = 1,
        decimals: int = 0,
        random_min_kg: int | Decimal = 500,
        random_max_kg: int | Decimal = 4_500,
        time_scale: float = 1.0,
        empty_s: float = 3.0,
        ramp_s: float = 2.0,
        stable_s: float = 4.0,
        epoch_s: float | None = None,
    ) -> None:
        if not 0 <= decimals <= 4:
            raise ValueError(f"laumas: decimals must be within 0..4, got {decimals}")
        if Decimal(division_kg).scaleb(decimals) != Decimal(division_kg).scaleb(decimals).to_integral_value():
            raise ValueError(f"laumas: division_kg {division_kg} needs more than {decimals} decimals")
        cycle = LoadCycle(
            loads=loads, seed=seed, increment_kg=division_kg, capacity_kg=capacity_kg, time_scale=time_scale,
            empty_s=empty_s, ramp_s=ramp_s, stable_s=stable_s, random_min_kg=random_min_kg,
            random_max_kg=random_max_kg, name="laumas",
        )  # fmt: skip
        super().__init__(cycle, epoch_s)
        self.decimals = decimals
        self.command = 0
        self.peak_kg = Decimal(0)
        self.load_cell_error = False
        self.ad_fault = False
        self._last_index = 0

    @property
    def points(self) -> tuple[Point, ...]:
        return LAUMAS_TLU_POINTS

    def _counts(self, kg: Decimal) -> int:
        return int((abs(kg) * 10**self.decimals).to_integral_value(rounding=ROUND_HALF_EVEN))

    def _update_peak(self, now: Reading) -> None:
        # settled loads that came and went between two samples count too (the instrument sees every one)
        for index in range(self._last_index, now.truck_index + (now.phase is Phase.DRIVE_OFF)):
            self.peak_kg = max(self.peak_kg, self.cycle.load_weight(index) - self.zero_kg)
        self._last_index = max(self._last_index, now.truck_index)
        self.peak_kg = max(self.peak_kg, now.gross_kg - self.zero_kg)

    def status(self, now: Reading) -> LaumasStatus:
        """The status word for the reading ``now`` (after zero and tare)."""
        gross = now.gross_kg - self.zero_kg
        net = gross - self.tare_kg
        division = self.cycle.increment_kg
        flags = LaumasStatus(0)
        for condition, flag in (
            (self.load_cell_error, LaumasStatus.LOAD_CELL_ERROR),
            (self.ad_fault, LaumasStatus.AD_FAULT),
            (gross > self.cycle.capacity_kg + 9 * division, LaumasStatus.OVER_MAX_9D),
            (gross > self.cycle.capacity_kg * Decimal("1.1"), LaumasStatus.OVER_110_PERCENT),
            (self._counts(gross) > LAUMAS_DIGITS_LIMIT, LaumasStatus.GROSS_BEYOND_DIGITS),
            (self._counts(net) > LAUMAS_DIGITS_LIMIT, LaumasStatus.NET_BEYOND_DIGITS),
            (gross < 0, LaumasStatus.GROSS_NEGATIVE),
            (net < 0, LaumasStatus.NET_NEGATIVE),
            (self.tared, LaumasStatus.NET_DISPLAYED),
            (now.stable, LaumasStatus.STABLE),
            (abs(gross) * 4 < division, LaumasStatus.NEAR_ZERO),
        ):
            if condition:
                flags |= flag
        return flags

    def sample(self, now_s: float) -> dict[str, float]:
        now = self.reading_at(now_s)
        self._update_peak(now)
        gross = now.gross_kg - self.zero_kg
        return {
            "command": self.command,
            "status": int(self.status(now)),
            "gross": self._counts(gross),
            "net": self._counts(gross - self.tare_kg),
            "peak": self._counts(max(Decimal(0), self.peak_kg)),
        }

    def write(self, address: int, values: Sequence[int], now_s: float) -> int | None:
        """A write to the command register 40006 (wire address 5); see the module docstring for the codes."""
        if address != LAUMAS_COMMAND_ADDRESS or len(values) != 1:
            return MODBUS_ILLEGAL_ADDRESS
        (code,) = values
        if code not in LAUMAS_COMMANDS.values():
            return MODBUS_ILLEGAL_VALUE
        self.reading_at(now_s)  # earlier commands first
        self.command = code
        elapsed = self._elapsed(now_s)
        if code == LAUMAS_COMMANDS["zero"]:
            self._pending.add(elapsed, self._zero)
        elif code == LAUMAS_COMMANDS["tare"]:
            self._pending.add(elapsed, self._tare)
        elif code == LAUMAS_COMMANDS["gross"]:
            self.tare_kg, self.tared = Decimal(0), False
        elif code == LAUMAS_COMMANDS["reset_peak"]:
            now = self.cycle.at(elapsed)
            self.peak_kg = max(Decimal(0), now.gross_kg - self.zero_kg)
            self._last_index = now.truck_index + (now.phase is Phase.DRIVE_OFF)
        return None


class SiwarexWpModel(_Terminal):
    """A SIWAREX WP231 weighing a grain bin (12,000 kg, 2 kg steps by default); ``preset_tare_kg`` tares it (a
    preset tare: ``pT`` in the log). ``log`` holds the legal log: (protocol string, checksum) per protocol ID - 1."""

    reserved_registers: tuple[tuple[str, int, int], ...] = (
        ("holding", 3000, 4), ("holding", 3005, 3), *siwarex.RESERVED,
    )

    def __init__(
        self,
        *,
        loads: Sequence[int | Decimal] | None = None,
        seed: int | None = None,
        capacity_kg: int | Decimal = 12_000,
        division_kg: int | Decimal = 2,
        random_min_kg: int | Decimal = 1_000,
        random_max_kg: int | Decimal = 11_000,
        preset_tare_kg: int | Decimal | None = None,
        time_scale: float = 1.0,
        empty_s: float = 3.0,
        ramp_s: float = 2.0,
        stable_s: float = 4.0,
        epoch_s: float | None = None,
    ) -> None:
        cycle = LoadCycle(
            loads=loads, seed=seed, increment_kg=division_kg, capacity_kg=capacity_kg, time_scale=time_scale,
            empty_s=empty_s, ramp_s=ramp_s, stable_s=stable_s, random_min_kg=random_min_kg,
            random_max_kg=random_max_kg, name="siwarex",
        )  # fmt: skip
        super().__init__(cycle, epoch_s)
        self.tare_preset = False
        if preset_tare_kg is not None:
            self.tare_kg, self.tared, self.tare_preset = cycle.round(Decimal(preset_tare_kg)), True, True
        self.command = 0
        self.request_id = 0
        self.log: list[tuple[str, str]] = []

    @property
    def points(self) -> tuple[Point, ...]:
        return SIWAREX_WP231_POINTS

    def _zero(self, at: Reading) -> None:
        super()._zero(at)
        self.tare_preset = self.tare_preset and self.tared

    def _tare(self, at: Reading) -> None:
        if not at.overload and at.gross_kg >= self.zero_kg:  # taken (as in _Terminal._tare): a weighed tare now
            self.tare_preset = False
        super()._tare(at)

    def log_entry(self, now: Reading) -> siwarex.LogEntry:
        """What ``log`` would write for the reading ``now``: the displayed values in division steps."""
        gross = now.gross_kg - self.zero_kg
        if not self.tared:
            return siwarex.LogEntry(kind="gross", weight=str(gross), unit="kg")
        return siwarex.LogEntry(kind="net", weight=str(gross - self.tare_kg), unit="kg",
                                tare_kind="preset_tare" if self.tare_preset else "tare", tare=str(self.tare_kg))

    def write(self, address: int, values: Sequence[int], now_s: float) -> int | None:
        """The command register 2000 and the protocol ID to read (6012/13, FC16); see the module docstring."""
        if address == siwarex.REQUEST_ID and len(values) == 2:
            self.request_id = values[0] << 16 | values[1]
            return None
        if address != siwarex.COMMAND_REGISTER or len(values) != 1:
            return MODBUS_ILLEGAL_ADDRESS
        (code,) = values
        if code not in siwarex.COMMANDS.values():
            return MODBUS_ILLEGAL_VALUE
        now = self.reading_at(now_s)  # earlier commands first
        if code == siwarex.COMMANDS["log"]:
            if not now.stable or now.overload:
                return MODBUS_DEVICE_BUSY
            text = siwarex.format_log(self.log_entry(now))
            self.log.append((text, siwarex.checksum(text)))
        elif code == siwarex.COMMANDS["zero"]:
            self._pending.add(self._elapsed(now_s), self._zero)
        elif code == siwarex.COMMANDS["tare"]:
            self._pending.add(self._elapsed(now_s), self._tare)
        elif code == siwarex.COMMANDS["clear_tare"]:
            self.tare_kg, self.tared, self.tare_preset = Decimal(0), False, False
        self.command = code
        return None

    def _log_values(self) -> dict[str, float | str]:
        selected = len(self.log) if self.request_id == 0 else self.request_id
        text, crc = self.log[selected - 1] if 1 <= selected <= len(self.log) else ("", "")
        return {
            "command": self.command, "log_request_id": self.request_id,
            "log_oldest_id": 1 if self.log else 0, "log_newest_id": len(self.log),
            "log_selected_id": selected if text else 0, "log": text, "log_checksum": crc,
        }

    def status(self, now: Reading) -> SiwarexStatus:
        gross = now.gross_kg - self.zero_kg
        flags = SiwarexStatus(0)
        if abs(gross) * 4 < self.cycle.increment_kg:
            flags |= SiwarexStatus.NEAR_ZERO
        if now.overload:
            flags |= SiwarexStatus.OUT_OF_RANGE
        if self.tared:
            flags |= SiwarexStatus.TARED
        if now.stable:
            flags |= SiwarexStatus.STANDSTILL
        return flags

    def sample(self, now_s: float) -> dict[str, float | str]:
        now = self.reading_at(now_s)
        gross = now.gross_kg - self.zero_kg
        return {
            "status": int(self.status(now)),
            "gross": float(gross),
            "net": float(gross - self.tare_kg),
            "tare": float(self.tare_kg),
            **self._log_values(),
        }


__all__ = [
    "LAUMAS_COMMANDS",
    "LAUMAS_TLU_POINTS",
    "SIWAREX_WP231_POINTS",
    "SIWAREX_WP_POINTS",
    "LaumasStatus",
    "LaumasTluModel",
    "SiwarexStatus",
    "SiwarexWpModel",
]
