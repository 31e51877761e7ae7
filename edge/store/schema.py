"""The outbox database's schema, one home for every table in it: the records (``edge.store.outbox``), the alibi
mirror (``edge.store.alibi``) and the POS receipt book (``edge.store.receipts``) share one SQLite file, so a record
and what belongs to it are committed in one transaction.

``PRAGMA user_version`` holds the version; a database of an older version is brought up to ``SCHEMA_VERSION`` step
by step when it is opened (``migrate``), all steps in one transaction. A released step is never changed — a node in
the field may still have a file of any earlier version — a change to the schema is a new step::

    1  meta    (key PRIMARY KEY, value)                          epoch, node_id, created_ns
                                                                  (and tse_head:<serial>, edge.store.heads)
       streams (stream PRIMARY KEY, next_seq, acked_seq)         one row per stream
       outbox  (stream, seq, record_id, kind, device, ts_ns, data, created_ns)   PRIMARY KEY (stream, seq)
    2  streams + lost                                             records given up to the disk quota
       outbox  + mono_ns, start_no, from_seq, thinned             the quota's thinning, the agent's starts
       starts  (start_no PRIMARY KEY, boot_id, started_ns)        one row per agent start (boot_id = the OS boot)
    3  alibi   (alibi_no PRIMARY KEY, record_id, stream, seq, weighed_at_ns, body, hash, sig, created_ns)
               the alibi mirror: one entry per weighing, written in the transaction of its record
    4  pos_receipts (client_id, receipt_id PRIMARY KEY, digest, answer, record_id, created_ns)
               the POS API's answers, written in the transaction of the sale's record
    5  alibi_meta (id = 1 PRIMARY KEY, body, sig)
               the alibi mirror's signed head and retention boundary (edge.store.alibi): one row, made here with
               body NULL — the agent signs it from the alibi table when it opens the outbox — then rewritten in
               the transaction of every entry and of every prune
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Final

from edge.errors import OutboxError
from sync.streams import STREAMS

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 5

_V1_RECORDS: Final = """
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
) WITHOUT ROWID
"""

_V2_QUOTA_AND_STARTS: Final = """
ALTER TABLE streams ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN mono_ns INTEGER;
ALTER TABLE outbox ADD COLUMN start_no INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN from_seq INTEGER;
ALTER TABLE outbox ADD COLUMN thinned INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS starts (start_no INTEGER PRIMARY KEY, boot_id TEXT NOT NULL, started_ns INTEGER NOT NULL)
"""

_V3_ALIBI: Final = """
CREATE TABLE IF NOT EXISTS alibi (
    alibi_no INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    weighed_at_ns INTEGER NOT NULL,
    body TEXT NOT NULL,
    hash TEXT NOT NULL,
    sig TEXT NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alibi_weighed_at ON alibi(weighed_at_ns)
"""

_V4_POS_RECEIPTS: Final = """
CREATE TABLE IF NOT EXISTS pos_receipts (
    client_id TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    answer TEXT NOT NULL,
    record_id TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (client_id, receipt_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pos_receipts_by_age ON pos_receipts (created_ns)
"""

_V5_ALIBI_META: Final = """
CREATE TABLE IF NOT EXISTS alibi_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT,
    sig TEXT
);
INSERT OR IGNORE INTO alibi_meta(id, body, sig) VALUES (1, NULL, NULL)
"""

MIGRATIONS: Final[dict[int, str]] = {1: _V1_RECORDS, 2: _V2_QUOTA_AND_STARTS, 3: _V3_ALIBI, 4: _V4_POS_RECEIPTS,
                                     5: _V5_ALIBI_META}
"""version → the SQL that brings a database of the version before it to this one (1: a new database)"""


def statements(version: int) -> list[str]:
    """The statements of step ``version`` (``MIGRATIONS[version]``), one by one."""
    return [s for s in (part.strip() for part in MIGRATIONS[version].split(";")) if s]


def create(db: sqlite3.Connection, version: int) -> None:
    """Lay out an empty database as version ``version`` made it (steps 1…``version``, without the rows ``migrate``
    adds): for tests and tools that need a file of an older release. Runs in the caller's transaction, if any."""
    for v in range(1, version + 1):
        for stmt in statements(v):
            db.execute(stmt)
    db.execute(f"PRAGMA user_version = {int(version)}")


def migrate(db: sqlite3.Connection, *, node_id: str, where: str | Path) -> int:
    """Bring the database on ``db`` (autocommit mode, no transaction open) to ``SCHEMA_VERSION`` for node
    ``node_id``; a new database gets its epoch and a row per stream. Returns the version it had (0: new).

    Raises ``OutboxError`` (naming ``where``) for a database of a newer version or of another node; an SQLite
    error of a step rolls all steps back and is raised as is."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise OutboxError(f"outbox {where}: schema version {version} is newer than this agent ({SCHEMA_VERSION})")
    if version >= 1:
        stored = db.execute("SELECT value FROM meta WHERE key='node_id'").fetchone()
        if stored and stored[0] != node_id:
            raise OutboxError(
                f"outbox {where} belongs to node {stored[0]!r}, not {node_id!r}: "
                "use another data_dir or move the file away"
            )
    if version == SCHEMA_VERSION:
        return version
    db.execute("BEGIN IMMEDIATE")
    try:
        for v in range(version + 1, SCHEMA_VERSION + 1):
            for stmt in statements(v):
                db.execute(stmt)
            if v == 1:
                db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?), ('node_id', ?), ('created_ns', ?)",
                    (secrets.token_hex(8), node_id, str(time.time_ns())),
                )
                for name in STREAMS:
                    db.execute("INSERT OR IGNORE INTO streams(stream, next_seq, acked_seq) VALUES (?, 1, 0)", (name,))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if version:
        log.info("outbox %s: schema migrated from version %d to %d", where, version, SCHEMA_VERSION)
    return version


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "create", "migrate", "statements"]
