"""Findings 2 and 3 (and the stuck stream of "What to build") against real processes: nothing but central's signed
word makes a node delete, replay or act.

mosquitto (anonymous listener, as the demo broker: anyone may publish on a node's topics), ``floorgate central run``
on PostgreSQL and ``floorgate edge run`` with an MT-SICS weighbridge simulated on a real pseudo-terminal.

Before the fix, with central paused, one anonymous ``ack`` (epoch and head read from the node's heartbeat) made the
node delete its pending records for ever, and an anonymous ``zero`` / ``weigh`` reached the scale (the weigh opened a
ticket). Now the node verifies every downlink message (``sync.downlink``): forged, replayed and misdirected ones
change nothing, are counted by reason in the node's ``/health``, ``/metrics`` and heartbeat (and so in central's
``/health``), and every record still reaches central exactly once. A node that holds records acknowledged beyond
central's mark (here: central's mark deleted, as after a restore from an older backup) makes central's ``/health``
say the stream is stuck, and honours central's replay request from what it still has.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa

from central.db.engine import make_engine, make_session_factory
from edge.store.outbox import read_stats
from protocols.sim.load import Phase
from sync.commands import Command, encode_command
from sync.downlink import DownlinkSigner
from sync.envelope import Ack, Replay, decode_heartbeat, encode_ack, encode_replay
from sync.signing import generate_key, load_private_key
from sync.topics import ack_topic, command_result_topic, command_topic, heartbeat_topic, replay_topic
from tests.api_support import add_api_key
from tests.procs import Proc, central_yaml, enrol, floorgate, node_yaml, wait_until
from tests.services import MosquittoServer, free_port
from tests.weighbridge_support import BridgeThread

pytestmark = pytest.mark.e2e

TRUCKS = [20000 + 1000 * i for i in range(12)]


class Anonymous:
    """An MQTT client without credentials: listens to a node's topics and publishes whatever it likes."""

    def __init__(self, mosquitto: MosquittoServer, *topics: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._got
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        self.client.subscribe([(t, mqtt.SubscribeOptions(qos=1)) for t in topics])
        assert subscribed.wait(5), "no SUBACK from the broker"

    def _got(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Plant:
    tmp: Path
    node: str
    sim: BridgeThread
    central_cfg: Path
    node_cfg: Path
    api: httpx.Client
    node_http: httpx.Client
    sessions: Any
    procs: list[Proc] = field(default_factory=list)
    central: Proc | None = None
    scale_lines: list[bytes] = field(default_factory=list)
    visit: int = 0

    def start_central(self) -> None:
        self.central = Proc("central", ["central", "run", "--config", str(self.central_cfg)], self.tmp).start()
        self.procs.append(self.central)
        wait_until("central API", lambda: self._ok(self.api, "/health"), timeout_s=30, procs=self.procs)

    def stop_central(self) -> None:
        assert self.central is not None
        self.central.stop()
        self.procs.remove(self.central)

    @staticmethod
    def _ok(client: httpx.Client, path: str) -> bool:
        try:
            return client.get(path).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def health(self) -> dict[str, Any]:
        return self.node_http.get("/health").json()  # type: ignore[no-any-return]

    def rejected(self) -> dict[str, int]:
        return self.health()["downlink"]["rejected"]  # type: ignore[no-any-return]

    def business(self) -> tuple[int, int, int]:
        """(produced, acked, pending) of the node's business stream, from its outbox."""
        _, stats = read_stats(self.tmp / "edge" / "outbox.db")
        s = stats["business"]
        return s.produced, s.acked, s.pending

    def weighing(self) -> int:
        """A truck drives on and stands: the node records one weighing. Returns the new business head."""
        before = self.business()[0]
        self.sim.at(self.visit, Phase.SETTLED)
        head = wait_until("a weighing recorded by the node", lambda: (p if (p := self.business()[0]) > before
                                                                       else None), timeout_s=20, procs=self.procs)
        self.visit += 1
        self.sim.at(self.visit, Phase.EMPTY)
        polls = len(self.scale_lines)  # the node must see the bridge empty before the next truck counts
        wait_until("the node polling the empty bridge", lambda: len(self.scale_lines) >= polls + 5, timeout_s=10,
                   procs=self.procs)
        return head

    def central_weighings(self) -> list[str]:
        with self.sessions() as s:
            return [r[0] for r in s.execute(sa.text("SELECT record_id FROM weighings WHERE node_id = :n"),
                                            {"n": self.node})]

    def command_ids_in_log(self) -> set[str]:
        with sqlite3.connect(f"file:{self.tmp / 'edge' / 'commands.db'}?mode=ro", uri=True) as db:
            return {r[0] for r in db.execute("SELECT command_id FROM commands")}


@pytest.fixture
def plant(tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, unique_id: str) -> Iterator[Plant]:
    node = f"{unique_id}-n"
    sim = BridgeThread(TRUCKS)
    sim.at(0, Phase.EMPTY)
    lines: list[bytes] = []
    handle = sim.bridge.handle_line
    sim.bridge.handle_line = lambda line: (lines.append(bytes(line)), handle(line))[1]  # type: ignore[method-assign]
    api_port, node_port = free_port(), free_port()
    engine = make_engine(pg_url)
    p: Plant | None = None
    try:
        pty = sim.start()
        central_cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url,
                                   client_id=f"central-{unique_id}", api_port=api_port,
                                   ingest={"replay_after_s": 1})
        node_cfg = node_yaml(tmp_path, node_id=node, broker_url=mosquitto.url,
                             http={"listen": f"127.0.0.1:{node_port}"}, devices=[
                                 {"id": "bridge-1", "type": "mtsics-scale", "address": f"serial://{pty}",
                                  "interval_s": 0.1, "weighing": {"threshold": 500}}])
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(node_cfg, central_cfg)
        sessions = make_session_factory(engine)
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=40,
                           headers={"X-API-Key": add_api_key(sessions, "operator")})
        p = Plant(tmp_path, node, sim, central_cfg, node_cfg, api,
                  httpx.Client(base_url=f"http://127.0.0.1:{node_port}", timeout=10), sessions, scale_lines=lines)
        p.start_central()
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        p.procs.append(edge)
        wait_until("bridge-1 known at central", lambda: api.get(
            "/api/v1/devices", params={"node_id": node}).json()["items"], timeout_s=30, procs=p.procs)
        wait_until("the node's /health", lambda: p._ok(p.node_http, "/health"), timeout_s=20, procs=p.procs)
        yield p
        for proc in p.procs:
            proc.check_alive()  # nothing any message did ended a process
    finally:
        if p is not None:
            for proc in reversed(p.procs):
                proc.stop()
            p.api.close()
            p.node_http.close()
        sim.stop()
        engine.dispose()


def central_signer(plant: Plant) -> DownlinkSigner:
    """Central's real key (its file beside the config): a genuine signature, for messages central would never send
    this node (another node, another epoch) and to deliver one twice."""
    return DownlinkSigner(load_private_key(plant.tmp / "central-signing.key"))


def _stamped(msg: Any, signer: DownlinkSigner) -> Any:
    return replace(msg, **signer.stamp())


def test_forged_replayed_and_misdirected_acks_change_nothing(plant: Plant, mosquitto: MosquittoServer) -> None:
    node = plant.node
    spy = Anonymous(mosquitto, ack_topic(node), heartbeat_topic(node), replay_topic(node))
    try:
        first = plant.weighing()
        wait_until("the first weighing acknowledged", lambda: plant.business()[1] >= first, timeout_s=20,
                   procs=plant.procs)
        genuine_ack = wait_until("a genuine ack seen on the broker", lambda: (a[-1] if (a := spy.on(ack_topic(node)))
                                                                               else None), timeout_s=10)
        plant.stop_central()  # central paused: nobody acknowledges
        for _ in range(3):
            plant.weighing()
        produced, acked, pending = plant.business()
        assert pending >= 3
        assert acked < produced

        # the attacker reads epoch and head from the node's heartbeat, as before the fix
        n = len(spy.on(heartbeat_topic(node)))
        hb = decode_heartbeat(wait_until("a fresh heartbeat", lambda: (h[-1] if len(h := spy.on(
            heartbeat_topic(node))) > n else None), timeout_s=10))
        head = hb.streams["business"].head
        assert head == produced
        ack = Ack(node=node, epoch=hb.epoch, stream="business", acked_seq=head)
        attacker = DownlinkSigner(generate_key())
        signer = central_signer(plant)
        forged = {
            "unsigned ack": encode_ack(ack),
            "ack signed by another key": encode_ack(_stamped(ack, attacker), signer=attacker),
            "another key's signature under central's kid":
                encode_ack(replace(_stamped(ack, attacker), kid=signer.kid), signer=attacker),
            "genuine ack replayed": genuine_ack,
            "central's ack for another epoch": encode_ack(_stamped(replace(ack, epoch="0" * 32), signer),
                                                          signer=signer),
            "central's ack for another node": encode_ack(_stamped(replace(ack, node=f"{node}-x"), signer),
                                                         signer=signer),
            "unsigned replay request": encode_replay(Replay(node=node, epoch=hb.epoch, stream="business",
                                                            from_seq=1)),
        }
        replay = encode_replay(_stamped(Replay(node=node, epoch=hb.epoch, stream="readings", from_seq=1,
                                               reason="test"), signer), signer=signer)
        for what, payload in forged.items():
            topic = replay_topic(node) if "replay" in what and "ack" not in what else ack_topic(node)
            spy.publish(topic, payload)
        spy.publish(replay_topic(node), replay)  # a genuine replay request: taken once …
        spy.publish(replay_topic(node), replay)  # … and refused when delivered again
        expected = {"unsigned": 2, "unknown_key": 1, "bad_signature": 1, "replayed": 2, "wrong_epoch": 1,
                    "wrong_node": 1}
        counts = wait_until("every forgery counted by the node", lambda: (
            r if all((r := plant.rejected()).get(k, 0) >= v for k, v in expected.items()) else None),
            timeout_s=15, procs=plant.procs)
        assert {k: counts[k] for k in expected} == expected, counts
        assert plant.business() == (produced, acked, pending)  # nothing deleted
        metrics = plant.node_http.get("/metrics").text
        assert 'floorgate_edge_downlink_rejected_total{reason="unsigned"} 2.0' in metrics

        # central back: every record arrives, exactly once
        plant.start_central()
        wait_until("the node's backlog drained", lambda: plant.business()[2] == 0, timeout_s=30, procs=plant.procs)
        weighings = plant.central_weighings()
        assert len(weighings) == len(set(weighings)) == produced
        # … and central's /health shows what the node refused (from its heartbeat)
        refused = wait_until("the refusals in central's /health", lambda: plant.api.get("/health").json()
                             ["sync"]["downlink_refused"].get(node), timeout_s=15, procs=plant.procs)
        assert refused["unsigned"] == 2
        assert refused["replayed"] == 2
    finally:
        spy.close()


def test_anonymous_commands_never_reach_the_scale(plant: Plant, mosquitto: MosquittoServer) -> None:
    node = plant.node
    spy = Anonymous(mosquitto, command_result_topic(node))
    try:
        produced_before = plant.business()[0]
        now = time.time_ns()
        zero = Command(command_id=str(uuid.uuid4()), node=node, command="zero", device="bridge-1",
                       issued_at_ns=now, expires_at_ns=now + 60 * 10**9)
        weigh = replace(zero, command_id=str(uuid.uuid4()), command="weigh", args={"reference": "FORGED-4711"})
        attacker = DownlinkSigner(generate_key())
        signer = central_signer(plant)
        stamp = attacker.stamp()
        spy.publish(command_topic(node), encode_command(zero))
        spy.publish(command_topic(node), encode_command(weigh))
        spy.publish(command_topic(node), encode_command(
            replace(zero, command_id=str(uuid.uuid4()), nonce=stamp["nonce"], kid=signer.kid), signer=attacker))
        genuine_stamp = signer.stamp()  # central's signature, another node's command
        spy.publish(command_topic(node), encode_command(
            replace(zero, command_id=str(uuid.uuid4()), node=f"{node}-x", nonce=genuine_stamp["nonce"],
                    kid=signer.kid), signer=signer))
        counts = wait_until("the forged commands counted", lambda: (
            r if (r := plant.rejected())["unsigned"] >= 2 and r["bad_signature"] >= 1 and r["wrong_node"] >= 1
            else None), timeout_s=15, procs=plant.procs)
        assert (counts["unsigned"], counts["bad_signature"], counts["wrong_node"]) == (2, 1, 1)
        assert not any(line.strip() == b"Z" for line in plant.scale_lines)  # the scale never heard a zero
        assert plant.business()[0] == produced_before  # no weighing, so no ticket
        assert zero.command_id not in plant.command_ids_in_log()  # not even taken
        assert weigh.command_id not in plant.command_ids_in_log()
        assert spy.on(command_result_topic(node)) == []  # and not answered

        # central's own command still works
        r = plant.api.post("/api/v1/commands", json={"node_id": node, "device_id": "bridge-1", "command": "zero"})
        assert r.status_code == 202, r.text
        done = plant.api.get(f"/api/v1/commands/{r.json()['command_id']}", params={"wait_s": 25}).json()
        assert (done["status"], done["result"]) == ("succeeded", {"answer": "Z A"}), done
        assert any(line.strip() == b"Z" for line in plant.scale_lines)
    finally:
        spy.close()


def test_a_node_acked_beyond_centrals_mark_is_reported_stuck(plant: Plant) -> None:
    node = plant.node
    head = plant.weighing()
    wait_until("the weighing acknowledged", lambda: plant.business()[1] >= head, timeout_s=20, procs=plant.procs)
    assert plant.api.get("/health").json()["sync"]["stuck_streams"] == []
    # central loses its mark of the business stream (as after a restore from an older backup)
    with plant.sessions.begin() as s:
        s.execute(sa.text("DELETE FROM ingest_marks WHERE node_id = :n AND stream = 'business'"), {"n": node})

    def stuck() -> dict[str, Any] | None:
        r = plant.api.get("/health")
        body = r.json()
        return body if r.status_code == 200 and body["sync"]["stuck_streams"] else None

    body = wait_until("central's /health reporting the stuck stream", stuck, timeout_s=20, procs=plant.procs)
    assert body["status"] == "degraded"
    assert body["sync"]["ok"] is False
    (entry,) = body["sync"]["stuck_streams"]
    assert (entry["node"], entry["stream"], entry["mark"], entry["node_acked"]) == (node, "business", 0, head)
    metrics = plant.api.get("/metrics").text
    assert f'floorgate_sync_stream_stuck_records{{node="{node}",stream="business"}} {float(head)}' in metrics
    # central asks for the stream from seq 1; the node sends what it still has (nothing older than its mark) …
    edge = next(p for p in plant.procs if p.name == "edge")
    wait_until("the node honouring the replay request", lambda: "are no longer on this node: sending what it "
               "still has" in edge.log(), timeout_s=20, procs=plant.procs)
    # … and what comes next still reaches central
    later = plant.weighing()
    wait_until("the next weighing acknowledged", lambda: plant.business()[1] >= later, timeout_s=20,
               procs=plant.procs)
    assert len(plant.central_weighings()) == later
