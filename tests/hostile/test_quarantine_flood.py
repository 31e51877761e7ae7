"""Finding 8 against real processes: anonymous MQTT clients cannot flood central's quarantine.

``floorgate central run`` on PostgreSQL behind mosquitto (anonymous listener, as the demo broker). Before the fix,
300 anonymous messages with varying node names made 300 rows (repeats were skipped per node name), ten 6 MB
payloads added 62 MiB (stored whole), and nothing was ever removed. Now everything that does not authenticate as an
enrolled node shares one budget, payloads beyond ``ingest.quarantine_keep_bytes`` are kept as prefix + SHA-256 +
size, and rows older than the retention are pruned (by the ingest process and ``floorgate central quarantine
prune``). A real node's batch still gets through and its own trouble is still kept.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from central.db.engine import make_engine, make_session_factory
from central.db.models import QuarantineEntry, StreamMark
from central.fleet.nodes import register_node
from sync.envelope import Batch, Record, encode_batch
from sync.signing import generate_key, public_key_text, sign
from sync.topics import ack_topic, batch_topic
from tests.api_support import add_api_key
from tests.procs import Proc, central_yaml, floorgate, wait_until
from tests.services import MosquittoServer, free_port

pytestmark = pytest.mark.integration

RATE_PER_MIN = 20  # the configured bound: stored messages per source and minute (burst: one minute's worth)
BNO = 3 << 32


class Client:
    """An MQTT client on the test's side (anonymous, as anyone on the demo broker), collecting what it hears."""

    def __init__(self, mosquitto: MosquittoServer, *subscribe: str) -> None:
        self.heard: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, msg: self.heard.append((msg.topic, msg.payload))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        for topic in subscribe:
            subscribed.clear()
            self.client.subscribe(topic, qos=1)
            assert subscribed.wait(5), "no SUBACK from the broker"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Plant:
    central: Proc
    cfg: Path
    api: httpx.Client
    sessions: sessionmaker[Session]
    mqtt: Client
    node: str
    key: Any

    def ingest(self) -> dict[str, Any]:
        r = self.api.get("/health")
        assert r.status_code in (200, 503), r.text
        return dict(r.json()["ingest"])

    def wait_handled(self, n: int) -> dict[str, Any]:
        """Until the ingest counters account for ``n`` quarantine decisions (stored, repeat or dropped)."""
        def handled() -> dict[str, Any] | None:
            c = self.ingest()
            done = c["quarantined"] + c["quarantine_repeats"] + sum(c["quarantine_dropped"].values())
            return c if done >= n else None
        return wait_until(f"{n} quarantine decisions", handled, timeout_s=120, procs=[self.central])

    def rows(self) -> list[QuarantineEntry]:
        with self.sessions() as s:
            return list(s.execute(select(QuarantineEntry).order_by(QuarantineEntry.id)).scalars())

    def table_bytes(self) -> int:
        with self.sessions() as s:
            return int(s.execute(text("SELECT pg_total_relation_size('ingest_quarantine')")).scalar_one())

    def metrics(self) -> str:
        r = self.api.get("/metrics")
        assert r.status_code == 200, r.text
        return r.text


def _batch(node: str, *, bno: int, seq: int = 1) -> Batch:
    rec = Record(seq=seq, record_id=f"w-{seq}", kind="weighing", ts_ns=1_765_000_000_000_000_000 + seq,
                 device="bridge-1", data={"gross": "24560", "unit": "kg"}, mono_ns=1_000 + seq)
    return Batch(node=node, epoch="e1", stream="business", records=(rec,), bno=bno, boot_id="boot-a",
                 sent_at_ns=time.time_ns(), sent_mono_ns=time.monotonic_ns())


@pytest.fixture
def plant(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str, mosquitto: MosquittoServer,
          unique_id: str) -> Iterator[Plant]:
    api_port = free_port()
    ingest = {"quarantine_rate_per_min": RATE_PER_MIN, "quarantine_bytes_per_min": 1_048_576,
              **getattr(request, "param", {})}
    cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url, client_id=f"central-{unique_id}",
                       api_port=api_port, ingest=ingest)
    migrated = floorgate(["central", "migrate", "--config", str(cfg)])
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    node, key = f"{unique_id}-real", generate_key()
    register_node(sessions, node, public_key_text(key))
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30,
                       headers={"X-API-Key": add_api_key(sessions, "admin")})
    central = Proc("central", ["central", "run", "--config", str(cfg)], tmp_path).start()
    client = None
    try:
        wait_until("central's ingest connected", lambda: api.get("/health").json()["ingest"].get("connected"),
                   timeout_s=60, procs=[central])
        client = Client(mosquitto, ack_topic(node))
        yield Plant(central, cfg, api, sessions, client, node, key)
        central.check_alive()
    finally:
        if client is not None:
            client.close()
        central.stop()
        api.close()
        engine.dispose()


def test_anonymous_flood_with_varying_node_names_stays_within_the_bound(plant: Plant, unique_id: str) -> None:
    started = time.monotonic()
    for _ in range(300):  # each a different node name, and a different trouble (the payload names another node)
        name = f"{unique_id}-{os.urandom(4).hex()}"
        other = f"{unique_id}-o{os.urandom(4).hex()}"  # not containing `name`: that is taken out of the reason
        plant.mqtt.publish(batch_topic(name, "business"), encode_batch(_batch(other, bno=BNO)))
    c = plant.wait_handled(300)
    minutes = (time.monotonic() - started) / 60
    bound = RATE_PER_MIN + int(RATE_PER_MIN * minutes) + 1  # the burst + what refilled during the flood
    rows = plant.rows()
    assert len(rows) <= bound, f"{len(rows)} rows stored from one anonymous flood; the bound is {bound}"
    assert len(rows) == c["quarantined"] >= RATE_PER_MIN
    assert {r.source for r in rows} == {"unauthenticated"}
    assert c["quarantine_dropped"]["rate"] == 300 - c["quarantined"] - c["quarantine_repeats"] > 0
    assert (f'floorgate_ingest_quarantine_dropped_total{{reason="rate"}} {float(c["quarantine_dropped"]["rate"])}'
            in plant.metrics().splitlines())
    assert "quarantine limit of source unauthenticated reached" in plant.central.log()

    # a real node's batch still gets through and is acknowledged: its own budget, and batches are never limited
    plant.mqtt.publish(batch_topic(plant.node, "business"),
                       encode_batch(_batch(plant.node, bno=BNO + 2), signer=lambda b: sign(plant.key, b)))

    def acked() -> bool:
        with plant.sessions() as s:
            mark = s.execute(select(StreamMark.acked_seq).where(StreamMark.node_id == plant.node)).scalar()
        return mark == 1 and any(t == ack_topic(plant.node) for t, _ in plant.mqtt.heard)
    wait_until("the real node's batch applied and acked", acked, timeout_s=30, procs=[plant.central])
    # and its own trouble (a replayed batch: authentic, nothing new) is kept although the shared budget is empty
    plant.mqtt.publish(batch_topic(plant.node, "business"),
                       encode_batch(_batch(plant.node, bno=BNO + 1), signer=lambda b: sign(plant.key, b)))
    kept = wait_until("the node's replayed batch quarantined", lambda: [
        r for r in plant.rows() if r.source == f"node:{plant.node}"], timeout_s=30, procs=[plant.central])
    assert kept[0].node_id == plant.node
    assert "replay" in kept[0].reason.lower()
    page = plant.api.get("/api/v1/ingest/quarantine", params={"node_id": plant.node}).json()["items"]
    assert page[0]["source"] == f"node:{plant.node}"
    plant.central.check_alive()


def test_huge_payloads_cost_a_few_kib_each_and_prune_removes_old_rows(plant: Plant, unique_id: str) -> None:
    before = plant.table_bytes()
    payloads = [os.urandom(6_000_000) for _ in range(10)]
    for i, payload in enumerate(payloads):  # ten troubles (unknown streams), 60 MB in all
        plant.mqtt.publish(f"floorgate/v1/{unique_id}-big/up/junk-{i}", payload)
    c = plant.wait_handled(10)
    assert c["quarantined"] == 10, c
    grown = plant.table_bytes() - before
    assert grown <= 128 * 1024, f"the quarantine table grew by {grown} bytes for ten 6 MB messages"
    rows = plant.rows()
    by_hash = {r.payload_sha256: r for r in rows}
    for payload in payloads:
        row = by_hash[hashlib.sha256(payload).hexdigest()]
        assert (row.payload_size, row.payload_truncated, row.payload) == (6_000_000, True, payload[:4096])
    items = plant.api.get("/api/v1/ingest/quarantine", params={"limit": 50}).json()["items"]
    assert len(items) == 10
    assert all((i["payload_size"], i["payload_truncated"], i["payload_bytes"]) == (6_000_000, True, 4096)
               for i in items)
    assert {i["payload_sha256"] for i in items} == set(by_hash)

    # four of them 40 days old: the retention (30 days) prune of the command removes exactly those
    with plant.sessions.begin() as s:
        s.execute(update(QuarantineEntry).where(QuarantineEntry.id.in_([r.id for r in rows[:4]]))
                  .values(received_at=func.now() - text("interval '40 days'")))
    pruned = floorgate(["central", "quarantine", "prune", "--config", str(plant.cfg)])
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "removed 4 quarantine entries" in pruned.stdout, pruned.stdout
    assert sorted(r.id for r in plant.rows()) == sorted(r.id for r in rows[4:])
    everything = floorgate(["central", "quarantine", "prune", "--older-than", "0", "--config", str(plant.cfg)])
    assert everything.returncode == 0, everything.stderr
    assert "removed 6 quarantine entries" in everything.stdout, everything.stdout
    assert plant.rows() == []
    bad = floorgate(["central", "quarantine", "prune", "--older-than", "-1", "--config", str(plant.cfg)])
    assert bad.returncode == 2
    assert "--older-than" in bad.stderr
    plant.central.check_alive()


@pytest.mark.parametrize("plant", [{"quarantine_prune_every_s": 1, "quarantine_max_rows": 2}], indirect=True)
def test_the_ingest_process_prunes_by_age_and_beyond_max_rows(plant: Plant, unique_id: str) -> None:
    for i in range(3):
        plant.mqtt.publish(f"floorgate/v1/{unique_id}-x/up/junk-{i}", b"{}")
    plant.wait_handled(3)
    # at most quarantine_max_rows stay: the newest
    rows = wait_until("the oldest beyond max_rows pruned", lambda: plant.ingest()["quarantine_pruned"] == 1 and (
        rows := plant.rows()) and len(rows) == 2 and rows, timeout_s=30, procs=[plant.central])
    assert ["'junk-1'" in rows[0].reason, "'junk-2'" in rows[1].reason] == [True, True]  # junk-0 went
    with plant.sessions.begin() as s:  # one of them older than the retention (30 days)
        s.execute(update(QuarantineEntry).where(QuarantineEntry.id == rows[0].id)
                  .values(received_at=func.now() - text("interval '31 days'")))
    wait_until("the ingest process to prune the old one", lambda: plant.ingest()["quarantine_pruned"] == 2,
               timeout_s=30, procs=[plant.central])
    assert [r.id for r in plant.rows()] == [rows[1].id]
    assert "floorgate_ingest_quarantine_pruned_total 2.0" in plant.metrics().splitlines()
