"""Device commands on the node: executes what central sends on ``floorgate/v1/<node>/cmd`` and answers on
``…/cmd/result`` with a result signed by the node key (``sync.commands`` has the messages).

Only central's commands: before a command has any effect — before its id even enters the command log — it must be
signed with one of the node's trusted central keys and name this node (``sync.downlink``, the verifier the uplink
shares); a new ``command_id`` must also carry a nonce not seen before. Anything else is dropped without an answer,
logged and counted by reason (``Uplink.downlink``: /health, /metrics, heartbeat). A command central signed but the
node cannot decode is answered ``rejected``.

At most once, whatever the broker redelivers: a command's id is committed to the command log (SQLite,
``<data_dir>/commands.db``, ``synchronous=FULL``) **before** it is executed, and the signed result is kept with it.
A command seen before is answered with the stored result, byte for byte, and not executed again; one whose
execution was cut short by a crash of the agent is answered ``failed`` ("interrupted …") — it may or may not have
reached the device, and trying again is for the caller to decide. A command whose ``expires_at_ns`` has passed is
answered ``rejected`` ("expired …") and not executed. Results that could not be published (broker away) are sent
when the uplink connects again.

    tare / zero / weigh / poll   queued on the device's bus scheduler (ahead of polls; one exchange at a time on
                                 the bus) as the driver commands tare / zero / weigh_now / poll_now, with the
                                 command's args (checked by ``sync.commands``): weigh's reference, vehicle, partner,
                                 article, lot and delivery_note go into its weighing record; tare's preset_tare sets
                                 a preset tare (MT-SICS ``TA``; a device without one rejects it)
    reload                       re-read the node config file, validate it (profiles too), then swap the buses;
                                 a bad config is rejected with the validation message and the running one stays

Results: ``succeeded`` with the driver's values; ``failed`` when the device refused (``Z I``, ``T I``, overload,
no stable weight) or did not answer; ``rejected`` when the command was not attempted (the device cannot do that,
unknown device, expired, bad config).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.bus.scheduler import BusScheduler, ExchangeError
from edge.config import NodeConfig, ProfileDevice
from edge.runtime.aio import cancel_and_wait, wait_for
from sync.commands import (
    EXPIRED,
    Command,
    CommandResult,
    decode_command,
    encode_result,
    peek_command,
    peek_signature,
)
from sync.downlink import DownlinkRejected, DownlinkVerifier
from sync.errors import DecodeError
from sync.runtime.config import ConfigError
from sync.signing import sign
from sync.topics import command_result_topic

log = logging.getLogger(__name__)

COMMAND_DB = "commands.db"
RETENTION_S = 8 * 24 * 3600  # longer than the broker keeps the node's session (7 days): a redelivery is always known
DRIVER_COMMANDS = {"tare": "tare", "zero": "zero", "weigh": "weigh_now", "poll": "poll_now"}
BUS_WAIT_MARGIN_S = 5.0  # besides the driver's own timeout, for the exchange ahead of it on the bus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    device TEXT,
    received_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    result BLOB,                      -- the signed result as published; NULL while executing
    published INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""

Publish = Callable[[str, bytes], Awaitable[bool]]  # topic, payload → published?


class CommandTarget(Protocol):
    """What device commands act on (the agent): the running config (its devices), the buses with their drivers,
    and a reload of the config file. Read anew for every command: a reload swaps them."""

    @property
    def cfg(self) -> NodeConfig: ...

    @property
    def buses(self) -> Sequence[BusScheduler]: ...

    async def reload_config(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LogEntry:
    command_id: str
    result: bytes | None  # None: executing, or interrupted by a crash
    published: bool


class CommandLog:
    """The ids of every command the node saw (for at-most-once execution) and the results it sent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an id is on disk before the command is executed
        self._db.execute(_SCHEMA)

    def get(self, command_id: str) -> LogEntry | None:
        row = self._db.execute("SELECT result, published FROM commands WHERE command_id=?", (command_id,)).fetchone()
        return None if row is None else LogEntry(command_id, row[0], bool(row[1]))

    def begin(self, cmd: Command, *, now_ns: int) -> bool:
        """Record ``cmd`` as taken; False if its id is already known (then it must not be executed)."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO commands(command_id, command, device, received_ns, expires_ns) VALUES (?,?,?,?,?)",
            (cmd.command_id, cmd.command, cmd.device, now_ns, cmd.expires_at_ns))
        return cur.rowcount == 1

    def finish(self, command_id: str, payload: bytes) -> None:
        self._db.execute("UPDATE commands SET result=? WHERE command_id=?", (payload, command_id))

    def mark_published(self, command_id: str) -> None:
        self._db.execute("UPDATE commands SET published=1 WHERE command_id=?", (command_id,))

    def unpublished(self) -> list[tuple[str, bytes]]:
        return [(cid, bytes(res)) for cid, res in self._db.execute(
            "SELECT command_id, result FROM commands WHERE published=0 AND result IS NOT NULL ORDER BY received_ns")]

    def prune(self, *, now_ns: int, retention_s: float = RETENTION_S) -> int:
        """Forget commands that expired more than ``retention_s`` ago (a redelivery of one is expired anyway)."""
        return self._db.execute("DELETE FROM commands WHERE expires_ns < ?",
                                (now_ns - int(retention_s * 1e9),)).rowcount

    def close(self) -> None:
        self._db.close()


@dataclass
class CommandCounters:
    received: int = 0
    executed: int = 0
    duplicates: int = 0
    expired: int = 0
    malformed: int = 0
    refused: int = 0  # not from central / not for this node / replayed: dropped unanswered (by reason: verifier)
    results_pending: int = 0  # results waiting for the broker
    log_errors: int = 0  # the command log could not be read or written (disk full)


class CommandRunner:
    """Takes command messages from the uplink, executes each once (in its own task) and publishes the result."""

    def __init__(self, target: CommandTarget, log_: CommandLog, key: Ed25519PrivateKey, publish: Publish, *,
                 verifier: DownlinkVerifier, clock_ns: Callable[[], int] = time.time_ns) -> None:
        """``verifier``: central's trusted keys and the nonce cache (the uplink's, so a nonce is used once on
        either path)."""
        self.target = target
        self.downlink = verifier
        self.log = log_
        self.key = key
        self.publish = publish
        self.clock_ns = clock_ns
        self.counters = CommandCounters()
        self._running: set[str] = set()
        self._answer_again: dict[str, int] = {}  # deliveries of a command that came while it was executing
        self._tasks: set[asyncio.Task[None]] = set()
        self.log.prune(now_ns=clock_ns())

    @property
    def node_id(self) -> str:
        return self.target.cfg.node_id

    def on_message(self, payload: bytes) -> None:
        """Called by the uplink for each message on the node's command topic; never blocks its receive loop."""
        task = asyncio.get_running_loop().create_task(self._handle(payload), name="command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the commands still executing and wait until they have ended."""
        await cancel_and_wait(list(self._tasks))

    async def _handle(self, payload: bytes) -> None:
        self.counters.received += 1
        try:
            await self._take(payload)
        except DownlinkRejected:
            self.counters.refused += 1  # logged and counted by the verifier; nothing happened
        except sqlite3.Error as exc:  # before execution (finish / mark_published handle their own): not executed
            self.counters.log_errors += 1
            log.error("node %s: command log %s unusable: %s; command not executed", self.node_id, self.log.path, exc)
            with contextlib.suppress(DecodeError):
                cmd = decode_command(payload)
                await self._send(cmd, "rejected", {}, f"not executed: the node cannot record the command ({exc})",
                                 store=False)
        except Exception:  # never let one message take the task down silently
            self.counters.refused += 1
            log.exception("node %s: unexpected error handling a command; not executed", self.node_id)

    def _verify_peeked(self, payload: bytes, exc: DecodeError) -> None:
        """A command that does not decode is answered only when central signed it for this node."""
        signed = peek_signature(payload)
        if signed is None:
            raise self.downlink.reject("malformed", f"command: {exc}")
        node, kid, sig, body = signed
        self.downlink.verify("command", node=node, kid=kid, nonce="", issued_at_ns=0, signed_body=body, sig=sig,
                             check_nonce=False)

    async def _take(self, payload: bytes) -> None:
        try:
            cmd = decode_command(payload)
        except DecodeError as exc:
            self._verify_peeked(payload, exc)
            self.counters.malformed += 1
            peeked = peek_command(payload)
            log.error("node %s: malformed command%s: %s", self.node_id, f" {peeked[0]}" if peeked else "", exc)
            if peeked is not None and self.log.get(peeked[0]) is None:
                stub = Command(command_id=peeked[0], node=self.node_id, command=peeked[1], device=peeked[2],
                               issued_at_ns=0, expires_at_ns=1)
                self.log.begin(stub, now_ns=self.clock_ns())
                await self._finish(stub, "rejected", {}, f"malformed command: {exc}")
            return
        # central's signature and our node id before anything else; the nonce once we know the id is new
        self.downlink.verify("command", node=cmd.node, kid=cmd.kid, nonce=cmd.nonce, issued_at_ns=cmd.issued_at_ns,
                             signed_body=cmd.signed_body, sig=cmd.sig, check_nonce=False)
        entry = self.log.get(cmd.command_id)
        if entry is not None:
            self.counters.duplicates += 1
            if cmd.command_id in self._running:
                log.info("node %s: command %s received again while executing: answered again once done",
                         self.node_id, cmd.command_id)
                self._answer_again[cmd.command_id] = self._answer_again.get(cmd.command_id, 0) + 1
            elif entry.result is not None:
                log.info("node %s: command %s received again: not executed twice, the stored result is sent again",
                         self.node_id, cmd.command_id)
                await self._publish(cmd.command_id, entry.result)
            else:  # taken by an earlier run of the agent that ended before it answered
                await self._finish(cmd, "failed", {}, "interrupted: the agent stopped while executing this command; "
                                   "it may or may not have reached the device and is not executed again")
            return
        self.downlink.fresh("command", cmd.nonce, cmd.issued_at_ns)  # a new id with a used nonce: a forgery
        now = self.clock_ns()
        if cmd.expired(now):
            self.counters.expired += 1
            self.log.begin(cmd, now_ns=now)
            await self._finish(cmd, "rejected", {}, f"{EXPIRED}: the command expired at {_iso(cmd.expires_at_ns)} "
                               f"(node clock {_iso(now)}); not executed")
            return
        if not self.log.begin(cmd, now_ns=now):  # cannot happen after get() above; never execute twice
            return
        self._running.add(cmd.command_id)
        try:
            self.counters.executed += 1
            log.info("node %s: command %s: %s%s %s", self.node_id, cmd.command_id, cmd.command,
                     f" on {cmd.device}" if cmd.device else "", dict(cmd.args) or "")
            status, result, error = await self.execute(cmd)
            payload = await self._finish(cmd, status, result, error)
            for _ in range(self._answer_again.pop(cmd.command_id, 0)):  # each delivery gets its answer
                await self._publish(cmd.command_id, payload)
        finally:
            self._running.discard(cmd.command_id)
            self._answer_again.pop(cmd.command_id, None)

    async def execute(self, cmd: Command) -> tuple[str, dict[str, Any], str | None]:
        """(status, result, error) of one command; never raises for what a device or a config can do wrong."""
        if cmd.command == "reload":
            return await self._reload()
        assert cmd.device is not None
        return await self._device_command(cmd, cmd.device)

    async def _device_command(self, cmd: Command, device: str) -> tuple[str, dict[str, Any], str | None]:
        buses = self.target.buses
        found = next(((bus, bus.drivers[device]) for bus in buses if device in bus.drivers), None)
        if found is None:
            known = ", ".join(sorted(d.device_id for bus in buses for d in bus.drivers.values())) or "none"
            return "rejected", {}, f"node {self.node_id} has no device {device!r} (its devices: {known})"
        bus, driver = found
        name = DRIVER_COMMANDS[cmd.command]
        if name not in driver.commands:
            return "rejected", {}, f"device {device} ({self._describe(device)}) cannot {cmd.command}"
        fut = bus.submit(device, name, dict(cmd.args))
        wait_s = driver.poll_timeout_s() * 2 + BUS_WAIT_MARGIN_S
        try:
            answer = await wait_for(fut, wait_s)
        except TimeoutError:
            return "failed", {}, f"timeout: bus {bus.bus_id} did not execute the command within {wait_s:.0f} s"
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # we are being stopped ourselves
            return "failed", {}, f"cancelled: bus {bus.bus_id} stopped (agent stopping or config reloaded)"
        except ExchangeError as exc:
            if exc.kind == "command":
                return "rejected", {}, exc.reason
            return "failed", {}, f"{exc.kind}: {exc.reason}"
        answer = _json_safe(answer)
        status = answer.pop("status", "done")
        if status == "refused":
            error = answer.pop("error", None) or f"device {device} refused {cmd.command}: {answer.get('answer')}"
            return "failed", answer, str(error)
        if status == "sent":
            answer["confirmed"] = False  # the protocol has no answer to this command
        return "succeeded", answer, None

    def _describe(self, device: str) -> str:
        dev = next((d for d in self.target.cfg.devices if d.id == device), None)
        if isinstance(dev, ProfileDevice):
            return f"profile {dev.profile}"
        return f"type {dev.type}" if dev is not None else "unknown"

    async def _reload(self) -> tuple[str, dict[str, Any], str | None]:
        try:
            summary = await self.target.reload_config()
        except ConfigError as exc:
            return "rejected", {}, f"config not reloaded, the running one stays: {exc}"
        return "succeeded", summary, None

    # -- answering ------------------------------------------------------------------------------------------------
    async def _finish(self, cmd: Command, status: str, result: dict[str, Any], error: str | None) -> bytes:
        return await self._send(cmd, status, result, error)

    async def _send(self, cmd: Command, status: str, result: dict[str, Any], error: str | None, *,
                    store: bool = True) -> bytes:
        res = CommandResult(command_id=cmd.command_id, node=self.node_id, command=cmd.command, device=cmd.device,
                            status=status, result=result, error=error[:2000] if error else None,
                            finished_at_ns=self.clock_ns())
        payload = encode_result(res, signer=lambda body: sign(self.key, body))
        if store:
            try:
                self.log.finish(cmd.command_id, payload)
            except sqlite3.Error as exc:  # executed all the same: answer it (a redelivery finds it "interrupted")
                self.counters.log_errors += 1
                log.error("node %s: result of command %s not stored: %s", self.node_id, cmd.command_id, exc)
        level = logging.INFO if status == "succeeded" else logging.WARNING
        log.log(level, "node %s: command %s (%s) %s%s", self.node_id, cmd.command_id, cmd.command, status,
                f": {error}" if error else "")
        await self._publish(cmd.command_id, payload)
        return payload

    async def _publish(self, command_id: str, payload: bytes) -> None:
        if await self.publish(command_result_topic(self.node_id), payload):
            try:
                self.log.mark_published(command_id)
            except sqlite3.Error as exc:  # it may go out once more after a reconnect: harmless
                log.error("node %s: command %s not marked as answered: %s", self.node_id, command_id, exc)
        else:
            self.counters.results_pending += 1
            log.warning("node %s: result of command %s kept until the broker is back", self.node_id, command_id)

    async def publish_pending(self) -> None:
        """Send the results that could not be published before (called when the uplink connects)."""
        self.log.prune(now_ns=self.clock_ns())
        for command_id, payload in self.log.unpublished():
            if command_id in self._running:
                continue
            if not await self.publish(command_result_topic(self.node_id), payload):
                return
            self.log.mark_published(command_id)
            self.counters.results_pending = max(0, self.counters.results_pending - 1)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def _json_safe(value: Any) -> Any:
    """Plain JSON values (a NaN or infinite float from a register becomes null: JSON and Postgres have none)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
