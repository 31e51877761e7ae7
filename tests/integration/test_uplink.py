"""The uplink against a real broker: priorities on the wire, persistent sessions that never Clean Start, a replay
request moving the send cursor back, and seqs central holds beyond a gap not sent again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiomqtt
import pytest

from edge.config import parse_config
from edge.store.outbox import NewRecord, Outbox
from edge.uplink.session import Uplink
from sync.envelope import Ack, Replay, decode_batch
from sync.signing import generate_key
from sync.topics import ack_topic, replay_topic
from tests.downlink_support import TRUST, signed_ack, signed_replay
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration


def _setup(tmp_path: Path, mosquitto: MosquittoServer, node: str, **uplink: object) -> tuple[Uplink, Outbox]:
    cfg = parse_config({"node_id": node, "data_dir": str(tmp_path), "broker": {"url": mosquitto.url},
                        "uplink": {"batch_max_records": 50, "max_in_flight": 2, "ack_timeout_s": 1,
                                   "retry_min_s": 0.1, "retry_max_s": 1, **uplink},
                        "heartbeat_interval_s": 60, **TRUST}, source="test")
    outbox = Outbox(tmp_path / "outbox.db", node_id=node)
    for stream, kind in (("readings", "reading"), ("health", "device_health"), ("business", "weighing")):
        outbox.append(stream, [NewRecord(kind=kind, device="d1", data={"i": i}) for i in range(300)])
    return Uplink(cfg, outbox, generate_key()), outbox


async def _collect(mosquitto: MosquittoServer, node: str, got: list[tuple[str, int, int]],
                   ready: asyncio.Event) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"spy-{node}") as spy:
        await spy.subscribe(f"floorgate/v1/{node}/up/+", qos=1)
        ready.set()
        async for msg in spy.messages:
            b = decode_batch(msg.payload)  # type: ignore[arg-type]
            got.append((b.stream, b.first_seq, b.last_seq))


async def test_business_goes_first_and_the_session_is_never_clean(tmp_path: Path, mosquitto: MosquittoServer,
                                                                   unique_id: str) -> None:
    uplink, outbox = _setup(tmp_path, mosquitto, unique_id)
    got: list[tuple[str, int, int]] = []
    ready = asyncio.Event()
    spy = asyncio.create_task(_collect(mosquitto, unique_id, got, ready))
    await ready.wait()
    for start in (1, 2):  # a first start, and a restart that sends everything unacknowledged again
        task = asyncio.create_task(uplink.run())
        for _ in range(100):
            if len(got) >= 6 * start:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    spy.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await spy
    # nobody acknowledges: each stream fills its window of 2 batches, in priority order
    assert [s for s, _, _ in got[:6]] == ["business", "business", "health", "health", "readings", "readings"]
    assert got[:2] == [("business", 1, 50), ("business", 51, 100)]
    assert got[6:8] == got[:2]  # after the restart: again from the last acknowledgement
    connects = [line for line in mosquitto.log_file.read_text().splitlines()
                if f"as floorgate-edge-{unique_id} " in line]
    assert len(connects) == 2, connects
    assert all("p5, c0" in line for line in connects), connects  # MQTT 5, Clean Start 0 — the first time too
    outbox.close()


async def test_replay_request_and_held_seqs(tmp_path: Path, mosquitto: MosquittoServer, unique_id: str) -> None:
    uplink, outbox = _setup(tmp_path, mosquitto, unique_id, max_in_flight=1, ack_timeout_s=30)
    got: list[tuple[str, int, int]] = []
    ready = asyncio.Event()
    spy = asyncio.create_task(_collect(mosquitto, unique_id, got, ready))
    await ready.wait()
    task = asyncio.create_task(uplink.run())

    async def wait_for(pred, what: str) -> None:  # type: ignore[no-untyped-def]
        for _ in range(200):
            if pred():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what}; got {got}")

    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"central-{unique_id}") as central:
        await wait_for(lambda: ("business", 1, 50) in got, "first business batch")
        # central holds 1..50 and, beyond a gap, 101..150: the node must send 51..100 and then go on at 151
        ack = Ack(node=unique_id, epoch=outbox.epoch, stream="business", acked_seq=50,
                  held=tuple(range(101, 151)))
        await central.publish(ack_topic(unique_id), signed_ack(ack), qos=1)
        await wait_for(lambda: ("business", 51, 100) in got, "51..100 after the ack")
        ack = Ack(node=unique_id, epoch=outbox.epoch, stream="business", acked_seq=100,
                  held=tuple(range(101, 151)))
        await central.publish(ack_topic(unique_id), signed_ack(ack), qos=1)
        await wait_for(lambda: ("business", 151, 200) in got, "151..200, skipping what central holds")
        assert not any(s == "business" and first <= 150 and last >= 101 for s, first, last in got)
        # a replay request moves the cursor back to where central says it has a gap
        n = len(got)
        req = Replay(node=unique_id, epoch=outbox.epoch, stream="business", from_seq=101, reason="test")
        await central.publish(replay_topic(unique_id), signed_replay(req), qos=1)
        await wait_for(lambda: ("business", 101, 150) in got[n:], "101..150 again after the replay request")
    assert uplink.counters.replays == 1
    task.cancel()
    spy.cancel()
    for t in (task, spy):
        with contextlib.suppress(asyncio.CancelledError):
            await t
    outbox.close()
