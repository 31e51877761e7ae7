"""The node's record sink over a real SQLite outbox: business records are stored before ``emit`` returns, readings
and health in grouped commits (at once with ``commit_ms`` 0, sooner when ``MAX_BUFFERED`` wait); every commit calls
``on_stored``; what cannot be stored raises for business records and is counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge.bus.sink import MAX_BUFFERED, OutboxSink
from edge.errors import OutboxError
from edge.store.outbox import NewRecord, Outbox


def reading(n: int) -> NewRecord:
    return NewRecord(kind="reading", device="probe-1", data={"values": {"temperature": float(n)}, "units": {}})


def weighing() -> NewRecord:
    return NewRecord(kind="weighing", device="bridge-1", data={"gross": "24560", "unit": "kg", "stable": True})


def stored(box: Outbox, stream: str) -> int:
    return len(box.pending(stream, after_seq=0, limit=10_000))


@pytest.fixture
def box(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db", node_id="n1")


def test_business_at_once_readings_and_health_at_the_next_commit(box: Outbox) -> None:
    woken: list[int] = []
    sink = OutboxSink(box, commit_ms=200, on_stored=lambda: woken.append(1))
    sink.emit("readings", [reading(1), reading(2)])
    sink.emit("health", [NewRecord(kind="device_status", device="probe-1", data={"status": "online"})])
    assert (stored(box, "readings"), stored(box, "health"), woken) == (0, 0, [])
    sink.emit("business", [weighing()])
    assert (stored(box, "business"), len(woken)) == (1, 1)  # durable before emit returned
    sink.flush()
    assert (stored(box, "readings"), stored(box, "health"), len(woken)) == (2, 1, 3)  # one commit per stream
    sink.flush()
    assert len(woken) == 3  # nothing collected, nothing committed
    box.close()


def test_commit_ms_0_stores_every_record_at_once(box: Outbox) -> None:
    woken: list[int] = []
    sink = OutboxSink(box, commit_ms=0, on_stored=lambda: woken.append(1))
    sink.emit("readings", [reading(1)])
    assert (stored(box, "readings"), len(woken)) == (1, 1)
    box.close()


def test_run_commits_periodically_and_at_once_when_many_wait(box: Outbox) -> None:
    async def scenario() -> None:
        sink = OutboxSink(box, commit_ms=60_000, on_stored=lambda: None)  # the period alone would take a minute
        task = asyncio.create_task(sink.run())
        try:
            sink.emit("readings", [reading(n) for n in range(MAX_BUFFERED)])
            deadline = time.monotonic() + 10
            while stored(box, "readings") < MAX_BUFFERED:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            fast = OutboxSink(box, commit_ms=20, on_stored=lambda: None)
            fast_task = asyncio.create_task(fast.run())
            fast.emit("readings", [reading(1)])
            while stored(box, "readings") < MAX_BUFFERED + 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            fast_task.cancel()
        finally:
            task.cancel()

    asyncio.run(scenario())
    box.close()


def test_what_cannot_be_stored(box: Outbox) -> None:
    sink = OutboxSink(box, commit_ms=200, on_stored=lambda: None)
    sink.emit("readings", [reading(1)])
    box.close()  # every commit fails from now on
    with pytest.raises(OutboxError):
        sink.emit("business", [weighing()])  # the device (or the register) learns it at once
    sink.flush()  # readings and health: logged and counted, never raised
    assert sink.failures == 2
