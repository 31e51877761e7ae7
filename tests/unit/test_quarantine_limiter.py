"""The quarantine's bounds as pure code: token buckets per source, bounded memory, payload compaction, settings."""

from __future__ import annotations

import hashlib
import logging

import pytest

from central.config import IngestSettings
from central.ingest.quarantine import DROP_LOG_S, SourceLimiter, TokenBucket, compact, entry


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    b = TokenBucket(capacity=3, rate=0.5, now=100.0)
    taken = 0
    while b.can(1, 100.0):
        b.take(1)
        taken += 1
    assert taken == 3
    assert not b.can(1, 101.9)  # 0.95 of a token
    assert b.can(1, 102.0)
    assert b.can(3, 1_000.0)
    assert not b.can(3.5, 1_000.0)  # never beyond the capacity


def test_each_source_has_its_own_budget_and_drops_charge_nothing() -> None:
    lim = SourceLimiter(messages_per_min=5, bytes_per_min=100_000)
    t = 50.0
    assert [lim.admit("unauthenticated", 100, t) for _ in range(7)] == ["ok"] * 5 + ["rate"] * 2
    # the shared bucket is empty; an enrolled node's is not touched by it
    assert [lim.admit("node:mill-01", 100, t) for _ in range(5)] == ["ok"] * 5
    assert lim.admit("node:mill-01", 100, t) == "rate"
    # 12 s later one message's worth is back (5 per minute), for each source on its own
    assert lim.admit("unauthenticated", 100, t + 12.0) == "ok"
    assert lim.admit("unauthenticated", 100, t + 12.0) == "rate"
    assert lim.admit("node:mill-01", 100, t + 12.0) == "ok"


def test_the_byte_budget_refuses_what_the_message_budget_would_let_through() -> None:
    lim = SourceLimiter(messages_per_min=1000, bytes_per_min=20_000)
    verdicts = [lim.admit("unauthenticated", 6_000, 0.0) for _ in range(5)]
    assert verdicts == ["ok", "ok", "ok", "bytes", "bytes"]
    assert lim.admit("unauthenticated", 2_000, 0.0) == "ok"  # what is left still fits a small one
    assert lim.admit("unauthenticated", 6_000, 18.0) == "ok"  # 6,000 bytes back after 18 s


def test_memory_is_bounded_whatever_the_number_of_sources() -> None:
    lim = SourceLimiter(messages_per_min=1, bytes_per_min=100_000, max_sources=50)
    for i in range(5_000):
        lim.admit(f"node:n{i}", 10, 0.0)
    assert len(lim) == 50
    # the most recently used stay: the last one is still empty (its second message is refused)
    assert lim.admit("node:n4999", 10, 0.0) == "rate"


def test_drops_are_logged_once_per_window_with_the_number_since_the_last_line(
        caplog: pytest.LogCaptureFixture) -> None:
    lim = SourceLimiter(messages_per_min=1, bytes_per_min=100_000)
    caplog.set_level(logging.WARNING, logger="central.ingest.quarantine")
    lim.admit("unauthenticated", 10, 0.0)
    for i in range(100):
        assert lim.admit("unauthenticated", 10, 0.001 * i) == "rate"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "source unauthenticated reached (rate" in lines[0], lines
    # the next window: one line saying how many were dropped meanwhile (and the bucket is still nearly empty)
    lim.admit("unauthenticated", 10, DROP_LOG_S)  # a token is back: stored
    assert lim.admit("unauthenticated", 10, DROP_LOG_S) == "rate"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "100 message(s) not stored" in lines[1], lines  # 99 silent + this one


def test_a_large_payload_is_kept_as_prefix_hash_and_size_a_small_one_whole() -> None:
    big = bytes(range(256)) * 24_000  # 6 MB
    kept, digest, size, truncated = compact(big, 4096)
    assert (kept, digest, size, truncated) == (big[:4096], hashlib.sha256(big).hexdigest(), len(big), True)
    small = b'{"v":1}'
    assert compact(small, 4096) == (small, hashlib.sha256(small).hexdigest(), 7, False)
    assert compact(b"x" * 4096, 4096)[3] is False  # exactly the limit is whole
    row = entry(topic="floorgate/v1/" + "t" * 70_000, node_id="n" * 100, reason="r" * 10_000, payload=big,
                source="unauthenticated", keep_bytes=1024)
    assert (len(row.payload), row.payload_size, row.payload_truncated) == (1024, len(big), True)
    assert (len(row.topic), len(row.reason), row.node_id) == (256, 2048, "n" * 64)  # all clipped


def test_the_settings_keep_a_row_storable_and_name_the_key() -> None:
    s = IngestSettings()
    assert (s.quarantine_keep_bytes, s.quarantine_retention_days) == (4096, 30.0)
    with pytest.raises(ValueError, match="quarantine_bytes_per_min"):
        IngestSettings(quarantine_bytes_per_min=1000)  # less than one row could ever cost: nothing stored
    with pytest.raises(ValueError, match="quarantine_retention_days"):
        IngestSettings(quarantine_retention_days=0)
