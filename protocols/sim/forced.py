"""Forced values for a simulated Modbus device: control over what it measures, for tests and demonstrations.

``ForcedValues(model, path)`` serves the model's values except for the points named in the JSON file at ``path``
(``{"temperature_5": 41.0}``), which is read again on every sample. No file: nothing forced. A file that is not a
JSON object of point name -> number (half written, say) keeps the values forced before; write it to a temporary
name and rename it. ``floorgate simulate <modbus device> --force-file PATH`` wraps the device with it, e.g. to
drive a silo cable's sensor above an alarm threshold and back::

    echo '{"temperature_5": 41.0}' > force.json.tmp && mv force.json.tmp force.json   # grain heating up
    rm force.json                                                                     # back to the model

Names that are not points of the device are ignored. Everything else (``write``, ``reserved_registers``,
``max_registers``) is the wrapped model's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocols.modbus.points import Point, Value
from protocols.sim.modbus_devices import DeviceModel


class ForcedValues:
    def __init__(self, model: DeviceModel, path: Path) -> None:
        self._model = model
        self.path = path
        self._names = frozenset(p.name for p in model.points)
        self._forced: dict[str, float] = {}

    @property
    def points(self) -> tuple[Point, ...]:
        return self._model.points

    def forced(self) -> dict[str, float]:
        """The values forced now (the file read again)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._forced = {}
            return self._forced
        except OSError:
            return self._forced
        try:
            data = json.loads(text)
        except ValueError:
            return self._forced
        if isinstance(data, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
        ):
            self._forced = {str(k): float(v) for k, v in data.items() if k in self._names}
        return self._forced

    def sample(self, now_s: float) -> dict[str, Value]:
        values = dict(self._model.sample(now_s))
        values.update(self.forced())
        return values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model, name)


__all__ = ["ForcedValues"]
