"""The node's signed heads on the real path: the edge's outbox with its alibi mirror and ``Uplink`` → mosquitto →
central's ``IngestService`` on PostgreSQL, and the ``integrity`` alert rule evaluated by the real ``AlertEvaluator``.

A heartbeat stores the heads with the signed body they came in; the newest alibi entry and its weighing deleted at
central is flagged (alert and an INTEGRITY log line) within one heartbeat and resolves when the entry is back; a TSE
head above what central holds is ``tse_truncated``; an alibi head never goes back within an epoch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session, make_transient, sessionmaker

from central.alerts.config import AlertSettings
from central.alerts.engine import AlertEvaluator
from central.config import BrokerSettings, IngestSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Alert, AlibiEntry, Node, StreamMark, TseHead, TsePin, TseTransaction
from central.fleet.heads import alibi_shortfall
from central.fleet.nodes import register_node
from central.fleet.pki import init_ca
from central.ingest.service import IngestService
from central.metrics import MetricsSettings, open_store
from edge.config import parse_config
from edge.store.alibi import AlibiMirror
from edge.store.outbox import NewRecord, Outbox
from edge.uplink.session import Uplink
from sync.envelope import Heartbeat, decode_heartbeat, encode_heartbeat
from sync.heads import AlibiHead, Heads
from sync.signing import fingerprint, generate_key, public_key_text, sign, verify
from sync.topics import heartbeat_topic
from tests.downlink_support import CENTRAL_KEY, SIGNER, TRUST
from tests.fiscal_support import Register
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
HEARTBEAT_S = 0.3


async def until(what: str, cond: Callable[[], T], timeout_s: float = 20.0) -> T:
    """Poll ``cond`` (in a thread: it queries the database) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = await asyncio.to_thread(cond)
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.05)


@dataclass
class World:
    node: str
    key: Ed25519PrivateKey
    sessions: sessionmaker[Session]
    service: IngestService
    outbox: Outbox
    uplink: Uplink
    evaluator: AlertEvaluator

    def node_row(self) -> Node | None:
        with self.sessions() as s:
            return s.get(Node, self.node)

    def firing(self) -> dict[str, Alert]:
        with self.sessions() as s:
            return {a.subject: a for a in s.execute(select(Alert).where(Alert.state == "firing")).scalars()}

    def resolved(self) -> dict[str, Alert]:
        with self.sessions() as s:
            return {a.subject: a for a in s.execute(select(Alert).where(Alert.state == "resolved")).scalars()}

    def evaluate(self) -> None:
        self.evaluator.evaluate_once()

    def sql(self, statement: str, **params: object) -> None:
        with self.sessions.begin() as s:
            s.execute(text(statement), params)

    def detach(self, model: Any, *where: Any) -> Any:
        """Read a row and cut it loose from the session, to put it back later (``restore``)."""
        with self.sessions() as s:
            row = s.execute(select(model).where(*where)).scalar_one()
            s.expunge(row)
        make_transient(row)
        return row

    def restore(self, row: Any) -> None:
        with self.sessions.begin() as s:
            s.add(row)


@pytest.fixture
async def world(pg_url: str, mosquitto: MosquittoServer, tmp_path: Path, unique_id: str) -> AsyncIterator[World]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    store = open_store(MetricsSettings(kind="sqlite", path=tmp_path / "metrics.sqlite"))
    store.ensure_ready()
    node = unique_id
    key = generate_key()
    register_node(sessions, node, public_key_text(key))
    rules = tmp_path / "alert-rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"name": "tails", "kind": "integrity", "severity": "critical",
                                                "checks": ["alibi_truncated", "tse_truncated"]}]}))
    evaluator = AlertEvaluator(AlertSettings(rules_file=rules), sessions, store)
    service = IngestService(BrokerSettings(url=mosquitto.url), sessions, store, client_id=f"central-{unique_id}",
                            settings=IngestSettings(), signer=SIGNER)
    cfg = parse_config({"node_id": node, "data_dir": str(tmp_path / "edge"), "broker": {"url": mosquitto.url},
                        "uplink": {"ack_timeout_s": 2, "retry_min_s": 0.1, "retry_max_s": 1},
                        "heartbeat_interval_s": HEARTBEAT_S, **TRUST}, source="test")
    outbox = Outbox(tmp_path / "edge" / "outbox.db", node_id=node, alibi=AlibiMirror(node, key))
    uplink = Uplink(cfg, outbox, key, central_keys=[CENTRAL_KEY.public_key()])
    tasks = [asyncio.create_task(service.run(), name="ingest"), asyncio.create_task(uplink.run(), name="uplink")]
    try:
        yield World(node, key, sessions, service, outbox, uplink, evaluator)
    finally:
        for t in reversed(tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        evaluator.close()
        outbox.close()
        store.close()
        engine.dispose()


def _weighing(i: int) -> NewRecord:
    return NewRecord(kind="weighing", device="bridge-1",
                     data={"gross": f"{24000 + i}", "unit": "kg", "stable": True, "raw": f"S S {24000 + i} kg",
                           "trigger": "auto"})


async def test_heads_are_stored_signed_and_a_truncated_alibi_tail_alerts_within_one_heartbeat(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="central.ingest.service")
    world.outbox.append("business", [_weighing(i) for i in range(1, 4)])
    entry = world.outbox.use("read", lambda db: db.execute(
        "SELECT hash, seq FROM alibi WHERE alibi_no = 3").fetchone())

    def stored_heads() -> Node | None:
        row = world.node_row()
        return row if row is not None and row.heads and (row.heads.get("alibi") or {}).get("no") == 3 else None

    node = await until("the heads of a heartbeat after the weighings", stored_heads)
    assert node.heads == {"alibi": {"no": 3, "hash": entry[0], "epoch": world.outbox.epoch, "stream": "business",
                                    "seq": entry[1], "pruned_through": 0, "pruned_hash": None}, "tse": []}
    assert node.heads_at is not None
    assert node.heads_body is not None
    assert node.heads_sig is not None
    # what central kept is the heartbeat the node signed: its body verifies with the node's key and holds the heads
    assert verify(world.key.public_key(), node.heads_body.encode(), node.heads_sig) is None
    body = decode_heartbeat(node.heads_body.encode())
    assert body.heads is not None
    assert body.heads.to_json() == node.heads
    await until("central's mark over the third weighing", lambda: _acked(world) >= entry[1])
    await asyncio.to_thread(world.evaluate)
    assert world.firing() == {}

    # tamper: the newest entry and its weighing disappear from central's database
    kept = await asyncio.to_thread(world.detach, AlibiEntry, AlibiEntry.node_id == world.node,
                                   AlibiEntry.alibi_no == 3)
    await asyncio.to_thread(world.sql, "UPDATE tickets SET first_weighing_id = NULL WHERE first_weighing_id IN "
                            "(SELECT id FROM weighings WHERE node_id = :n AND alibi_no = 3)", n=world.node)
    await asyncio.to_thread(world.sql, "UPDATE tickets SET second_weighing_id = NULL WHERE second_weighing_id IN "
                            "(SELECT id FROM weighings WHERE node_id = :n AND alibi_no = 3)", n=world.node)
    await asyncio.to_thread(world.sql, "DELETE FROM weighings WHERE node_id = :n AND alibi_no = 3", n=world.node)
    await asyncio.to_thread(world.sql, "DELETE FROM alibi_entries WHERE node_id = :n AND alibi_no = 3",
                            n=world.node)
    beats = world.service.counters.heartbeats
    await until("the INTEGRITY warning of the next heartbeat",
                lambda: any("INTEGRITY" in r.getMessage() and "alibi entry 3 missing" in r.getMessage()
                            for r in caplog.records))
    assert world.service.counters.heartbeats - beats <= 2  # the one under way when we deleted, and the next

    def fired() -> Alert | None:
        world.evaluate()
        return world.firing().get(f"{world.node}/alibi")

    alert = await until("the alibi_truncated alert", fired)
    assert alert.rule == "tails"
    assert alert.severity == "critical"
    assert alert.value == 1
    assert "alibi entry 3 missing at central (truncated)" in alert.message, alert.message
    assert alert.details is not None
    assert (alert.details["check"], alert.details["head_no"], alert.details["held_no"]) == ("alibi_truncated", 3, 2)

    # the entry is back (restored from a copy): the alert resolves, the log says so
    await asyncio.to_thread(world.restore, kept)

    def resolved() -> Alert | None:
        world.evaluate()
        return world.resolved().get(f"{world.node}/alibi")

    await until("the alert resolved", resolved)
    assert world.firing() == {}
    await until("the log line that all is held again",
                lambda: any("central holds everything its signed heads name again" in r.getMessage()
                            for r in caplog.records))

    # a signed heartbeat whose alibi head is lower within the same epoch: logged, the kept heads stay
    before = world.node_row()
    assert before is not None
    assert before.heads_body is not None
    low = Heads(alibi=AlibiHead(no=1, hash="b" * 64, epoch=world.outbox.epoch, stream="business", seq=1), tse=())
    hb = Heartbeat(node=world.node, epoch=world.outbox.epoch, bno=(world.outbox.start_no + 1) << 32,
                   sent_at_ns=time.time_ns(), mono_ns=time.monotonic_ns(), boot_id="boot-x", version="0.1.0",
                   streams={}, heads=low)
    assert await world.uplink.publish(heartbeat_topic(world.node),
                                      encode_heartbeat(hb, signer=lambda b: sign(world.key, b)))
    await until("the warning about the head going back",
                lambda: any("below the head 3" in r.getMessage() for r in caplog.records))
    after = world.node_row()
    assert after is not None
    assert (after.heads, after.heads_body, after.heads_sig) == (before.heads, before.heads_body, before.heads_sig)
    assert after.last_hb_bno == hb.bno  # the heartbeat itself was taken


def _acked(world: World) -> int:
    with world.sessions() as s:
        mark = s.get(StreamMark, (world.node, world.outbox.epoch, "business"))
        return int(mark.acked_seq) if mark is not None else 0


async def test_a_tse_head_above_what_central_holds_is_tse_truncated(world: World, tmp_path: Path) -> None:
    register = Register(world.sessions, tmp_path / "tse", node=world.node)
    try:
        sales = [register.sale(f"{n}.50") for n in (12, 3, 7)]
    finally:
        register.close()
    world.outbox.append("business", [NewRecord(kind="tse_transaction", device="tse-1", data=dict(r.data))
                                     for r in sales])
    last = sales[-1].data

    def head() -> TseHead | None:
        with world.sessions() as s:
            row = s.get(TseHead, register.serial)
            return row if row is not None and row.tx_number == last["tx_number"] else None

    row = await until("the TSE head of a heartbeat after central's ack", head)
    assert (row.node_id, row.signature_counter) == (world.node, last["signature_counter"])
    node = world.node_row()
    assert node is not None
    assert node.heads is not None
    assert node.heads["tse"] == [{"serial": register.serial, "tx": last["tx_number"],
                                  "counter": last["signature_counter"]}]
    await asyncio.to_thread(world.evaluate)
    assert world.firing() == {}

    # the last transaction disappears from central's database
    kept = await asyncio.to_thread(world.detach, TseTransaction, TseTransaction.tse_serial == register.serial,
                                   TseTransaction.tx_number == last["tx_number"])
    await asyncio.to_thread(world.sql, "DELETE FROM tse_transactions WHERE tse_serial = :s AND tx_number = :t",
                            s=register.serial, t=last["tx_number"])

    def fired() -> Alert | None:
        world.evaluate()
        return world.firing().get(f"{world.node}/{register.serial}")

    alert = await until("the tse_truncated alert", fired)
    assert alert.details is not None
    assert alert.details["check"] == "tse_truncated"
    assert (alert.details["head_tx"], alert.details["held_tx"]) == (last["tx_number"], last["tx_number"] - 1)
    assert f"TSE {register.serial} transactions missing at central (truncated)" in alert.message
    assert alert.value == 1

    await asyncio.to_thread(world.restore, kept)

    def resolved() -> Alert | None:
        world.evaluate()
        return world.resolved().get(f"{world.node}/{register.serial}")

    await until("the alert resolved", resolved)


# -- the trust anchors: node keys the CA did not bind, TSE rows with a key not pinned, TSEs not confirmed -------------


def test_untrusted_keys_and_unconfirmed_tses_fire_and_resolve(pg_url: str, tmp_path: Path, unique_id: str) -> None:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    store = open_store(MetricsSettings(kind="sqlite", path=tmp_path / "metrics.sqlite"))
    ca = init_ca(tmp_path / "pki")
    bound, unbound = f"{unique_id}-a", f"{unique_id}-b"
    register_node(sessions, bound, public_key_text(generate_key()), ca=ca)
    stray = generate_key()
    register_node(sessions, unbound, public_key_text(stray))  # no CA at hand: registered unbound
    rules = tmp_path / "alert-rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"name": "anchors", "kind": "integrity",
                                                "checks": ["untrusted_key", "tse_unconfirmed"]}]}))
    evaluator = AlertEvaluator(AlertSettings(rules_file=rules), sessions, store, pki_dir=tmp_path / "pki")
    now = datetime.now(UTC)
    serial, forged = "c0ffee" * 10 + "abcd", "0d" * 32
    with sessions.begin() as s:
        s.add(TsePin(tse_serial=serial, public_key="BASE64KEY", status="unconfirmed", source="seen",
                     node_id=bound, device_id="tse-1", first_seen_at=now))
        for tx in (7, 8):
            s.add(TseTransaction(node_id=bound, tse_serial=forged, client_id="KASSE-01", tx_number=tx,
                                 signature_counter=2 * tx, process_type="Kassenbeleg-V1", process_data="Beleg^1.00",
                                 started_at=now, finished_at=now, received_at=now, verified="invalid",
                                 verify_error="untrusted_key: signed with a key that is not TSE's pinned key"))

    def firing() -> dict[str, Alert]:
        with sessions() as s:
            return {a.subject: a for a in s.execute(select(Alert).where(Alert.state == "firing")).scalars()}

    try:
        evaluator.evaluate_once()
        alerts = firing()
        key_subject = f"{unbound}/key/{fingerprint(stray)}"
        assert set(alerts) == {key_subject, f"{bound}/{forged}/untrusted_key", f"{bound}/{serial}/unconfirmed"}
        assert "not anchored in the fleet CA" in alerts[key_subject].message
        assert f"node add {unbound} --reissue" in alerts[key_subject].message
        assert alerts[f"{bound}/{forged}/untrusted_key"].value == 2
        assert "2 transaction(s) of TSE" in alerts[f"{bound}/{forged}/untrusted_key"].message
        assert "no admin or config confirmed it" in alerts[f"{bound}/{serial}/unconfirmed"].message

        # the CA certificate cannot be read: node keys are "no data" — their alert stays, nothing resolves
        evaluator.close()  # (the evaluator lock: one evaluating process at a time)
        evaluator = AlertEvaluator(AlertSettings(rules_file=rules), sessions, store, pki_dir=tmp_path / "nowhere")
        assert evaluator.evaluate_once() is not None
        assert set(firing()) == set(alerts)
        evaluator.close()
        evaluator = AlertEvaluator(AlertSettings(rules_file=rules), sessions, store, pki_dir=tmp_path / "pki")

        # the admin confirms the TSE, the forged rows go, the stray key is replaced by one the CA binds
        with sessions.begin() as s:
            s.get(TsePin, serial).status = "confirmed"  # type: ignore[union-attr]
            s.execute(text("DELETE FROM tse_transactions WHERE tse_serial = :s"), {"s": forged})
            s.execute(text("DELETE FROM node_keys WHERE node_id = :n"), {"n": unbound})
        register_node(sessions, unbound, public_key_text(generate_key()), ca=ca)
        result = evaluator.evaluate_once()
        assert result is not None
        assert result.resolved == 3
        assert firing() == {}
    finally:
        evaluator.close()
        store.close()
        engine.dispose()


def test_the_alibi_shortfall_names_every_run_central_lacks(pg_url: str, unique_id: str) -> None:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    node, epoch, now = unique_id, "e1", datetime.now(UTC)
    register_node(sessions, node, public_key_text(generate_key()))
    head = AlibiHead(no=9, hash="c" * 64, epoch=epoch, stream="business", seq=20)
    with sessions.begin() as s:
        row = s.get(Node, node)
        assert row is not None
        row.heads, row.heads_at = Heads(alibi=head).to_json(), now
        s.add(StreamMark(node_id=node, epoch=epoch, stream="business", acked_seq=19))
        for no in (1, 2, 4, 5, 8):
            s.add(AlibiEntry(node_id=node, alibi_no=no, record_id=f"r{no}", body="{}", prev_hash="0" * 64,
                             hash=f"{no:064x}", sig="s", weighed_at=now, received_at=now))
    try:
        with sessions() as s:
            assert alibi_shortfall(s, node) is None  # the head's record (seq 20) is beyond the mark: in transit
        with sessions.begin() as s:
            s.get(StreamMark, (node, epoch, "business")).acked_seq = 20  # type: ignore[union-attr]
        with sessions() as s:
            short = alibi_shortfall(s, node)
        assert short is not None
        assert (short.missing_count, short.missing_ranges, short.held_no, short.truncated) == (
            4, ((3, 3), (6, 7), (9, 9)), 8, True)
        assert "alibi entries 3, 6…7, 9 missing at central (truncated)" in short.describe()
        with sessions.begin() as s:  # the end is there again; a hole below it stays a finding
            s.add(AlibiEntry(node_id=node, alibi_no=9, record_id="r9", body="{}", prev_hash="0" * 64,
                             hash="c" * 64, sig="s", weighed_at=now, received_at=now))
        with sessions() as s:
            short = alibi_shortfall(s, node)
        assert short is not None
        assert (short.missing_ranges, short.truncated) == (((3, 3), (6, 7)), False)
        assert "alibi entries 3, 6…7 missing at central (removed below the head)" in short.describe()
    finally:
        engine.dispose()
