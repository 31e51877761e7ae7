"""The uplink: publishes batches of outbox records over MQTT (QoS 1) and releases them only when central
acknowledges them at the application level.

Per stream it keeps a send cursor (``sent_upto``) and a bounded window of unacknowledged batches. A batch that is
not acknowledged within ``ack_timeout_s`` (growing with backoff up to ``retry_max_s``), and every batch after a
reconnect or restart, is sent again from the last acknowledgement — central's inbox makes a resend harmless.
Streams are served in priority order: business, health, readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import aiomqtt

from edge.config import NodeConfig
from edge.mqtt import make_client
from edge.outbox import Outbox
from sync.envelope import Batch, decode_ack, encode_batch
from sync.errors import DecodeError
from sync.streams import STREAMS
from sync.topics import ack_topic, batch_topic

log = logging.getLogger(__name__)


@dataclass
class _StreamState:
    sent_upto: int
    in_flight: deque[tuple[int, float]] = field(default_factory=deque)  # (last_seq, deadline)
    timeouts: int = 0


@dataclass
class UplinkCounters:
    batches_sent: int = 0
    records_sent: int = 0
    resends: int = 0
    acks: int = 0
    bad_acks: int = 0
    connects: int = 0


class Uplink:
    def __init__(self, cfg: NodeConfig, outbox: Outbox) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.wake = asyncio.Event()
        self.connected = False
        self.counters = UplinkCounters()
        self._state: dict[str, _StreamState] = {}
        self._order = sorted(STREAMS, key=lambda s: STREAMS[s].priority)
        self._reset_cursors()

    def _reset_cursors(self) -> None:
        for stream in self._order:
            self._state[stream] = _StreamState(sent_upto=self.outbox.acked_seq(stream))

    async def run(self) -> None:
        delay = self.cfg.uplink.retry_min_s
        client_id = f"floorgate-edge-{self.cfg.node_id}"
        while True:
            try:
                async with make_client(self.cfg.broker, client_id=client_id) as client:
                    self.connected = True
                    self.counters.connects += 1
                    delay = self.cfg.uplink.retry_min_s
                    log.info("uplink connected to %s as %s", self.cfg.broker.url, client_id)
                    self._reset_cursors()  # resend everything not acknowledged
                    await client.subscribe(ack_topic(self.cfg.node_id), qos=1)
                    receiver = asyncio.create_task(self._receive(client))
                    try:
                        await self._send_loop(client)
                    finally:
                        receiver.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await receiver
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("uplink lost the broker: %s", exc)
                else:
                    log.debug("uplink cannot reach the broker %s: %s", self.cfg.broker.url, exc)
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.uplink.retry_max_s)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                ack = decode_ack(payload)
            except DecodeError as exc:
                self.counters.bad_acks += 1
                log.error("uplink: malformed ack on %s: %s", message.topic, exc)
                continue
            if ack.node != self.cfg.node_id or ack.epoch != self.outbox.epoch:
                self.counters.bad_acks += 1
                log.warning(
                    "uplink: ack for node %s epoch %s ignored (we are %s epoch %s)",
                    ack.node, ack.epoch, self.cfg.node_id, self.outbox.epoch,
                )
                continue
            self._on_ack(ack.stream, ack.acked_seq)

    def _on_ack(self, stream: str, acked_seq: int) -> None:
        try:
            released = self.outbox.ack(stream, acked_seq)
        except Exception as exc:
            self.counters.bad_acks += 1
            log.error("uplink: %s", exc)
            return
        self.counters.acks += 1
        st = self._state[stream]
        while st.in_flight and st.in_flight[0][0] <= acked_seq:
            st.in_flight.popleft()
        st.sent_upto = max(st.sent_upto, acked_seq)
        if released:
            st.timeouts = 0
        self.wake.set()

    def _ack_timeout(self, st: _StreamState) -> float:
        up = self.cfg.uplink
        return min(up.ack_timeout_s * (2 ** min(st.timeouts, 10)), max(up.retry_max_s, up.ack_timeout_s))

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        up = self.cfg.uplink
        while True:
            self.wake.clear()
            now = time.monotonic()
            for stream in self._order:
                st = self._state[stream]
                if st.in_flight and st.in_flight[0][1] < now:
                    st.timeouts += 1
                    self.counters.resends += 1
                    acked = self.outbox.acked_seq(stream)
                    log.warning(
                        "uplink: no ack for %s up to seq %d; resending from seq %d",
                        stream, st.in_flight[-1][0], acked + 1,
                    )
                    st.in_flight.clear()
                    st.sent_upto = acked
                while len(st.in_flight) < up.max_in_flight:
                    records = self.outbox.pending(stream, after_seq=st.sent_upto, limit=up.batch_max_records)
                    if not records:
                        break
                    batch = Batch(
                        node=self.cfg.node_id,
                        epoch=self.outbox.epoch,
                        stream=stream,
                        records=tuple(records),
                        sent_at_ns=time.time_ns(),
                    )
                    await client.publish(
                        batch_topic(self.cfg.node_id, stream), encode_batch(batch), qos=1, timeout=up.ack_timeout_s
                    )
                    self.counters.batches_sent += 1
                    self.counters.records_sent += len(records)
                    st.sent_upto = batch.last_seq
                    st.in_flight.append((batch.last_seq, time.monotonic() + self._ack_timeout(st)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.5)
