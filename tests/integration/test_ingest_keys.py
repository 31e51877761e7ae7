"""Ingest with a fleet CA, against a real broker and a real Postgres: only keys the CA bound sign what central applies.

A batch signed with a key registered without the CA lands in the quarantine naming why; after ``node add --reissue``
(a rotation) the previous key is still accepted for the grace period, so what the agent made before it got its new
bundle is not lost; a revoked key never; a heartbeat and a command result go through the same check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.config import BrokerSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import QuarantineEntry, Weighing
from central.fleet import pki
from central.fleet.nodes import add_node, register_node, revoke_node
from central.ingest.service import IngestService
from central.metrics import MetricsSettings, open_store
from sync.envelope import Batch, Record, encode_batch
from sync.signing import generate_key, load_private_key, public_key_text, sign
from sync.topics import batch_topic
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
BNO = 3 << 32


async def until(what: str, cond: Callable[[], T], timeout_s: float = 15.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await asyncio.to_thread(cond)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _batch(node: str, seq: int, key: Ed25519PrivateKey, *, bno: int) -> bytes:
    rec = Record(seq=seq, record_id=f"w-{seq}", kind="weighing", ts_ns=time.time_ns(), device="bridge-1",
                 data={"gross": f"{1000 + seq}", "unit": "kg"}, mono_ns=seq)
    batch = Batch(node=node, epoch="e1", stream="business", records=(rec,), bno=bno, boot_id="b",
                  sent_at_ns=time.time_ns(), sent_mono_ns=time.monotonic_ns())
    return encode_batch(batch, signer=lambda body: sign(key, body))


@dataclass
class Env:
    service: IngestService
    sessions: sessionmaker[Session]
    ca: pki.CertificateAuthority
    client: aiomqtt.Client
    tmp: Path

    def weighings(self, node: str) -> list[int]:
        with self.sessions() as s:
            return [w.seq for w in s.execute(select(Weighing).where(Weighing.node_id == node)
                                             .order_by(Weighing.seq)).scalars()]

    def reasons(self, node: str) -> list[str]:
        with self.sessions() as s:
            return [q.reason for q in s.execute(select(QuarantineEntry).where(QuarantineEntry.node_id == node)
                                                .order_by(QuarantineEntry.id)).scalars()]

    def add(self, node: str, *, reissue: bool = False) -> Ed25519PrivateKey:
        add_node(self.sessions, self.ca, node, self.tmp / "bundles", reissue=reissue)
        self.service.forget_key(node)  # what KEY_TTL_S does in a running central, without the wait
        return load_private_key(self.tmp / "bundles" / node / "node.key")

    async def send(self, node: str, seq: int, key: Ed25519PrivateKey, bno: int) -> None:
        await self.client.publish(batch_topic(node, "business"), _batch(node, seq, key, bno=bno), qos=1)


@pytest.fixture
async def env(pg_url: str, mosquitto: MosquittoServer, tmp_path: Path, unique_id: str) -> AsyncIterator[Env]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    store = open_store(MetricsSettings(kind="sqlite", path=tmp_path / "metrics.sqlite"))
    ca = pki.init_ca(tmp_path / "pki")
    service = IngestService(BrokerSettings(url=mosquitto.url), sessions, store, client_id=f"central-{unique_id}",
                            ca_cert=ca.cert)
    task = asyncio.create_task(service.run(), name="ingest")
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"node-{unique_id}") as client:
            await until("the ingest to connect", lambda: service.connected)
            yield Env(service, sessions, ca, client, tmp_path)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
        engine.dispose()


async def test_a_bound_key_is_accepted_an_unbound_one_quarantined_naming_why(env: Env, unique_id: str) -> None:
    bound, unbound = f"{unique_id}-a", f"{unique_id}-b"
    key = env.add(bound)
    loose = generate_key()
    register_node(env.sessions, unbound, public_key_text(loose))  # no CA: the key is not bound
    # the subscription may take a moment after connecting: resend until the first batch is applied
    for i in range(50):
        await env.send(bound, 1, key, BNO + i)
        with contextlib.suppress(AssertionError):
            await until("the bound node's batch", lambda: env.weighings(bound) == [1], timeout_s=0.3)
            break
    assert env.weighings(bound) == [1]
    await env.send(unbound, 1, loose, BNO)
    (reason,) = await until("the unbound node's batch in quarantine", lambda: env.reasons(unbound))
    assert f"node '{unbound}': its key " in reason
    assert "is not bound by the fleet CA (" in reason
    assert "no statement of the fleet CA" in reason
    assert env.weighings(unbound) == []


async def test_after_a_reissue_the_old_key_is_accepted_for_the_grace_period_a_revoked_key_never(
        env: Env, unique_id: str) -> None:
    node = f"{unique_id}-r"
    old = env.add(node)
    for i in range(50):
        await env.send(node, 1, old, BNO + i)
        with contextlib.suppress(AssertionError):
            await until("the first batch", lambda: env.weighings(node) == [1], timeout_s=0.3)
            break
    new = env.add(node, reissue=True)
    await env.send(node, 2, old, BNO + 100)  # made before the agent got its new bundle
    await until("the old key's batch after the rotation", lambda: env.weighings(node) == [1, 2])
    await env.send(node, 3, new, BNO + 101)
    await until("the new key's batch", lambda: env.weighings(node) == [1, 2, 3])
    assert env.reasons(node) == []

    revoke_node(env.sessions, env.ca, node, reason="device stolen")
    env.service.forget_key(node)
    await env.send(node, 4, new, BNO + 102)
    (reason,) = await until("the revoked node's batch in quarantine", lambda: env.reasons(node))
    assert "is revoked" in reason
    assert env.weighings(node) == [1, 2, 3]
