"""The ``device_health`` record (health stream): a device's counters as the agent keeps them (``edge.bus.health``),
sent every health interval::

    {"device_kind": "sdm630", "online": true, "last_ok_ns": 1732400000000000000, "last_error": "timeout: …",
     "rtt_ms_last": 12.5, "rtt_ms_avg": 11.9,
     "counters": {"polls": 120, "ok": 118, "errors": {"timeout": 2}, "frames_bad": 0, "device_errors": 0,
                  "io_errors": 2, "skip_episodes": 0, "events": {"overload": 1}}}

Every field may be absent. Central (``central.ingest.handlers.device``) keeps the latest ``counters`` of each device;
the same counters go out as numbers in a ``reading`` of series ``device_health``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from sync.records.base import bad, flag, mapping, number, text, whole
from sync.records.device_status import MAX_DEVICE_KIND

DEVICE_HEALTH: Final = "device_health"


@dataclass(frozen=True)
class DeviceHealthPayload:
    """The ``data`` of a ``device_health`` record (see the module)."""

    KIND: ClassVar[str] = DEVICE_HEALTH

    device_kind: str | None = None
    online: bool | None = None  # None: not polled yet
    last_ok_ns: int | None = None
    last_error: str | None = None  # not stored by central: any text
    rtt_ms_last: float | int | None = None
    rtt_ms_avg: float | int | None = None
    counters: Mapping[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"device_kind": self.device_kind, "online": self.online, "last_ok_ns": self.last_ok_ns,
                "last_error": self.last_error, "rtt_ms_last": self.rtt_ms_last, "rtt_ms_avg": self.rtt_ms_avg,
                "counters": None if self.counters is None else dict(self.counters)}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> DeviceHealthPayload:
        last_error = data.get("last_error")
        if last_error is not None and not isinstance(last_error, str):
            raise bad("last_error", f"expected text, got {last_error!r:.40}")
        return cls(device_kind=text(data, "device_kind", limit=MAX_DEVICE_KIND), online=flag(data, "online"),
                   last_ok_ns=whole(data, "last_ok_ns"), last_error=last_error,
                   rtt_ms_last=number(data, "rtt_ms_last"), rtt_ms_avg=number(data, "rtt_ms_avg"),
                   counters=mapping(data, "counters"))


__all__ = ["DEVICE_HEALTH", "DeviceHealthPayload"]
