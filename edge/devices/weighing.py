"""Weighings: the detector that turns a stream of scale answers into completed weighings (automatic mode), and the
``weighing`` business record every scale driver emits, in automatic mode and for a ``weigh`` command alike
(``weighing_record``: the payload is ``sync.records.weighing.WeighingPayload``, the contract with central; a driver
hands in the instrument's ``WeighingValues`` and the codes of the weigh command).

A weighing is taken once per vehicle: the load must first be seen moving (or changing), then a **stable**
value at or above ``threshold`` is taken — never a moving one. The bridge must drop below ``empty_below``
before the next weighing can be taken. After an agent restart the detector starts in ``WAIT_EMPTY`` unless the
bridge is empty, so a vehicle that was already weighed is not weighed twice.

    WAIT_EMPTY ──(value < empty_below)──> ARMED ──(motion, value ≥ threshold)──> MOVING
        ^                                                                           │
        └─────────────────────────(stable, value ≥ threshold: emit)─────────────────┘

What never became a weighing is counted, as *events* of the device (``on_event``; they go out with the device's
health counters as ``events_<kind>``): ``overload`` once per overload (or underload) episode, and ``unstable`` for a
load that arrived and left the bridge without ever standing still above the threshold (a truck that did not stop;
one that was overloaded meanwhile counts as ``overload`` only).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from edge.store.outbox import NewRecord
from sync.records.weighing import CODES, WEIGHING, WeighingPayload, WeighingValues


class Phase(enum.Enum):
    WAIT_EMPTY = "wait_empty"
    ARMED = "armed"
    MOVING = "moving"


@dataclass(frozen=True)
class Weighing:
    gross: Decimal
    unit: str
    raw: bytes


EVENT_OVERLOAD: Final = "overload"  # an overload / underload episode began
EVENT_UNSTABLE: Final = "unstable"  # a load came and went without a stable value above the threshold


class WeighingDetector:
    def __init__(self, *, threshold: Decimal, empty_below: Decimal | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.threshold = threshold
        self.empty_below = empty_below if empty_below is not None else threshold
        self.phase = Phase.WAIT_EMPTY
        self.on_event = on_event
        self._overloaded = False  # the last answer was an overload
        self._load_overloaded = False  # the load on the bridge was overloaded at some time (counted once as that)

    def _event(self, kind: str) -> None:
        if self.on_event is not None:
            self.on_event(kind)

    def feed(self, *, value: Decimal, stable: bool, unit: str, raw: bytes) -> Weighing | None:
        """One scale answer (overload counts as unstable). Returns a weighing when one is complete."""
        self._overloaded = False
        if value < self.empty_below:
            if self.phase is Phase.MOVING and not self._load_overloaded:  # it left without a weighing
                self._event(EVENT_UNSTABLE)
            self.phase = Phase.ARMED
            self._load_overloaded = False
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
        if not self._overloaded:
            self._overloaded = True
            self._load_overloaded = True
            self._event(EVENT_OVERLOAD)
        if self.phase is Phase.ARMED:
            self.phase = Phase.MOVING


def weighing_record(device_id: str, values: WeighingValues, *, scale_serial: str | None, trigger: str,
                    args: Mapping[str, Any] | None = None) -> NewRecord:
    """The ``weighing`` business record; the codes among ``args`` of a weigh command are copied (``CODES``)."""
    codes = {name: value for name in CODES if (value := (args or {}).get(name))}
    payload = WeighingPayload(values=values, scale_serial=scale_serial, trigger=trigger, **codes)
    return NewRecord(kind=WEIGHING, device=device_id, data=payload.to_payload())
