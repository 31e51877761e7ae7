"""Findings 1 and 12 against real processes: hostile payloads neither kill nor mislead central or the edge agent.

mosquitto (anonymous listener, as the demo broker), ``floorgate central run`` on PostgreSQL and ``floorgate edge run``
with an MT-SICS weighbridge simulated on a real pseudo-terminal. Before the fix, one 52-byte message — zlib-compressed
JSON nested 5,000 levels deep — ended central (``RecursionError``) on ``…/up/business``, ``…/heartbeat`` and
``…/cmd/result``, for an enrolled node and for a stranger, and ended the edge agent on its ``…/ack`` topic; a batch
signed with the node's own key carrying ``ts_ns`` 2**70 or seq 2**63 raised unhandled errors, and a weight written
in Arabic-Indic digits ("١٢٣") was stored as 123.

Now every such message is refused by the bounded decoder (``sync.bounded``) before the recursive parser runs and lands
in the quarantine with the limit and the field named; the out-of-range values are refused the same way; the
non-ASCII weight is quarantined as a rejected record naming ``data.gross``. Both processes stay up and a real weighing
commanded through the API still reaches central afterwards.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from central.db.engine import make_engine, make_session_factory
from central.db.models import QuarantineEntry
from edge.config import load_config
from sync.envelope import Batch, Record, encode_batch
from sync.signing import load_private_key, sign
from sync.topics import ack_topic, batch_topic, command_result_topic, heartbeat_topic
from tests.api_support import add_api_key
from tests.procs import Proc, central_yaml, enrol, floorgate, node_yaml, wait_until
from tests.services import MosquittoServer, free_port
from tests.weighbridge_support import BridgeThread

pytestmark = pytest.mark.e2e

SETTLED = 7.0  # the weighbridge's clock (tests/e2e/test_commands.py): the first truck stands on the bridge
DEPTH = 5000


def _bombs() -> dict[str, bytes]:
    """The finding's payloads: ~50 bytes on the wire, 10,000+ bytes and 5,000 levels once inflated."""
    return {
        "array": b"Z" + zlib.compress(b"[" * DEPTH + b"]" * DEPTH, 9),
        "object": b"Z" + zlib.compress(b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, 9),
    }


class Client:
    """An anonymous MQTT client on the test's side (anyone on the demo broker)."""

    def __init__(self, mosquitto: MosquittoServer) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        assert connected.wait(5), "no CONNACK from the broker"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _signed_batch(node: str, signer: Callable[[bytes], str], *, seq: int, ts_ns: int, data: dict[str, Any],
                  epoch: str) -> bytes:
    rec = Record(seq=seq, record_id=f"hostile-{seq % 1000}-{ts_ns % 1000}", kind="weighing", ts_ns=ts_ns,
                 device="bridge-1", data=data, mono_ns=1)
    batch = Batch(node=node, epoch=epoch, stream="business", records=(rec,), bno=7 << 32, boot_id="boot-x",
                  sent_at_ns=time.time_ns(), sent_mono_ns=time.monotonic_ns())
    return encode_batch(batch, signer=signer)


def test_hostile_payloads_are_quarantined_and_both_processes_keep_working(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, unique_id: str,
) -> None:
    node, stranger = f"{unique_id}-n", f"{unique_id}-x"
    procs: list[Proc] = []
    api_port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=40)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    sim = BridgeThread([24560])
    client: Client | None = None
    try:
        pty = sim.start()
        central_cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url,
                                   client_id=f"central-{unique_id}", api_port=api_port)
        node_cfg = node_yaml(tmp_path, node_id=node, broker_url=mosquitto.url, devices=[
            {"id": "bridge-1", "type": "mtsics-scale", "address": f"serial://{pty}", "interval_s": 0.1,
             "weighing": {"threshold": 500}}])
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(node_cfg, central_cfg)
        node_key = load_private_key(load_config(node_cfg).key_path)
        api.headers["X-API-Key"] = add_api_key(sessions, "admin")
        central = Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start()
        procs.append(central)
        wait_until("central's ingest connected", lambda: api.get("/health").json()["ingest"].get("connected"),
                   timeout_s=60, procs=procs)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)
        wait_until("bridge-1 known at central", lambda: api.get(
            "/api/v1/devices", params={"node_id": node}).json()["items"], timeout_s=30, procs=procs)
        client = Client(mosquitto)

        # 1. the zlib bombs on every topic central decodes, for the enrolled node and for a stranger
        sent = 0
        for name, bomb in _bombs().items():
            assert len(bomb) < 80, (name, len(bomb))
            for who in (node, stranger):
                for topic in (batch_topic(who, "business"), heartbeat_topic(who), command_result_topic(who)):
                    client.publish(topic, bomb)
                    sent += 1
            # … and on the node's ack topic, which the edge agent decodes
            client.publish(ack_topic(node), bomb)

        # 2. batches signed with the node's own key (a new epoch: the node's real stream is left alone)
        signer = lambda body: sign(node_key, body)  # noqa: E731
        epoch = f"hostile{unique_id}"
        weight = {"gross": "24560", "unit": "kg"}
        huge_ts = _signed_batch(node, signer, seq=1, ts_ns=2**70, data=weight, epoch=epoch)
        huge_seq = _signed_batch(node, signer, seq=2**63, ts_ns=time.time_ns(), data=weight, epoch=epoch)
        arabic = _signed_batch(node, signer, seq=1, ts_ns=time.time_ns(), data={"gross": "١٢٣", "unit": "kg"},
                               epoch=epoch)
        for payload in (huge_ts, huge_seq, arabic):
            client.publish(batch_topic(node, "business"), payload)
        sent += 2  # the third decodes and authenticates: its record is rejected when applied

        # each of the 14 messages was decided on: stored, or counted as a repeat of the same trouble (the bounded
        # quarantine stores one trouble per source once per 10 s) — none was lost to an exception
        def handled() -> dict[str, Any] | None:
            c = api.get("/health").json()["ingest"]
            done = c["quarantined"] + c["quarantine_repeats"] + sum(c["quarantine_dropped"].values())
            return c if done >= sent and c["rejected"] >= 1 else None

        counters = wait_until(f"{sent} quarantine decisions and the rejected record", handled, timeout_s=60,
                              procs=procs)
        assert counters["quarantined"] >= 5, counters  # 3 troubles of the bombs, 2 out-of-range batches
        with sessions() as s:
            rows = list(s.execute(select(QuarantineEntry).order_by(QuarantineEntry.id)).scalars())
        reasons = [(r.topic.rsplit("/", 2)[-2:], r.reason) for r in rows]
        for leaf, prefix in ((["up", "business"], "payload"), (["", "heartbeat"], "heartbeat: payload"),
                             (["cmd", "result"], "command result: payload")):
            assert any(t[-1] == leaf[-1] and reason.startswith(prefix) and "nested deeper than 32 levels" in reason
                       for t, reason in reasons), (leaf, reasons)
        assert any("records[0].ts_ns" in reason and "out of range" in reason for _, reason in reasons), reasons
        assert any("first_seq" in reason and "out of range" in reason for _, reason in reasons), reasons
        gross = next(r for r in rows if "data.gross" in r.reason)
        assert "ASCII" in gross.reason, gross.reason
        assert "١٢٣" in gross.reason, gross.reason
        assert gross.node_id == node
        # the API shows them to an admin, with the reason
        page = api.get("/api/v1/ingest/quarantine", params={"reason": "nested deeper", "limit": 100})
        assert page.status_code == 200, page.text
        assert {i["topic"].rsplit("/", 1)[-1] for i in page.json()["items"]} == {"business", "heartbeat", "result"}
        metrics = api.get("/metrics").text.splitlines()
        assert "floorgate_ingest_unexpected_errors_total 0.0" in metrics, "a payload reached an unforeseen exception"

        # 3. both processes are up and keep working: a weighing commanded now reaches central
        central.check_alive()
        edge.check_alive()
        assert "RecursionError" not in central.log() + edge.log()
        assert "Traceback" not in edge.log(), edge.tail(80)
        sim.t = SETTLED
        r = api.post("/api/v1/commands", json={"node_id": node, "device_id": "bridge-1", "command": "weigh",
                                              "args": {"reference": "after-the-attack"}})
        assert r.status_code == 202, r.text
        done = api.get(f"/api/v1/commands/{r.json()['command_id']}", params={"wait_s": 25}).json()
        assert done["status"] == "succeeded", (done, edge.tail())
        weighing = wait_until("the weighing after the attack at central", lambda: next(
            (w for w in api.get("/api/v1/weighings", params={"node_id": node}).json()["items"]
             if w["record_id"] == done["result"]["record_id"]), None), timeout_s=30, procs=procs)
        assert (weighing["gross"], weighing["reference"]) == ("24560", "after-the-attack")
        stored = api.get("/api/v1/weighings", params={"node_id": node}).json()["items"]
        assert all(w["gross"] != "123" for w in stored), stored
        central.check_alive()
        edge.check_alive()
    finally:
        if client is not None:
            client.close()
        for p in reversed(procs):
            p.stop()
        sim.stop()
        api.close()
        engine.dispose()
