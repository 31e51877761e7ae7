"""Central's command dispatcher on real PostgreSQL and a real broker: two dispatchers never send one command twice
(``FOR UPDATE SKIP LOCKED``), commands nobody answered time out, and node results are applied once — a late one is
kept without changing the timeout, one for a command central never sent (or another node's) is refused."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Command
from central.fleet.commands import CommandDispatcher, ResultRejected
from sync.commands import CommandResult, decode_command
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _queue(sessions: sessionmaker[Session], node: str, n: int, *, age_s: float = 0, timeout_s: float = 30,
           command: str = "poll") -> list[str]:
    created = datetime.now(UTC) - timedelta(seconds=age_s)
    rows = [Command(command_id=str(uuid.uuid4()), node_id=node, device_id=None if command == "reload" else "d1",
                    command=command, args={}, status="queued", requested_by="test", created_at=created,
                    timeout_s=timeout_s) for _ in range(n)]
    with sessions.begin() as s:
        s.add_all(rows)
    return [r.command_id for r in rows]


def _rows(sessions: sessionmaker[Session], node: str) -> dict[str, Command]:
    with sessions() as s:
        return {r.command_id: r for r in s.execute(select(Command).where(Command.node_id == node)).scalars()}


class _Broker:
    """A real MQTT client per dispatcher (publish waits for the PUBACK) and one that counts what arrives."""

    def __init__(self, mosquitto: MosquittoServer, topic: str) -> None:
        self.received: list[bytes] = []
        self.clients: list[mqtt.Client] = []
        subscribed = threading.Event()
        spy = self._client(mosquitto)
        spy.on_message = lambda _c, _u, msg: self.received.append(msg.payload)
        spy.on_subscribe = lambda *_: subscribed.set()
        spy.subscribe(topic, qos=1)
        assert subscribed.wait(5)

    def _client(self, mosquitto: MosquittoServer) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect(mosquitto.host, mosquitto.port)
        c.loop_start()
        self.clients.append(c)
        return c

    def publisher(self, mosquitto: MosquittoServer):  # type: ignore[no-untyped-def]
        c = self._client(mosquitto)

        def publish(topic: str, payload: bytes) -> None:
            c.publish(topic, payload, qos=1).wait_for_publish(5)
            time.sleep(0.01)  # widen the window in which both dispatchers hold rows

        return publish

    def close(self) -> None:
        for c in self.clients:
            c.loop_stop()
            c.disconnect()


def test_two_dispatchers_never_send_one_command_twice(sessions: sessionmaker[Session], mosquitto: MosquittoServer,
                                                      unique_id: str) -> None:
    ids = _queue(sessions, unique_id, 40)
    stale = _queue(sessions, unique_id, 2, age_s=60, timeout_s=5)  # its time ran out before it could be sent
    broker = _Broker(mosquitto, f"floorgate/v1/{unique_id}/cmd")
    try:
        dispatchers = [CommandDispatcher(sessions, batch=5) for _ in range(2)]
        publishers = [broker.publisher(mosquitto) for _ in dispatchers]

        def drain(d: CommandDispatcher, publish) -> None:  # type: ignore[no-untyped-def]
            while any(r.status == "queued" for r in _rows(sessions, unique_id).values()):
                d.dispatch_once(publish)

        threads = [threading.Thread(target=drain, args=(d, p)) for d, p in zip(dispatchers, publishers, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        deadline = time.monotonic() + 10
        while len(broker.received) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # a second copy of any would have arrived by now
    finally:
        broker.close()
    sent = Counter(decode_command(p).command_id for p in broker.received)
    assert sent == Counter(ids), "each queued command exactly once, the stale ones never"
    assert all(d.sent > 0 for d in dispatchers), [d.sent for d in dispatchers]
    assert sum(d.sent for d in dispatchers) == len(ids)
    rows = _rows(sessions, unique_id)
    assert {rows[i].status for i in ids} == {"sent"}
    assert all(rows[i].sent_at is not None for i in ids)
    assert [(rows[i].status, rows[i].error) for i in stale] == [
        ("timeout", "not sent: central could not reach the broker before the timeout")] * 2
    cmd = decode_command(next(p for p in broker.received if decode_command(p).command_id == ids[0]))
    assert cmd.expires_at_ns - cmd.issued_at_ns == 30 * 10**9  # the node stops caring when central does


def test_a_broker_that_refuses_leaves_the_command_queued(sessions: sessionmaker[Session], unique_id: str) -> None:
    ids = _queue(sessions, unique_id, 3)

    def refuse(topic: str, payload: bytes) -> None:
        raise ConnectionError("ingest is not connected")

    assert CommandDispatcher(sessions).dispatch_once(refuse) == 0
    assert {r.status for r in _rows(sessions, unique_id).values()} == {"queued"}
    assert len(ids) == 3


def test_a_row_no_node_could_take_is_rejected_and_does_not_block_the_queue(sessions: sessionmaker[Session],
                                                                           unique_id: str) -> None:
    (bad,) = _queue(sessions, "bad/node", 1)  # not through the API, which checks node ids
    (good,) = _queue(sessions, unique_id, 1)
    sent: list[str] = []
    CommandDispatcher(sessions).dispatch_once(lambda topic, payload: sent.append(topic))
    assert sent == [f"floorgate/v1/{unique_id}/cmd"]
    row = _rows(sessions, "bad/node")[bad]
    assert row.status == "rejected"
    assert row.error.startswith("cannot be sent: ")
    assert "not a valid node id" in row.error
    assert _rows(sessions, unique_id)[good].status == "sent"


def _result(cid: str, node: str, *, status: str = "succeeded", command: str = "poll", device: str | None = "d1",
            error: str | None = None, **result: object) -> CommandResult:
    return CommandResult(command_id=cid, node=node, command=command, device=device, status=status,
                         result=result, error=error, finished_at_ns=time.time_ns())


def test_results_are_applied_once_late_ones_kept_and_strange_ones_refused(sessions: sessionmaker[Session],
                                                                          unique_id: str) -> None:
    d = CommandDispatcher(sessions)
    answered, refused, late = _queue(sessions, unique_id, 3)
    (old,) = _queue(sessions, unique_id, 1, age_s=10, timeout_s=2)
    d.dispatch_once(lambda topic, payload: None)
    assert d.expire_once() == 0  # the old one timed out as it was claimed (never sent)
    with sessions.begin() as s:  # this one was sent, and its time then ran out
        row = s.execute(select(Command).where(Command.command_id == late)).scalar_one()
        row.created_at = datetime.now(UTC) - timedelta(seconds=31)
    assert d.expire_once() == 1

    assert d.apply_result(_result(answered, unique_id, weight="24560", unit="kg", value=float("nan"))) == "applied"
    assert d.apply_result(_result(refused, unique_id, status="failed", error="scale refused zero: Z I",
                                  answer="Z I")) == "applied"
    assert d.apply_result(_result(answered, unique_id, status="failed", error="again")) == "duplicate"
    assert d.apply_result(_result(late, unique_id, weight="0")) == "late"
    assert d.apply_result(_result(late, unique_id, weight="1")) == "duplicate"

    rows = _rows(sessions, unique_id)
    assert (rows[answered].status, rows[answered].result) == (
        "succeeded", {"weight": "24560", "unit": "kg", "value": None})  # NaN has no place in JSON
    assert rows[answered].answered_at is not None
    assert (rows[refused].status, rows[refused].error) == ("failed", "scale refused zero: Z I")
    assert (rows[late].status, rows[late].result) == ("timeout", {"weight": "0"})
    assert rows[late].error.startswith("no answer from node")
    assert "after the timeout: succeeded" in rows[late].error
    assert rows[old].status == "timeout"

    with pytest.raises(ResultRejected, match="which central never sent"):
        d.apply_result(_result(str(uuid.uuid4()), unique_id))
    with pytest.raises(ResultRejected, match=f"node 'other' answered command {answered}"):
        d.apply_result(_result(answered, "other"))
    with pytest.raises(ResultRejected, match="does not match command"):
        d.apply_result(_result(answered, unique_id, command="tare"))
