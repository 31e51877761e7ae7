"""The uplink: publishes signed batches of outbox records over MQTT (QoS 1) and releases them only when central
acknowledges them at the application level.

Per stream it keeps a send cursor (``sent_upto``) and a bounded window of unacknowledged batches. A batch that is
not acknowledged within ``ack_timeout_s`` (growing with backoff up to ``retry_max_s``), and every batch after a
reconnect or restart, is sent again from the last acknowledgement — central's inbox makes a resend harmless.
Sequence numbers central reports as ``held`` beyond a gap are not sent again. Streams are served in priority
order: business, health, readings.

Every batch carries a batch number (``bno`` = agent start × 2³² + counter, so it only grows) and is signed with
the node's Ed25519 key. A heartbeat with the backlog of every stream, the alarms and the clocks goes to central
every ``heartbeat_interval_s``; central answers a gap that stays open with a replay request, which moves the send
cursor back.

The same connection carries device commands: messages on ``…/cmd`` go to ``on_command`` (``edge.commands``), whose
results go out through ``publish``; ``on_connect`` runs after every (re)connect (results kept while the broker was
away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import __version__
from edge.aio import cancel_and_wait, raise_if_cancelled, wait_for
from edge.config import NodeConfig
from edge.mqtt import make_client
from edge.outbox import Outbox, os_boot_id
from sync.envelope import (
    Batch,
    Heartbeat,
    StreamBacklog,
    decode_ack,
    decode_replay,
    encode_batch,
    encode_heartbeat,
)
from sync.errors import DecodeError
from sync.mqttclient import abandon_connect
from sync.signing import sign
from sync.streams import STREAMS
from sync.topics import ack_topic, batch_topic, command_topic, heartbeat_topic, replay_topic

log = logging.getLogger(__name__)

MAX_HELD = 10_000


@dataclass
class _StreamState:
    sent_upto: int
    in_flight: deque[tuple[int, float]] = field(default_factory=deque)  # (last_seq, deadline)
    timeouts: int = 0
    held: set[int] = field(default_factory=set)  # seqs central holds beyond its contiguous mark


@dataclass
class UplinkCounters:
    batches_sent: int = 0
    records_sent: int = 0
    bytes_sent: int = 0
    resends: int = 0
    acks: int = 0
    bad_acks: int = 0
    replays: int = 0
    heartbeats: int = 0
    connects: int = 0
    last_ack_at: float | None = None


class Uplink:
    def __init__(self, cfg: NodeConfig, outbox: Outbox, key: Ed25519PrivateKey, *,
                 alarms: Callable[[], list[str]] = list) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.key = key
        self.alarms = alarms
        self.wake = asyncio.Event()
        self.connected = False
        self.counters = UplinkCounters()
        self.boot_id = os_boot_id()
        self._bno = outbox.start_no << 32
        self._state: dict[str, _StreamState] = {}
        self._order = sorted(STREAMS, key=lambda s: STREAMS[s].priority)
        self._reset_cursors()
        self.client: aiomqtt.Client | None = None  # while connected
        self.on_command: Callable[[bytes], None] | None = None  # set by the agent: a message on …/cmd
        self.on_connect: Callable[[], Coroutine[Any, Any, None]] | None = None  # after every (re)connect and subscribe

    def _signer(self, body: bytes) -> str:
        return sign(self.key, body)

    def _next_bno(self) -> int:
        self._bno += 1
        return self._bno

    def _reset_cursors(self) -> None:
        for stream in self._order:
            held = self._state[stream].held if stream in self._state else set()
            self._state[stream] = _StreamState(sent_upto=self.outbox.acked_seq(stream), held=held)

    async def run(self) -> None:
        delay = self.cfg.uplink.retry_min_s
        client_id = f"floorgate-edge-{self.cfg.node_id}"
        while True:
            raise_if_cancelled()
            try:
                async with _connected(make_client(self.cfg.broker, client_id=client_id)) as client:
                    self.connected = True
                    self.counters.connects += 1
                    delay = self.cfg.uplink.retry_min_s
                    log.info("uplink connected to %s as %s", self.cfg.broker.url, client_id)
                    self._reset_cursors()  # resend everything not acknowledged
                    await client.subscribe(ack_topic(self.cfg.node_id), qos=1)
                    await client.subscribe(replay_topic(self.cfg.node_id), qos=1)
                    if self.on_command is not None:
                        await client.subscribe(command_topic(self.cfg.node_id), qos=1)
                    raise_if_cancelled()  # aiomqtt's subscribe may have swallowed one
                    self.client = client
                    helpers = [asyncio.create_task(self._receive(client)),
                               asyncio.create_task(self._heartbeat_loop(client))]
                    if self.on_connect is not None:
                        helpers.append(asyncio.create_task(self.on_connect()))
                    try:
                        await self._send_loop(client, helpers)
                    finally:
                        self.client = None  # results of commands still running are kept for the next connect
                        await cancel_and_wait(helpers)
            except aiomqtt.MqttError as exc:
                raise_if_cancelled()  # stopped: an error on the way out does not make it try again
                if self.connected:
                    log.warning("uplink lost the broker: %s", exc)
                else:
                    log.debug("uplink cannot reach the broker %s: %s", self.cfg.broker.url, exc)
            finally:
                self.connected = False
                self.client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.uplink.retry_max_s)

    # -- down: acks and replay requests ------------------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, *, timeout_s: float = 10.0) -> bool:
        """Publish with QoS 1 on the uplink's connection; False if not connected or the broker did not take it."""
        client = self.client
        if client is None:
            return False
        try:
            await _publish(client, topic, payload, timeout_s)
        except aiomqtt.MqttError as exc:
            raise_if_cancelled()
            log.warning("uplink: publish on %s failed: %s", topic, exc)
            return False
        return True

    async def _receive(self, client: aiomqtt.Client) -> None:
        replay = replay_topic(self.cfg.node_id)
        commands = command_topic(self.cfg.node_id)
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if message.topic.matches(commands):
                if self.on_command is not None:
                    self.on_command(payload)
                continue
            try:
                if message.topic.matches(replay):
                    req = decode_replay(payload)
                    node, epoch = req.node, req.epoch
                else:
                    ack = decode_ack(payload)
                    node, epoch = ack.node, ack.epoch
            except DecodeError as exc:
                self.counters.bad_acks += 1
                log.error("uplink: malformed message on %s: %s", message.topic, exc)
                continue
            if node != self.cfg.node_id or epoch != self.outbox.epoch:
                self.counters.bad_acks += 1
                log.warning("uplink: message for node %s epoch %s ignored (we are %s epoch %s)",
                            node, epoch, self.cfg.node_id, self.outbox.epoch)
                continue
            if message.topic.matches(replay):
                self._on_replay(req.stream, req.from_seq, req.reason)
            else:
                self._on_ack(ack.stream, ack.acked_seq, ack.held)

    def _on_ack(self, stream: str, acked_seq: int, held: tuple[int, ...] = ()) -> None:
        try:
            released = self.outbox.ack(stream, acked_seq)
        except Exception as exc:
            self.counters.bad_acks += 1
            log.error("uplink: %s", exc)
            return
        self.counters.acks += 1
        self.counters.last_ack_at = time.time()
        st = self._state[stream]
        while st.in_flight and st.in_flight[0][0] <= acked_seq:
            st.in_flight.popleft()
        st.sent_upto = max(st.sent_upto, acked_seq)
        st.held = {s for s in st.held if s > acked_seq} | {s for s in held if s > acked_seq}
        if len(st.held) > MAX_HELD:
            st.held = set(sorted(st.held)[:MAX_HELD])
        if released:
            st.timeouts = 0
        self.wake.set()

    def _on_replay(self, stream: str, from_seq: int, reason: str) -> None:
        st = self._state[stream]
        acked = self.outbox.acked_seq(stream)
        self.counters.replays += 1
        if from_seq <= acked:
            log.error("uplink: central asks for %s from seq %d, but acknowledged up to %d already (%s)",
                      stream, from_seq, acked, reason)
            from_seq = acked + 1
        log.warning("uplink: central asks for %s again from seq %d: %s", stream, from_seq, reason)
        st.sent_upto = min(st.sent_upto, from_seq - 1)
        st.in_flight.clear()
        st.held = {s for s in st.held if s < from_seq}
        self.wake.set()

    # -- up: batches and heartbeats ----------------------------------------------------------------------------------
    def _ack_timeout(self, st: _StreamState) -> float:
        up = self.cfg.uplink
        return min(up.ack_timeout_s * (2 ** min(st.timeouts, 10)), max(up.retry_max_s, up.ack_timeout_s))

    def _next_batch(self, stream: str, st: _StreamState) -> Batch | None:
        up = self.cfg.uplink
        while True:
            run = self.outbox.pending_run(stream, after_seq=st.sent_upto, limit=up.batch_max_records)
            records = run.records
            if not records:
                return None
            if st.held and records[0].seq in st.held and records[0].first_seq == records[0].seq:
                skip = 0  # central has these already: move the cursor over them
                while skip < len(records) and records[skip].seq in st.held:
                    skip += 1
                st.sent_upto = records[skip - 1].seq
                continue
            for i, r in enumerate(records[1:], 1):
                if r.seq in st.held:
                    records = records[:i]
                    break
            return Batch(node=self.cfg.node_id, epoch=self.outbox.epoch, stream=stream, records=tuple(records),
                         sent_at_ns=time.time_ns(), bno=self._next_bno(), boot_id=run.boot_id,
                         sent_mono_ns=time.monotonic_ns())

    async def _send_loop(self, client: aiomqtt.Client, helpers: list[asyncio.Task[None]]) -> None:
        up = self.cfg.uplink
        while True:
            raise_if_cancelled()
            for t in helpers:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            self.wake.clear()
            now = time.monotonic()
            for stream in self._order:
                st = self._state[stream]
                if st.in_flight and st.in_flight[0][1] < now:
                    st.timeouts += 1
                    self.counters.resends += 1
                    acked = self.outbox.acked_seq(stream)
                    log.warning("uplink: no ack for %s up to seq %d; resending from seq %d",
                                stream, st.in_flight[-1][0], acked + 1)
                    st.in_flight.clear()
                    st.sent_upto = acked
                while len(st.in_flight) < up.max_in_flight:
                    batch = self._next_batch(stream, st)
                    if batch is None:
                        break
                    payload = encode_batch(batch, signer=self._signer)
                    await _publish(client, batch_topic(self.cfg.node_id, stream), payload, up.ack_timeout_s)
                    self.counters.batches_sent += 1
                    self.counters.records_sent += len(batch.records)
                    self.counters.bytes_sent += len(payload)
                    st.sent_upto = batch.last_seq
                    st.in_flight.append((batch.last_seq, time.monotonic() + self._ack_timeout(st)))
            with contextlib.suppress(TimeoutError):
                await wait_for(self.wake.wait(), 0.5)

    def heartbeat(self) -> Heartbeat:
        now = time.time_ns()
        stats = self.outbox.stats()
        streams = {
            name: StreamBacklog(head=s.produced, acked=s.acked, pending=s.pending, oldest_age_s=s.oldest_age_s(now),
                                lost=s.lost + self.outbox.lost_unstored.get(name, 0))
            for name, s in stats.items()
        }
        return Heartbeat(node=self.cfg.node_id, epoch=self.outbox.epoch, bno=self._next_bno(), sent_at_ns=now,
                         mono_ns=time.monotonic_ns(), boot_id=self.boot_id, version=__version__, streams=streams,
                         alarms=tuple(self.alarms()))

    async def _heartbeat_loop(self, client: aiomqtt.Client) -> None:
        while True:
            payload = encode_heartbeat(self.heartbeat(), signer=self._signer)
            await _publish(client, heartbeat_topic(self.cfg.node_id), payload, 10)
            self.counters.heartbeats += 1
            await asyncio.sleep(self.cfg.heartbeat_interval_s)


async def _publish(client: aiomqtt.Client, topic: str, payload: bytes, timeout_s: float) -> None:
    """QoS 1 publish; a cancellation that aiomqtt swallowed (it waits with ``asyncio.wait_for``) is raised."""
    await client.publish(topic, payload, qos=1, timeout=timeout_s)
    raise_if_cancelled()


@contextlib.asynccontextmanager
async def _connected(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """``async with client``, but one that can be cancelled at any moment, connecting included.

    aiomqtt connects in a worker thread, which a cancellation does not stop, and leaves a connection whose CONNACK
    it stopped waiting for open, with its keepalive task: the agent would go on holding its broker session after
    it stopped. So a cancelled connect waits for the attempt to end and then disconnects whatever it opened: at
    once when the broker refuses or drops it, or when the CONNECT is out and only the CONNACK is awaited
    (``abandon_connect`` fails it and closes the connection — a cut network never answers); at most the client's
    timeouts while TCP or TLS are still connecting in the worker thread. Only a second cancellation gives up
    waiting. And
    aiomqtt's disconnect raises ``MqttError`` when it times out: that must not replace the error (or the
    cancellation) that ended the session."""
    connecting = asyncio.ensure_future(client.__aenter__())
    try:
        await asyncio.shield(connecting)
    except asyncio.CancelledError:
        try:
            abandon_connect(client)  # waiting for a CONNACK (a cut network never sends one): end it now
            await asyncio.wait([connecting])
        finally:
            if not connecting.done():
                connecting.cancel()
                connecting.add_done_callback(lambda f: f.cancelled() or f.exception())
            elif not connecting.cancelled() and connecting.exception() is None:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.__aexit__(None, None, None)
        raise
    try:
        yield client
    except BaseException:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
        raise
    await client.__aexit__(None, None, None)
