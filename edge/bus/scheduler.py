"""One scheduler per physical bus.

An RS-485 line is half-duplex: one request at a time for every unit id on it, with the inter-frame gap its baud
rate needs. A TCP endpoint (a gateway with several unit ids behind it, or one device) gets a scheduler too, so the
same rules hold everywhere:

- every device polls each of its poll groups on its own interval; first polls are staggered over the
  bus's shortest interval (at most 2 s) so that devices do not all fire at once; a slot that was missed is skipped,
  never made up in a burst;
- commands (tare, zero, weigh now, writes, poll now) jump ahead of polls;
- a device that fails ``skip_after`` polls in a row sits out for ``skip_base_s`` (doubling per episode up to
  ``skip_max_s``) and is then probed with one poll — a dead slave costs its neighbours one timeout per episode;
- a connection that fails or is closed by the other side (converter reboot, idle timeout) is reopened by itself,
  with backoff between ``reconnect_min_s`` and ``reconnect_max_s``.

The scheduler measures how much of the elapsed time the bus spent in exchanges (``busy_s``) for ``bench bus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.bus.connection import BusConnection
from edge.bus.health import DeviceHealth
from edge.errors import DeviceIOError, OutboxFull
from edge.runtime.aio import raise_if_cancelled, wait_for
from protocols.errors import DeviceErrorResponse, FrameError

log = logging.getLogger(__name__)

DEFAULT_SKIP_AFTER = 3
DEFAULT_SKIP_BASE_S = 5.0
DEFAULT_SKIP_MAX_S = 300.0
MAX_STAGGER_S = 2.0
STOPPED_RETRY_S = 1.0  # how often a stopped device is looked at again (it resumes when the agent allows)


class ExchangeError(Exception):
    """A classified failure of one exchange (see ``edge.bus.health`` for the kinds)."""

    def __init__(self, kind: str, reason: str, *, reconnect: bool = False) -> None:
        self.kind = kind
        self.reason = reason
        self.reconnect = reconnect
        super().__init__(f"{kind}: {reason}")


class Driver(ABC):
    """A device on a bus: polls its groups and executes commands through the bus connection."""

    device_id: str
    kind: str
    health: DeviceHealth
    close_after_poll: bool = False
    commands: frozenset[str] = frozenset()  # what ``command`` accepts: tare, zero, weigh_now, poll_now, write, …

    @property
    @abstractmethod
    def groups(self) -> dict[str, float]:
        """Poll group → interval in seconds."""

    @abstractmethod
    async def poll(self, group: str) -> None:
        """One poll of ``group``; emits what it yields; raises ExchangeError / DeviceIOError / FrameError."""

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")

    def poll_timeout_s(self) -> float:
        return 10.0


@dataclass
class _Command:
    driver: Driver
    name: str
    args: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]


@dataclass
class BusStats:
    exchanges: int = 0
    busy_s: float = 0.0
    reconnects: int = 0
    missed_slots: int = 0
    started: float = field(default_factory=time.monotonic)


class BusScheduler:
    def __init__(
        self, bus_id: str, connection: BusConnection, drivers: Sequence[Driver], *,
        skip_after: int = DEFAULT_SKIP_AFTER, skip_base_s: float = DEFAULT_SKIP_BASE_S,
        skip_max_s: float = DEFAULT_SKIP_MAX_S, reconnect_min_s: float = 0.2, reconnect_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus_id = bus_id
        self.conn = connection
        self.drivers = {d.device_id: d for d in drivers}
        self.skip_after = skip_after
        self.skip_base_s = skip_base_s
        self.skip_max_s = skip_max_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.clock = clock
        self.stats = BusStats()
        self._commands: deque[_Command] = deque()
        self._wake = asyncio.Event()
        self._reopen_at = 0.0
        self._reopen_delay = reconnect_min_s
        self._order = itertools.count()
        self._line_quiet_since = 0.0  # end of the last exchange: the inter-frame gap is counted from here

    def submit(self, device_id: str, name: str, args: dict[str, Any] | None = None) -> asyncio.Future[dict[str, Any]]:
        """Queue a command ahead of every poll; the future gives the device's answer or raises ExchangeError."""
        if device_id not in self.drivers:
            raise KeyError(f"bus {self.bus_id} has no device {device_id!r}")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._commands.append(_Command(self.drivers[device_id], name, dict(args or {}), fut))
        self._wake.set()
        return fut

    def _initial_schedule(self) -> list[tuple[float, int, str, str]]:
        jobs = [(d, g, iv) for d in self.drivers.values() for g, iv in sorted(d.groups.items())]
        now = self.clock()
        # spread the first polls over the bus's shortest interval (at most MAX_STAGGER_S): a silo cable polled
        # every 10 min still answers within seconds of a start, and devices on a fast bus do not all fire at once
        window = min((iv for _, _, iv in jobs), default=0.0)
        window = min(window, MAX_STAGGER_S)
        heap = []
        for i, (drv, group, _interval) in enumerate(jobs):
            heap.append((now + window * i / max(len(jobs), 1), next(self._order), drv.device_id, group))
        heapq.heapify(heap)
        return heap

    async def run(self) -> None:
        heap = self._initial_schedule()
        log.info("bus %s: %d device(s), %d poll job(s)", self.bus_id, len(self.drivers), len(heap))
        try:
            while True:
                raise_if_cancelled()  # one a library lost (pymodbus waits with asyncio.wait_for): see edge.runtime.aio
                if self._commands:
                    cmd = self._commands.popleft()
                    if not cmd.future.done():  # a caller that gave up (cancelled) does not get it executed late
                        await self._run_command(cmd)
                    continue
                if not heap:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                due, _, device_id, group = heap[0]
                now = self.clock()
                if due > now:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await wait_for(self._wake.wait(), due - now)
                    continue
                heapq.heappop(heap)
                drv = self.drivers[device_id]
                interval = drv.groups[group]
                if drv.health.stopped is not None:  # its records cannot be stored: no polls until resumed
                    heapq.heappush(heap, (now + STOPPED_RETRY_S, next(self._order), device_id, group))
                    continue
                skip_until = drv.health.skipped_until
                if skip_until is not None and now < skip_until:
                    heapq.heappush(heap, (skip_until, next(self._order), device_id, group))
                    continue
                await self._exchange(drv, lambda d=drv, g=group: d.poll(g))  # type: ignore[misc]
                nxt = due + interval
                now = self.clock()
                if nxt <= now:  # overran: skip the missed slots, never burst
                    missed = int((now - nxt) // interval) + 1
                    self.stats.missed_slots += missed
                    nxt += missed * interval
                heapq.heappush(heap, (nxt, next(self._order), device_id, group))
        finally:
            await self.conn.close()
            for cmd in self._commands:
                if not cmd.future.done():
                    cmd.future.cancel()

    async def _run_command(self, cmd: _Command) -> None:
        result: dict[str, Any] = {}

        async def do() -> None:
            result.update(await cmd.driver.command(cmd.name, cmd.args))

        error = await self._exchange(cmd.driver, do, is_command=True)
        if cmd.future.done():
            return
        if error is None:
            cmd.future.set_result(result)
        else:
            cmd.future.set_exception(error)

    async def _ensure_open(self) -> ExchangeError | None:
        if self.conn.is_open:
            return None
        now = self.clock()
        if now < self._reopen_at:
            return ExchangeError("io", f"bus {self.bus_id} is reconnecting (next try in {self._reopen_at - now:.1f} s)")
        try:
            await self.conn.open()
        except DeviceIOError as exc:
            self._reopen_at = self.clock() + self._reopen_delay
            self._reopen_delay = min(self._reopen_delay * 2, self.reconnect_max_s)
            return ExchangeError("io", exc.reason)
        self.stats.reconnects += 1
        self._reopen_delay = self.reconnect_min_s
        return None

    async def _exchange(self, drv: Driver, action: Callable[[], Any], *, is_command: bool = False
                        ) -> ExchangeError | None:
        health = drv.health
        gap_left = self.conn.inter_frame_gap_s() - (self.clock() - self._line_quiet_since)
        if gap_left > 0:  # the line must stay quiet for t3.5; time spent decoding and storing counts towards it
            await asyncio.sleep(gap_left)
        error = await self._ensure_open()
        t0 = self.clock()
        if error is None:
            try:
                await wait_for(action(), drv.poll_timeout_s())
            except ExchangeError as exc:
                error = exc
            except DeviceIOError as exc:
                error = ExchangeError("io", exc.reason, reconnect=True)
            except FrameError as exc:
                error = ExchangeError("framing", str(exc))
            except DeviceErrorResponse as exc:
                error = ExchangeError(exc.code if exc.code.startswith("exception_") else "device_error", str(exc))
            except TimeoutError:
                error = ExchangeError("timeout", f"no complete answer within {drv.poll_timeout_s()} s")
            except OutboxFull as exc:  # a business record was not stored: stop the device, raise the alarm
                health.stop(str(exc))
                return ExchangeError("outbox_full", f"device {drv.device_id} stopped: {exc}")
        end = self.clock()
        self._line_quiet_since = max(t0, min(end, getattr(self.conn, "last_rx_at", end)))
        elapsed = end - t0
        self.stats.exchanges += 1
        self.stats.busy_s += elapsed
        if error is None:
            health.success(elapsed)
        elif not (is_command and error.kind == "command"):
            health.failure(error.kind, error.reason, frames=self.conn.last_frames())
            if health.consecutive_failures >= self.skip_after:
                pause = min(self.skip_base_s * 2 ** health.skip_episodes, self.skip_max_s)
                health.skipped_until = self.clock() + pause
                health.skip_episodes += 1
                log.warning("bus %s: device %s failed %d time(s) in a row; skipped for %.1f s, then probed",
                            self.bus_id, drv.device_id, health.consecutive_failures, pause,
                            extra={"device": drv.device_id, "bus": self.bus_id})
        if error is not None and error.reconnect:
            await self.conn.close()
        if drv.close_after_poll:
            await self.conn.close()
        return error
