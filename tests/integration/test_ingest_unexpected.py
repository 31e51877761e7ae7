"""Central's ingest never lets one message's exception escape: the last safety net of issue 14 (finding 1).

The bounded decoders end every known bad input in ``DecodeError``; this checks what happens when something nobody
foresaw raises anyway (a bug, an input no decoder anticipated): the ingest service against a real broker and a real
Postgres, with a fault injected into the decoding, the authentication of a command result and the applying of one
batch. Each such message is quarantined with the exception as the reason, counted (``unexpected_errors``, also in
``/metrics``) and logged; the service keeps running and the next good batch of the same stream is applied and acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from sqlalchemy import select

import central.ingest.service as service_module
from central.config import BrokerSettings, IngestSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import QuarantineEntry
from central.fleet.nodes import register_node
from central.ingest.service import IngestService
from central.metrics import MetricsSettings, open_store
from sync.envelope import Batch, Heartbeat, Record, decode_ack, encode_batch, encode_heartbeat
from sync.signing import generate_key, public_key_text, sign
from sync.topics import ack_topic, batch_topic, command_result_topic, heartbeat_topic
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
MARK = b"fault-injected"


async def until(what: str, cond: Callable[[], T], timeout_s: float = 15.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await asyncio.to_thread(cond)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _batch(node: str, seq: int, *, data: dict[str, Any]) -> Batch:
    rec = Record(seq=seq, record_id=f"w-{seq}", kind="weighing", ts_ns=1_732_400_000_000_000_000 + seq,
                 device="bridge-1", data=data, mono_ns=seq)
    return Batch(node=node, epoch="e1", stream="business", records=(rec,), bno=(5 << 32) + seq, boot_id="b",
                 sent_at_ns=time.time_ns(), sent_mono_ns=time.monotonic_ns())


def _faulty(real: Callable[..., Any], what: str) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, bytes) and MARK in a for a in args) or any(
                isinstance(a, Batch) and a.records[0].data.get("fault") for a in args):
            raise RuntimeError(f"injected fault in {what}")
        return real(*args, **kwargs)
    return wrapped


@pytest.fixture
async def ingest(pg_url: str, mosquitto: MosquittoServer, tmp_path: Path, unique_id: str,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[IngestService]:
    monkeypatch.setattr(service_module, "decode_batch", _faulty(service_module.decode_batch, "decode_batch"))
    monkeypatch.setattr(service_module, "decode_heartbeat",
                        _faulty(service_module.decode_heartbeat, "decode_heartbeat"))
    monkeypatch.setattr(service_module, "apply_batch", _faulty(service_module.apply_batch, "apply_batch"))
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    store = open_store(MetricsSettings(kind="sqlite", path=tmp_path / "metrics.sqlite"))
    store.ensure_ready()
    service = IngestService(BrokerSettings(url=mosquitto.url), sessions, store, client_id=f"central-{unique_id}",
                            settings=IngestSettings())
    receive = service.commands.receive
    monkeypatch.setattr(service.commands, "receive", _faulty(receive, "commands.receive"))
    task = asyncio.create_task(service.run(), name="ingest")
    try:
        await until("ingest connected", lambda: service.connected)
        yield service
        assert not task.done(), task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
        engine.dispose()


async def test_an_unforeseen_exception_is_quarantined_counted_and_the_ingest_goes_on(
    ingest: IngestService, mosquitto: MosquittoServer, unique_id: str,
) -> None:
    node = f"{unique_id}-n"
    key = generate_key()
    register_node(ingest.sessions, node, public_key_text(key))

    def signed(batch: Batch) -> bytes:
        return encode_batch(batch, signer=lambda body: sign(key, body))

    acks: list[int] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"node-{unique_id}") as client:
        await client.subscribe(ack_topic(node), qos=1)

        async def collect() -> None:
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                acks.append(decode_ack(msg.payload).acked_seq)

        collector = asyncio.create_task(collect())
        try:
            # while decoding a batch, a heartbeat, a command result (the message carries the marker) …
            junk = b'{"v":1,"type":"batch","note":"' + MARK + b'"}'
            await client.publish(batch_topic(node, "business"), junk, qos=1)
            await client.publish(heartbeat_topic(node), junk.replace(b"batch", b"heartbeat"), qos=1)
            await client.publish(command_result_topic(node), junk.replace(b"batch", b"command_result"), qos=1)
            # … and while applying a batch that decoded and authenticated
            await client.publish(batch_topic(node, "business"), signed(_batch(node, 1, data={
                "gross": "1", "unit": "kg", "fault": True})), qos=1)
            await until("four unexpected errors", lambda: ingest.counters.unexpected_errors >= 4)

            # the ingest goes on: the stream's next good batch is applied and acknowledged
            await client.publish(batch_topic(node, "business"), signed(_batch(node, 1, data={
                "gross": "24560", "unit": "kg"})), qos=1)
            await until("the good batch acknowledged", lambda: 1 in acks)
            hb = encode_heartbeat(Heartbeat(
                node=node, epoch="e1", bno=9 << 32, sent_at_ns=time.time_ns(), mono_ns=1, boot_id="b",
                version="t", streams={}), signer=lambda body: sign(key, body))
            await client.publish(heartbeat_topic(node), hb, qos=1)
            await until("the good heartbeat", lambda: ingest.counters.heartbeats >= 1)
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector

    assert ingest.counters.unexpected_errors == 4
    with ingest.sessions() as s:
        reasons = [r.reason for r in s.execute(select(QuarantineEntry).order_by(QuarantineEntry.id)).scalars()]
    for what in ("batch", "heartbeat", "command result", f"applying {node} business seq 1..1"):
        assert any(r.startswith(f"{what}: unexpected RuntimeError") and "injected fault" in r for r in reasons), \
            (what, reasons)
