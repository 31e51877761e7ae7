"""The bounded quarantine on a real PostgreSQL: migration 0007 with rows already there, the writer's repeats, limits
and compaction, and the retention prune (``central.ingest.quarantine``)."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text, update

from central.config import IngestSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Base, QuarantineEntry
from central.ingest.quarantine import UNAUTHENTICATED, Quarantine, prune, prune_report

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_migration_0007_hashes_the_rows_already_there_and_goes_back(kind: str, pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = pg_url if kind == "postgresql" else f"sqlite:///{tmp_path / 'central.db'}"
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, "0006")
        old = os.urandom(9_000)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO ingest_quarantine (received_at, topic, node_id, reason, payload) "
                              "VALUES (:at, 'floorgate/v1/x/up/business', 'x', 'old trouble', :p)"),
                         {"at": datetime.now(UTC), "p": old})
        migrate.upgrade(engine)
        with make_session_factory(engine)() as s:
            row = s.execute(select(QuarantineEntry)).scalar_one()
            # kept whole (a migration deletes nothing), with the hash and size of what it holds
            assert (row.payload, row.payload_sha256, row.payload_size, row.payload_truncated, row.source) == (
                old, hashlib.sha256(old).hexdigest(), 9_000, False, None)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if "ingest_quarantine" in repr(d)] == [], diff
        migrate.downgrade(engine, "0006")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM ingest_quarantine")).scalar_one() == 1
        migrate.upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture
def sessions(pg_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _rows(sessions) -> list[QuarantineEntry]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return list(s.execute(select(QuarantineEntry).order_by(QuarantineEntry.id)).scalars())


def test_varying_node_names_share_one_budget_and_an_enrolled_node_keeps_its_own(sessions) -> None:  # type: ignore[no-untyped-def]
    q = Quarantine(sessions, IngestSettings(quarantine_rate_per_min=10))
    outcomes = [q.put(f"floorgate/v1/anon-{i}/up/business", b"{}", f"payload names node 'other-{i}' but was "
                      f"published by 'anon-{i}'") for i in range(300)]
    stored = outcomes.count("stored")
    assert 10 <= stored <= 11, outcomes  # the burst (one minute's worth), + what refilled meanwhile
    assert outcomes.count("rate") == 300 - stored
    # the same trouble under a thousand names is one trouble: a repeat, whatever budget is left
    q2 = Quarantine(sessions, IngestSettings())
    names = [q2.put(f"floorgate/v1/ghost-{i}/up/business", b"{}", f"node 'ghost-{i}' is not enrolled")
             for i in range(50)]
    assert names == ["stored"] + ["repeat"] * 49
    # an authenticated node's trouble goes on its own budget, untouched by the flood
    assert q.put("floorgate/v1/mill-01/up/business", b"{}", "replayed batch 7", node="mill-01") == "stored"
    rows = _rows(sessions)
    assert len(rows) == stored + 2
    assert {r.source for r in rows} == {UNAUTHENTICATED, "node:mill-01"}
    assert rows[-1].node_id == "mill-01"


def test_large_payloads_cost_a_few_kib_and_keep_their_hash_and_size(sessions) -> None:  # type: ignore[no-untyped-def]
    q = Quarantine(sessions, IngestSettings(quarantine_keep_bytes=1024, quarantine_bytes_per_min=1_000_000))
    big = [os.urandom(6_000_000) for _ in range(3)]
    for i, payload in enumerate(big):
        assert q.put(f"floorgate/v1/n{i}/up/business", payload, f"not JSON #{i}") == "stored"
    for row, payload in zip(_rows(sessions), big, strict=True):
        assert (row.payload, row.payload_sha256, row.payload_size, row.payload_truncated) == (
            payload[:1024], hashlib.sha256(payload).hexdigest(), 6_000_000, True)
    with sessions() as s:
        stored = s.execute(select(func.sum(func.length(QuarantineEntry.payload)))).scalar_one()
    assert stored == 3 * 1024


def test_rows_written_directly_are_bounded_too(sessions) -> None:  # type: ignore[no-untyped-def]
    """apply's rejected records and conflicts write QuarantineEntry rows themselves: the model compacts them."""
    payload = b"x" * 100_000
    with sessions.begin() as s:
        s.add(QuarantineEntry(received_at=datetime.now(UTC), topic="n/business", node_id="n", reason="rejected",
                              payload=payload))
    row = _rows(sessions)[0]
    assert (len(row.payload), row.payload_size, row.payload_truncated) == (4096, 100_000, True)
    assert row.payload_sha256 == hashlib.sha256(payload).hexdigest()


def test_prune_removes_what_is_older_than_the_retention_only(sessions) -> None:  # type: ignore[no-untyped-def]
    q = Quarantine(sessions, IngestSettings())
    for i in range(7):
        assert q.put(f"floorgate/v1/n{i}/up/business", b"{}", f"trouble {i}") == "stored"
    now = datetime.now(UTC)
    with sessions.begin() as s:  # five of them 40 days old
        ids = list(s.execute(select(QuarantineEntry.id).order_by(QuarantineEntry.id).limit(5)).scalars())
        s.execute(update(QuarantineEntry).where(QuarantineEntry.id.in_(ids))
                  .values(received_at=now - timedelta(days=40)))
    assert prune(sessions, timedelta(days=30)) == 5
    assert len(_rows(sessions)) == 2
    assert prune(sessions, timedelta(days=30)) == 0
    report = prune_report(sessions, timedelta(0))
    assert report.removed == 2
    assert _rows(sessions) == []


def test_an_enrolled_nodes_trouble_is_its_own_others_are_one(sessions) -> None:  # type: ignore[no-untyped-def]
    """Two enrolled nodes sending unsigned batches are two troubles; a thousand made-up names are one."""
    q = Quarantine(sessions, IngestSettings(), enrolled=lambda n: n in {"mill-01", "mill-02"})
    got = [q.put(f"floorgate/v1/{n}/up/business", b"{}", f"node {n!r}: not signed")
           for n in ("mill-01", "mill-02", "ghost-1", "ghost-2", "mill-01")]
    assert got == ["stored", "stored", "stored", "repeat", "repeat"]


def test_names_that_are_no_nodes_do_not_grow_the_key_cache(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from central.config import BrokerSettings
    from central.fleet.nodes import register_node
    from central.ingest import service
    from sync.signing import generate_key, public_key_text

    monkeypatch.setattr(service, "MAX_CACHED_KEYS", 100)
    register_node(sessions, "mill-01", public_key_text(generate_key()))
    ingest = service.IngestService(BrokerSettings(), sessions, store=None)  # type: ignore[arg-type]
    assert ingest._node_key("mill-01") is not None
    for i in range(1_000):
        assert ingest._node_key(f"ghost-{i}") is None
    assert len(ingest._keys) <= 100
    assert len(ingest._revoked) <= 100
    assert ingest._enrolled("mill-01")  # the enrolled node's key is kept
    assert not ingest._enrolled("ghost-999")


def test_prune_keeps_at_most_max_rows_the_newest(sessions) -> None:  # type: ignore[no-untyped-def]
    q = Quarantine(sessions, IngestSettings())
    for i in range(12):
        assert q.put(f"floorgate/v1/n{i}/up/business", b"{}", f"trouble {i}") == "stored"
    newest = [r.id for r in _rows(sessions)][-5:]
    report = prune_report(sessions, timedelta(days=30), max_rows=5)
    assert (report.removed, report.beyond_max) == (0, 7)
    assert [r.id for r in _rows(sessions)] == newest
    assert prune(sessions, timedelta(days=30), max_rows=5) == 0
