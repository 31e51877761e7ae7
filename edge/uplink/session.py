"""The uplink: publishes signed batches of outbox records over MQTT (QoS 1) and releases them only when central
acknowledges them at the application level.

Per stream it keeps a send cursor (``sent_upto``) and a bounded window of unacknowledged batches. A batch that is
not acknowledged within ``ack_timeout_s`` (growing with backoff up to ``retry_max_s``), and every batch after a
reconnect or restart, is sent again from the last acknowledgement — central's inbox makes a resend harmless.
Sequence numbers central reports as ``held`` beyond a gap are not sent again. Streams are served in priority
order: business, health, readings.

Every batch carries a batch number (``bno`` = agent start × 2³² + counter, so it only grows) and is signed with
the node's Ed25519 key. A heartbeat with the backlog of every stream, the alarms, the clocks and the node's heads
(its alibi head and per TSE the highest transaction number and signature counter stored, ``edge.store.heads``) goes
to central every ``heartbeat_interval_s``; central answers a gap that stays open with a replay request, which moves
the send cursor back.

The same connection carries device commands: messages on ``…/cmd`` go to ``on_command``
(``edge.uplink.commands``), whose
results go out through ``publish``; ``on_connect`` runs after every (re)connect (results kept while the broker was
away).

Nothing central sends is taken on trust (``sync.downlink``): an ack or replay request acts only when it is signed
with one of the trusted central keys (``central_keys_file`` / ``central_keys``), names this node and the outbox's
epoch and carries a nonce not seen before — and an ack never covers a seq this node has not published (the highest
seq published per stream; after a restart, the outbox's acked mark until more is sent). Anything else changes
nothing, is logged and counted by reason (``downlink_rejected`` in /health, /metrics and the heartbeat); no error
from one message ends the receive task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge import __version__
from edge.config import NodeConfig
from edge.errors import OutboxError
from edge.runtime.aio import cancel_and_wait, raise_if_cancelled, wait_for
from edge.store.heads import read_heads
from edge.store.outbox import Outbox, os_boot_id
from sync.downlink import DownlinkRejected, DownlinkVerifier, counts_json, load_trusted_keys, parse_trusted_keys
from sync.envelope import (
    Ack,
    Batch,
    Heartbeat,
    Replay,
    StreamBacklog,
    decode_ack,
    decode_replay,
    encode_batch,
    encode_heartbeat,
)
from sync.errors import DecodeError
from sync.heads import Heads
from sync.runtime.config import ConfigError
from sync.runtime.mqtt import MqttClient, MqttError, make_client
from sync.signing import SigningKeyError, sign
from sync.streams import STREAMS
from sync.topics import ack_topic, batch_topic, command_topic, heartbeat_topic, replay_topic

log = logging.getLogger(__name__)

MAX_HELD = 10_000
REJECT_LOG_EVERY_S = 1.0  # a flood of forged downlink messages: one warning per reason this often, the rest debug


def trusted_central_keys(cfg: NodeConfig) -> list[Ed25519PublicKey]:
    """Central's public signing keys this node trusts: ``central_keys`` inline plus ``central_keys_file`` (default
    ``central.pub`` beside the node key). A ConfigError names the file and how to get it when there is none."""
    source = f"node {cfg.node_id}: central_keys"
    try:
        keys = parse_trusted_keys(cfg.central_keys, source=source)
    except SigningKeyError as exc:
        raise ConfigError(source, [str(exc)]) from None
    path = cfg.central_keys_path
    if path.exists() or not keys:
        try:
            keys += load_trusted_keys(path)
        except SigningKeyError as exc:
            raise ConfigError(f"node {cfg.node_id}: central_keys_file", [
                f"{exc}: the agent acts only on acks, replay requests and commands signed by central, so it needs "
                "central's public key. Get it with `floorgate central signing-key show --config CENTRAL_YAML` (also "
                "printed by `central node register`) and write it with `floorgate edge enrol --config NODE_YAML "
                "--central-key ed25519:…`, or copy central.pub from the bundle of `floorgate central node add`",
            ]) from None
    return keys


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
    bad_acks: int = 0  # acks and replay requests refused (by reason: Uplink.downlink.counts)
    replays: int = 0
    heartbeats: int = 0
    connects: int = 0
    last_ack_at: float | None = None


class Uplink:
    def __init__(self, cfg: NodeConfig, outbox: Outbox, key: Ed25519PrivateKey, *,
                 alarms: Callable[[], list[str]] = list, central_keys: list[Ed25519PublicKey] | None = None) -> None:
        """``central_keys``: the central keys to trust (default: ``trusted_central_keys(cfg)``, which raises a
        ConfigError when there is none)."""
        self.cfg = cfg
        # shared with the command runner: one nonce cache and one set of counts for everything central sends
        self.downlink = DownlinkVerifier(cfg.node_id, central_keys if central_keys else trusted_central_keys(cfg),
                                         log=self._log_rejection)
        self._logged_at: dict[str, float] = {}
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
        # the highest seq published per stream (an ack beyond it is forged): the acked mark until more is sent
        self.published: dict[str, int] = {s: outbox.acked_seq(s) for s in self._order}
        self._reset_cursors()
        self.client: MqttClient | None = None  # while connected
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
                # a stop (cancellation) while connecting ends the connect at once and leaves nothing open
                async with make_client(self.cfg.broker, client_id=client_id,
                                       keepalive_s=self.cfg.broker.keepalive_s) as client:
                    self.connected = True
                    self.counters.connects += 1
                    delay = self.cfg.uplink.retry_min_s
                    log.info("uplink connected to %s as %s", self.cfg.broker.url, client_id)
                    self._reset_cursors()  # resend everything not acknowledged
                    await client.subscribe(ack_topic(self.cfg.node_id), qos=1)
                    await client.subscribe(replay_topic(self.cfg.node_id), qos=1)
                    if self.on_command is not None:
                        await client.subscribe(command_topic(self.cfg.node_id), qos=1)
                    raise_if_cancelled()
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
            except MqttError as exc:
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
        except MqttError as exc:
            raise_if_cancelled()
            log.warning("uplink: publish on %s failed: %s", topic, exc)
            return False
        return True

    def _log_rejection(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(reason, -REJECT_LOG_EVERY_S) >= REJECT_LOG_EVERY_S:
            self._logged_at[reason] = now
            log.warning("node %s: downlink message refused (%s), nothing changed: %s", self.cfg.node_id, reason,
                        detail)
        else:
            log.debug("node %s: downlink message refused (%s): %s", self.cfg.node_id, reason, detail)

    async def _receive(self, client: MqttClient) -> None:
        replay = replay_topic(self.cfg.node_id)
        commands = command_topic(self.cfg.node_id)
        async for message in client.messages:
            try:
                payload = message.payload
                if message.topic == commands:
                    if self.on_command is not None:
                        self.on_command(payload)  # verified by the command runner before it has any effect
                    continue
                self.on_downlink(payload, replay=message.topic == replay)
            except Exception:  # one message must never end the receive task (nor the connection)
                self.downlink.counts["malformed"] = self.downlink.counts.get("malformed", 0) + 1
                log.exception("uplink: unexpected error handling a message on %s; ignored", message.topic)

    def on_downlink(self, payload: bytes, *, replay: bool) -> bool:
        """Handle one ack (or, with ``replay``, one replay request) after verifying it; False if it was refused
        (counted by reason and logged, nothing changed)."""
        what = "replay request" if replay else "ack"
        try:
            try:
                msg = decode_replay(payload) if replay else decode_ack(payload)
            except DecodeError as exc:
                raise self.downlink.reject("malformed", f"{what}: {exc}") from None
            except Exception as exc:  # whatever a decoder trips over (deep nesting …): malformed
                raise self.downlink.reject("malformed", f"{what}: {type(exc).__name__}") from None
            self.downlink.verify(what, node=msg.node, kid=msg.kid, nonce=msg.nonce, issued_at_ns=msg.issued_at_ns,
                                 signed_body=msg.signed_body, sig=msg.sig, epoch=msg.epoch,
                                 expected_epoch=self.outbox.epoch)
            if replay:
                assert isinstance(msg, Replay)
                self._on_replay(msg.stream, msg.from_seq, msg.reason)
                return True
            assert isinstance(msg, Ack)
            sent = self.published[msg.stream]
            acked, held = msg.acked_seq, msg.held
            if acked > sent or (held and max(held) > sent):
                stats = self.outbox.stats()
                head = stats[msg.stream].produced if msg.stream in stats else 0
                if acked > head or max(held, default=0) > head:
                    raise self.downlink.reject(
                        "beyond_sent", f"ack for {msg.stream} up to seq {acked} (held up to "
                        f"{max(held, default=0)}) beyond the last seq this node produced ({head}) and published "
                        f"({sent})")
                if acked > sent:
                    # central's signed mark may be beyond what this run of the agent published (it sent more before
                    # a restart): central holds everything up to it, so certainly everything up to what we published
                    log.debug("uplink: ack for %s up to %d taken up to %d, the last seq published since the agent "
                              "started", msg.stream, acked, sent)
                    acked = sent
        except DownlinkRejected:
            self.counters.bad_acks += 1
            return False
        self._on_ack(msg.stream, acked, held)
        return True

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
            # central lost what it acknowledged (restored from a backup?): send what the node still has; central's
            # /health shows the stream as stuck (the node's acked mark is beyond central's)
            log.error("uplink: central asks for %s from seq %d, but acknowledged up to %d already (%s); seqs %d..%d "
                      "are no longer on this node: sending what it still has, from seq %d", stream, from_seq, acked,
                      reason, from_seq, acked, acked + 1)
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

    async def _send_loop(self, client: MqttClient, helpers: list[asyncio.Task[None]]) -> None:
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
                    # before the publish: central's ack may arrive before the PUBACK does
                    self.published[stream] = max(self.published[stream], batch.last_seq)
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
        heads = self.heads()  # before the stats: every sale or weighing it names is within the heads of the streams
        stats = self.outbox.stats()
        streams = {
            name: StreamBacklog(head=s.produced, acked=s.acked, pending=s.pending, oldest_age_s=s.oldest_age_s(now),
                                lost=s.lost + self.outbox.lost_unstored.get(name, 0))
            for name, s in stats.items()
        }
        return Heartbeat(node=self.cfg.node_id, epoch=self.outbox.epoch, bno=self._next_bno(), sent_at_ns=now,
                         mono_ns=time.monotonic_ns(), boot_id=self.boot_id, version=__version__, streams=streams,
                         alarms=tuple(self.alarms()), downlink_rejected=self.downlink_rejected(), heads=heads)

    def heads(self) -> Heads | None:
        """The alibi and TSE heads the heartbeat signs (``edge.store.heads``); None, logged, if the outbox cannot
        be read — the heartbeat goes out all the same."""
        try:
            return self.outbox.use("read the heads", read_heads)
        except OutboxError as exc:
            log.error("uplink: heartbeat without heads: %s", exc)
            return None

    def downlink_rejected(self) -> dict[str, int]:
        """Downlink messages refused since the agent started, by reason (every reason, 0 when none)."""
        return counts_json(self.downlink.counts)

    async def _heartbeat_loop(self, client: MqttClient) -> None:
        while True:
            payload = encode_heartbeat(self.heartbeat(), signer=self._signer)
            await _publish(client, heartbeat_topic(self.cfg.node_id), payload, 10)
            self.counters.heartbeats += 1
            await asyncio.sleep(self.cfg.heartbeat_interval_s)


async def _publish(client: MqttClient, topic: str, payload: bytes, timeout_s: float) -> None:
    """QoS 1 publish, until the broker's PUBACK; a stop that came meanwhile is raised here."""
    await client.publish(topic, payload, qos=1, timeout_s=timeout_s)
    raise_if_cancelled()
