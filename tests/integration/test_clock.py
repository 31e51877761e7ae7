"""Time at central: order by seq, never by clock — but a node clock that jumps back or is far from central's is
flagged on the node row, and every record keeps the node's wall time, monotonic time + boot id and receive time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.config import BrokerSettings, IngestSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import InboxEntry, Node
from central.fleet.nodes import register_node
from central.ingest.apply import apply_batch
from central.ingest.service import IngestService
from central.metrics import SQLiteMetricsStore
from sync.envelope import Batch, Heartbeat, Record, StreamBacklog
from sync.signing import generate_key, public_key_text

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'central.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _reading(seq: int, ts_ns: int, mono_ns: int) -> Record:
    return Record(seq=seq, record_id=f"r{seq}", kind="device_health", ts_ns=ts_ns, device="m1",
                  data={"counters": {}}, mono_ns=mono_ns)


def test_records_keep_node_wall_and_monotonic_time_boot_id_and_receive_time(
        sessions: sessionmaker[Session]) -> None:
    now = time.time_ns()
    batch = Batch(node="n1", epoch="e1", stream="health", boot_id="boot-a",
                  records=(_reading(1, now, 5_000_000_000), _reading(2, now + 10**9, 6_000_000_000)))
    apply_batch(sessions, batch)
    with sessions() as s:
        rows = s.execute(select(InboxEntry).order_by(InboxEntry.seq)).scalars().all()
        assert [(r.mono_ns, r.boot_id) for r in rows] == [(5_000_000_000, "boot-a"), (6_000_000_000, "boot-a")]
        assert abs(rows[1].device_time.timestamp() - (now + 10**9) / 1e9) < 1e-3
        assert rows[0].received_at is not None
        assert s.get(Node, "n1").clock_flag is None  # wall and monotonic moved together: nothing to flag


def test_a_wall_clock_set_back_within_one_boot_is_flagged(sessions: sessionmaker[Session]) -> None:
    now = time.time_ns()
    # one second later on the monotonic clock, but 30 s earlier on the wall clock: NTP set the clock back
    batch = Batch(node="n1", epoch="e1", stream="health", boot_id="boot-a",
                  records=(_reading(1, now, 5_000_000_000), _reading(2, now - 30 * 10**9, 6_000_000_000)))
    result = apply_batch(sessions, batch)
    assert result.acked_seq == 2  # ordered by seq all the same
    with sessions() as s:
        flag = s.get(Node, "n1").clock_flag
    assert flag is not None
    assert "jumped back 31.0 s" in flag
    assert "seq 1 and 2" in flag


async def test_a_heartbeat_from_a_clock_far_from_centrals_is_flagged(sessions: sessionmaker[Session],
                                                                     tmp_path: Path) -> None:
    register_node(sessions, "n2", public_key_text(generate_key()))
    store = SQLiteMetricsStore(tmp_path / "m.db")
    service = IngestService(BrokerSettings(), sessions, store, settings=IngestSettings(max_clock_skew_s=60))
    streams = {"business": StreamBacklog(head=3, acked=3, pending=0, oldest_age_s=None)}

    def beat(bno: int, skew_s: float) -> Heartbeat:
        return Heartbeat(node="n2", epoch="e1", bno=bno, sent_at_ns=time.time_ns() - int(skew_s * 1e9),
                         mono_ns=time.monotonic_ns(), boot_id="b", version="0.1.0", streams=streams)

    service._record_heartbeat(beat(1, 2.0))
    with sessions() as s:
        node = s.get(Node, "n2")
        assert node.clock_flag is None
        assert 1.5 < node.clock_skew_s < 3
    service._record_heartbeat(beat(2, 300.0))  # five minutes behind: a Pi without RTC before NTP
    with sessions() as s:
        node = s.get(Node, "n2")
        assert 299 < node.clock_skew_s < 302
        assert "off central's" in node.clock_flag
        assert node.heartbeat["streams"]["business"]["head"] == 3
    assert service._record_heartbeat(beat(1, 0.0)) is None  # an older heartbeat arriving late changes nothing
    store.close()
