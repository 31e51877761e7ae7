"""The ingest service: a durable MQTT consumer that checks, applies and acknowledges batches exactly once.

For every batch: the topic's node must be the payload's node, the node must be enrolled (public key registered with
``floorgate central node register``) and the Ed25519 signature must verify — otherwise the message goes to the
quarantine with the reason and changes nothing. A replayed batch (older batch number, nothing new) is quarantined
too. The quarantine is bounded (``central.ingest.quarantine``): repeats are counted, not stored; each enrolled node
and all unauthenticated traffic together have a budget of stored messages and bytes; long payloads are kept as a
prefix + SHA-256 + size; old entries are pruned. One worker task per stream, so a slow or unavailable metrics store
(readings) never holds up business records; within a stream, batches are applied in the order they arrive.

Heartbeats (signed the same way) update the node's row (backlog per stream, alarms, software version, clock skew,
and the heads it signed: ``central.fleet.heads``, where what central lacks of them is logged as INTEGRITY), go to
the metrics store as ``node_backlog`` points, and drive gap repair: when central's contiguous mark of a stream
stays behind the node's head for ``ingest.replay_after_s`` without moving, central asks the node to replay from the
mark. Acks and replay requests are signed with central's key (``central.fleet.signing_key``,
``sync.downlink``): a node acts
on nothing else.

Several workers (``floorgate central ingest``) share the load through an MQTT 5 shared subscription
(``ingest.share_group``); the per-stream row lock in ``apply_batch`` keeps them from interleaving one stream.

Fault injection for the test suite: with ``FLOORGATE_FAULT_CRASH_AFTER_COMMITS=N`` in the environment the process
kills itself (SIGKILL) right after its N-th committed batch, before the ack is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from central.config import BrokerSettings, IngestSettings
from central.db.models import Certificate, Node, StreamMark
from central.fleet.commands import CommandDispatcher, ResultRejected
from central.fleet.heads import shortfalls, store_heads
from central.fleet.keys import TrustedKeys, key_history
from central.ingest.apply import BatchReplayed, apply_batch
from central.ingest.quarantine import Quarantine
from central.metrics import MetricsStore, MetricsStoreError, Point
from central.tickets.alibi_trust import use_ca_cert
from sync.downlink import DownlinkSigner
from sync.envelope import (
    Ack,
    Batch,
    Heartbeat,
    Replay,
    decode_batch,
    decode_heartbeat,
    encode_ack,
    encode_batch,
    encode_replay,
)
from sync.errors import DecodeError
from sync.runtime.mqtt import MqttClient, MqttError, make_client
from sync.signing import SigningKeyError, generate_key, parse_public_key, verify
from sync.streams import STREAMS
from sync.topics import (
    ack_topic,
    batch_subscription,
    command_result_subscription,
    heartbeat_subscription,
    parse_batch_topic,
    parse_node_topic,
    replay_topic,
)

log = logging.getLogger(__name__)

PING_TOPIC = "floorgate/v1/_central/ping"  # nobody subscribes: the PUBACK is the answer
KEY_REFRESH_S = 5.0  # an unknown node's key is looked up again at most this often
SHUTDOWN_GRACE_S = 15.0  # how long a stopping ingest waits for the batches it is applying
KEY_TTL_S = 60.0  # a known node's key is re-read after this long (replaced / revoked keys take effect)
MAX_CACHED_KEYS = 10_000  # beyond, the cached "no such node" answers are forgotten (varying names cost no memory)
CRASH_ENV = "FLOORGATE_FAULT_CRASH_AFTER_COMMITS"


class Rejected(Exception):
    """A message that is not applied; the reason goes to the quarantine."""


@dataclass
class IngestCounters:
    batches: int = 0
    records: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantine_repeats: int = 0  # the same trouble again within quarantine.REPEAT_S: counted, not stored
    quarantine_dropped_rate: int = 0  # beyond the source's message budget (central.ingest.quarantine): not stored
    quarantine_dropped_bytes: int = 0  # beyond the source's byte budget: not stored
    quarantine_pruned: int = 0  # rows deleted by this process after ingest.quarantine_retention_days
    conflicts: int = 0
    rejected: int = 0
    replayed: int = 0
    lost: int = 0
    heartbeats: int = 0
    replays_requested: int = 0
    store_failures: int = 0
    db_failures: int = 0
    unexpected_errors: int = 0  # a message whose handling raised something unforeseen: quarantined, process kept up
    last_lag_s: float | None = None
    last_batch_at: float | None = None


class IngestService:
    def __init__(
        self, broker: BrokerSettings, sessions: sessionmaker[Session], store: MetricsStore, *,
        client_id: str | None = None, settings: IngestSettings | None = None, signer: DownlinkSigner | None = None,
        ca_cert: x509.Certificate | None = None,
    ) -> None:
        """``signer``: central's downlink key (``central.fleet.signing_key``) for acks, replay requests and commands;
        without it (tests that never reach a node) a throwaway key is used, which no node trusts. ``ca_cert``: the
        fleet CA's certificate (``pki.dir``/ca.crt): only keys it bound are accepted (``central.fleet.keys``);
        without it, the key in ``nodes.public_key`` is taken as the database says."""
        self.broker = broker
        self.sessions = sessions
        self.store = store
        self.settings = settings or IngestSettings()
        self.client_id = client_id or broker.client_id
        self.counters = IngestCounters()
        self.connected = False
        self._queues: dict[str, asyncio.Queue[Batch]] = {}
        self._client: MqttClient | None = None
        self._keys: dict[str, tuple[Ed25519PublicKey | None, float]] = {}
        self._revoked: dict[str, bool] = {}  # node → no key because its certificates were revoked
        self.ca_cert = ca_cert
        self._anchored: dict[str, TrustedKeys] = {}  # node → the keys the CA vouches for (with ca_cert)
        use_ca_cert(sessions, ca_cert)  # alibi entries arriving are checked against the key history too
        if ca_cert is None:
            log.warning("ingest: no fleet CA (pki.dir with ca.crt) configured: node keys are not anchored — batches "
                        "are checked against the key in nodes.public_key, whatever put it there")
        self._gaps: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._shortfalls: dict[str, tuple[str, ...]] = {}  # node → what central lacks of its heads (logged once)
        # bounded: repeats, per-source limits, retention (central.ingest.quarantine)
        self.quarantine = Quarantine(sessions, self.settings, enrolled=self._enrolled)
        crash = os.environ.get(CRASH_ENV)
        self._crash_after = int(crash) if crash else None
        self._commits = 0
        self._in_hand: set[asyncio.Task[None]] = set()
        if signer is None:
            log.warning("ingest: no central signing key given; downlink messages are signed with a throwaway key "
                        "that no node trusts")
            signer = DownlinkSigner(generate_key())
        self.signer = signer
        # device commands: sends queued rows (signed), applies node results
        self.commands = CommandDispatcher(sessions, signer=signer)

    async def run(self) -> None:
        self._queues = {s: asyncio.Queue(maxsize=1000) for s in STREAMS}
        workers = [asyncio.create_task(self._worker(s), name=f"ingest:{s}") for s in STREAMS]
        workers.append(asyncio.create_task(self.commands.run(self._send_command), name="ingest:commands"))
        workers.append(asyncio.create_task(self.quarantine.run_pruner(self._count_pruned), name="ingest:prune"))
        try:
            await self._consume()
        finally:
            for w in workers:
                w.cancel()
            for w in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    async def _consume(self) -> None:
        delay = 0.5
        group = self.settings.share_group
        hb_sub = heartbeat_subscription()
        if group:
            hb_sub = f"$share/{group}/{hb_sub}"
        while True:
            try:
                async with make_client(self.broker, client_id=self.client_id, durable=not group,
                                       max_queued_incoming=10_000) as client:
                    self._client = client
                    self.connected = True
                    delay = 0.5
                    await client.subscribe(batch_subscription(group), qos=1)
                    await client.subscribe(hb_sub, qos=1)
                    await client.subscribe(command_result_subscription(group), qos=1)
                    log.info("ingest connected to %s as %s%s", self.broker.url, self.client_id,
                             f" (shared group {group})" if group else "")
                    try:
                        async for message in client.messages:
                            payload, topic = message.payload, message.topic
                            try:
                                if topic.endswith("/heartbeat"):
                                    await self._on_heartbeat(topic, payload)
                                elif topic.endswith("/cmd/result"):
                                    await self._on_command_result(topic, payload)
                                else:
                                    await self._dispatch(topic, payload)
                            except MqttError:
                                raise  # the connection, not the message: reconnect below
                            except Exception as exc:  # the last net: no message stops the ingest
                                await self._unexpected(topic, payload, "message", exc)
                    except asyncio.CancelledError:
                        await self._finish_in_hand()
                        raise
            except MqttError as exc:
                log.warning("ingest: broker %s unavailable: %s", self.broker.url, exc)
            finally:
                self.connected = False
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _unexpected(self, topic: str, payload: bytes, what: str, exc: BaseException, *,
                          node: str | None = None) -> None:
        """A message whose handling raised something no decoder or check foresaw (a bug, or an input nobody
        thought of): counted (``unexpected_errors``), logged with its traceback, quarantined with the exception as
        the reason — and the ingest goes on with the next message. ``node``: the message authenticated as that node
        (its quarantine budget, see ``_quarantine``)."""
        self.counters.unexpected_errors += 1
        log.error("ingest: unexpected %s while handling %s on %s (quarantined; ingest continues)",
                  type(exc).__name__, what, topic[:200], exc_info=exc)
        reason = f"{what}: unexpected {type(exc).__name__} while handling it: {str(exc)[:300]}"
        try:
            await asyncio.to_thread(self._quarantine, topic, payload, reason, node=node)
        except Exception:  # the quarantine's own trouble must not stop the ingest either
            log.exception("ingest: cannot quarantine the message on %s", topic[:200])

    async def _finish_in_hand(self) -> None:
        """Shutting down: take no new message, but let the batches being applied commit and send their acks
        while the connection is still up (queued batches are left: the node resends them)."""
        if not self._in_hand:
            return
        log.info("ingest: stopping — finishing %d batch(es) in hand", len(self._in_hand))
        _, pending = await asyncio.wait(set(self._in_hand), timeout=SHUTDOWN_GRACE_S)
        if pending:
            log.warning("ingest: %d batch(es) still applying after %.0f s; the node will resend them", len(pending),
                        SHUTDOWN_GRACE_S)

    async def ping(self, *, timeout_s: float = 2.0) -> float:
        """Round trip to the broker (QoS 1 publish until PUBACK) on the ingest connection, in seconds."""
        client = self._client
        if client is None or not self.connected:
            raise ConnectionError(f"ingest is not connected to {self.broker.url}")
        t0 = time.perf_counter()
        await client.publish(PING_TOPIC, b"", qos=1, timeout_s=timeout_s)
        return time.perf_counter() - t0

    # -- authenticity ---------------------------------------------------------------------------------------------
    def _node_key(self, node: str, *, reload: bool = False) -> Ed25519PublicKey | None:
        """The node's registered key, cached: an unknown node is looked up again after KEY_REFRESH_S, a known key
        after KEY_TTL_S (a key replaced or revoked with ``central node register`` takes effect then), or sooner when
        a signature does not match (``reload``; at most once per KEY_REFRESH_S so a flood of forgeries cannot
        hammer the database). With a fleet CA the node's key history is read and verified with it (``_anchored``)."""
        cached = self._keys.get(node)
        if cached is not None:
            key, loaded = cached
            age = time.monotonic() - loaded
            if age < (KEY_TTL_S if key is not None else KEY_REFRESH_S) and not (reload and age >= KEY_REFRESH_S):
                return key
        history = None
        with self.sessions() as session:
            row = session.get(Node, node)
            text = row.public_key if row is not None else None
            if not text:  # say why: a revoked node is not the same as one never enrolled
                revoked = session.execute(select(Certificate.serial).where(
                    Certificate.node_id == node, Certificate.kind == "node",
                    Certificate.revoked_at.is_not(None)).limit(1)).first()
                self._revoked[node] = revoked is not None
            elif self.ca_cert is not None:
                history = key_history(session, node, self.ca_cert)
        key = None
        if text:
            try:
                key = parse_public_key(text)
            except SigningKeyError as exc:
                log.error("ingest: node %s has an unusable registered key: %s", node, exc)
        if key is None and len(self._keys) >= MAX_CACHED_KEYS:  # names that are no node's, e.g. an anonymous flood
            self._keys = {n: v for n, v in self._keys.items() if v[0] is not None}  # forget those: memory stays
            self._revoked = {n: r for n, r in self._revoked.items() if n in self._keys or n == node}  # bounded
        if key is not None and history is not None and text:
            self._anchored[node] = TrustedKeys.of(history, text, row.key_fingerprint if row is not None else None)
        else:
            self._anchored.pop(node, None)
        self._keys[node] = (key, time.monotonic())
        return key

    def _enrolled(self, node: str) -> bool:
        """Whether ``node`` is an enrolled node's id as far as the key cache knows (no database work)."""
        cached = self._keys.get(node)
        return cached is not None and cached[0] is not None

    def forget_key(self, node: str) -> None:
        self._keys.pop(node, None)
        self._anchored.pop(node, None)

    def _authenticate(self, node: str, body: bytes, sig: str | None, *, made_at_ns: int | None = None) -> None:
        """Raise Rejected unless ``sig`` is the node's signature over ``body``. With a fleet CA: by a key the CA
        bound whose interval covers ``made_at_ns`` (default: now) — a rotated key for ``ROTATION_GRACE_NS`` after
        its end, a revoked key never after its revocation."""
        key = self._node_key(node)
        if key is None:
            raise self._not_enrolled(node)
        if self.ca_cert is not None:
            self._authenticate_anchored(node, body, sig, made_at_ns)
            return
        problem = verify(key, body, sig)
        if problem is not None and sig is not None:  # perhaps the key was replaced since we cached it
            fresh = self._node_key(node, reload=True)
            if fresh is not None and fresh is not key:
                problem = verify(fresh, body, sig)
        if problem is not None:
            raise Rejected(f"node {node!r}: {problem}")

    def _not_enrolled(self, node: str) -> Rejected:
        if self._revoked.get(node):
            return Rejected(f"node {node!r} is revoked (`floorgate central node revoke`); its batches are not "
                            f"accepted until it is added again (`floorgate central node add {node} --reissue`)")
        return Rejected(f"node {node!r} is not enrolled (no public key registered; "
                        f"`floorgate central node register {node} --public-key …`)")

    def _authenticate_anchored(self, node: str, body: bytes, sig: str | None, made_at_ns: int | None) -> None:
        now = time.time_ns()
        at = now if made_at_ns is None else min(made_at_ns, now)
        anchored = self._anchored.get(node)
        problem = anchored.verify(body, sig, at, now) if anchored is not None else "no key history"
        if problem is not None and sig is not None:  # perhaps the key was replaced or rotated since we cached it
            if self._node_key(node, reload=True) is None:
                raise self._not_enrolled(node)
            anchored = self._anchored.get(node)
            problem = anchored.verify(body, sig, at, now) if anchored is not None else "no key history"
        if problem is None:
            return
        if anchored is not None and sig:
            problem = anchored.explain(body, sig, at) or problem
        raise Rejected(f"node {node!r}: {problem}")

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            node, stream = parse_batch_topic(topic)
            batch = await asyncio.to_thread(decode_batch, payload)  # up to 8 MiB: off the event loop
            if batch.node != node:
                raise DecodeError(f"payload names node {batch.node!r} but was published by {node!r}", field="node")
            if batch.stream != stream:
                raise DecodeError(f"payload is for stream {batch.stream!r}, topic says {stream!r}", field="stream")
            await asyncio.to_thread(self._authenticate, node, batch.signed_body, batch.sig)
        except (DecodeError, Rejected) as exc:
            await asyncio.to_thread(self._quarantine, topic, payload, str(exc))
            return
        except Exception as exc:  # one message must never stop the ingest
            await self._unexpected(topic, payload, "batch", exc)
            return
        queue = self._queues[batch.stream]
        if queue.full() and not STREAMS[batch.stream].durable:
            log.warning("ingest: %s queue full; %s seq %d..%d left for the node to resend", batch.stream,
                        batch.node, batch.first_seq, batch.last_seq)
            return
        await queue.put(batch)

    def _quarantine(self, topic: str, payload: bytes, reason: str, *, node: str | None = None) -> None:
        """Put a message central cannot use into the quarantine, within bounds (central.ingest.quarantine): pass
        ``node`` only when the message authenticated as that enrolled node; everything else shares one budget."""
        outcome = self.quarantine.put(topic, payload, reason, node=node)
        c = self.counters
        if outcome == "stored":
            c.quarantined += 1
        elif outcome == "repeat":
            c.quarantine_repeats += 1
        elif outcome == "rate":
            c.quarantine_dropped_rate += 1
        else:
            c.quarantine_dropped_bytes += 1

    def _count_pruned(self, removed: int) -> None:
        self.counters.quarantine_pruned += removed

    # -- batches --------------------------------------------------------------------------------------------------
    async def _worker(self, stream: str) -> None:
        queue = self._queues[stream]
        while True:
            batch = await queue.get()
            # the batch in hand runs as its own task: a shutdown (cancel) lets it commit and ack (see _consume)
            task = asyncio.create_task(self._apply(batch), name=f"apply:{batch.node}:{stream}")
            self._in_hand.add(task)
            task.add_done_callback(self._in_hand.discard)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one batch must never stop its stream's worker
                topic = f"floorgate/v1/{batch.node}/up/{stream}"
                try:
                    payload = encode_batch(batch)
                except Exception:  # an unencodable batch: quarantine the reason alone
                    payload = b""
                await self._unexpected(topic, payload, f"applying {batch.node} {stream} seq "
                                       f"{batch.first_seq}..{batch.last_seq}", exc, node=batch.node)

    async def _apply(self, batch: Batch) -> None:
        try:
            result = await asyncio.to_thread(apply_batch, self.sessions, batch, write_points=self.store.write)
        except BatchReplayed as exc:
            self.counters.replayed += 1
            await asyncio.to_thread(self._quarantine, f"floorgate/v1/{batch.node}/up/{batch.stream}",
                                    encode_batch(batch), exc.reason, node=batch.node)  # it authenticated
            return
        except MetricsStoreError as exc:
            self.counters.store_failures += 1
            log.warning("ingest: %s %s seq %d..%d not applied, metrics store unavailable (node will resend): %s",
                        batch.node, batch.stream, batch.first_seq, batch.last_seq, exc)
            return
        except SQLAlchemyError as exc:
            self.counters.db_failures += 1
            log.error("ingest: %s %s seq %d..%d not applied, database error (node will resend): %s",
                      batch.node, batch.stream, batch.first_seq, batch.last_seq, exc)
            return
        self._commits += 1
        if self._crash_after is not None and self._commits >= self._crash_after:
            log.critical("fault injection: SIGKILL after commit %d, before its ack", self._commits)
            os.kill(os.getpid(), signal.SIGKILL)
        c = self.counters
        c.batches += 1
        c.records += result.applied
        c.duplicates += result.duplicates
        c.rejected += len(result.rejected)
        c.lost += result.lost
        c.last_batch_at = time.time()
        if batch.sent_at_ns:
            c.last_lag_s = max(0.0, time.time() - batch.sent_at_ns / 1e9)
        if result.lost:
            log.warning("ingest: node %s gave up %d %s record(s) to its disk quota (seq ≤ %d)", batch.node,
                        result.lost, batch.stream, batch.last_seq)
        if result.conflicts:
            c.conflicts += len(result.conflicts)
            log.critical(
                "INTEGRITY: node %s epoch %s %s seq %s resent with a different body; the stored records are kept",
                batch.node, batch.epoch, batch.stream, result.conflicts,
            )
        ack = Ack(node=batch.node, epoch=batch.epoch, stream=batch.stream, acked_seq=result.acked_seq,
                  held=result.held, **self.signer.stamp())
        await self._publish(ack_topic(batch.node), encode_ack(ack, signer=self.signer), f"ack to {batch.node}")

    async def _publish(self, topic: str, payload: bytes, what: str) -> None:
        client = self._client
        if client is None:
            return  # the node resends; the inbox makes that harmless
        try:
            await client.publish(topic, payload, qos=1, timeout_s=10)
        except MqttError as exc:
            log.warning("ingest: %s not sent (%s); the node will resend", what, exc)

    # -- device commands (central.fleet.commands) ----------------------------------------------------------------------
    async def _send_command(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None or not self.connected:
            raise ConnectionError(f"ingest is not connected to {self.broker.url}")
        await client.publish(topic, payload, qos=1, timeout_s=10)

    async def _on_command_result(self, topic: str, payload: bytes) -> None:
        try:
            await asyncio.to_thread(self.commands.receive, topic, payload, self._authenticate)
        except (DecodeError, Rejected, ResultRejected) as exc:
            await asyncio.to_thread(self._quarantine, topic, payload, f"command result: {exc}")
        except SQLAlchemyError as exc:
            log.error("ingest: command result on %s not stored (database error): %s", topic, exc)
        except Exception as exc:  # one message must never stop the ingest
            await self._unexpected(topic, payload, "command result", exc)

    # -- heartbeats -----------------------------------------------------------------------------------------------
    async def _on_heartbeat(self, topic: str, payload: bytes) -> None:
        try:
            node = parse_node_topic(topic, "heartbeat")
            hb = await asyncio.to_thread(decode_heartbeat, payload)
            if hb.node != node:
                raise DecodeError(f"payload names node {hb.node!r} but was published by {node!r}", field="node")
            await asyncio.to_thread(self._authenticate, node, hb.signed_body, hb.sig)
        except (DecodeError, Rejected) as exc:
            await asyncio.to_thread(self._quarantine, topic, payload, f"heartbeat: {exc}")
            return
        except Exception as exc:  # one message must never stop the ingest
            await self._unexpected(topic, payload, "heartbeat", exc)
            return
        self.counters.heartbeats += 1
        try:
            marks = await asyncio.to_thread(self._record_heartbeat, hb)
        except SQLAlchemyError as exc:
            log.warning("ingest: heartbeat of %s not recorded: %s", node, exc)
            return
        if marks is None:
            return  # an old heartbeat arriving late
        await self._write_backlog_points(hb)
        for stream, backlog in hb.streams.items():
            await self._check_gap(hb, stream, backlog.head, marks.get(stream, 0))

    def _record_heartbeat(self, hb: Heartbeat) -> dict[str, int] | None:
        now = datetime.now(UTC)
        skew = (now.timestamp() * 1e9 - hb.sent_at_ns) / 1e9
        with self.sessions.begin() as session:
            node = session.get(Node, hb.node, with_for_update=True)
            if node is None:
                return None
            if node.last_hb_bno is not None and hb.bno <= node.last_hb_bno:
                return None
            node.last_hb_bno = hb.bno
            node.last_heartbeat_at = now
            node.software_version = hb.version[:32]
            node.heartbeat = {"streams": {k: v.to_json() for k, v in hb.streams.items()}, "alarms": list(hb.alarms),
                              "epoch": hb.epoch, "downlink_rejected": dict(hb.downlink_rejected)}
            offset = hb.sent_at_ns - hb.mono_ns
            if node.boot_id == hb.boot_id and node.wall_mono_offset_ns is not None and hb.mono_ns:
                jump = offset - node.wall_mono_offset_ns
                if jump <= -2_000_000_000:
                    node.clock_flag = f"wall clock jumped back {-jump / 1e9:.1f} s (heartbeat {hb.bno})"
                    node.clock_flag_at = now
                    log.warning("ingest: node %s: %s", hb.node, node.clock_flag)
            node.boot_id = hb.boot_id[:64]
            node.wall_mono_offset_ns = offset if hb.mono_ns else None
            node.clock_skew_s = round(skew, 3)
            if abs(skew) > self.settings.max_clock_skew_s:
                node.clock_flag = f"clock {skew:+.1f} s off central's (limit {self.settings.max_clock_skew_s:g} s)"
                node.clock_flag_at = now
                log.warning("ingest: node %s: %s", hb.node, node.clock_flag)
            for alarm in hb.alarms:
                log.warning("ingest: node %s reports ALARM: %s", hb.node, alarm)
            store_heads(session, node, hb, now)  # central.fleet.heads: kept as signed, never backwards
            self._report_shortfalls(hb.node, shortfalls(session, node))
            rows = session.query(StreamMark.stream, StreamMark.acked_seq).filter(
                StreamMark.node_id == hb.node, StreamMark.epoch == hb.epoch).all()
            return {stream: int(acked) for stream, acked in rows}

    def _report_shortfalls(self, node: str, found: list[str]) -> None:
        """Log what central lacks of a node's signed heads when it changes (the alert is ``integrity``'s)."""
        now = tuple(found)
        if now == self._shortfalls.get(node, ()):
            return
        for text in now:
            log.warning("ingest: INTEGRITY: %s", text)
        if not now:
            log.info("ingest: node %s: central holds everything its signed heads name again", node)
        self._shortfalls[node] = now

    async def _write_backlog_points(self, hb: Heartbeat) -> None:
        points = []
        for stream, b in hb.streams.items():
            fields: dict[str, float] = {"pending": float(b.pending), "head": float(b.head), "acked": float(b.acked),
                                        "lost": float(b.lost)}
            if b.oldest_age_s is not None:
                fields["oldest_age_s"] = float(b.oldest_age_s)
            points.append(Point("node_backlog", {"node": hb.node, "stream": stream}, fields, hb.sent_at_ns))
        try:
            await asyncio.to_thread(self.store.write, points)
        except MetricsStoreError as exc:
            log.debug("ingest: backlog of %s not written to the metrics store: %s", hb.node, exc)

    async def _check_gap(self, hb: Heartbeat, stream: str, head: int, mark: int) -> None:
        key = (hb.node, hb.epoch, stream)
        if mark >= head:
            self._gaps.pop(key, None)
            return
        now = time.monotonic()
        seen = self._gaps.get(key)
        if seen is None or seen[0] != mark:
            self._gaps[key] = (mark, now)  # behind, but moving (or new): give it time
            return
        if now - seen[1] < self.settings.replay_after_s:
            return
        self._gaps[key] = (mark, now)
        self.counters.replays_requested += 1
        reason = (f"central holds {stream} up to seq {mark}, the node's head is {head}; no progress for "
                  f"{now - seen[1]:.0f} s")
        log.warning("ingest: asking node %s to replay %s from seq %d: %s", hb.node, stream, mark + 1, reason)
        await asyncio.to_thread(self._count_replay, hb.node, hb.epoch, stream)
        req = Replay(node=hb.node, epoch=hb.epoch, stream=stream, from_seq=mark + 1, reason=reason,
                     **self.signer.stamp())
        await self._publish(replay_topic(hb.node), encode_replay(req, signer=self.signer),
                            f"replay request to {hb.node}")

    def _count_replay(self, node: str, epoch: str, stream: str) -> None:
        with contextlib.suppress(SQLAlchemyError), self.sessions.begin() as session:
            mark = session.get(StreamMark, (node, epoch, stream))
            if mark is not None:
                mark.replays_requested = (mark.replays_requested or 0) + 1
