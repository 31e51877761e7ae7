"""The edge agent: one bus task per bus, the outbox, the uplink, a periodic health record and the local /health.

Every record a driver, its health, the counter or the agent's health loop produces is emitted into ``sink``
(``edge.bus.sink.OutboxSink``, over the outbox; drivers know only its ``emit``): business records are committed at
once (with fsync) before ``emit`` returns — the device, the operator or the cash register is told only then; readings
and health records are collected and committed together every ``outbox.readings_commit_ms`` (one transaction for
many). Every commit wakes the uplink.

A business record that cannot be stored (``OutboxFull``) stops the device that produced it and raises an alarm
(log, local /health, heartbeat to central); the agent resumes it once the outbox has room again.

With ``tse`` and ``pos`` configured, the counter's sales API (``edge.pos.api``) runs beside the buses: each sale is
signed by the node's TSE (``edge.pos.sales``) and committed as a ``tse_transaction`` business record before the register
gets its answer; a TSE that fails raises the ``tse`` alarm until it signs again.

Device commands from central (``edge.uplink.commands``) arrive through the uplink and run on the bus schedulers;
``reload``
re-reads the config file the agent was started with (``config_path``) and swaps the buses and devices without a
restart. What needs a restart (node id, data dir, key, broker, local HTTP, outbox, TSE, POS API) is refused by a
reload.

Under systemd (``Type=notify``, ``edge.runtime.systemd``) the agent says ``READY=1`` once its outbox is open
and the local
/health listens, keeps a one-line ``STATUS`` (devices online, broker, records waiting for central), pings the
watchdog from the event loop every ``WatchdogSec`` / 2 and says ``STOPPING=1`` when it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.bus.scheduler import BusScheduler, Driver
from edge.bus.sink import OutboxSink
from edge.config import NodeConfig, load_config
from edge.devices.registry import build_buses, plan_buses
from edge.pos.config import load_or_create_token
from edge.pos.sales import PosService
from edge.runtime.aio import cancel_and_wait, wait_for
from edge.runtime.systemd import Notifier
from edge.store.alibi import AlibiMirror
from edge.store.outbox import Outbox
from edge.store.receipts import OutboxReceipts
from edge.uplink.commands import COMMAND_DB, CommandLog, CommandRunner
from edge.uplink.session import Uplink, trusted_central_keys
from protocols.tse.api import TseDriver
from sync.runtime.config import ConfigError
from sync.signing import fingerprint, load_or_create_private_key, public_key_text

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"
RESUME_CHECK_S = 5.0
CLOCK_JUMP_S = 2.0  # a wall clock that moves this much against the monotonic clock is reported
CLOCK_ALARM_S = 600.0  # … and stays an alarm this long
# a reload may not change these
RESTART_ONLY = ("node_id", "data_dir", "key_file", "central_keys_file", "central_keys", "broker", "http", "outbox",
                "tse", "pos")
READY_WAIT_S = 10.0  # how long READY=1 waits for the local /health to listen (then it is sent without)


class Agent:
    def __init__(self, cfg: NodeConfig, *, source: str = "node config", config_path: str | Path | None = None,
                 tse_driver: Callable[[], TseDriver] | None = None) -> None:
        """``tse_driver`` opens the TSE instead of ``tse.driver`` (tests: a TSE that fails on demand)."""
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path is not None else None
        plans = plan_buses(cfg, source=source)  # config errors (profiles too) before any I/O
        central_keys = trusted_central_keys(cfg)  # no central key, no start: the node would act on anyone's word
        self.key, created = load_or_create_private_key(cfg.key_path)
        if created:  # said at once: if the outbox below refuses to open, the next start no longer creates the key
            log.warning(
                "node %s: new signing key %s (fingerprint %s). Register it at central: "
                "floorgate central node register %s --public-key %s",
                cfg.node_id, cfg.key_path, fingerprint(self.key), cfg.node_id, public_key_text(self.key))
        # every weighing appended gets its alibi entry, in the transaction of its outbox row
        self.outbox = Outbox(cfg.data_dir / OUTBOX_FILE, node_id=cfg.node_id, quota_bytes=cfg.outbox.quota_bytes,
                             alibi=AlibiMirror(cfg.node_id, self.key, retention_days=cfg.alibi.retention_days))
        self.uplink = Uplink(cfg, self.outbox, self.key, alarms=self.alarms, central_keys=central_keys)
        # what drivers, device health, the counter and the health loop emit into; every commit wakes the uplink
        self.sink = OutboxSink(self.outbox, commit_ms=cfg.outbox.readings_commit_ms, on_stored=self.uplink.wake.set)
        self.buses: list[BusScheduler] = [plan.build(self.sink) for plan in plans]
        self.clock_jumps = 0
        self.started_at = time.time()
        self._alarms: dict[str, tuple[str, float]] = {}  # name → (text, shown until, monotonic)
        self.commands: CommandRunner | None = None  # while running
        self.reloads = 0
        self._buses_changed = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.systemd = Notifier()  # a no-op unless started by systemd with $NOTIFY_SOCKET
        self.pos: PosService | None = None  # the counter's sales (tse + pos configured)
        self._pos_token: str | None = None
        if cfg.tse is not None and cfg.pos is not None:
            self._pos_token = load_or_create_token(cfg.pos, cfg.data_dir, source=source)
            receipts = OutboxReceipts(self.outbox, self.sink.emit, retention_days=cfg.pos.receipt_retention_days)
            self.pos = PosService(cfg.tse, data_dir=cfg.data_dir, emit=self.sink.emit, has_room=self.outbox.has_room,
                                  set_alarm=lambda text: self.set_alarm("tse", text), open_driver=tse_driver,
                                  receipts=receipts)  # fmt: skip

    @property
    def drivers(self) -> list[Driver]:
        return [d for bus in self.buses for d in bus.drivers.values()]

    def alarms(self) -> list[str]:
        out = [f"device {d.device_id} stopped: {d.health.stopped}" for d in self.drivers if d.health.stopped]
        now = time.monotonic()
        return out + [text for text, until in self._alarms.values() if until > now]

    def set_alarm(self, name: str, text: str | None) -> None:
        """Raise alarm ``name`` with ``text`` until it is cleared (``text=None``)."""
        if text is None:
            self._alarms.pop(name, None)
        else:
            self._alarms[name] = (text, float("inf"))

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
                    self.sink.emit("health", [d.health.health_record() for d in drivers])
                    self.sink.emit("readings", [d.health.health_reading() for d in drivers])

    def _resume_stopped(self) -> None:
        stopped = [d for d in self.drivers if d.health.stopped]
        if not stopped:
            return
        if not self.outbox.has_room():
            return  # still full of records waiting for central, or the disk is full
        for d in stopped:
            d.health.resume()

    # -- buses and reload ---------------------------------------------------------------------------------------------
    async def _bus_loop(self) -> None:
        """Runs one task per bus; when a reload swaps the buses, stops the old ones (closing their ports) first."""
        while True:
            self._buses_changed.clear()
            tasks = [asyncio.create_task(b.run(), name=f"bus:{b.bus_id}") for b in self.buses]
            changed = asyncio.create_task(self._buses_changed.wait())
            try:
                done, _ = await asyncio.wait([*tasks, changed], return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not changed and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
            finally:
                await cancel_and_wait([*tasks, changed])  # the old ports are closed before new ones open

    async def reload_config(self) -> dict[str, Any]:
        """Re-read and validate the config file (profiles too) and swap the buses and devices. Raises
        ``ConfigError`` (the running config stays) for a file that does not validate or changes what only a restart
        can change."""
        path = self.config_path
        if path is None:
            raise ConfigError("node config", ["this agent was not started from a config file: nothing to reload"])
        async with self._reload_lock:
            new = await asyncio.to_thread(load_config, path)
            changed = [name for name in RESTART_ONLY if getattr(new, name) != getattr(self.cfg, name)]
            if changed:
                raise ConfigError(str(path), [f"{name}: changed; this takes a restart of the agent, not a reload"
                                              for name in changed])
            buses = build_buses(new, self.sink, source=str(path))  # profiles are resolved here: errors before any I/O
            old_devices = {d.id: d for d in self.cfg.devices}
            new_devices = {d.id: d for d in new.devices}
            summary = {
                "config": str(path), "buses": len(buses), "devices": sorted(new_devices),
                "added": sorted(set(new_devices) - set(old_devices)),
                "removed": sorted(set(old_devices) - set(new_devices)),
                "changed": sorted(k for k in set(new_devices) & set(old_devices) if new_devices[k] != old_devices[k]),
            }
            self.cfg = new
            self.uplink.cfg = new
            if self.outbox.alibi is not None:
                self.outbox.alibi.retention_days = new.alibi.retention_days
            self.buses = buses
            self._buses_changed.set()
            self.reloads += 1
            log.info("node %s: config %s reloaded: %d device(s) on %d bus(es)", new.node_id, path,
                     len(new_devices), len(buses))
            return summary

    async def _on_connect(self) -> None:
        if self.commands is None:
            return
        try:
            await self.commands.publish_pending()
        except Exception:
            log.exception("node %s: cannot send the command results kept while offline", self.cfg.node_id)

    async def run(self) -> None:
        from edge.runtime.http import serve_http

        log.info(
            "edge agent %s starting: %d device(s) on %d bus(es), outbox %s (epoch %s), broker %s, key %s",
            self.cfg.node_id, len(self.drivers), len(self.buses), self.outbox.path, self.outbox.epoch,
            self.cfg.broker.url, fingerprint(self.key),
        )
        command_log: CommandLog | None = None
        try:
            command_log = CommandLog(self.cfg.data_dir / COMMAND_DB)
            self.commands = CommandRunner(self, command_log, self.key, self.uplink.publish,
                                          verifier=self.uplink.downlink)
        except (sqlite3.Error, OSError) as exc:  # polling and syncing matter more: run without commands, say so
            if command_log is not None:
                command_log.close()
                command_log = None
            text = f"device commands disabled: cannot use {self.cfg.data_dir / COMMAND_DB}: {exc}"
            self._alarms["commands"] = (text, float("inf"))
            log.error("node %s: %s", self.cfg.node_id, text)
        if self.commands is not None:
            self.uplink.on_command = self.commands.on_message
            self.uplink.on_connect = self._on_connect
        tasks = [asyncio.create_task(self._bus_loop(), name="buses")]
        tasks.append(asyncio.create_task(self.uplink.run(), name="uplink"))
        tasks.append(asyncio.create_task(self._health_loop(), name="health"))
        if self.cfg.outbox.readings_commit_ms > 0:
            tasks.append(asyncio.create_task(self.sink.run(), name="flush"))
        http_task: asyncio.Task[None] | None = None
        if self.cfg.http.listen:
            http_task = asyncio.create_task(serve_http(self), name="http")
            tasks.append(http_task)
        if self.pos is not None and self.cfg.pos is not None and self._pos_token is not None:
            from edge.pos.api import serve_pos

            tasks.append(asyncio.create_task(serve_pos(
                self.pos, self.cfg.pos, self._pos_token, set_alarm=lambda text: self.set_alarm("pos", text)),
                name="pos"))
        if self.systemd.enabled:
            tasks.append(asyncio.create_task(self._systemd_loop(http_task), name="systemd"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:  # every task ends before the outbox and the command log close, also when cancelled again
            self.systemd.stopping()
            try:
                await cancel_and_wait(tasks)
            finally:
                try:
                    if self.commands is not None:  # after the uplink: no new command comes in now
                        await self.commands.close()
                finally:
                    self.commands = None
                    if command_log is not None:
                        command_log.close()
                    self.sink.flush()
                    self.outbox.close()
                    self.systemd.close()
                    log.info("edge agent %s stopped", self.cfg.node_id)

    # -- systemd ------------------------------------------------------------------------------------------------------
    def status_line(self) -> str:
        """One line for ``systemctl status``: devices online, the broker, records waiting for central, alarms."""
        drivers = self.drivers
        online = sum(1 for d in drivers if d.health.online)
        pending = sum(s.pending for s in self.outbox.stats().values())
        alarms = self.alarms()
        return (f"{online}/{len(drivers)} device(s) online; broker {'connected' if self.uplink.connected else 'away'}; "
                f"{pending} record(s) waiting for central" + (f"; {len(alarms)} alarm(s)" if alarms else ""))

    async def _systemd_loop(self, http_task: asyncio.Task[None] | None) -> None:
        """READY=1 once the local /health listens (the outbox is open already), then the watchdog pings and STATUS
        updates until cancelled."""
        http_ok = http_task is None or await _listening(self.cfg.http.host, self.cfg.http.port, http_task)
        status = self.status_line() + ("" if http_ok else f"; local /health not listening on {self.cfg.http.listen}")
        self.systemd.ready(status)
        log.info("node %s: ready (told systemd%s)", self.cfg.node_id,
                 f"; watchdog every {self.systemd.watchdog_s:g} s" if self.systemd.watchdog_s else "")
        await self.systemd.keepalive(self.status_line)


async def _listening(host: str, port: int, server: asyncio.Task[None]) -> bool:
    """True once ``host:port`` accepts a connection; False when the server task ended (it could not bind) or after
    ``READY_WAIT_S``."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 — a wildcard listen is reached on the loopback
        host = "::1" if host == "::" else "127.0.0.1"
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline and not server.done():
        try:
            _, writer = await wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def run_until_signal(agent: Agent) -> None:
    """Run the agent until SIGINT or SIGTERM, which cancel it; returns once it has stopped."""
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(agent.run(), name="agent")
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        me = asyncio.current_task()
        if me is not None and me.cancelling():
            raise  # we are cancelled ourselves (``await main`` has cancelled the agent and waited for it)
        # the agent was stopped by a signal: a normal end
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
