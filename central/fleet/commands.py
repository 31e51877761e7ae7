"""Device commands at central: the dispatcher that sends queued commands to their nodes, applies the nodes' signed
results and times out the commands nobody answered.

A command's life (one row of ``commands``; the API only inserts rows, every API worker stays stateless)::

    queued ──(dispatcher publishes it on floorgate/v1/<node>/cmd)──> sent ──(signed result)──> succeeded
       │                                                              │                       failed / rejected
       └────────────(created_at + timeout_s passed, no answer)────────┴──> timeout

The dispatcher runs inside every ingest process (``central run``, ``central ingest``). It claims queued rows with
``SELECT … FOR UPDATE SKIP LOCKED`` and publishes them (QoS 1) *before* its transaction commits them as ``sent``:
two processes never send one command at the same time, and a process that dies between publish and commit leaves
the row queued — it is sent again and the node, which keeps every ``command_id`` it saw, answers it without
executing it twice. Every command is signed with central's key (``central.fleet.signing_key``, ``sync.downlink``) and
carries a fresh nonce: a node executes nothing else. Results arrive on ``floorgate/v1/+/cmd/result`` (ingest
subscribes): the result must be signed by the node's registered key (with a fleet CA: a key the CA bound whose
interval covers the result's ``finished_at_ns``, ``central.fleet.keys``), name the node of its topic, and match a
command central sent to that node — otherwise it is quarantined like a forged batch. A result that comes after the
timeout is kept (``result``, ``answered_at``) while the status stays ``timeout``; ``error`` then says how late, and
with what outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import Command
from sync.commands import Command as WireCommand
from sync.commands import CommandResult, decode_result, encode_command
from sync.downlink import DownlinkSigner
from sync.errors import DecodeError
from sync.signing import generate_key
from sync.topics import command_topic, parse_command_result_topic

log = logging.getLogger(__name__)

STATUSES = ("queued", "sent", "succeeded", "failed", "rejected", "timeout")
OPEN = ("queued", "sent")
DISPATCH_INTERVAL_S = 0.25  # how often queued rows are looked for (latency of a command before it is sent)
EXPIRE_INTERVAL_S = 0.5
CLAIM_BATCH = 50
PUBLISH_TIMEOUT_S = 10.0

Publish = Callable[[str, bytes], Coroutine[Any, Any, None]]  # raises when the broker cannot take it


class Authenticate(Protocol):
    """Raises (for the quarantine) unless ``sig`` over ``body`` is ``node``'s, by the key valid at ``made_at_ns``."""

    def __call__(self, node: str, body: bytes, sig: str | None, *, made_at_ns: int | None = None) -> None: ...


class ResultRejected(Exception):
    """A command result central cannot use (unknown command, another node's, mismatched); goes to quarantine."""


def expires_at(row: Command) -> datetime:
    return row.created_at + timedelta(seconds=row.timeout_s)


def wire_command(row: Command, signer: DownlinkSigner | None = None) -> WireCommand:
    """The message for the node: issued when the API took it, expiring when central stops waiting for it; with
    ``signer`` it carries a fresh nonce and central's key id (``encode_command(…, signer=signer)`` signs it)."""
    issued = int(row.created_at.timestamp() * 1e9)
    stamp = signer.stamp() if signer is not None else {}
    return WireCommand(command_id=row.command_id, node=row.node_id, command=row.command, device=row.device_id,
                       args=dict(row.args or {}), issued_at_ns=issued,
                       expires_at_ns=issued + max(1, int(row.timeout_s * 1e9)),
                       nonce=stamp.get("nonce", ""), kid=stamp.get("kid", ""))


def _json_safe(value: Any) -> Any:
    """What Postgres' JSON and text columns take: no NaN / infinity (null instead), no NUL characters."""
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    return value


async def _to_thread_to_the_end(fn: Callable[..., Any], *args: Any) -> Any:
    """``asyncio.to_thread``, but a cancel waits for the thread's transaction to end (commit or roll back) before it
    is passed on: a stopping service leaves no half-used database connection behind."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


class CommandDispatcher:
    def __init__(self, sessions: sessionmaker[Session], *, interval_s: float = DISPATCH_INTERVAL_S,
                 batch: int = CLAIM_BATCH, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 signer: DownlinkSigner | None = None) -> None:
        """``signer``: central's downlink key; every command is signed with it (a node executes nothing else).
        Without it (tests of the dispatch alone) a throwaway key is used, which no node trusts."""
        self.sessions = sessions
        self.signer = signer if signer is not None else DownlinkSigner(generate_key())
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock
        self.sent = 0
        self.timeouts = 0
        self.results = 0
        self.late_results = 0
        self._in_error = False

    # -- the loop ---------------------------------------------------------------------------------------------------
    async def run(self, publish: Publish) -> None:
        """Send queued commands and time out unanswered ones until cancelled."""
        loop = asyncio.get_running_loop()

        def publish_sync(topic: str, payload: bytes) -> None:  # called from the worker thread
            fut = asyncio.run_coroutine_threadsafe(publish(topic, payload), loop)
            try:
                fut.result(PUBLISH_TIMEOUT_S + 1)
            except FutureTimeout:
                fut.cancel()
                raise

        last_expire = 0.0
        while True:
            try:
                await _to_thread_to_the_end(self.dispatch_once, publish_sync)
                if time.monotonic() - last_expire >= EXPIRE_INTERVAL_S:
                    last_expire = time.monotonic()
                    await _to_thread_to_the_end(self.expire_once)
                if self._in_error:
                    log.info("commands: database reachable again")
                self._in_error = False
            except SQLAlchemyError as exc:
                if not self._in_error:
                    log.error("commands: cannot dispatch (database): %s", exc)
                else:
                    log.debug("commands: still cannot dispatch: %s", exc)
                self._in_error = True
            await asyncio.sleep(self.interval_s)

    def dispatch_once(self, publish: Callable[[str, bytes], None]) -> int:
        """Claim queued commands (rows locked, other dispatchers skip them), publish each, mark it sent. Returns
        how many were sent; stops at the first one the broker does not take (it stays queued)."""
        sent = 0
        with self.sessions.begin() as session:
            rows = session.execute(
                select(Command).where(Command.status == "queued").order_by(Command.id).limit(self.batch)
                .with_for_update(skip_locked=True)).scalars().all()
            now = self.clock()
            for row in rows:
                if now >= expires_at(row):
                    self._time_out(session, row, "not sent: central could not reach the broker before the timeout")
                    continue
                try:
                    topic = command_topic(row.node_id)
                    payload = encode_command(wire_command(row, self.signer), signer=self.signer)
                except (DecodeError, ValueError, TypeError) as exc:  # a row no node could take (not from the API)
                    session.execute(update(Command).where(Command.id == row.id, Command.status == "queued")
                                    .values(status="rejected", error=f"cannot be sent: {exc}", answered_at=now))
                    log.error("commands: %s cannot be sent: %s", row.command_id, exc)
                    continue
                try:
                    publish(topic, payload)
                except Exception as exc:  # broker away: leave it (and the rest) queued for the next round
                    log.warning("commands: command %s to %s not sent yet: %s", row.command_id, row.node_id, exc)
                    break
                # conditional: on SQLite (no row locks) the node's answer may have been stored meanwhile
                session.execute(update(Command).where(Command.id == row.id, Command.status == "queued")
                                .values(status="sent", sent_at=now))
                sent += 1
                log.info("commands: sent %s %s%s to node %s", row.command_id, row.command,
                         f" on {row.device_id}" if row.device_id else "", row.node_id)
        self.sent += sent
        return sent

    def expire_once(self) -> int:
        """Time out the commands whose node did not answer within ``timeout_s`` of their creation."""
        n = 0
        with self.sessions.begin() as session:
            rows = session.execute(select(Command).where(Command.status.in_(OPEN)).order_by(Command.id)
                                   .with_for_update(skip_locked=True)).scalars().all()
            now = self.clock()
            for row in rows:
                if now >= expires_at(row):
                    reason = (f"no answer from node {row.node_id} within {row.timeout_s:g} s" if row.status == "sent"
                              else "not sent: central could not reach the broker before the timeout")
                    self._time_out(session, row, reason)
                    n += 1
        return n

    def _time_out(self, session: Session, row: Command, reason: str) -> None:
        session.execute(update(Command).where(Command.id == row.id, Command.status.in_(OPEN))
                        .values(status="timeout", error=reason))
        self.timeouts += 1
        log.warning("commands: %s (%s on node %s) timed out: %s", row.command_id, row.command, row.node_id, reason)

    # -- results ----------------------------------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes, authenticate: Authenticate) -> str:
        """Check one message from ``…/<node>/cmd/result`` and apply it. Raises DecodeError, ResultRejected or what
        ``authenticate`` raises — all for the quarantine."""
        node = parse_command_result_topic(topic)
        res = decode_result(payload)
        if res.node != node:
            raise DecodeError(f"payload names node {res.node!r} but was published by {node!r}", field="node")
        authenticate(node, res.signed_body, res.sig, made_at_ns=res.finished_at_ns)  # the key valid when made
        return self.apply_result(res)

    def apply_result(self, res: CommandResult) -> str:
        """Store an authentic result: ``applied``, ``late`` (after the timeout: kept, status stays ``timeout``) or
        ``duplicate`` (already answered: the first answer stays)."""
        with self.sessions.begin() as session:
            row = session.execute(select(Command).where(Command.command_id == res.command_id)
                                  .with_for_update()).scalar_one_or_none()
            if row is None:
                raise ResultRejected(f"result for command {res.command_id}, which central never sent")
            if row.node_id != res.node:
                raise ResultRejected(f"node {res.node!r} answered command {res.command_id} of node {row.node_id!r}")
            if row.command != res.command or row.device_id != res.device:
                raise ResultRejected(
                    f"result for {res.command} on {res.device} does not match command {res.command_id} "
                    f"({row.command} on {row.device_id})")
            now = self.clock()
            result = _json_safe(dict(res.result))
            error = _json_safe(res.error)
            self.results += 1
            if row.status in OPEN:
                row.status = res.status
                row.result = result
                row.error = error
                row.answered_at = now
                level = logging.INFO if res.status == "succeeded" else logging.WARNING
                log.log(level, "commands: %s (%s on node %s) %s%s", row.command_id, row.command, row.node_id,
                        res.status, f": {error}" if error else "")
                return "applied"
            if row.status == "timeout" and row.answered_at is None:
                late_s = (now - row.created_at).total_seconds()
                row.result = result
                row.answered_at = now
                row.error = (f"{row.error}; the node answered {late_s:.1f} s after the command was created, after "
                             f"the timeout: {res.status}" + (f" ({error})" if error else ""))
                self.late_results += 1
                log.warning("commands: late result for %s (%s on node %s): %s after %.1f s; status stays timeout",
                            row.command_id, row.command, row.node_id, res.status, late_s)
                return "late"
            log.info("commands: %s answered again (%s); the first answer (%s) stays", row.command_id, res.status,
                     row.status)
            return "duplicate"
