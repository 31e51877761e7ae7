"""The ``reading`` record (readings stream): numeric values of one device at one moment — a meter's registers, a
probe's temperature, or a device's own health counters (the agent's ``edge.bus.health``)::

    {"values": {"voltage_l1": 230.1, "frequency": 50.0}, "units": {"voltage_l1": "V"}, "series": "readings"}

``values``  point name → number (measurements: floats are fine here, unlike legal values)
``units``   point name → unit, for the points that have one (absent: none)
``series``  the InfluxDB measurement central writes them to: ``readings`` (absent) or ``device_health``

Central (``central.ingest.handlers.reading``) writes one point per value, tags node / device / point / unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from sync.records.base import bad

READING: Final = "reading"
SERIES_READINGS: Final = "readings"
SERIES_DEVICE_HEALTH: Final = "device_health"  # a device's own counters (polls, errors by kind, round-trip time)
SERIES: Final = frozenset({SERIES_READINGS, SERIES_DEVICE_HEALTH})  # InfluxDB measurements a reading may go to


@dataclass(frozen=True)
class ReadingPayload:
    """The ``data`` of a ``reading`` record (see the module)."""

    KIND: ClassVar[str] = READING

    values: Mapping[str, float | int]
    units: Mapping[str, str] = field(default_factory=dict)
    series: str = SERIES_READINGS

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"values": dict(self.values), "units": dict(self.units)}
        if self.series != SERIES_READINGS:
            out["series"] = self.series
        return out

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ReadingPayload:
        values = data.get("values")
        units = data.get("units") or {}
        series = data.get("series", SERIES_READINGS)
        if not isinstance(series, str) or series not in SERIES:
            raise bad("series", f"expected one of {sorted(SERIES)}, got {series!r:.80}")
        if not isinstance(values, dict):
            raise bad("values", "expected an object of point name → number")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(f"values.{name}", f"expected a number, got {value!r:.80}")
        if not isinstance(units, dict):
            raise bad("units", f"expected an object of point name → unit, got {units!r:.80}")
        for name, unit in units.items():
            if not isinstance(unit, str):
                raise bad(f"units.{name}", f"expected the unit as text, got {unit!r:.80}")
        return cls(values=values, units=units, series=series)


__all__ = ["READING", "SERIES", "SERIES_DEVICE_HEALTH", "SERIES_READINGS", "ReadingPayload"]
