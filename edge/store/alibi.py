"""The node's alibi mirror: every weighing gets the next entry of a hash-chained log signed with the node's key
(entry format and chain check: ``sync.alibi``), committed in the **same SQLite transaction** as its outbox row —
a weighing and its entry are stored together or not at all.

The tables live in the outbox database (outbox schema versions 3 and 5, ``edge.store.schema``)::

    alibi (alibi_no PRIMARY KEY, record_id, stream, seq, weighed_at_ns, body, hash, sig, created_ns)
           alibi_no = 1, 2, 3 … without gaps; stream/seq = the weighing record's place in the outbox
    alibi_meta (id = 1, body, sig)
           the signed head: body = canonical JSON of {"v": 1, "type": "alibi-meta", "node", "no", "hash", "stream",
           "seq", "pruned_through", "pruned_hash", "updated_ns", "reset"}, sig = the node key's signature of it

``Outbox.append`` hands each batch of new records to ``AlibiMirror.stamp`` inside its transaction: every record of
kind ``weighing`` — whichever driver made it — gets the next number, its entry row, and ``data["alibi"] =
{"no", "body", "hash", "sig"}`` so the entry travels with the record to central; the signed head is rewritten in
that transaction. The chain goes on from the higher of the table's newest entry and the signed head, so a restarted
agent continues the numbering and a deleted newest entry leaves a gap that stays visible.

**Retention** (``alibi.retention_days``, default 90): the oldest entries older than that whose record central has
acknowledged are given up — always from the bottom, never the newest — and the signed row records the boundary
(``pruned_through``: the highest number given up, ``pruned_hash``: its hash) in the same transaction. Central keeps
its own copy.

**The node's own check** (``check_local``, ``floorgate edge alibi``) re-checks the chain and compares it with the
signed head: the newest entries deleted → ``truncated``; the oldest entries deleted above the boundary (inside the
retention period) → ``removed``; a head row whose signature fails, that is missing, or older than the chain →
``head_invalid``. Which keys it trusts: ``edge.store.alibi_keys``.

The head row of an outbox made or migrated to version 5 starts empty; ``AlibiMirror.open`` signs it from the table
(trust on first use for a migrated outbox). A row found *missing* is made again at the next entry with
``reset`` = {"at_ns", "why"}, which stays in it for good: the node's check names it.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.alibi import (
    ZERO_HASH,
    ChainCheck,
    KeyResolver,
    Problem,
    StoredEntry,
    SuspectResolver,
    check_chain,
    make_entry,
)
from sync.envelope import Record
from sync.heads import AlibiHead
from sync.records import WEIGHING
from sync.signing import canonical_json, sign, verify

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 90
PRUNE_EVERY_S = 600.0  # after an acknowledgement, prune at most this often
DAY_NS = 86_400 * 1_000_000_000
META_VERSION = 1
META_TYPE = "alibi-meta"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _from_table(db: sqlite3.Connection) -> dict[str, Any]:
    """The head and retention boundary as the ``alibi`` table shows them (a new or migrated outbox)."""
    head = db.execute("SELECT alibi_no, hash, stream, seq FROM alibi ORDER BY alibi_no DESC LIMIT 1").fetchone()
    low = db.execute("SELECT alibi_no, body FROM alibi ORDER BY alibi_no LIMIT 1").fetchone()
    pruned, pruned_hash = 0, None
    if low is not None and int(low[0]) > 1:
        pruned = int(low[0]) - 1
        try:
            prev = json.loads(low[1]).get("prev_hash")
        except (ValueError, AttributeError):
            prev = None
        pruned_hash = prev if isinstance(prev, str) and _HEX64.match(prev) else None
    return {"no": int(head[0]) if head else 0, "hash": str(head[1]) if head else None,
            "stream": str(head[2]) if head else None, "seq": int(head[3]) if head else None,
            "pruned_through": pruned, "pruned_hash": pruned_hash, "reset": None}


def _meta_row(db: sqlite3.Connection) -> tuple[str, dict[str, Any] | None]:
    """(state, fields) of the signed head row: ``present`` / ``empty`` (made by the schema step, not signed yet) /
    ``missing`` (the table has no row) / ``unreadable`` / ``no_table`` (an outbox before version 5)."""
    try:
        row = db.execute("SELECT body FROM alibi_meta WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return "no_table", None
    if row is None:
        return "missing", None
    if row[0] is None:
        return "empty", None
    try:
        fields = json.loads(row[0])
    except ValueError:
        return "unreadable", None
    if not isinstance(fields, dict) or not isinstance(fields.get("no"), int) \
            or not isinstance(fields.get("pruned_through"), int):
        return "unreadable", None
    return "present", fields


class AlibiMirror:
    """Writes the chain of one node. Holds no state of the chain itself: the tables are the truth."""

    def __init__(self, node_id: str, key: Ed25519PrivateKey, *, retention_days: int = DEFAULT_RETENTION_DAYS,
                 prune_every_s: float = PRUNE_EVERY_S) -> None:
        self.node_id = node_id
        self.key = key
        self.retention_days = retention_days
        self.prune_every_s = prune_every_s
        self._last_prune = float("-inf")  # monotonic

    # -- the signed head ------------------------------------------------------------------------------------------
    def _current(self, db: sqlite3.Connection) -> dict[str, Any]:
        """The head and boundary to go on from: the signed row, or the table for a new or migrated outbox; a row
        found missing or unreadable is made again from the table with a lasting ``reset`` mark."""
        state, fields = _meta_row(db)
        if state == "present" and fields is not None:
            return fields
        table = _from_table(db)
        if state in ("missing", "unreadable"):
            log.error("alibi mirror: the signed head row is %s; made again from the entries (marked as reset: "
                      "`floorgate edge alibi` names it)", state)
            table["reset"] = {"at_ns": time.time_ns(), "why": state}
        return table

    def _write(self, db: sqlite3.Connection, fields: Mapping[str, Any]) -> None:
        body = {"v": META_VERSION, "type": META_TYPE, "node": self.node_id, "updated_ns": time.time_ns(),
                **{k: fields.get(k) for k in ("no", "hash", "stream", "seq", "pruned_through", "pruned_hash",
                                              "reset")}}
        text = canonical_json(body).decode()
        db.execute("INSERT OR REPLACE INTO alibi_meta(id, body, sig) VALUES (1, ?, ?)",
                   (text, sign(self.key, text.encode())))

    def open(self, db: sqlite3.Connection) -> None:
        """Sign the head row of an outbox made or migrated to version 5 (its row is still empty); called when the
        outbox opens (autocommit mode). A row that is there is left as it is."""
        if _meta_row(db)[0] != "empty":
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if _meta_row(db)[0] == "empty":
                self._write(db, _from_table(db))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def head(db: sqlite3.Connection) -> AlibiHead | None:
        """The head the heartbeat signs (``sync.heads.AlibiHead``): the signed row's newest entry, its record's
        place and the retention boundary (from the table while the row is not signed yet). None: no entry yet."""
        state, fields = _meta_row(db)
        if state == "no_table":
            return None
        if fields is None:
            fields = _from_table(db)
        epoch = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        no, digest, stream, seq = fields.get("no"), fields.get("hash"), fields.get("stream"), fields.get("seq")
        pruned, pruned_hash = fields.get("pruned_through"), fields.get("pruned_hash")
        if not no or epoch is None:
            return None
        if not (isinstance(no, int) and isinstance(digest, str) and _HEX64.match(digest) and isinstance(stream, str)
                and isinstance(seq, int) and seq >= 1 and isinstance(pruned, int) and 0 <= pruned <= no
                and (pruned_hash is None if pruned == 0 else isinstance(pruned_hash, str)
                     and bool(_HEX64.match(pruned_hash)))):
            log.error("alibi mirror: the signed head is malformed (%r); no alibi head reported", fields)
            return None
        return AlibiHead(no=no, hash=digest, epoch=str(epoch[0]), stream=stream, seq=seq, pruned_through=pruned,
                         pruned_hash=pruned_hash)

    # -- writing --------------------------------------------------------------------------------------------------
    def stamp(self, db: sqlite3.Connection, stream: str, records: Sequence[Record]) -> list[Record]:
        """Append an entry for every weighing among ``records`` (seq already assigned) and rewrite the signed head.
        Must run inside the caller's open transaction; returns the records, weighings with ``data["alibi"]``."""
        if not any(r.kind == WEIGHING for r in records):
            return list(records)
        if not db.in_transaction:
            raise RuntimeError("alibi entries are written only inside the outbox's transaction")
        fields = self._current(db)
        head = db.execute("SELECT alibi_no, hash FROM alibi ORDER BY alibi_no DESC LIMIT 1").fetchone()
        no, prev = (int(head[0]), str(head[1])) if head else (0, ZERO_HASH)
        if isinstance(fields.get("hash"), str) and int(fields["no"]) > no:
            no, prev = int(fields["no"]), str(fields["hash"])  # the newest entries are gone: go on after them
        now = time.time_ns()
        out: list[Record] = []
        for r in records:
            if r.kind != WEIGHING:
                out.append(r)
                continue
            no += 1
            part = make_entry(self.key, node=self.node_id, alibi_no=no, record_id=r.record_id, device=r.device,
                              weighed_at_ns=r.ts_ns, data=r.data, prev_hash=prev)
            db.execute(
                "INSERT INTO alibi(alibi_no, record_id, stream, seq, weighed_at_ns, body, hash, sig, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (no, r.record_id, stream, r.seq, r.ts_ns, part.body, part.hash, part.sig, now))
            prev = part.hash
            fields = {**fields, "no": no, "hash": part.hash, "stream": stream, "seq": r.seq}
            out.append(replace(r, data={**r.data, "alibi": part.to_json()}))
        self._write(db, fields)
        return out

    def prune(self, db: sqlite3.Connection, *, now_ns: int | None = None) -> int:
        """Give up the oldest entries weighed more than ``retention_days`` ago whose record central acknowledged —
        from the bottom up to the first entry that must stay, never the newest — and record the boundary in the
        signed head. Returns how many were deleted."""
        cutoff = (now_ns if now_ns is not None else time.time_ns()) - self.retention_days * DAY_NS
        db.execute("BEGIN IMMEDIATE")
        try:
            n = 0
            top = db.execute("SELECT MAX(alibi_no) FROM alibi").fetchone()[0]
            keep = db.execute(
                "SELECT MIN(alibi_no) FROM alibi WHERE NOT (weighed_at_ns < ? AND seq <= COALESCE("
                "(SELECT acked_seq FROM streams WHERE streams.stream = alibi.stream), 0))", (cutoff,)).fetchone()[0]
            if top is not None:
                bound = min(int(top) - 1, int(keep) - 1 if keep is not None else int(top))
                last = db.execute("SELECT alibi_no, hash FROM alibi WHERE alibi_no <= ? ORDER BY alibi_no DESC "
                                  "LIMIT 1", (bound,)).fetchone()
                if last is not None:
                    fields = self._current(db)
                    n = db.execute("DELETE FROM alibi WHERE alibi_no <= ?", (bound,)).rowcount
                    if int(last[0]) > int(fields.get("pruned_through") or 0):
                        fields = {**fields, "pruned_through": int(last[0]), "pruned_hash": str(last[1])}
                    self._write(db, fields)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._last_prune = time.monotonic()
        if n:
            log.info("alibi mirror: %d entr%s older than %d days given up (acknowledged by central)", n,
                     "y" if n == 1 else "ies", self.retention_days)
        return int(n)

    def maybe_prune(self, db: sqlite3.Connection) -> int:
        """``prune`` at most every ``prune_every_s``; errors are logged, never raised (pruning can wait)."""
        if time.monotonic() - self._last_prune < self.prune_every_s:
            return 0
        try:
            return self.prune(db)
        except sqlite3.Error as exc:
            self._last_prune = time.monotonic()
            log.error("alibi mirror: cannot prune old entries: %s", exc)
            return 0


def _read_only(path: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=5)


def _entries(db: sqlite3.Connection) -> list[StoredEntry]:
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alibi'").fetchone():
        return []
    return [StoredEntry(position=no, body=body, hash=h, sig=sig) for no, body, h, sig in db.execute(
        "SELECT alibi_no, body, hash, sig FROM alibi ORDER BY alibi_no")]


def read_entries(path: str | Path) -> list[StoredEntry]:
    """The entries kept in an outbox database (read-only; the agent may be running)."""
    db = _read_only(path)
    try:
        return _entries(db)
    finally:
        db.close()


def read_head(path: str | Path) -> AlibiHead | None:
    """``AlibiMirror.head`` of an outbox file (read-only)."""
    db = _read_only(path)
    try:
        return AlibiMirror.head(db)
    finally:
        db.close()


@dataclass(frozen=True)
class LocalMeta:
    """The signed head row as stored: ``state`` present / empty / missing / no_table (see ``_meta_row``)."""

    state: str
    body: str | None = None
    sig: str | None = None


def _meta(db: sqlite3.Connection) -> LocalMeta:
    try:
        row = db.execute("SELECT body, sig FROM alibi_meta WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return LocalMeta("no_table")
    if row is None:
        return LocalMeta("missing")
    if row[0] is None:
        return LocalMeta("empty")
    return LocalMeta("present", str(row[0]), None if row[1] is None else str(row[1]))


def read_meta(path: str | Path) -> LocalMeta:
    """The signed head row of an outbox file (read-only)."""
    db = _read_only(path)
    try:
        return _meta(db)
    finally:
        db.close()


def read_chain(path: str | Path) -> tuple[list[StoredEntry], LocalMeta]:
    """The entries and the signed head row of an outbox file as of one moment (one read transaction: a running
    agent's next entry is in both or in neither)."""
    db = _read_only(path)
    try:
        db.execute("BEGIN")
        try:
            return _entries(db), _meta(db)
        finally:
            db.execute("ROLLBACK")
    finally:
        db.close()


def meta_warning(meta: LocalMeta) -> str | None:
    """What the node's check cannot tell for want of a signed head row (None: it has one, or it is missing —
    which is a problem, not a warning)."""
    if meta.state == "no_table":
        return ("the outbox has no signed head yet (a schema before version 5: the agent adds it when it next "
                "opens the outbox): entries deleted at the end or inside retention cannot be told")
    if meta.state == "empty":
        return "the signed head is not written yet (the agent signs it when it opens the outbox)"
    return None


def _span(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}…{b}"


def _when(ns: object) -> str:
    if isinstance(ns, int) and not isinstance(ns, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))
    return "an unknown time"


def _meta_problems(check: ChainCheck, meta: LocalMeta, keys: KeyResolver, suspects: SuspectResolver | None,
                   node_id: str) -> list[Problem]:
    if meta.state == "missing":
        return [Problem("head_invalid", (), "the signed head row (alibi_meta) is missing: it was deleted — entries "
                                            "deleted at the end or inside retention cannot be told")]
    if meta.state != "present" or meta.body is None:
        return []
    try:
        body = json.loads(meta.body)
    except ValueError:
        body = None
    if not isinstance(body, dict) or canonical_json(body).decode() != meta.body or body.get("type") != META_TYPE:
        return [Problem("head_invalid", (), "the signed head row (alibi_meta) is not a signed head (changed)")]
    at = {"weighed_at_ns": body.get("updated_ns")}  # the keys valid when the row was written
    data = meta.body.encode()
    if not any(verify(k, data, meta.sig) is None for k in keys(at)):
        by = next((why for k, why in (suspects(at) if suspects else ()) if verify(k, data, meta.sig) is None), None)
        if by is not None:
            return [Problem("untrusted_key", (), f"the signed head row is signed only with {by}")]
        return [Problem("head_invalid", (), "the signed head row (alibi_meta): its signature does not verify with "
                                            "the node's key — it was changed after the node signed it")]
    if body.get("node") != node_id:
        return [Problem("head_invalid", (), f"the signed head row is of node {body.get('node')!r}, not {node_id}")]
    no, digest = int(body.get("no") or 0), body.get("hash")
    pruned, pruned_hash = int(body.get("pruned_through") or 0), body.get("pruned_hash")
    written = _when(body.get("updated_ns"))
    signed = {e.signed_no: e for e in check.entries if e.signed and e.signed_no is not None}
    present = {e.position for e in check.entries} | {n for p in check.problems for n in p.entries}
    out: list[Problem] = []
    reset = body.get("reset")
    if isinstance(reset, dict):
        out.append(Problem("head_invalid", (), f"the signed head row was made again at {_when(reset.get('at_ns'))} "
                                               f"because it was {reset.get('why')}: entries deleted before then "
                                               "cannot be told"))
    above = sorted(n for n in signed if n > no)
    if above:
        out.append(Problem("head_invalid", tuple(above), f"entr{'y' if len(above) == 1 else 'ies'} "
                                                         f"{_span(above[0], above[-1])} kept above the signed head "
                                                         f"{no}: the head row is an older copy (replaced)"))
    top = max(present, default=0)
    if no > max(top, pruned):
        a = max(top, pruned) + 1
        out.append(Problem("truncated", tuple(range(a, no + 1)),
                           f"entr{'y' if a == no else 'ies'} {_span(a, no)} missing: the node's signed head is entry "
                           f"{no} (hash {str(digest)[:16]}…, written {written}); this node keeps "
                           + (f"up to {top}" if top else "none")))
    if no in signed and signed[no].real_hash != digest:
        out.append(Problem("altered", (no,), f"entry {no}: its hash is not the hash {str(digest)[:16]}… of the "
                                             "signed head"))
    first = min(present, default=None)
    if first is not None and first > pruned + 1:
        out.append(Problem("removed", tuple(range(pruned + 1, first)),
                           f"entr{'y' if pruned + 1 == first - 1 else 'ies'} {_span(pruned + 1, first - 1)} missing "
                           f"inside the retention period: the node gave up its entries only up to {pruned} (the "
                           f"signed boundary, written {written})"))
    elif first == pruned + 1 and pruned and first in signed and signed[first].prev_hash != pruned_hash:
        out.append(Problem("chain_break", (pruned, first), f"entry {first} does not link to entry {pruned}, the "
                                                           f"last one given up to retention (hash "
                                                           f"{str(pruned_hash)[:16]}…)"))
    return out


def check_local(entries: Sequence[StoredEntry], key: Ed25519PublicKey | KeyResolver, node_id: str, *,
                meta: LocalMeta | None = None, suspects: SuspectResolver | None = None) -> ChainCheck:
    """The node's own chain re-checked; older entries may have been given up to retention (``pruned``). With
    ``meta`` (``read_meta``) the chain is compared with the signed head and retention boundary. ``key``: the
    node's key or its key history (``edge.store.alibi_keys``), ``suspects``: keys known but not trusted."""
    check = check_chain(entries, key, node=node_id, pruned=True, holder="this node", suspects=suspects)
    if meta is not None:
        keys: KeyResolver = key if not isinstance(key, Ed25519PublicKey) else (lambda _b: (key,))
        check.problems += _meta_problems(check, meta, keys, suspects, node_id)
        check.problems.sort(key=lambda p: (min(p.entries) if p.entries else 0, p.kind))
    return check


__all__ = ["DEFAULT_RETENTION_DAYS", "AlibiMirror", "LocalMeta", "check_local", "meta_warning", "read_chain",
           "read_entries", "read_head", "read_meta"]
