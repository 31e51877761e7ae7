"""The ingest service: a durable MQTT consumer that applies batches exactly once and acknowledges them.

One worker task per stream, so a slow or unavailable metrics store (readings) never holds up business records.
Within a stream, batches are applied in the order they arrive. A message that cannot be decoded, or whose payload
names another node than its topic, is stored in quarantine with the reason — ingest goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from central.config import BrokerSettings
from central.db.models import QuarantineEntry
from central.ingest.apply import apply_batch
from central.ingest.mqtt import make_client
from central.metrics import MetricsStore, MetricsStoreError
from sync.envelope import Ack, Batch, decode_batch, encode_ack
from sync.errors import DecodeError
from sync.streams import STREAMS
from sync.topics import ack_topic, batch_subscription, parse_batch_topic

log = logging.getLogger(__name__)

PING_TOPIC = "floorgate/v1/_central/ping"  # nobody subscribes: the PUBACK is the answer


@dataclass
class IngestCounters:
    batches: int = 0
    records: int = 0
    duplicates: int = 0
    quarantined: int = 0
    conflicts: int = 0
    rejected: int = 0
    store_failures: int = 0
    db_failures: int = 0
    last_lag_s: float | None = None
    last_batch_at: float | None = None


class IngestService:
    def __init__(
        self, broker: BrokerSettings, sessions: sessionmaker[Session], store: MetricsStore, *,
        client_id: str | None = None,
    ) -> None:
        self.broker = broker
        self.sessions = sessions
        self.store = store
        self.client_id = client_id or broker.client_id
        self.counters = IngestCounters()
        self.connected = False
        self._queues: dict[str, asyncio.Queue[Batch]] = {}
        self._client: aiomqtt.Client | None = None

    async def run(self) -> None:
        self._queues = {s: asyncio.Queue(maxsize=1000) for s in STREAMS}
        workers = [asyncio.create_task(self._worker(s), name=f"ingest:{s}") for s in STREAMS]
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
        while True:
            try:
                async with make_client(self.broker, client_id=self.client_id) as client:
                    self._client = client
                    self.connected = True
                    delay = 0.5
                    await client.subscribe(batch_subscription(), qos=1)
                    log.info("ingest connected to %s as %s", self.broker.url, self.client_id)
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes):
                            payload = str(payload or "").encode()
                        await self._dispatch(str(message.topic), payload)
            except aiomqtt.MqttError as exc:
                log.warning("ingest: broker %s unavailable: %s", self.broker.url, exc)
            finally:
                self.connected = False
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def ping(self, *, timeout_s: float = 2.0) -> float:
        """Round trip to the broker (QoS 1 publish until PUBACK) on the ingest connection, in seconds."""
        client = self._client
        if client is None or not self.connected:
            raise ConnectionError(f"ingest is not connected to {self.broker.url}")
        t0 = time.perf_counter()
        await client.publish(PING_TOPIC, b"", qos=1, timeout=timeout_s)
        return time.perf_counter() - t0

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            node, stream = parse_batch_topic(topic)
            batch = decode_batch(payload)
            if batch.node != node:
                raise DecodeError(f"payload names node {batch.node!r} but was published by {node!r}", field="node")
            if batch.stream != stream:
                raise DecodeError(f"payload is for stream {batch.stream!r}, topic says {stream!r}", field="stream")
        except DecodeError as exc:
            await asyncio.to_thread(self._quarantine, topic, payload, str(exc))
            return
        await self._queues[batch.stream].put(batch)

    def _quarantine(self, topic: str, payload: bytes, reason: str) -> None:
        self.counters.quarantined += 1
        parts = topic.split("/")
        node = parts[2][:64] if len(parts) > 2 else None
        log.error("ingest: quarantined message on %s: %s", topic, reason, extra={"topic": topic})
        try:
            with self.sessions.begin() as session:
                session.add(
                    QuarantineEntry(
                        received_at=datetime.now(UTC), topic=topic, node_id=node, reason=reason, payload=payload
                    )
                )
        except SQLAlchemyError:
            log.exception("ingest: cannot store quarantined message from %s", topic)

    async def _worker(self, stream: str) -> None:
        queue = self._queues[stream]
        while True:
            batch = await queue.get()
            try:
                await self._apply(batch)
            except Exception:
                log.exception("ingest: unexpected failure applying %s %s", batch.node, stream)

    async def _apply(self, batch: Batch) -> None:
        try:
            result = await asyncio.to_thread(apply_batch, self.sessions, batch, write_points=self.store.write)
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
        c = self.counters
        c.batches += 1
        c.records += result.applied
        c.duplicates += result.duplicates
        c.rejected += len(result.rejected)
        c.last_batch_at = time.time()
        if batch.sent_at_ns:
            c.last_lag_s = max(0.0, time.time() - batch.sent_at_ns / 1e9)
        if result.conflicts:
            c.conflicts += len(result.conflicts)
            log.critical(
                "INTEGRITY: node %s epoch %s %s seq %s resent with a different body; the stored records are kept",
                batch.node, batch.epoch, batch.stream, result.conflicts,
            )
        ack = Ack(node=batch.node, epoch=batch.epoch, stream=batch.stream, acked_seq=result.acked_seq,
                  held=result.held)
        client = self._client
        if client is None:
            return  # the node resends; the inbox makes that harmless
        try:
            await client.publish(ack_topic(batch.node), encode_ack(ack), qos=1, timeout=10)
        except aiomqtt.MqttError as exc:
            log.warning("ingest: ack to %s not sent (%s); the node will resend", batch.node, exc)
