"""The load on a simulated scale over time: one load (a truck, a sack, a batch) per cycle, shared by every scale sim.

Every phase duration is multiplied by ``time_scale`` (0.01 makes the default cycle last 0.11 s)::

    weight
      ^            ______________________
      |           /        settled       \\            stable at the load's weight
      |          / drive_on     drive_off \\           rising / falling, noisy, NOT stable
      |_________/                          \\_________  empty, stable at 0
      +--------------------------------------------------> time since the start of the cycle
        empty_s   ramp_s     stable_s     ramp_s   (next load)

``loads`` are used in order, then random ones between ``random_min_kg`` and ``random_max_kg`` from
``random.Random(seed)``; all are rounded to ``increment_kg`` (the display step). A load heavier than ``capacity_kg``
reads as overload while the weight on the scale exceeds the capacity. The model is pure: ``at(elapsed_s)`` gives the
reading ``elapsed_s`` seconds after the start; callers keep the clock (``protocols.sim.weighbridge``,
``protocols.sim.sartorius``, ``protocols.sim.toledo``, the weighing terminals in ``protocols.sim.modbus_devices``).
Noise on the ramps comes from its own seeded generator, so two cycles with the same seed give the same loads.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

DEFAULT_EMPTY_S: Final = 3.0
DEFAULT_RAMP_S: Final = 2.0
DEFAULT_STABLE_S: Final = 4.0
RAMP_NOISE_FRACTION: Final = 0.03  # noise while the load moves on / off, fraction of its weight
RAMP_NOISE_MIN_INCREMENTS: Final = 5


class Phase(enum.StrEnum):
    EMPTY = "empty"
    DRIVE_ON = "drive_on"
    SETTLED = "settled"
    DRIVE_OFF = "drive_off"


@dataclass(frozen=True)
class Reading:
    """What the load cells say at one moment (gross, in kg). ``truck_index`` is the 0-based load number."""

    phase: Phase
    truck_index: int
    gross_kg: Decimal
    stable: bool
    overload: bool

    @property
    def load_index(self) -> int:
        return self.truck_index


class LoadCycle:
    """One load after the other: ``LoadCycle(loads=[24560]).at(6.0).gross_kg == 24560`` (settled).

    ``name`` and ``load_name`` only word the ``ValueError`` raised for bad options
    (``"weighbridge: truck weights must be > 0 kg"``).
    """

    def __init__(
        self,
        *,
        loads: Sequence[int | Decimal] | None = None,
        seed: int | None = None,
        increment_kg: int | Decimal = 20,
        capacity_kg: int | Decimal = 60_000,
        time_scale: float = 1.0,
        empty_s: float = DEFAULT_EMPTY_S,
        ramp_s: float = DEFAULT_RAMP_S,
        stable_s: float = DEFAULT_STABLE_S,
        random_min_kg: int | Decimal = 8_000,
        random_max_kg: int | Decimal = 40_000,
        name: str = "load cycle",
        load_name: str = "load",
    ) -> None:
        if Decimal(increment_kg) <= 0:
            raise ValueError(f"{name}: increment_kg must be > 0, got {increment_kg}")
        if Decimal(capacity_kg) <= 0:
            raise ValueError(f"{name}: capacity_kg must be > 0, got {capacity_kg}")
        if time_scale <= 0:
            raise ValueError(f"{name}: time_scale must be > 0, got {time_scale}")
        for option, duration in (("empty_s", empty_s), ("ramp_s", ramp_s), ("stable_s", stable_s)):
            if duration <= 0:
                raise ValueError(f"{name}: {option} must be > 0, got {duration}")
        if not 0 < Decimal(random_min_kg) <= Decimal(random_max_kg):
            raise ValueError(
                f"{name}: expected 0 < random_min_kg <= random_max_kg, got {random_min_kg} and {random_max_kg}"
            )
        self.increment_kg = Decimal(increment_kg)
        self.capacity_kg = Decimal(capacity_kg)
        self.time_scale = time_scale
        self.empty_s = empty_s * time_scale
        self.ramp_s = ramp_s * time_scale
        self.stable_s = stable_s * time_scale
        self.random_min_kg = float(random_min_kg)
        self.random_max_kg = float(random_max_kg)
        self._loads = [self.round(Decimal(weight)) for weight in loads or ()]
        if any(weight <= 0 for weight in self._loads):
            raise ValueError(f"{name}: {load_name} weights must be > 0 kg, got {list(loads or ())}")
        self._load_rng = random.Random(seed)
        self._noise_rng = random.Random(None if seed is None else f"noise-{seed}")

    @property
    def cycle_s(self) -> float:
        """Seconds one load takes (after ``time_scale``)."""
        return self.empty_s + 2 * self.ramp_s + self.stable_s

    def round(self, kg: Decimal) -> Decimal:
        """``kg`` rounded to the increment (half to even)."""
        steps = (kg / self.increment_kg).to_integral_value(rounding=ROUND_HALF_EVEN)
        return steps * self.increment_kg

    def load_weight(self, index: int) -> Decimal:
        """Weight in kg of load ``index`` (0-based), rounded to the increment."""
        while len(self._loads) <= index:
            kg = self._load_rng.uniform(self.random_min_kg, self.random_max_kg)
            self._loads.append(self.round(Decimal(repr(kg))))
        return self._loads[index]

    def completed(self, elapsed_s: float) -> int:
        """Loads that have fully left the scale ``elapsed_s`` seconds after the start."""
        return int(max(0.0, elapsed_s) // self.cycle_s)

    def at(self, elapsed_s: float) -> Reading:
        """The reading ``elapsed_s`` seconds after the start (negative times count as 0)."""
        index, position = divmod(max(0.0, elapsed_s), self.cycle_s)
        load = self.load_weight(int(index))
        on_end = self.empty_s + self.ramp_s
        settled_end = on_end + self.stable_s
        if position < self.empty_s:
            phase, gross, stable = Phase.EMPTY, Decimal(0), True
        elif position < on_end:
            phase, stable = Phase.DRIVE_ON, False
            gross = self._noisy(load, (position - self.empty_s) / self.ramp_s)
        elif position < settled_end:
            phase, gross, stable = Phase.SETTLED, load, True
        else:
            phase, stable = Phase.DRIVE_OFF, False
            gross = self._noisy(load, 1.0 - (position - settled_end) / self.ramp_s)
        return Reading(phase, int(index), gross, stable, overload=gross > self.capacity_kg)

    def time_of(self, index: int, phase: Phase, *, fraction: float = 0.5) -> float:
        """Seconds after the start at which load ``index`` (0-based) is ``fraction`` through ``phase``: a test or a
        scripted scenario puts the scale where it wants it (``time_of(3, Phase.DRIVE_ON)``: truck 3 moving on)."""
        if index < 0 or not 0.0 <= fraction < 1.0:
            raise ValueError(f"time_of: index {index} must be >= 0 and fraction {fraction} within [0, 1)")
        starts = {Phase.EMPTY: (0.0, self.empty_s), Phase.DRIVE_ON: (self.empty_s, self.ramp_s),
                  Phase.SETTLED: (self.empty_s + self.ramp_s, self.stable_s),
                  Phase.DRIVE_OFF: (self.empty_s + self.ramp_s + self.stable_s, self.ramp_s)}
        start, length = starts[phase]
        return index * self.cycle_s + start + fraction * length

    def next_stable(self, elapsed_s: float) -> tuple[float, Reading]:
        """When the reading is next stable (settled or empty) at or after ``elapsed_s``, and that reading.

        A tare or zero asked for while the load moves is carried out then, as a real scale waits for stability.
        """
        elapsed_s = max(0.0, elapsed_s)
        now = self.at(elapsed_s)
        if now.stable:
            return elapsed_s, now
        index = elapsed_s // self.cycle_s
        start = index * self.cycle_s
        if now.phase is Phase.DRIVE_ON:
            load = self.load_weight(int(index))
            settled = Reading(Phase.SETTLED, int(index), load, True, overload=load > self.capacity_kg)
            return start + self.empty_s + self.ramp_s, settled
        return start + self.cycle_s, Reading(Phase.EMPTY, int(index) + 1, Decimal(0), True, overload=False)

    def _noisy(self, load: Decimal, fraction: float) -> Decimal:
        amplitude = max(float(load) * RAMP_NOISE_FRACTION, float(self.increment_kg) * RAMP_NOISE_MIN_INCREMENTS)
        kg = float(load) * fraction + self._noise_rng.uniform(-amplitude, amplitude)
        return max(Decimal(0), self.round(Decimal(repr(kg))))


class StableActions:
    """Commands that wait for stability: a tare or zero asked for while the load moves happens once it is stable.

    ``add(elapsed_s, action)`` queues ``action``; ``run_due(now_s)`` calls, in order, every queued action whose
    stable moment (``LoadCycle.next_stable``) has come, with the reading at that moment - so the outcome does not
    depend on how often the caller looks, only on the times.
    """

    def __init__(self, cycle: LoadCycle) -> None:
        self.cycle = cycle
        self._queue: list[tuple[float, Reading, Callable[[Reading], None]]] = []

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, elapsed_s: float, action: Callable[[Reading], None]) -> None:
        at, reading = self.cycle.next_stable(elapsed_s)
        self._queue.append((at, reading, action))

    def run_due(self, now_s: float) -> None:
        while self._queue and self._queue[0][0] <= now_s:
            _, reading, action = self._queue.pop(0)
            action(reading)


__all__ = ["LoadCycle", "Phase", "Reading", "StableActions"]
