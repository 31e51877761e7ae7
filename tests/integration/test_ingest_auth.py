"""Central's ingest service against a real broker and a real Postgres: only what an enrolled node signed is applied.

Forged, altered, unsigned, foreign and replayed batches land in the quarantine with the reason and change nothing;
a conflicting resend is never an overwrite; a heartbeat whose head stays ahead of central's mark gets a replay
request. Every test uses node ids of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from central.config import BrokerSettings, IngestSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import InboxEntry, Node, QuarantineEntry, StreamMark, Weighing
from central.fleet.nodes import register_node
from central.ingest.service import KEY_REFRESH_S, IngestService
from central.metrics import MetricsSettings, open_store
from sync.envelope import (
    Ack,
    Batch,
    Heartbeat,
    Record,
    Replay,
    StreamBacklog,
    decode_ack,
    decode_replay,
    encode_batch,
    encode_heartbeat,
)
from sync.signing import generate_key, public_key_text, sign
from sync.topics import ack_topic, batch_topic, heartbeat_topic, replay_topic
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
BNO = 7 << 32  # the 7th start of the node


async def until(what: str, cond: Callable[[], T], timeout_s: float = 10.0) -> T:
    """Poll ``cond`` (run in a thread: it may query the database) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await asyncio.to_thread(cond)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def weighing(seq: int, gross: str = "24560") -> Record:
    return Record(seq=seq, record_id=f"w-{seq}-{gross}", kind="weighing", ts_ns=1_732_400_000_000_000_000 + seq,
                  device="bridge-1", data={"gross": gross, "unit": "kg"}, mono_ns=10_000 + seq)


def business(node: str, *records: Record, bno: int, epoch: str = "e1") -> Batch:
    return Batch(node=node, epoch=epoch, stream="business", records=records, bno=bno, boot_id="boot-a",
                 sent_at_ns=time.time_ns(), sent_mono_ns=time.monotonic_ns())


def signed(batch: Batch, key: Ed25519PrivateKey) -> bytes:
    return encode_batch(batch, signer=lambda body: sign(key, body))


@dataclass
class Central:
    service: IngestService
    sessions: sessionmaker[Session]
    mosquitto: MosquittoServer
    client: aiomqtt.Client
    acks: list[Ack] = field(default_factory=list)
    replays: list[Replay] = field(default_factory=list)
    task: asyncio.Task[None] | None = None  # the running service (a test may stop it)

    def enrol(self, node: str) -> Ed25519PrivateKey:
        key = generate_key()
        register_node(self.sessions, node, public_key_text(key))
        return key

    async def publish(self, node: str, payload: bytes, stream: str = "business") -> None:
        await self.client.publish(batch_topic(node, stream), payload, qos=1)

    async def listen(self, node: str) -> None:
        """Collect acks and replay requests sent to ``node`` (call before publishing)."""
        await self.client.subscribe(ack_topic(node), qos=1)
        await self.client.subscribe(replay_topic(node), qos=1)

    def quarantine(self, node: str) -> list[QuarantineEntry]:
        with self.sessions() as s:
            return list(s.execute(select(QuarantineEntry).where(QuarantineEntry.node_id == node)
                                  .order_by(QuarantineEntry.id)).scalars())

    def count(self, model: Any, node: str) -> int:
        with self.sessions() as s:
            return int(s.execute(select(func.count()).select_from(model).where(model.node_id == node)).scalar_one())

    def weighings(self, node: str) -> list[tuple[int, str]]:
        with self.sessions() as s:
            rows = s.execute(select(Weighing).where(Weighing.node_id == node).order_by(Weighing.seq)).scalars()
            return [(w.seq, w.gross_as_delivered) for w in rows]

    async def acked(self, node: str, seq: int) -> Ack:
        return await until(f"an ack of {node} seq {seq}",
                           lambda: next((a for a in self.acks if a.node == node and a.acked_seq >= seq), None))

    async def quarantined(self, node: str, n: int = 1) -> list[QuarantineEntry]:
        return await until(f"{n} quarantine entr(y/ies) of {node}",
                           lambda: (rows if len(rows := self.quarantine(node)) >= n else None))


async def _collect(client: aiomqtt.Client, central: Central) -> None:
    async for msg in client.messages:
        payload = msg.payload
        assert isinstance(payload, bytes)
        if str(msg.topic).endswith("/ack"):
            central.acks.append(decode_ack(payload))
        else:
            central.replays.append(decode_replay(payload))


@pytest.fixture
async def central(pg_url: str, mosquitto: MosquittoServer, tmp_path: Path, unique_id: str) -> AsyncIterator[Central]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    store = open_store(MetricsSettings(kind="sqlite", path=tmp_path / "metrics.sqlite"))
    store.ensure_ready()
    service = IngestService(BrokerSettings(url=mosquitto.url), sessions, store, client_id=f"central-{unique_id}",
                            settings=IngestSettings(replay_after_s=0.5))
    task = asyncio.create_task(service.run(), name="ingest")
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"node-side-{unique_id}") as client:
            c = Central(service, sessions, mosquitto, client, task=task)
            collector = asyncio.create_task(_collect(client, c))
            # ready once the service is subscribed: a junk heartbeat of a probe node comes back as quarantined
            probe = f"{unique_id}-probe"

            async def probed() -> bool:
                await client.publish(heartbeat_topic(probe), b"junk", qos=1)
                with contextlib.suppress(AssertionError):
                    await until("the probe", lambda: service.counters.quarantined, timeout_s=0.5)
                return service.counters.quarantined > 0

            for _ in range(40):
                if await probed():
                    break
            assert service.counters.quarantined == 1, "the ingest service did not subscribe"
            try:
                yield c
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
        engine.dispose()


async def test_a_properly_signed_batch_is_applied_and_acknowledged(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-a"
    key = central.enrol(node)
    await central.listen(node)
    await central.publish(node, signed(business(node, weighing(1), weighing(2, "18420.5"), bno=BNO + 1), key))
    ack = await central.acked(node, 2)
    assert (ack.epoch, ack.stream, ack.acked_seq, ack.held) == ("e1", "business", 2, ())
    assert await asyncio.to_thread(central.weighings, node) == [(1, "24560"), (2, "18420.5")]
    assert await asyncio.to_thread(central.count, InboxEntry, node) == 2
    assert await asyncio.to_thread(central.quarantine, node) == []
    assert (central.service.counters.batches, central.service.counters.records) == (1, 2)


async def test_a_batch_signed_with_another_key_is_quarantined_as_forged(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-b"
    central.enrol(node)
    await central.listen(node)
    payload = signed(business(node, weighing(1), bno=BNO + 1), generate_key())  # not the registered key
    await central.publish(node, payload)
    (entry,) = await central.quarantined(node)
    assert "forged or altered" in entry.reason
    assert entry.topic == batch_topic(node, "business")
    assert entry.payload == payload  # kept as it came, for the auditor
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(central.weighings, node) == []
    assert await asyncio.to_thread(central.count, InboxEntry, node) == 0
    assert await asyncio.to_thread(central.count, StreamMark, node) == 0
    assert [a for a in central.acks if a.node == node] == []
    assert central.service.counters.batches == 0


async def test_an_altered_batch_is_quarantined(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-b2"
    key = central.enrol(node)
    payload = signed(business(node, weighing(1, "1000"), bno=BNO + 1), key)
    assert b'"gross":"1000"' in payload
    await central.publish(node, payload.replace(b'"gross":"1000"', b'"gross":"9000"'))
    (entry,) = await central.quarantined(node)
    assert "forged or altered" in entry.reason
    assert await asyncio.to_thread(central.weighings, node) == []


async def test_an_unsigned_batch_is_quarantined(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-c"
    central.enrol(node)
    await central.publish(node, encode_batch(business(node, weighing(1), bno=BNO + 1)))
    (entry,) = await central.quarantined(node)
    assert "not signed" in entry.reason
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(central.weighings, node) == []
    assert await asyncio.to_thread(central.count, InboxEntry, node) == 0


async def test_a_batch_of_a_node_that_is_not_enrolled_is_quarantined(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-d"
    await central.publish(node, signed(business(node, weighing(1), bno=BNO + 1), generate_key()))
    (entry,) = await central.quarantined(node)
    assert "not enrolled" in entry.reason
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(central.weighings, node) == []
    assert await asyncio.to_thread(central.count, Node, node) == 0  # an unknown node is not made a node


async def test_a_batch_naming_another_node_than_its_topic_is_quarantined(central: Central, unique_id: str) -> None:
    mine, other = f"{unique_id}-e", f"{unique_id}-e2"
    central.enrol(mine)
    other_key = central.enrol(other)
    await central.listen(other)
    # validly signed by the other node, but published below ours
    await central.publish(mine, signed(business(other, weighing(1), bno=BNO + 1), other_key))
    (entry,) = await central.quarantined(mine)
    assert f"payload names node {other!r} but was published by {mine!r}" in entry.reason
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(central.weighings, mine) == []
    assert await asyncio.to_thread(central.weighings, other) == []
    assert await asyncio.to_thread(central.count, InboxEntry, other) == 0
    assert central.acks == []


async def test_a_replayed_old_batch_is_quarantined(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-f"
    key = central.enrol(node)
    await central.listen(node)
    old = signed(business(node, weighing(1), bno=BNO + 1), key)
    await central.publish(node, old)
    await central.acked(node, 1)
    await central.publish(node, signed(business(node, weighing(2), bno=BNO + 2), key))
    await central.acked(node, 2)
    acks_before = len(central.acks)
    await central.publish(node, old)  # captured and sent again by someone
    (entry,) = await central.quarantined(node)
    assert "replayed batch" in entry.reason
    assert f"bno {BNO + 1} is older than bno {BNO + 2}" in entry.reason
    assert central.service.counters.replayed == 1
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(central.weighings, node) == [(1, "24560"), (2, "24560")]
    assert await asyncio.to_thread(central.count, InboxEntry, node) == 2
    assert len(central.acks) == acks_before  # a replay is not answered
    with central.sessions() as s:
        mark = s.get(StreamMark, (node, "e1", "business"))
        assert mark is not None
        assert (mark.acked_seq, mark.records, mark.duplicates, mark.last_bno) == (2, 2, 0, BNO + 2)


async def test_a_conflicting_resend_is_not_applied_and_the_stored_record_stays(central: Central,
                                                                                unique_id: str) -> None:
    node = f"{unique_id}-g"
    key = central.enrol(node)
    await central.listen(node)
    await central.publish(node, signed(business(node, weighing(1, "1000"), bno=BNO + 1), key))
    await central.acked(node, 1)
    # validly signed, newer batch number, same seq, another body
    await central.publish(node, signed(business(node, weighing(1, "9999"), bno=BNO + 2), key))
    await until("the conflict", lambda: central.service.counters.conflicts)
    assert central.service.counters.conflicts == 1
    assert await asyncio.to_thread(central.weighings, node) == [(1, "1000")]
    assert await asyncio.to_thread(central.count, InboxEntry, node) == 1
    (entry,) = await central.quarantined(node)
    assert "integrity conflict: business seq 1" in entry.reason
    assert b'"9999"' in entry.payload
    assert central.service.counters.records == 1


async def test_a_heartbeat_ahead_of_the_mark_gets_a_replay_request(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-h"
    key = central.enrol(node)
    await central.listen(node)
    await central.publish(node, signed(business(node, weighing(1), weighing(2), bno=BNO + 1), key))
    await central.acked(node, 2)

    def heartbeat(bno: int) -> bytes:
        hb = Heartbeat(node=node, epoch="e1", bno=bno, sent_at_ns=time.time_ns(), mono_ns=time.monotonic_ns(),
                       boot_id="boot-a", version="0.1.0", alarms=("device bridge-1 stopped: outbox full",),
                       streams={"business": StreamBacklog(head=5, acked=2, pending=3, oldest_age_s=4.0)})
        return encode_heartbeat(hb, signer=lambda body: sign(key, body))

    await central.client.publish(heartbeat_topic(node), heartbeat(BNO + 2), qos=1)

    def node_row() -> Node | None:
        with central.sessions() as s:
            row = s.get(Node, node)
            return row if row is not None and row.last_heartbeat_at is not None else None

    row = await until("the first heartbeat recorded", node_row)
    assert row.heartbeat is not None
    assert row.heartbeat["streams"]["business"]["head"] == 5
    assert row.heartbeat["epoch"] == "e1"
    assert row.heartbeat["alarms"] == ["device bridge-1 stopped: outbox full"]
    assert row.software_version == "0.1.0"
    assert row.boot_id == "boot-a"
    assert row.last_hb_bno == BNO + 2
    first_at = time.monotonic()
    # a second heartbeat at once: behind, but not yet for replay_after_s (0.5 s)
    await central.client.publish(heartbeat_topic(node), heartbeat(BNO + 3), qos=1)
    await until("the second heartbeat recorded", lambda: (r := node_row()) is not None and r.last_hb_bno == BNO + 3)
    await asyncio.sleep(0.1)
    assert central.replays == []
    await asyncio.sleep(max(0.0, first_at + 0.8 - time.monotonic()))
    await central.client.publish(heartbeat_topic(node), heartbeat(BNO + 4), qos=1)
    replay = await until("a replay request", lambda: central.replays[:1])
    assert (replay[0].node, replay[0].epoch, replay[0].stream, replay[0].from_seq) == (node, "e1", "business", 3)
    assert "up to seq 2" in replay[0].reason
    assert central.service.counters.replays_requested == 1
    with central.sessions() as s:
        mark = s.get(StreamMark, (node, "e1", "business"))
        assert mark is not None
        assert mark.replays_requested == 1
        assert s.get(Node, node).last_hb_bno == BNO + 4  # type: ignore[union-attr]
    assert await asyncio.to_thread(central.quarantine, node) == []


async def test_an_unsigned_heartbeat_is_quarantined_and_not_recorded(central: Central, unique_id: str) -> None:
    node = f"{unique_id}-i"
    central.enrol(node)
    hb = Heartbeat(node=node, epoch="e1", bno=BNO + 1, sent_at_ns=time.time_ns(), mono_ns=time.monotonic_ns(),
                   boot_id="boot-a", version="0.1.0",
                   streams={"business": StreamBacklog(head=5, acked=0, pending=5, oldest_age_s=None)})
    await central.client.publish(heartbeat_topic(node), encode_heartbeat(hb), qos=1)
    (entry,) = await central.quarantined(node)
    assert entry.reason.startswith("heartbeat: ")
    assert "not signed" in entry.reason
    with central.sessions() as s:
        row = s.get(Node, node)
        assert row is not None
        assert (row.last_heartbeat_at, row.heartbeat) == (None, None)
    assert central.service.counters.heartbeats == 0


async def test_a_replaced_node_key_takes_effect_in_a_running_central(central: Central, unique_id: str) -> None:
    """``floorgate central node register`` with a new key (rotation, a stolen key revoked) while ingest runs: the
    new key must be accepted — at the latest after the node resends for a while — and the old one refused."""
    node = f"{unique_id}-k"
    old_key = central.enrol(node)
    await central.listen(node)
    await central.publish(node, signed(business(node, weighing(1), bno=BNO + 1), old_key))
    await central.acked(node, 1)  # the running service has looked up (and keeps) the old key
    new_key = generate_key()
    _, replaced = await asyncio.to_thread(register_node, central.sessions, node, public_key_text(new_key))
    assert replaced is True
    # the node resends (as its uplink does without an ack) with the new key
    deadline = time.monotonic() + KEY_REFRESH_S + 5
    bno = BNO + 2
    while not any(a.node == node and a.acked_seq >= 2 for a in central.acks) and time.monotonic() < deadline:
        await central.publish(node, signed(business(node, weighing(2), bno=bno), new_key))
        bno += 1
        await asyncio.sleep(1.0)
    rejected = [e.reason for e in await asyncio.to_thread(central.quarantine, node)]
    assert await asyncio.to_thread(central.weighings, node) == [(1, "24560"), (2, "24560")], (
        f"a batch signed with the newly registered key was never accepted within {KEY_REFRESH_S + 5:.0f} s: "
        f"the ingest service keeps verifying with the key it cached before the re-registration; quarantined: "
        f"{rejected}")
    # and the replaced key is refused from now on (quarantined, or counted as a repeat within 10 s of the last)
    c = central.service.counters
    before = c.quarantined + c.quarantine_repeats
    await central.publish(node, signed(business(node, weighing(3), bno=bno + 1), old_key))
    await until("the old key's batch to be refused", lambda: c.quarantined + c.quarantine_repeats > before)
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(central.weighings, node) == [(1, "24560"), (2, "24560")]
    assert not any(a.node == node and a.acked_seq >= 3 for a in central.acks)
    assert all("forged or altered" in e.reason for e in await asyncio.to_thread(central.quarantine, node))


async def test_different_troubles_of_a_node_with_a_long_id_are_all_quarantined(central: Central,
                                                                                unique_id: str) -> None:
    """The quarantine keeps the same trouble once per QUARANTINE_REPEAT_S; a forged batch right after an unsigned
    one is another trouble and must be kept, whatever the length of the node id (up to 64 characters)."""
    node = f"{unique_id}-" + "x" * (63 - len(unique_id))
    assert len(node) == 64
    key = central.enrol(node)
    await central.publish(node, encode_batch(business(node, weighing(1), bno=BNO + 1)))  # unsigned
    await central.quarantined(node)
    c = central.service.counters
    before, repeats = c.quarantined + c.quarantine_repeats, c.quarantine_repeats
    await central.publish(node, signed(business(node, weighing(1), bno=BNO + 2), generate_key()))  # forged
    await until("the forged batch to be handled", lambda: c.quarantined + c.quarantine_repeats > before)
    assert c.quarantine_repeats == repeats, (
        "the forged batch was not kept (counted as a repeat of the unsigned one): the repeat key must tell the two "
        "troubles apart whatever the length of the node id")
    reasons = [e.reason for e in await central.quarantined(node, 2)]  # the counter moves before the row is written
    assert "not signed" in reasons[0]
    assert "forged or altered" in reasons[1]
    assert await asyncio.to_thread(central.weighings, node) == []
    # with a short id the same two troubles are both kept (the contrast that shows the cause)
    short = f"{unique_id}-s"
    central.enrol(short)
    await central.publish(short, encode_batch(business(short, weighing(1), bno=BNO + 1)))
    await central.quarantined(short)
    await central.publish(short, signed(business(short, weighing(1), bno=BNO + 2), key))
    assert ["not signed" in e.reason for e in await central.quarantined(short, 2)] == [True, False]


async def test_a_stopping_ingest_finishes_the_batch_in_hand_and_acks_it(central: Central, unique_id: str) -> None:
    """Graceful shutdown: the batch being applied when SIGTERM comes is committed and acknowledged before the
    connection closes (the node need not resend it); the apply is held up here by a row lock on its stream."""
    node = f"{unique_id}-stop"
    key = central.enrol(node)
    await central.listen(node)
    await central.publish(node, signed(business(node, weighing(1), bno=BNO + 1), key))
    await central.acked(node, 1)
    blocker = central.sessions()
    blocker.execute(select(StreamMark).where(StreamMark.node_id == node).with_for_update())  # hold the stream
    try:
        await central.publish(node, signed(business(node, weighing(2), bno=BNO + 2), key))
        await until("the batch to be in hand", lambda: central.service._in_hand)
        assert central.task is not None
        central.task.cancel()  # what SIGTERM does in `floorgate central run`
        await asyncio.sleep(0.5)
        assert not central.task.done(), "ingest stopped without waiting for the batch it was applying"
    finally:
        blocker.rollback()
        blocker.close()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(central.task, 20)
    assert await asyncio.to_thread(central.weighings, node) == [(1, "24560"), (2, "24560")]
    await central.acked(node, 2)
