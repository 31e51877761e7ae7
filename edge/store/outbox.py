"""The SQLite outbox: every record is committed here, with the next sequence number of its stream, before
anything else happens to it; it stays until central acknowledges it.

The schema (tables ``meta``, ``streams``, ``starts``, ``outbox``; ``PRAGMA user_version``; WAL journal) and its
migration from older files: ``edge.store.schema``. The alibi mirror (``edge.store.alibi``, given to the outbox when
it is made) and the POS receipt book (``edge.store.receipts``) keep their tables in the same database, written in
the transaction of their record.

Business records (``sync.streams`` ``durable``) are committed with ``synchronous=FULL`` — on disk before
``append`` returns; readings and health use ``synchronous=NORMAL`` (WAL keeps them consistent, a power cut may
lose the last ones, never corrupt the order). The ``epoch`` is a random id made with the database: a node whose
disk was replaced gets a new epoch, and central keeps its sequences apart.

**Disk quota.** With ``quota_bytes`` set, the space the records use (pages in use × page size) is kept below it:
first the pending readings are *thinned* (every second sample of each device is given up; the sample kept stands
for the sequence numbers of the ones given up, ``from_seq``), then the *oldest* readings are dropped (one ``loss``
record stands for the whole dropped range), and only when no readings are left the oldest health records go the
same way. Every record given up is counted in ``streams.lost`` and reported — never silent. Business records are
never given up: when one cannot be stored (quota full of business records, or the disk itself full) ``append``
raises ``OutboxFull`` and the agent stops the device that produced it and raises an alarm.

Inspect it with the sqlite-utils CLI, e.g. ``sqlite-utils rows outbox.db streams``.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edge.errors import OutboxError, OutboxFull
from edge.store.alibi import AlibiMirror
from edge.store.heads import note_acked_tse_heads
from edge.store.schema import migrate
from sync.envelope import Record
from sync.records import LOSS, LossPayload
from sync.streams import STREAMS

log = logging.getLogger(__name__)

QUOTA_LOW_WATER = 0.85  # when the quota is reached, space is freed down to this fraction of it
THIN_CHUNK = 5000  # rows looked at per thinning step

T = TypeVar("T")


def os_boot_id() -> str:
    """The kernel's id of this boot: the monotonic clock is comparable only within one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"unknown-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class NewRecord:
    """A record as a producer hands it in; the outbox assigns ``seq``."""

    kind: str
    device: str
    data: Mapping[str, Any]
    ts_ns: int = field(default_factory=time.time_ns)
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    mono_ns: int = field(default_factory=time.monotonic_ns)


@dataclass(frozen=True)
class StreamStats:
    produced: int  # highest seq ever assigned
    acked: int  # highest seq central acknowledged
    pending: int  # sequence numbers still waiting for an acknowledgement
    lost: int = 0  # records given up to the disk quota
    oldest_pending_ns: int | None = None  # wall time the oldest pending record was stored

    @property
    def oldest_pending_seq(self) -> int | None:
        return self.acked + 1 if self.pending else None

    def oldest_age_s(self, now_ns: int | None = None) -> float | None:
        if self.oldest_pending_ns is None:
            return None
        return max(0.0, ((now_ns or time.time_ns()) - self.oldest_pending_ns) / 1e9)


class WrittenWithRecords(Protocol):
    """A row of another table in the outbox database that ``Outbox.append`` writes in the transaction of the
    records it goes with (``edge.store.receipts.Receipt``: the POS API's answer to a sale)."""

    def write(self, db: sqlite3.Connection) -> None: ...


@dataclass
class PendingRun:
    """Contiguous pending records of one stream taken during one OS boot (one batch's worth)."""

    boot_id: str
    records: list[Record]


class Outbox:
    """Durable, ordered, per-stream record store. Not thread-safe: one agent owns it.

    ``alibi``: the node's alibi mirror — every weighing appended gets its entry, in the transaction of its record.
    It is given here, when the outbox is made, and stays for the outbox's life: no weighing is stored without it."""

    def __init__(self, path: str | Path, *, node_id: str, quota_bytes: int | None = None,
                 boot_id: str | None = None, alibi: AlibiMirror | None = None) -> None:
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self._alibi = alibi
        self.lost_unstored: dict[str, int] = {}  # records that could not even be written (disk full), this run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # one owner at a time (the agent's event loop); tests may hand it between threads
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA journal_size_limit=4194304")
            migrate(self._db, node_id=node_id, where=self.path)
            self.start_no = self._register_start(boot_id or os_boot_id())
            if alibi is not None:
                alibi.open(self._db)  # signs the alibi mirror's head row of a new or migrated outbox
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: cannot open: {exc}") from exc
        self.node_id = node_id
        self.epoch: str = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
        self._sync_mode: str | None = None
        self._boots: dict[int, str] = dict(self._db.execute("SELECT start_no, boot_id FROM starts"))
        self.page_size: int = self._db.execute("PRAGMA page_size").fetchone()[0]

    @property
    def alibi(self) -> AlibiMirror | None:
        """The alibi mirror given when the outbox was made (None: weighings get no alibi entry)."""
        return self._alibi

    # -- starts ---------------------------------------------------------------------------------------------------
    def _register_start(self, boot_id: str) -> int:
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("BEGIN IMMEDIATE")
        (last,) = self._db.execute("SELECT COALESCE(MAX(start_no), 0) FROM starts").fetchone()
        self._db.execute("INSERT INTO starts(start_no, boot_id, started_ns) VALUES (?, ?, ?)",
                         (last + 1, boot_id, time.time_ns()))
        self._db.execute("COMMIT")
        return int(last + 1)

    def _set_sync(self, mode: str) -> None:
        if mode != self._sync_mode:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode

    # -- writing --------------------------------------------------------------------------------------------------
    def append(self, stream: str, items: Sequence[NewRecord], *,
               receipt: WrittenWithRecords | None = None) -> list[Record]:
        """Commit ``items`` to ``stream`` in one transaction and return them with their sequence numbers;
        ``receipt`` (a POS answer, ``edge.store.receipts.Receipt``) is written in the same transaction.

        Raises ``OutboxFull`` for business records that cannot be stored (nothing of them is stored). Readings and
        health that cannot be stored even after giving up older ones are counted as lost and ``[]`` is returned."""
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        if not items:
            return []
        durable = STREAMS[stream].durable
        if self.quota_bytes is not None and self.used_bytes() >= self.quota_bytes:
            self.make_room()
            if self.used_bytes() >= self.quota_bytes:
                if durable:
                    raise OutboxFull(
                        f"outbox {self.path}: disk quota of {self.quota_bytes} bytes is full of records that may not "
                        f"be given up; {len(items)} {stream} record(s) not stored")
                self.lost_unstored[stream] = self.lost_unstored.get(stream, 0) + len(items)
                log.error("outbox %s: %d %s record(s) lost, the quota is full of business records", self.path,
                          len(items), stream)
                return []
        for attempt in (1, 2):
            try:
                return self._insert(stream, items, durable, receipt)
            except sqlite3.OperationalError as exc:
                if not _is_disk_full(exc):
                    raise OutboxError(
                        f"outbox {self.path}: cannot store {len(items)} {stream} record(s): {exc}") from exc
                log.error("outbox %s: the disk is full (%s); giving up the oldest readings", self.path, exc)
                freed = self.make_room(force=True) if attempt == 1 else 0
                if freed == 0 or attempt == 2:
                    if durable:
                        raise OutboxFull(
                            f"outbox {self.path}: the disk is full; {len(items)} {stream} record(s) not stored"
                        ) from exc
                    self.lost_unstored[stream] = self.lost_unstored.get(stream, 0) + len(items)
                    log.error("outbox %s: %d %s record(s) lost, the disk is full", self.path, len(items), stream)
                    return []
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: cannot store {len(items)} {stream} record(s): {exc}") from exc
        raise AssertionError("unreachable")

    def _insert(self, stream: str, items: Sequence[NewRecord], durable: bool,
                receipt: WrittenWithRecords | None = None) -> list[Record]:
        self._set_sync("FULL" if durable else "NORMAL")
        now = time.time_ns()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (next_seq,) = self._db.execute("SELECT next_seq FROM streams WHERE stream=?", (stream,)).fetchone()
            records = [
                Record(seq=next_seq + i, record_id=it.record_id, kind=it.kind, ts_ns=it.ts_ns, device=it.device,
                       data=dict(it.data), mono_ns=it.mono_ns)
                for i, it in enumerate(items)
            ]
            if self._alibi is not None:  # in this transaction: the weighing and its entry, or neither
                records = self._alibi.stamp(self._db, stream, records)
            self._db.executemany(
                "INSERT INTO outbox(stream, seq, record_id, kind, device, ts_ns, data, created_ns, mono_ns, start_no)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (stream, r.seq, r.record_id, r.kind, r.device, r.ts_ns, json.dumps(r.data), now, r.mono_ns,
                     self.start_no)
                    for r in records
                ],
            )
            self._db.execute("UPDATE streams SET next_seq=? WHERE stream=?", (next_seq + len(records), stream))
            if receipt is not None:  # in this transaction: the sale's record and its answer, or neither
                receipt.write(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return records

    # -- quota ----------------------------------------------------------------------------------------------------
    def used_bytes(self) -> int:
        """Bytes of the database in use by records and indexes (free pages are reused before the file grows)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self.page_size)

    def has_room(self, margin_bytes: int = 1 << 20) -> bool:
        """Whether a business record would fit: below the quota's low-water mark, and ``margin_bytes`` free on the
        disk or in the database's free pages."""
        if self.quota_bytes is not None and self.used_bytes() > self.quota_bytes * QUOTA_LOW_WATER:
            return False
        free_pages = self._db.execute("PRAGMA freelist_count").fetchone()[0] * self.page_size
        return bool(free_pages >= margin_bytes or shutil.disk_usage(self.path.parent).free >= margin_bytes)

    def make_room(self, *, force: bool = False) -> int:
        """Give up readings (thin, then drop the oldest), then health, until the use is below the low-water mark
        (``force``: at least one step even without a quota — the disk is full). Returns records given up; 0 if
        nothing could be given up (a full disk may refuse even the deletes)."""
        try:
            return self._make_room(force)
        except sqlite3.Error as exc:
            log.error("outbox %s: cannot give up records to make room: %s", self.path, exc)
            return 0

    def _make_room(self, force: bool) -> int:
        target = int(self.quota_bytes * QUOTA_LOW_WATER) if self.quota_bytes is not None else None
        given_up = 0
        for stream in sorted((s for s in STREAMS if not STREAMS[s].durable), key=lambda s: -STREAMS[s].priority):
            for step in (self._thin, self._drop_oldest):
                while force or (target is not None and self.used_bytes() > target):
                    n = step(stream)
                    if n == 0:
                        break
                    given_up += n
                    if force:
                        return given_up
        if given_up:
            log.warning("outbox %s: %d record(s) given up to the disk quota (now %d bytes in use)",
                        self.path, given_up, self.used_bytes())
        return given_up

    def _thin(self, stream: str) -> int:
        """Give up every second not yet thinned sample of each device among the oldest pending records; the kept
        ones are rewritten densely (a half-empty page frees nothing). Returns records given up."""
        rows = self._db.execute(
            "SELECT seq, device, COALESCE(from_seq, seq), record_id, kind, ts_ns, data, created_ns, mono_ns, start_no"
            " FROM outbox WHERE stream=? AND thinned=0 AND kind!=? ORDER BY seq LIMIT ?",
            (stream, LOSS, THIN_CHUNK)).fetchall()
        if len(rows) < 2:
            return 0
        # split into runs of contiguous sequence numbers: a kept record may only stand for numbers right before it
        runs: list[list[Any]] = []
        for row in rows:
            if runs and row[2] == runs[-1][-1][0] + 1:
                runs[-1].append(row)
            else:
                runs.append([row])
        seen: dict[str, int] = {}
        kept: list[tuple[Any, ...]] = []
        given_up = 0
        for run in runs:
            span_start: int | None = None
            for i, (seq, device, first, *rest) in enumerate(run):
                n = seen.get(device, 0)
                seen[device] = n + 1
                if span_start is None:
                    span_start = first
                if n % 2 == 0 and i < len(run) - 1:  # given up; the next kept record stands for it
                    given_up += 1
                    continue
                kept.append((stream, seq, *rest, span_start if span_start < seq else None, device))
                span_start = None
        self._set_sync("NORMAL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM outbox WHERE stream=? AND seq BETWEEN ? AND ?",
                             (stream, rows[0][0], rows[-1][0]))
            self._db.executemany(
                "INSERT INTO outbox(stream, seq, record_id, kind, ts_ns, data, created_ns, mono_ns, start_no, from_seq,"
                " thinned, device) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                kept)
            self._db.execute("UPDATE streams SET lost=lost+? WHERE stream=?", (given_up, stream))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        log.warning("outbox %s: quota: thinned %d %s record(s), %d given up", self.path, len(rows), stream, given_up)
        return max(given_up, 1)

    def _drop_oldest(self, stream: str) -> int:
        """Replace the oldest pending records of ``stream`` by one ``loss`` record standing for their range."""
        total = self._db.execute("SELECT COUNT(*) FROM outbox WHERE stream=?", (stream,)).fetchone()[0]
        if total <= 1:
            return 0
        n = max(2, min(THIN_CHUNK, total // 4))
        rows = self._db.execute(
            "SELECT seq, COALESCE(from_seq, seq), kind FROM outbox WHERE stream=? ORDER BY seq LIMIT ?",
            (stream, n)).fetchall()
        first = rows[0][1]
        last = rows[-1][0]
        given_up = sum(1 for _, _, kind in rows if kind != LOSS)
        self._set_sync("NORMAL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM outbox WHERE stream=? AND seq<=?", (stream, last))
            self._db.execute(
                "INSERT INTO outbox(stream, seq, record_id, kind, device, ts_ns, data, created_ns, mono_ns, start_no,"
                " from_seq, thinned) VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, 1)",
                (stream, last, str(uuid.uuid4()), LOSS, time.time_ns(),
                 json.dumps(LossPayload(records=given_up).to_payload()), time.time_ns(), time.monotonic_ns(),
                 self.start_no, first if first < last else None))
            self._db.execute("UPDATE streams SET lost=lost+? WHERE stream=?", (given_up, stream))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        log.warning("outbox %s: quota: dropped the oldest %d %s record(s), seq %d..%d", self.path, given_up, stream,
                    first, last)
        return given_up

    # -- reading and acknowledging -------------------------------------------------------------------------------
    def pending(self, stream: str, *, after_seq: int, limit: int) -> list[Record]:
        """Records of ``stream`` with seq > ``after_seq`` that are not acknowledged, oldest first."""
        return self.pending_run(stream, after_seq=after_seq, limit=limit, one_boot=False).records

    def pending_run(self, stream: str, *, after_seq: int, limit: int, one_boot: bool = True) -> PendingRun:
        """Like ``pending``, but stops where the records' OS boot changes (one batch = one boot id)."""
        rows = self._db.execute(
            "SELECT seq, record_id, kind, ts_ns, device, data, mono_ns, start_no, from_seq FROM outbox"
            " WHERE stream=? AND seq>? ORDER BY seq LIMIT ?",
            (stream, after_seq, limit),
        ).fetchall()
        records: list[Record] = []
        boot = ""
        for s, rid, k, ts, d, data, mono, start_no, from_seq in rows:
            b = self._boots.get(start_no, "")
            if records and one_boot and b != boot:
                break
            boot = b
            records.append(Record(seq=s, record_id=rid, kind=k, ts_ns=ts, device=d, data=json.loads(data),
                                  mono_ns=mono, from_seq=from_seq if from_seq is not None and from_seq < s else None))
        return PendingRun(boot_id=boot, records=records)

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
                note_acked_tse_heads(self._db, stream, acked_seq)  # the TSE heads central now holds, then forget
                released = self._db.execute(
                    "DELETE FROM outbox WHERE stream=? AND seq<=?", (stream, acked_seq)
                ).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if released and self._alibi is not None:
            self._alibi.maybe_prune(self._db)
        return released

    def use(self, what: str, step: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``step`` on the outbox's connection, for a table kept beside the records (``edge.store.receipts``);
        ``step`` begins and ends its own transaction (with ``synchronous=NORMAL``). An SQLite error is raised as
        ``OutboxError``: "outbox <path>: cannot <what>: …"."""
        try:
            self._set_sync("NORMAL")
            return step(self._db)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: cannot {what}: {exc}") from exc

    def prune_alibi(self, *, now_ns: int | None = None) -> int:
        """Give up alibi entries past their retention that central acknowledged (``AlibiMirror.prune``)."""
        if self._alibi is None:
            return 0
        return self._alibi.prune(self._db, now_ns=now_ns)

    def stats(self) -> dict[str, StreamStats]:
        return _query_stats(self._db)

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _is_disk_full(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc) or "disk I/O error" in str(exc)


def _query_stats(db: sqlite3.Connection) -> dict[str, StreamStats]:
    out = {}
    for s, n, a, lost in db.execute("SELECT stream, next_seq, acked_seq, lost FROM streams").fetchall():
        oldest = db.execute("SELECT created_ns FROM outbox WHERE stream=? ORDER BY seq LIMIT 1", (s,)).fetchone()
        out[s] = StreamStats(produced=n - 1, acked=a, pending=n - 1 - a, lost=lost,
                             oldest_pending_ns=oldest[0] if oldest and n - 1 > a else None)
    return out


def read_stats(path: str | Path) -> tuple[str, dict[str, StreamStats]]:
    """Epoch and per-stream figures of an outbox owned by another process (read-only, for status views)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=5)
    try:
        epoch = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < 2:  # before the quota columns
            return epoch, {
                s: StreamStats(produced=n - 1, acked=a, pending=n - 1 - a)
                for s, n, a in db.execute("SELECT stream, next_seq, acked_seq FROM streams")
            }
        return epoch, _query_stats(db)
    finally:
        db.close()
