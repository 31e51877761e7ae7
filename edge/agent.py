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

from edge.config import ModbusDevice, NodeConfig, ScaleDevice
from edge.devices.base import DevicePoller
from edge.devices.modbus import ModbusPoller
from edge.devices.scale import ScalePoller
from edge.errors import OutboxError
from edge.outbox import NewRecord, Outbox
from edge.uplink import Uplink

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"


class Agent:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.outbox = Outbox(cfg.data_dir / OUTBOX_FILE, node_id=cfg.node_id)
        self.uplink = Uplink(cfg, self.outbox)
        self.pollers: list[DevicePoller] = []
        for dev in cfg.devices:
            if isinstance(dev, ScaleDevice):
                self.pollers.append(ScalePoller(dev, self))
            elif isinstance(dev, ModbusDevice):
                self.pollers.append(ModbusPoller(dev, self))
        self.store_failures = 0

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
            self.emit("health", [p.health_record() for p in self.pollers])

    async def run(self) -> None:
        log.info(
            "edge agent %s starting: %d device(s), outbox %s (epoch %s), broker %s",
            self.cfg.node_id, len(self.pollers), self.outbox.path, self.outbox.epoch, self.cfg.broker.url,
        )
        tasks = [asyncio.create_task(p.run(), name=f"device:{p.device_id}") for p in self.pollers]
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
