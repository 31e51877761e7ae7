"""The ``device_status`` record (health stream): a device went online or offline, or was stopped because its
business records cannot be stored (``edge.bus.health``)::

    {"status": "offline", "reason": "timeout: no answer (unit 1)", "device_kind": "sdm630"}

Central (``central.ingest.handlers.device``) keeps the latest status of each device with its reason and time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from sync.records.base import need_text, text

DEVICE_STATUS: Final = "device_status"
ONLINE: Final = "online"
OFFLINE: Final = "offline"
STOPPED: Final = "stopped"  # its business records cannot be stored: no polls until the outbox has room
MAX_STATUS: Final = 16  # central's column
MAX_DEVICE_KIND: Final = 64  # a profile name (edge.devices.profiles); also of device_health and point_event


@dataclass(frozen=True)
class DeviceStatusPayload:
    """The ``data`` of a ``device_status`` record (see the module)."""

    KIND: ClassVar[str] = DEVICE_STATUS

    status: str  # ONLINE / OFFLINE / STOPPED
    reason: str | None = None
    device_kind: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "device_kind": self.device_kind}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> DeviceStatusPayload:
        status = need_text(data, "status", limit=MAX_STATUS)
        return cls(status=status, reason=text(data, "reason"),
                   device_kind=text(data, "device_kind", limit=MAX_DEVICE_KIND))


__all__ = ["DEVICE_STATUS", "MAX_DEVICE_KIND", "MAX_STATUS", "OFFLINE", "ONLINE", "STOPPED", "DeviceStatusPayload"]
