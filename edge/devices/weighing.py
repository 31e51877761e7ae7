"""Turns a stream of scale answers into completed weighings.

A weighing is taken once per vehicle: the load must first be seen moving (or changing), then a **stable**
value at or above ``threshold`` is taken — never a moving one. The bridge must drop below ``empty_below``
before the next weighing can be taken. After an agent restart the detector starts in ``WAIT_EMPTY`` unless the
bridge is empty, so a vehicle that was already weighed is not weighed twice.

    WAIT_EMPTY ──(value < empty_below)──> ARMED ──(motion, value ≥ threshold)──> MOVING
        ^                                                                           │
        └─────────────────────────(stable, value ≥ threshold: emit)─────────────────┘
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal


class Phase(enum.Enum):
    WAIT_EMPTY = "wait_empty"
    ARMED = "armed"
    MOVING = "moving"


@dataclass(frozen=True)
class Weighing:
    gross: Decimal
    unit: str
    raw: bytes


class WeighingDetector:
    def __init__(self, *, threshold: Decimal, empty_below: Decimal | None = None) -> None:
        self.threshold = threshold
        self.empty_below = empty_below if empty_below is not None else threshold
        self.phase = Phase.WAIT_EMPTY

    def feed(self, *, value: Decimal, stable: bool, unit: str, raw: bytes) -> Weighing | None:
        """One scale answer (overload counts as unstable). Returns a weighing when one is complete."""
        if value < self.empty_below:
            self.phase = Phase.ARMED
            return None
        if self.phase is Phase.ARMED and (not stable or value >= self.threshold):
            # the load arrived: either we saw it move, or it is already above threshold and came from empty
            self.phase = Phase.MOVING
            if not stable:
                return None
        if self.phase is Phase.MOVING and stable and value >= self.threshold:
            self.phase = Phase.WAIT_EMPTY
            return Weighing(gross=value, unit=unit, raw=raw)
        return None

    def overload(self) -> None:
        """An overloaded bridge is not stable; a vehicle on it is still in motion for our purposes."""
        if self.phase is Phase.ARMED:
            self.phase = Phase.MOVING
