"""The truth about every device: round-trip time, errors by kind, last success, online / offline.

A fault *episode* starts with the first failure after a success: it is logged once at error level with the last
raw frames, then at debug level while it lasts, and the device goes offline after ``offline_after`` failures in a
row. Offline and back-online transitions become ``device_status`` records (health stream); the counters go out
periodically as ``device_health`` records.

Error kinds: ``timeout`` (no answer), ``crc`` (an answer with a bad checksum), ``framing`` (truncated or garbage
frame), ``wrong_unit`` (an answer from another unit id), ``exception_<code>`` (a Modbus exception answer),
``device_error`` (a scale's ES/ET/EL or Err nnn), ``io`` (connection refused, lost or closed).

Events are no errors (the device answered): a scale's ``overload`` episodes and loads that left the bridge
``unstable`` without a weighing (``edge.devices.weighing``); they go out as ``events_<kind>`` beside the errors.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.bus.sink import RecordSink
from edge.errors import OutboxError
from edge.store.outbox import NewRecord
from sync.records import (
    DEVICE_HEALTH,
    DEVICE_STATUS,
    READING,
    DeviceHealthPayload,
    DeviceStatusPayload,
    ReadingPayload,
)
from sync.records.device_status import STOPPED
from sync.records.reading import SERIES_DEVICE_HEALTH

log = logging.getLogger(__name__)

DEFAULT_OFFLINE_AFTER = 3
RTT_SMOOTHING = 0.2  # weight of the newest sample in the moving average


@dataclass
class DeviceHealth:
    device_id: str
    kind: str
    sink: RecordSink
    offline_after: int = DEFAULT_OFFLINE_AFTER
    polls: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)  # what the device saw that is no error (a scale's overload)
    rtt_ms_last: float | None = None
    rtt_ms_avg: float | None = None
    last_ok_ns: int | None = None
    last_error: str | None = None
    online: bool | None = None
    consecutive_failures: int = 0
    skipped_until: float | None = None  # monotonic time; set by the scheduler while the device sits out
    skip_episodes: int = 0
    stopped: str | None = None  # why the device is stopped (its records cannot be stored); None while it runs

    def success(self, rtt_s: float) -> None:
        self.polls += 1
        self.ok += 1
        rtt_ms = rtt_s * 1000
        self.rtt_ms_last = rtt_ms
        self.rtt_ms_avg = rtt_ms if self.rtt_ms_avg is None else (
            (1 - RTT_SMOOTHING) * self.rtt_ms_avg + RTT_SMOOTHING * rtt_ms)
        self.last_ok_ns = time.time_ns()
        if self.consecutive_failures:
            log.info("device %s: answering again after %d failure(s)", self.device_id, self.consecutive_failures,
                     extra={"device": self.device_id})
        self.consecutive_failures = 0
        self.skipped_until = None
        if self.online is not True:
            self._set_online(True, None)

    def failure(self, kind: str, reason: str, *, frames: Sequence[bytes] = ()) -> None:
        self.polls += 1
        self.errors[kind] += 1
        self.consecutive_failures += 1
        self.last_error = reason
        detail = f"; last frames {[bytes(f) for f in frames[-5:]]!r}" if frames else ""
        if self.consecutive_failures == 1:
            log.error("device %s: %s: %s%s", self.device_id, kind, reason, detail,
                      extra={"device": self.device_id, "error_kind": kind})
        else:
            log.debug("device %s: still failing (%d): %s: %s", self.device_id, self.consecutive_failures, kind,
                      reason)
        if self.consecutive_failures >= self.offline_after and self.online is not False:
            self._set_online(False, f"{kind}: {reason}")

    def stop(self, reason: str) -> None:
        """Its business records cannot be stored: no more polls until ``resume`` (an alarm while stopped)."""
        if self.stopped is None:
            log.critical("ALARM device %s stopped: %s", self.device_id, reason, extra={"device": self.device_id})
        self.stopped = reason
        with contextlib.suppress(OutboxError):  # the health stream may still have room to tell central
            self.sink.emit("health", [NewRecord(kind=DEVICE_STATUS, device=self.device_id, data=DeviceStatusPayload(
                status=STOPPED, reason=reason, device_kind=self.kind).to_payload())])

    def resume(self) -> None:
        if self.stopped is None:
            return
        log.warning("device %s resumed (the outbox has room again)", self.device_id,
                    extra={"device": self.device_id})
        self.stopped = None
        self.online = None  # the next poll decides and reports online / offline again

    def glitch(self, kind: str, reason: str, *, frames: Sequence[bytes] = ()) -> None:
        """A failed attempt that a retry then made good: counted by kind, never a value, not a failed poll."""
        self.errors[kind] += 1
        n = self.errors[kind]
        if n == 1 or n % 100 == 0:
            detail = f"; last frames {[bytes(f) for f in frames[-5:]]!r}" if frames else ""
            log.warning("device %s: %s (%d so far, retried): %s%s", self.device_id, kind, n, reason, detail,
                        extra={"device": self.device_id, "error_kind": kind})

    def event(self, kind: str) -> None:
        """Something the device reported that is not a failed poll, e.g. a scale's overload episode; counted."""
        self.events[kind] += 1
        log.info("device %s: %s (%d so far)", self.device_id, kind, self.events[kind],
                 extra={"device": self.device_id, "event": kind})

    def _set_online(self, online: bool, reason: str | None) -> None:
        self.online = online
        status = "online" if online else "offline"
        log.info("device %s is %s%s", self.device_id, status, f": {reason}" if reason else "",
                 extra={"device": self.device_id})
        self.sink.emit("health", [NewRecord(kind=DEVICE_STATUS, device=self.device_id, data=DeviceStatusPayload(
            status=status, reason=reason, device_kind=self.kind).to_payload())])

    def counters(self) -> dict[str, Any]:
        return {"polls": self.polls, "ok": self.ok, "errors": dict(self.errors),
                "frames_bad": self.errors["crc"] + self.errors["framing"] + self.errors["wrong_unit"],
                "device_errors": sum(v for k, v in self.errors.items()
                                     if k.startswith("exception_") or k == "device_error"),
                "io_errors": self.errors["timeout"] + self.errors["io"],
                "skip_episodes": self.skip_episodes, "events": dict(self.events)}

    def health_record(self) -> NewRecord:
        return NewRecord(kind=DEVICE_HEALTH, device=self.device_id, data=DeviceHealthPayload(
            device_kind=self.kind, online=self.online, last_ok_ns=self.last_ok_ns, last_error=self.last_error,
            rtt_ms_last=self.rtt_ms_last, rtt_ms_avg=self.rtt_ms_avg, counters=self.counters()).to_payload())

    def health_reading(self) -> NewRecord:
        """The counters as numbers, for the time series (errors by kind, round-trip time)."""
        values: dict[str, float] = {"polls": self.polls, "ok": self.ok,
                                    "online": 1.0 if self.online else 0.0}
        if self.rtt_ms_avg is not None:
            values["rtt_ms"] = round(self.rtt_ms_avg, 3)
        for kind, n in self.errors.items():
            values[f"errors_{kind}"] = n
        for kind, n in self.events.items():
            values[f"events_{kind}"] = n
        return NewRecord(kind=READING, device=self.device_id, data=ReadingPayload(
            values=values, units={"rtt_ms": "ms"}, series=SERIES_DEVICE_HEALTH).to_payload())
