"""The ``point_event`` record (health stream): a point of kind ``event`` (or with a text value) changed — a
device's status word, an alarm register, a firmware version (``edge.devices.modbus``)::

    {"point": "alarm", "value": 3, "previous": 0, "device_kind": "sdm630"}

``previous`` is null for the first value the agent saw. Central keeps the record in its inbox (a device's history
on the node's side); it stores nothing else of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from sync.records.base import bad, need_text, text
from sync.records.device_status import MAX_DEVICE_KIND

POINT_EVENT: Final = "point_event"
MAX_POINT: Final = 64

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class PointEventPayload:
    """The ``data`` of a ``point_event`` record (see the module)."""

    KIND: ClassVar[str] = POINT_EVENT

    point: str
    value: Scalar
    previous: Scalar = None
    device_kind: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"point": self.point, "value": self.value, "previous": self.previous, "device_kind": self.device_kind}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> PointEventPayload:
        point = need_text(data, "point", limit=MAX_POINT)
        return cls(point=point, value=_scalar(data, "value"), previous=_scalar(data, "previous"),
                   device_kind=text(data, "device_kind", limit=MAX_DEVICE_KIND))


def _scalar(data: Mapping[str, Any], name: str) -> Scalar:
    value = data.get(name)
    if value is not None and not isinstance(value, str | int | float):  # bool is an int
        raise bad(name, f"expected a text, a number, true or false, got {value!r:.40}")
    return value


__all__ = ["MAX_POINT", "POINT_EVENT", "PointEventPayload", "Scalar"]
