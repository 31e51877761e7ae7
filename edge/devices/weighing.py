"""Weighings: the detector that turns a stream of scale answers into completed weighings (automatic mode), and the
``weighing`` business record every scale driver emits, in automatic mode and for a ``weigh`` command alike.

The record (``weighing_record``; central and the alibi mirror read it)::

    {"gross": "24560", "unit": "kg", "stable": true,                 legal values: strings exactly as the
     "net": "10500", "tare": "14960", "tare_preset": true,            instrument delivered them (never
     "scale_serial": "0123456789", "instrument_alibi": "4711",        recomputed, never re-rounded)
     "raw": "S S      10500 kg | TA A      14960 kg", "trigger": "auto" | "command",
     "reference": "T-000123", "vehicle": "B-AB 1234", "partner": …, "article": …, "lot": …, "delivery_note": …}

A value the instrument did not deliver is left out, not computed: an untared weighing has ``gross`` only; a tared
one has ``net`` and ``tare`` (with ``tare_preset`` when the driver knows how the tare was set) and ``gross`` only when
the instrument sends it too (Sartorius 22-character prints, Laumas registers). The codes after ``trigger`` come with
a ``weigh`` command (``sync.commands.WEIGH_ARGS``).

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
from sync.commands import WEIGH_ARGS

TRIGGER_AUTO: Final = "auto"  # the detector took it: stable above the threshold after motion
TRIGGER_COMMAND: Final = "command"  # a weigh command from the API (operator or ERP)


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


@dataclass(frozen=True)
class WeighingValues:
    """One weighing's values, each a string exactly as the instrument delivered it; None: not delivered."""

    unit: str
    raw: str  # the frame(s) the values come from, as text
    gross: str | None = None
    net: str | None = None
    tare: str | None = None
    tare_preset: bool | None = None  # None: the tare's origin is not known (or there is no tare)
    instrument_alibi: str | None = None  # the instrument's own alibi id / checksum, when it has one

    def __post_init__(self) -> None:
        if self.gross is None and self.net is None:
            raise ValueError("a weighing needs a gross or a net value")

    def as_dict(self) -> dict[str, Any]:
        """The legal values that were delivered (``unit`` always, ``stable`` always true)."""
        out: dict[str, Any] = {"gross": self.gross, "net": self.net, "tare": self.tare,
                               "tare_preset": self.tare_preset, "unit": self.unit}
        out = {k: v for k, v in out.items() if v is not None}
        out["stable"] = True
        return out


def weighing_record(device_id: str, values: WeighingValues, *, scale_serial: str | None, trigger: str,
                    args: Mapping[str, Any] | None = None) -> NewRecord:
    """The ``weighing`` business record (see the module docstring); ``args`` of a weigh command are copied."""
    data = values.as_dict()
    data["scale_serial"] = scale_serial
    if values.instrument_alibi is not None:
        data["instrument_alibi"] = values.instrument_alibi
    data["raw"] = values.raw
    data["trigger"] = trigger
    for name in WEIGH_ARGS:
        value = (args or {}).get(name)
        if value:
            data[name] = value
    return NewRecord(kind="weighing", device=device_id, data=data)
