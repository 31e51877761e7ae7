"""What every device poller shares: the polling loop, health state with counters, and the online/offline
transitions that become ``health`` records.

Errors in a polling loop are logged once at error level with the last raw frames, then at debug level while the
fault lasts (Home Assistant's ``_in_error`` habit), and always counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from edge.errors import DeviceIOError
from edge.outbox import NewRecord
from protocols.errors import DeviceErrorResponse, FrameError

log = logging.getLogger(__name__)

OFFLINE_AFTER_FAILURES = 3


class RecordSink(Protocol):
    def emit(self, stream: str, records: Sequence[NewRecord]) -> None: ...


@dataclass
class DeviceCounters:
    polls: int = 0
    ok: int = 0
    frames_bad: int = 0  # garbage or malformed frames
    device_errors: int = 0  # the device answered with an error (ES/ET/EL, Modbus exception)
    io_errors: int = 0  # no answer, connection refused or lost


class DevicePoller(ABC):
    """Polls one device every ``interval_s``; subclasses implement ``connect``, ``poll_once`` and ``disconnect``."""

    kind: str = "device"

    def __init__(self, device_id: str, *, interval_s: float, timeout_s: float, sink: RecordSink) -> None:
        self.device_id = device_id
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.sink = sink
        self.counters = DeviceCounters()
        self.online: bool | None = None
        self.last_ok_ns: int | None = None
        self.last_error: str | None = None
        self._failures = 0
        self._connected = False

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def poll_once(self) -> None:
        """Read the device once and emit what it yields; raise DeviceIOError / FrameError / DeviceErrorResponse."""

    def last_frames(self) -> list[bytes]:
        return []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        try:
            while True:
                await self._poll_guarded()
                next_tick += self.interval_s
                delay = next_tick - loop.time()
                if delay < 0:  # overran: do not try to catch up with a burst
                    next_tick = loop.time()
                    delay = 0
                await asyncio.sleep(delay)
        finally:
            await self.disconnect()

    async def _poll_guarded(self) -> None:
        self.counters.polls += 1
        try:
            if not self._connected:
                await self.connect()
                self._connected = True
            await self.poll_once()
        except FrameError as exc:
            self.counters.frames_bad += 1
            self._failed(f"bad frame: {exc}", reconnect=False)
        except DeviceErrorResponse as exc:
            self.counters.device_errors += 1
            self._failed(f"device error: {exc}", reconnect=False)
        except DeviceIOError as exc:
            self.counters.io_errors += 1
            self._failed(exc.reason, reconnect=True)
            await self.disconnect()
            self._connected = False
        else:
            self.counters.ok += 1
            self._succeeded()

    def _failed(self, reason: str, *, reconnect: bool) -> None:
        self._failures += 1
        frames = self.last_frames()
        detail = f"; last frames {frames[-5:]!r}" if frames else ""
        if self._failures == 1:
            log.error("device %s: %s%s", self.device_id, reason, detail, extra={"device": self.device_id})
        else:
            log.debug("device %s: still failing (%d): %s", self.device_id, self._failures, reason)
        self.last_error = reason
        if self._failures >= OFFLINE_AFTER_FAILURES and self.online is not False:
            self._set_online(False, reason)

    def _succeeded(self) -> None:
        if self._failures:
            log.info("device %s: answering again after %d failure(s)", self.device_id, self._failures)
        self._failures = 0
        self.last_ok_ns = time.time_ns()
        if self.online is not True:
            self._set_online(True, None)

    def _set_online(self, online: bool, reason: str | None) -> None:
        self.online = online
        status = "online" if online else "offline"
        log.info("device %s is %s%s", self.device_id, status, f": {reason}" if reason else "")
        self.sink.emit(
            "health",
            [NewRecord(kind="device_status", device=self.device_id,
                       data={"status": status, "reason": reason, "device_kind": self.kind})],
        )

    def health_record(self) -> NewRecord:
        return NewRecord(
            kind="device_health",
            device=self.device_id,
            data={
                "device_kind": self.kind,
                "online": self.online,
                "last_ok_ns": self.last_ok_ns,
                "last_error": self.last_error,
                "interval_s": self.interval_s,
                "counters": asdict(self.counters),
            },
        )
