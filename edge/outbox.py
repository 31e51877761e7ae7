"""The SQLite outbox: every record is committed here, with the next sequence number of its stream, before
anything else happens to it; it stays until central acknowledges it.

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION``; WAL journal)::

    meta    (key PRIMARY KEY, value)                      epoch, node_id, created_ns
    streams (stream PRIMARY KEY, next_seq, acked_seq)      one row per stream
    outbox  (stream, seq, record_id, kind, device, ts_ns, data, created_ns)   PRIMARY KEY (stream, seq)

Business records (``sync.streams`` ``durable``) are committed with ``synchronous=FULL`` — on disk before
``append`` returns; readings and health use ``synchronous=NORMAL`` (WAL keeps them consistent, a power cut may
lose the last ones, never corrupt the order). The ``epoch`` is a random id made with the database: a node whose
disk was replaced gets a new epoch, and central keeps its sequences apart.

Inspect it with the sqlite-utils CLI, e.g. ``sqlite-utils rows outbox.db streams``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import OutboxError
from sync.envelope import Record
from sync.streams import STREAMS

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class NewRecord:
    """A record as a producer hands it in; the outbox assigns ``seq``."""

    kind: str
    device: str
    data: Mapping[str, Any]
    ts_ns: int = field(default_factory=time.time_ns)
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class StreamStats:
    produced: int  # highest seq ever assigned
    acked: int  # highest seq central acknowledged
    pending: int  # records still waiting for an acknowledgement

    @property
    def oldest_pending_seq(self) -> int | None:
        return self.acked + 1 if self.pending else None


class Outbox:
    """Durable, ordered, per-stream record store. Not thread-safe: one agent owns it."""

    def __init__(self, path: str | Path, *, node_id: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._migrate(node_id)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: cannot open: {exc}") from exc
        self.node_id = node_id
        self.epoch: str = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
        self._sync_mode: str | None = None

    def _migrate(self, node_id: str) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {self.path}: schema version {version} is newer than this agent ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            stored = self._db.execute("SELECT value FROM meta WHERE key='node_id'").fetchone()
            if stored and stored[0] != node_id:
                raise OutboxError(
                    f"outbox {self.path} belongs to node {stored[0]!r}, not {node_id!r}: "
                    "use another data_dir or move the file away"
                )
            return
        self._db.execute("BEGIN IMMEDIATE")
        for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
            self._db.execute(stmt)
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?), ('node_id', ?), ('created_ns', ?)",
            (secrets.token_hex(8), node_id, str(time.time_ns())),
        )
        for name in STREAMS:
            self._db.execute("INSERT OR IGNORE INTO streams(stream, next_seq, acked_seq) VALUES (?, 1, 0)", (name,))
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db.execute("COMMIT")

    def _set_sync(self, mode: str) -> None:
        if mode != self._sync_mode:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode

    def append(self, stream: str, items: Sequence[NewRecord]) -> list[Record]:
        """Commit ``items`` to ``stream`` in one transaction and return them with their sequence numbers."""
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        if not items:
            return []
        self._set_sync("FULL" if STREAMS[stream].durable else "NORMAL")
        now = time.time_ns()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (next_seq,) = self._db.execute("SELECT next_seq FROM streams WHERE stream=?", (stream,)).fetchone()
                records = [
                    Record(
                        seq=next_seq + i,
                        record_id=it.record_id,
                        kind=it.kind,
                        ts_ns=it.ts_ns,
                        device=it.device,
                        data=dict(it.data),
                    )
                    for i, it in enumerate(items)
                ]
                self._db.executemany(
                    "INSERT INTO outbox(stream, seq, record_id, kind, device, ts_ns, data, created_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (stream, r.seq, r.record_id, r.kind, r.device, r.ts_ns, json.dumps(r.data), now)
                        for r in records
                    ],
                )
                self._db.execute(
                    "UPDATE streams SET next_seq=? WHERE stream=?", (next_seq + len(records), stream)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: cannot store {len(items)} {stream} record(s): {exc}") from exc
        return records

    def pending(self, stream: str, *, after_seq: int, limit: int) -> list[Record]:
        """Records of ``stream`` with seq > ``after_seq`` that are not acknowledged, oldest first."""
        rows = self._db.execute(
            "SELECT seq, record_id, kind, ts_ns, device, data FROM outbox"
            " WHERE stream=? AND seq>? ORDER BY seq LIMIT ?",
            (stream, after_seq, limit),
        ).fetchall()
        return [
            Record(seq=s, record_id=rid, kind=k, ts_ns=ts, device=d, data=json.loads(data))
            for s, rid, k, ts, d, data in rows
        ]

    def acked_seq(self, stream: str) -> int:
        return int(self._db.execute("SELECT acked_seq FROM streams WHERE stream=?", (stream,)).fetchone()[0])

    def ack(self, stream: str, acked_seq: int) -> int:
        """Central holds everything ≤ ``acked_seq``: forget it. Returns the number of records released.

        An ack beyond what was produced is refused (it cannot come from a correct central)."""
        (next_seq,) = self._db.execute("SELECT next_seq FROM streams WHERE stream=?", (stream,)).fetchone()
        produced = next_seq - 1
        if acked_seq > produced:
            raise OutboxError(
                f"outbox {self.path}: ack for {stream} seq {acked_seq} beyond the last produced seq {produced}"
            )
        self._set_sync("NORMAL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(
                "UPDATE streams SET acked_seq=? WHERE stream=? AND acked_seq<?", (acked_seq, stream, acked_seq)
            )
            released = 0
            if cur.rowcount:
                released = self._db.execute(
                    "DELETE FROM outbox WHERE stream=? AND seq<=?", (stream, acked_seq)
                ).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return released

    def stats(self) -> dict[str, StreamStats]:
        return _query_stats(self._db)

    def close(self) -> None:
        self._db.close()


def _query_stats(db: sqlite3.Connection) -> dict[str, StreamStats]:
    return {
        s: StreamStats(produced=n - 1, acked=a, pending=n - 1 - a)
        for s, n, a in db.execute("SELECT stream, next_seq, acked_seq FROM streams")
    }


def read_stats(path: str | Path) -> tuple[str, dict[str, StreamStats]]:
    """Epoch and per-stream figures of an outbox owned by another process (read-only, for status views)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=5)
    try:
        epoch = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
        return epoch, _query_stats(db)
    finally:
        db.close()
