"""The edge agent: one poller task per device, the outbox, the uplink and a periodic health record.

Every record a poller produces goes through ``emit``: it is committed to the outbox first (business records
with fsync), and only then is the uplink woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from edge.bus.scheduler import BusScheduler, Driver
from edge.config import NodeConfig
from edge.errors import OutboxError
from edge.outbox import NewRecord, Outbox
from edge.uplink import Uplink
from edge.wiring import build_buses

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"


class Agent:
    def __init__(self, cfg: NodeConfig, *, source: str = "node config") -> None:
        self.cfg = cfg
        self.buses: list[BusScheduler] = build_buses(cfg, self, source=source)  # config errors before any I/O
        self.outbox = Outbox(cfg.data_dir / OUTBOX_FILE, node_id=cfg.node_id)
        self.uplink = Uplink(cfg, self.outbox)
        self.store_failures = 0

    @property
    def drivers(self) -> list[Driver]:
        return [d for bus in self.buses for d in bus.drivers.values()]

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        """Commit records to the outbox, then wake the uplink. A record that cannot be stored raises."""
        try:
            self.outbox.append(stream, records)
        except OutboxError:
            self.store_failures += 1
            log.exception("cannot store %d %s record(s)", len(records), stream)
            raise
        self.uplink.wake.set()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_s)
            drivers = self.drivers
            if drivers:
                self.emit("health", [d.health.health_record() for d in drivers])
                self.emit("readings", [d.health.health_reading() for d in drivers])

    async def run(self) -> None:
        log.info(
            "edge agent %s starting: %d device(s) on %d bus(es), outbox %s (epoch %s), broker %s",
            self.cfg.node_id, len(self.drivers), len(self.buses), self.outbox.path, self.outbox.epoch,
            self.cfg.broker.url,
        )
        tasks = [asyncio.create_task(b.run(), name=f"bus:{b.bus_id}") for b in self.buses]
        tasks.append(asyncio.create_task(self.uplink.run(), name="uplink"))
        tasks.append(asyncio.create_task(self._health_loop(), name="health"))
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
            self.outbox.close()
            log.info("edge agent %s stopped", self.cfg.node_id)


async def run_until_signal(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(agent.run())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main
