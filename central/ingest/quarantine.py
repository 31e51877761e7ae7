"""The bounded ingest quarantine: what central could not use is kept for people to look at, within limits.

Anything on the broker can publish on a node's topics, and MQTT does not tell central who published a message, so the
quarantine must not let anonymous traffic fill the database:

* **Sources.** A message that authenticated as an enrolled node (its signature verified — a replayed batch, a
  rejected record, a command result for a command that node was never sent) is charged to that node: ``node:<id>``.
  Everything else — unknown, unsigned or forged messages, malformed node names, unparseable topics — is charged to one
  shared source, ``unauthenticated``, whatever node name the topic claims: varying node names never create new
  sources. The number of sources is therefore bounded by the enrolled nodes (and ``MAX_SOURCES`` besides).
* **Repeats.** The same trouble from the same source again within ``REPEAT_S`` is counted (``quarantine_repeats``),
  not stored and not charged; the node name claimed by the topic is taken out of the reason first, so "node 'x…' is
  not enrolled" from a thousand names is one trouble. Only a claimed name that is an enrolled node's keeps its
  troubles apart from the others' (a bounded set: two enrolled nodes sending unsigned batches are two troubles).
  At most ``MAX_REPEAT_KEYS`` troubles are remembered.
* **Limits.** Per source two token buckets, refilled continuously: stored messages
  (``ingest.quarantine_rate_per_min``, burst one minute's worth) and stored bytes (``ingest.quarantine_bytes_per_min``,
  counted as kept payload + topic + reason). A message beyond either is not stored; it is counted as dropped
  (``rate`` or ``bytes``) and logged once per ``DROP_LOG_S`` per source with the number dropped meanwhile.
* **Size.** A payload up to ``ingest.quarantine_keep_bytes`` is kept whole; a longer one as its first
  ``quarantine_keep_bytes`` bytes with the SHA-256 and size of the whole message and ``payload_truncated`` set — a
  6 MB message costs a few KiB. Topic and reason are clipped too (``MAX_TOPIC``, ``MAX_REASON`` characters).
* **Retention.** Rows older than ``ingest.quarantine_retention_days``, and then the oldest beyond
  ``ingest.quarantine_max_rows``, are deleted by every ingest process every ``ingest.quarantine_prune_every_s`` and
  by ``floorgate central quarantine prune``.

So the table holds at most ``quarantine_max_rows`` rows (plus what came in since the last prune, at most
(enrolled nodes + 1) × ``quarantine_bytes_per_min`` per minute), each at most ``quarantine_keep_bytes`` +
``MAX_TOPIC`` + ``MAX_REASON`` long.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from central.config import IngestSettings
from central.db.models import QuarantineEntry

log = logging.getLogger(__name__)

UNAUTHENTICATED = "unauthenticated"  # the one source of everything that did not authenticate as an enrolled node
REPEAT_S = 10.0  # the same trouble from the same source within this long is counted, not stored
MAX_REPEAT_KEYS = 4096  # troubles remembered for REPEAT_S (oldest forgotten first)
MAX_SOURCES = 10_000  # buckets kept (least recently used forgotten first: a forgotten one starts full)
DROP_LOG_S = 60.0  # drops of one source are logged at most once per this long
MAX_TOPIC = 256  # characters of the topic kept
MAX_REASON = 2048  # characters of the reason kept
DEFAULT_KEEP_BYTES = 4096  # rows written outside the ingest service (apply) keep this much of a payload
PRUNE_CHUNK = 5000  # rows deleted per statement, so a large prune never holds one huge lock

Outcome = Literal["stored", "repeat", "rate", "bytes"]


def node_source(node: str) -> str:
    return f"node:{node}"


def compact(payload: bytes, keep_bytes: int) -> tuple[bytes, str, int, bool]:
    """``(kept, sha256 hex of the whole, size of the whole, truncated)``."""
    digest = hashlib.sha256(payload).hexdigest()
    return payload[:keep_bytes], digest, len(payload), len(payload) > keep_bytes


def entry(*, topic: str, node_id: str | None, reason: str, payload: bytes, source: str | None,
          received_at: datetime | None = None, keep_bytes: int = DEFAULT_KEEP_BYTES) -> QuarantineEntry:
    """A quarantine row: the payload kept whole up to ``keep_bytes``, else its prefix with SHA-256 and size."""
    kept, digest, size, truncated = compact(payload, keep_bytes)
    return QuarantineEntry(
        received_at=received_at or datetime.now(UTC), topic=topic[:MAX_TOPIC],
        node_id=node_id[:64] if node_id else None, reason=reason[:MAX_REASON], payload=kept, payload_sha256=digest,
        payload_size=size, payload_truncated=truncated, source=source)


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; ``take`` spends ``n`` if there are that many."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now

    def can(self, n: float, now: float) -> bool:
        self._refill(now)
        return self.tokens >= n

    def take(self, n: float) -> None:
        self.tokens -= n


@dataclass
class _Source:
    messages: TokenBucket
    bytes: TokenBucket
    dropped: int = 0  # since the last log line
    logged_at: float = float("-inf")


class SourceLimiter:
    """Per-source message and byte budgets (two token buckets each), at most ``max_sources`` of them; thread-safe."""

    def __init__(self, *, messages_per_min: float, bytes_per_min: float, max_sources: int = MAX_SOURCES) -> None:
        self.messages_per_min = messages_per_min
        self.bytes_per_min = bytes_per_min
        self.max_sources = max_sources
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sources)

    def admit(self, source: str, cost_bytes: int, now: float | None = None) -> Literal["ok", "rate", "bytes"]:
        """Charge one message of ``cost_bytes`` to ``source`` if both its budgets allow it; otherwise say which
        budget refused it (nothing is charged then) and log the drops of that source at most once per DROP_LOG_S."""
        now = time.monotonic() if now is None else now
        with self._lock:
            s = self._sources.get(source)
            if s is None:
                s = _Source(TokenBucket(self.messages_per_min, self.messages_per_min / 60.0, now),
                            TokenBucket(self.bytes_per_min, self.bytes_per_min / 60.0, now))
                self._sources[source] = s
                while len(self._sources) > self.max_sources:
                    self._sources.popitem(last=False)
            else:
                self._sources.move_to_end(source)
            verdict: Literal["ok", "rate", "bytes"]
            if not s.messages.can(1, now):
                verdict = "rate"
            elif not s.bytes.can(cost_bytes, now):
                verdict = "bytes"
            else:
                s.messages.take(1)
                s.bytes.take(cost_bytes)
                return "ok"
            s.dropped += 1
            if now - s.logged_at >= DROP_LOG_S:
                log.warning("ingest: quarantine limit of source %s reached (%s: %g messages, %g bytes per minute); "
                            "%d message(s) not stored since the last such line", source, verdict,
                            self.messages_per_min, self.bytes_per_min, s.dropped)
                s.logged_at = now
                s.dropped = 0
            return verdict


class Quarantine:
    """The ingest service's quarantine writer: repeats, limits, compaction, and the periodic prune."""

    def __init__(self, sessions: sessionmaker[Session], settings: IngestSettings, *,
                 enrolled: Callable[[str], bool] | None = None) -> None:
        self.sessions = sessions
        self.settings = settings
        self.enrolled = enrolled or (lambda _node: False)  # is this (claimed) node name an enrolled node's?
        self.limiter = SourceLimiter(messages_per_min=settings.quarantine_rate_per_min,
                                     bytes_per_min=settings.quarantine_bytes_per_min)
        self._seen: OrderedDict[tuple[str, str | None, str], float] = OrderedDict()  # (source, node, trouble) → t
        self._lock = threading.Lock()

    def _repeat(self, key: tuple[str, str | None, str], now: float) -> bool:
        with self._lock:
            while self._seen:  # forget what is older than REPEAT_S (oldest first), and beyond MAX_REPEAT_KEYS
                oldest, at = next(iter(self._seen.items()))
                if now - at < REPEAT_S and len(self._seen) < MAX_REPEAT_KEYS:
                    break
                del self._seen[oldest]
            if key in self._seen:
                return True
            self._seen[key] = now
            return False

    def put(self, topic: str, payload: bytes, reason: str, *, node: str | None = None) -> Outcome:
        """Keep the message unless it is a repeat or beyond its source's limits; ``node`` is given only when the
        message authenticated as that enrolled node (else it is charged to the shared ``unauthenticated`` source).
        A database error is logged; the message is then lost to the quarantine (it changed nothing anyway)."""
        parts = topic.split("/")
        claimed = parts[2][:64] if len(parts) > 2 and parts[2] else None
        source = node_source(node) if node else UNAUTHENTICATED
        trouble = reason.replace(claimed, "…") if claimed else reason
        key = (source, claimed if claimed and self.enrolled(claimed) else None, trouble[:MAX_REASON])
        now = time.monotonic()
        if self._repeat(key, now):
            log.debug("ingest: again on %s: %s", topic[:MAX_TOPIC], reason[:MAX_REASON])
            return "repeat"
        keep = self.settings.quarantine_keep_bytes
        cost = min(len(payload), keep) + len(topic[:MAX_TOPIC]) + len(reason[:MAX_REASON])
        verdict = self.limiter.admit(source, cost, now)
        if verdict != "ok":
            with self._lock:  # not stored: the next one of the same trouble may be
                self._seen.pop(key, None)
            return verdict
        log.error("ingest: quarantined message on %s: %s", topic[:MAX_TOPIC], reason[:MAX_REASON],
                  extra={"topic": topic[:MAX_TOPIC]})
        try:
            with self.sessions.begin() as session:
                session.add(entry(topic=topic, node_id=node or claimed, reason=reason, payload=payload,
                                  source=source, keep_bytes=keep))
        except SQLAlchemyError:
            log.exception("ingest: cannot store quarantined message from %s", topic[:MAX_TOPIC])
        return "stored"

    async def run_pruner(self, on_pruned: Callable[[int], None] | None = None) -> None:
        """Every ``quarantine_prune_every_s`` (first right away): delete what is older than the retention, then the
        oldest beyond ``quarantine_max_rows``."""
        while True:
            try:
                removed = await asyncio.to_thread(
                    prune, self.sessions, timedelta(days=self.settings.quarantine_retention_days),
                    max_rows=self.settings.quarantine_max_rows)
            except SQLAlchemyError as exc:
                log.warning("ingest: quarantine not pruned (database error; next try in %.0f s): %s",
                            self.settings.quarantine_prune_every_s, exc)
            else:
                if removed:
                    log.info("ingest: pruned %d quarantine entr%s (older than %g day(s), or the oldest beyond %d)",
                             removed, "y" if removed == 1 else "ies", self.settings.quarantine_retention_days,
                             self.settings.quarantine_max_rows)
                if on_pruned is not None:
                    on_pruned(removed)
            await asyncio.sleep(self.settings.quarantine_prune_every_s)


@dataclass(frozen=True)
class PruneReport:
    removed: int  # older than the cutoff
    cutoff: datetime
    beyond_max: int = 0  # the oldest of the rest, beyond max_rows

    @property
    def total(self) -> int:
        return self.removed + self.beyond_max


def prune(sessions: sessionmaker[Session], older_than: timedelta, *, now: datetime | None = None,
          max_rows: int | None = None) -> int:
    """Delete the quarantine rows received before ``now - older_than`` and then the oldest beyond ``max_rows``;
    the number removed."""
    return prune_report(sessions, older_than, now=now, max_rows=max_rows).total


def _delete_chunks(sessions: sessionmaker[Session], where: Any, limit: int | None = None) -> int:
    removed = 0
    while limit is None or removed < limit:
        chunk = PRUNE_CHUNK if limit is None else min(PRUNE_CHUNK, limit - removed)
        with sessions.begin() as session:
            q = select(QuarantineEntry.id).order_by(QuarantineEntry.id).limit(chunk)
            ids = list(session.execute(q if where is None else q.where(where)).scalars())
            if not ids:
                break
            session.execute(delete(QuarantineEntry).where(QuarantineEntry.id.in_(ids)))
            removed += len(ids)
    return removed


def prune_report(sessions: sessionmaker[Session], older_than: timedelta, *, now: datetime | None = None,
                 max_rows: int | None = None) -> PruneReport:
    """The prune, in chunks of PRUNE_CHUNK rows (a large prune never holds one huge lock), oldest (lowest id) first."""
    cutoff = (now or datetime.now(UTC)) - older_than
    removed = _delete_chunks(sessions, QuarantineEntry.received_at < cutoff)
    beyond = 0
    if max_rows is not None:
        with sessions() as session:
            count = int(session.execute(select(func.count()).select_from(QuarantineEntry)).scalar_one())
        if count > max_rows:
            beyond = _delete_chunks(sessions, None, count - max_rows)
    return PruneReport(removed, cutoff, beyond)
