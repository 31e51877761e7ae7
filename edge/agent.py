"""The edge agent: one bus task per bus, the outbox, the uplink, a periodic health record and the local /health.

Every record a poller produces goes through ``emit``. Business records are committed to the outbox at once (with
fsync) before ``emit`` returns — the device, the operator or the cash register is told only then; readings and
health records are collected and committed together every ``outbox.readings_commit_ms`` (one transaction for
many). Only then is the uplink woken.

A business record that cannot be stored (``OutboxFull``) stops the device that produced it and raises an alarm
(log, local /health, heartbeat to central); the agent resumes it once the outbox has room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence

from edge.bus.scheduler import BusScheduler, Driver
from edge.config import NodeConfig
from edge.errors import OutboxError
from edge.outbox import NewRecord, Outbox
from edge.uplink import Uplink
from edge.wiring import build_buses
from sync.signing import fingerprint, load_or_create_private_key, public_key_text

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"
MAX_BUFFERED = 2000  # readings / health records collected before a commit is forced
RESUME_CHECK_S = 5.0
CLOCK_JUMP_S = 2.0  # a wall clock that moves this much against the monotonic clock is reported
CLOCK_ALARM_S = 600.0  # … and stays an alarm this long


class Agent:
    def __init__(self, cfg: NodeConfig, *, source: str = "node config") -> None:
        self.cfg = cfg
        self.buses: list[BusScheduler] = build_buses(cfg, self, source=source)  # config errors before any I/O
        self.outbox = Outbox(cfg.data_dir / OUTBOX_FILE, node_id=cfg.node_id, quota_bytes=cfg.outbox.quota_bytes)
        self.key, created = load_or_create_private_key(cfg.key_path)
        if created:
            log.warning(
                "node %s: new signing key %s (fingerprint %s). Register it at central: "
                "floorgate central node register %s --public-key %s",
                cfg.node_id, cfg.key_path, fingerprint(self.key), cfg.node_id, public_key_text(self.key))
        self.uplink = Uplink(cfg, self.outbox, self.key, alarms=self.alarms)
        self.store_failures = 0
        self.clock_jumps = 0
        self.started_at = time.time()
        self._buffer: dict[str, list[NewRecord]] = {"health": [], "readings": []}
        self._flush_now = asyncio.Event()
        self._alarms: dict[str, tuple[str, float]] = {}  # name → (text, shown until, monotonic)

    @property
    def drivers(self) -> list[Driver]:
        return [d for bus in self.buses for d in bus.drivers.values()]

    def alarms(self) -> list[str]:
        out = [f"device {d.device_id} stopped: {d.health.stopped}" for d in self.drivers if d.health.stopped]
        now = time.monotonic()
        return out + [text for text, until in self._alarms.values() if until > now]

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        """Business: commit now (raises ``OutboxFull`` / ``OutboxError`` if it cannot be stored). Others: collect
        for the next grouped commit."""
        if stream in self._buffer and self.cfg.outbox.readings_commit_ms > 0:
            buf = self._buffer[stream]
            buf.extend(records)
            if len(buf) >= MAX_BUFFERED:
                self._flush_now.set()
            return
        self._store(stream, records)

    def _store(self, stream: str, records: Sequence[NewRecord]) -> None:
        try:
            self.outbox.append(stream, records)
        except OutboxError:
            self.store_failures += 1
            log.exception("cannot store %d %s record(s)", len(records), stream)
            raise
        self.uplink.wake.set()

    def flush(self) -> None:
        """Commit the collected readings and health records (one transaction per stream)."""
        for stream, buf in self._buffer.items():
            if buf:
                records, self._buffer[stream] = buf, []
                with contextlib.suppress(OutboxError):  # logged and counted in _store; never worth stopping for
                    self._store(stream, records)

    async def _flush_loop(self) -> None:
        interval = self.cfg.outbox.readings_commit_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), interval)
            self._flush_now.clear()
            self.flush()

    async def _health_loop(self) -> None:
        last_health = time.monotonic()
        offset = time.time_ns() - time.monotonic_ns()
        while True:
            await asyncio.sleep(min(RESUME_CHECK_S, self.cfg.health_interval_s))
            new_offset = time.time_ns() - time.monotonic_ns()
            jump_s = (new_offset - offset) / 1e9
            if abs(jump_s) >= CLOCK_JUMP_S:
                self.clock_jumps += 1
                text = f"wall clock jumped {'back' if jump_s < 0 else 'forward'} by {abs(jump_s):.1f} s"
                self._alarms["clock"] = (text, time.monotonic() + CLOCK_ALARM_S)
                log.warning("node %s: %s", self.cfg.node_id, text)
            offset = new_offset
            self._resume_stopped()
            if time.monotonic() - last_health >= self.cfg.health_interval_s:
                last_health = time.monotonic()
                drivers = self.drivers
                if drivers:
                    self.emit("health", [d.health.health_record() for d in drivers])
                    self.emit("readings", [d.health.health_reading() for d in drivers])

    def _resume_stopped(self) -> None:
        stopped = [d for d in self.drivers if d.health.stopped]
        if not stopped:
            return
        if not self.outbox.has_room():
            return  # still full of records waiting for central, or the disk is full
        for d in stopped:
            d.health.resume()

    async def run(self) -> None:
        from edge.http import serve_http

        log.info(
            "edge agent %s starting: %d device(s) on %d bus(es), outbox %s (epoch %s), broker %s, key %s",
            self.cfg.node_id, len(self.drivers), len(self.buses), self.outbox.path, self.outbox.epoch,
            self.cfg.broker.url, fingerprint(self.key),
        )
        tasks = [asyncio.create_task(b.run(), name=f"bus:{b.bus_id}") for b in self.buses]
        tasks.append(asyncio.create_task(self.uplink.run(), name="uplink"))
        tasks.append(asyncio.create_task(self._health_loop(), name="health"))
        if self.cfg.outbox.readings_commit_ms > 0:
            tasks.append(asyncio.create_task(self._flush_loop(), name="flush"))
        if self.cfg.http.listen:
            tasks.append(asyncio.create_task(serve_http(self), name="http"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.flush()
            self.outbox.close()
            log.info("edge agent %s stopped", self.cfg.node_id)


async def run_until_signal(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(agent.run())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main
