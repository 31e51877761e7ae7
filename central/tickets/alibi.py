"""Central's copy of each node's alibi mirror: stored from the weighing records as they arrive, re-checked on demand
(``floorgate central verify-alibi``, ``GET /api/v1/nodes/{node_id}/alibi/verify``).

**Storing** (``entry_from_record``, called by ``apply`` in the batch's transaction): ``data.alibi`` of a weighing
record must be a well-formed entry (``sync.alibi.parse_part``) of this node and this record — same node, record id,
device and time, the same legal values as the record — signed with the node's registered key or, when ingest has
the fleet CA (``alibi_trust.use_ca_cert``), a key of the node's CA-bound history valid at the entry's time (a record
sent again after a re-enrolment carries an entry of the old key). It becomes an ``alibi_entries`` row with the body
verbatim. A malformed part is *not* stored; the weighing itself is kept (it is
the instrument's value, and the record arrived authenticated in a signed batch) and a copy of the record goes to the
quarantine with the reason. A record without ``alibi`` (a node from before the mirror) is accepted as it was.

**Verifying** (``verify_chain``): the entries are walked by number with ``sync.alibi.check_chain`` (each signature
with the node's key that the fleet CA vouches for at the entry's time — ``central.tickets.alibi_trust`` —, hash of
the body, the body's number against the row's, ``prev_hash`` links, numbering without gaps), and each intact entry
is compared with its ``Weighing`` row (gross, tare, net exactly as delivered, unit, tare preset, scale serial,
instrument alibi, device, alibi number): a weighing changed in the weighings table is named too
(``weighing_altered``; ``weighing_missing`` when its row is gone or was never stored). A key the CA did not bind is
``untrusted_key`` (and so is every entry that verifies only with it); entries the node's signed head says central
acknowledged but central lacks are ``truncated``; a stored head whose signature fails is ``head_invalid``.

**Retention**: central keeps every entry (at least two years — devices.md §4.5: public weighbridges keep records for
2 years). Nothing deletes entries; pruning older ones is future work and must keep the hash of the last entry given
up as an anchor so that the rest still verifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import AlibiEntry, Node, Weighing
from central.db.types import utc_from_ns
from central.tickets.alibi_trust import (
    NodeTrust,
    SignedHead,
    Suspect,
    ca_cert_of,
    check_head,
    entry_keys,
    read_head,
)
from sync.alibi import AlibiError, CheckedEntry, Problem, StoredEntry, check_chain, parse_part
from sync.envelope import Record
from sync.records.weighing import LEGAL_FIELDS
from sync.signing import verify

RETENTION_DAYS = 730  # central keeps at least this long; it deletes nothing today
MAX_RECORD_ID = 64  # alibi_entries.record_id


class AlibiVerifyError(Exception):
    """The chain of a node cannot be checked at all; ``status`` is the HTTP status that fits."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class StoredAlibi:
    """What ``entry_from_record`` made of a record's ``data.alibi``."""

    entry: AlibiEntry | None = None  # a new row to add
    alibi_no: int | None = None  # the number the weighing gets: the one the node gave it, also when the part was
    # not stored — verify-alibi then names that entry as missing from central's copy
    problem: str | None = None  # why the part was not stored (the weighing is kept regardless)


def entry_from_record(session: Session, *, node: str, public_key: str | None, record: Record,
                      received_at: datetime) -> StoredAlibi:
    """Check a weighing record's alibi part against the record and the node; the row to add or the problem."""
    if "alibi" not in record.data:
        return StoredAlibi()
    raw = record.data["alibi"]
    claimed = raw.get("no") if isinstance(raw, dict) else None
    claimed = claimed if isinstance(claimed, int) and not isinstance(claimed, bool) and 0 < claimed < 2**63 else None
    try:
        part, body = parse_part(raw)
    except AlibiError as exc:
        return StoredAlibi(alibi_no=claimed, problem=exc.reason)
    n = part.no
    for name, expected in (("node", node), ("record_id", record.record_id), ("device", record.device),
                           ("weighed_at_ns", record.ts_ns)):
        if body.get(name) != expected:
            return StoredAlibi(alibi_no=n, problem=f"entry {n}: body.{name} {body.get(name)!r} is not the record's "
                                                   f"{expected!r}")
    for name in LEGAL_FIELDS:
        if body.get(name) != record.data.get(name):
            return StoredAlibi(alibi_no=n, problem=f"entry {n}: body.{name} {body.get(name)!r} is not the record's "
                                                   f"{record.data.get(name)!r}")
    if len(record.record_id) > MAX_RECORD_ID:
        return StoredAlibi(alibi_no=n, problem=f"entry {n}: record id longer than {MAX_RECORD_ID} characters")
    keys = entry_keys(session, node, public_key, record.ts_ns)
    if (keys or public_key) and not any(verify(k, part.body.encode(), part.sig) is None for k in keys):
        why = ("signature does not match the node's registered key (forged or altered)" if public_key else
               "signature does not match a key of the node")
        if ca_cert_of(session) is not None:
            why += f" nor a key the fleet CA vouches for at {utc_from_ns(record.ts_ns).isoformat()}"
        return StoredAlibi(alibi_no=n, problem=f"entry {n}: {why}")
    held = session.execute(select(AlibiEntry.hash, AlibiEntry.record_id).where(
        AlibiEntry.node_id == node, AlibiEntry.alibi_no == n)).first()
    if held is not None:
        if held.hash == part.hash:
            return StoredAlibi(alibi_no=n)  # the same entry (a record sent again under another epoch)
        return StoredAlibi(alibi_no=n, problem=f"entry {n} of node {node} is already held with another hash (record "
                                               f"{held.record_id}): a second chain? (the node's outbox was replaced)")
    row = AlibiEntry(node_id=node, alibi_no=n, record_id=record.record_id, body=part.body, prev_hash=body["prev_hash"],
                     hash=part.hash, sig=part.sig, weighed_at=utc_from_ns(record.ts_ns), received_at=received_at)
    return StoredAlibi(entry=row, alibi_no=n)


# -- verification -----------------------------------------------------------------------------------------------------


@dataclass
class Report:
    node: str
    entries: int
    first: int | None
    last: int | None
    head_hash: str | None
    weighings_checked: int
    problems: list[Problem] = field(default_factory=list)
    head: SignedHead | None = None  # the node's newest signed head, as checked
    untrusted_keys: list[Suspect] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        span = f"{self.first}…{self.last}" if self.entries else "none"
        text = (f"node {self.node}: chain of {self.entries} entries verified ({span})" if self.ok else
                f"node {self.node}: chain of {self.entries} entries ({span}) NOT intact: "
                f"{len(self.problems)} problem(s)")
        h = self.head
        if h is not None and h.state == "in_transit":
            text += (f"; the node's signed head {h.no} is in transit ({h.stream} seq {h.seq}, central's mark "
                     f"{h.acked_seq})")
        elif h is not None and h.state == "held":
            text += f"; up to the node's signed head {h.no}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "ok": self.ok, "entries": self.entries, "first": self.first, "last": self.last,
                "head_hash": self.head_hash, "weighings_checked": self.weighings_checked,
                "problems": [p.to_json() for p in self.problems],
                "head": self.head.to_json() if self.head is not None else None,
                "untrusted_keys": [{"fingerprint": s.fingerprint, "why": s.why} for s in self.untrusted_keys]}


_COLUMNS = {"gross": "gross", "tare": "tare", "tare_preset": "tare_preset", "net": "net", "unit": "unit",
            "scale_serial": "scale_serial", "instrument_alibi": "instrument_alibi"}


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Decimal):
        return format(value, "f")  # exactly as stored (ExactText keeps the delivered digits)
    return str(value)


def _same(signed: Any, stored: Any) -> bool:
    """The weighings table holds what the entry signed — weights digit for digit, as delivered."""
    if signed is None or stored is None:
        return signed is None and stored is None
    if isinstance(stored, Decimal):
        return isinstance(signed, str) and _show(stored) == signed
    return bool(signed == stored)


def _cross_check(entry: CheckedEntry, w: Weighing | None) -> Problem | None:
    n = entry.signed_no
    assert n is not None
    if w is None:
        return Problem("weighing_missing", (n,), f"entry {n}: its weighing (record {entry.record_id}) is not in the "
                                                 "weighings table (deleted, or rejected into the quarantine)")
    diffs = []
    signed = dict(zip(LEGAL_FIELDS, entry.legal, strict=True))
    for name, column in _COLUMNS.items():
        stored = getattr(w, column)
        if not _same(signed.get(name), stored):
            diffs.append(f"{name} is {_show(stored)} in the weighings table, {_show(signed.get(name))} in the entry")
    if entry.device != w.device_id:
        diffs.append(f"device is {w.device_id} in the weighings table, {entry.device} in the entry")
    if w.alibi_no != n:
        diffs.append(f"its alibi number is {_show(w.alibi_no)} in the weighings table")
    if not diffs:
        return None
    return Problem("weighing_altered", (n,), f"entry {n}: weighing {w.id} (record {w.record_id}) differs from the "
                                             "signed entry: " + "; ".join(diffs))


def verify_chain(sessions: sessionmaker[Session], node_id: str, *, ca_cert: x509.Certificate | None) -> Report:
    """Re-check central's copy of ``node_id``'s chain with the node's keys as the fleet CA of ``ca_cert`` vouches
    for them (None: central has no CA — no key can be trusted, every key is ``untrusted_key``). Raises
    AlibiVerifyError (404 unknown node, 409 never enrolled)."""
    with sessions() as session:
        node = session.get(Node, node_id)
        if node is None:
            raise AlibiVerifyError(404, "not_found", f"no node {node_id!r}")
        trust = NodeTrust.of(session, node, ca_cert)
        if trust.empty:
            raise AlibiVerifyError(409, "not_enrolled", f"node {node_id} has no registered public key: the "
                                   "signatures cannot be checked (floorgate central node add / node register)")
        head, head_problems = read_head(session, node, trust)
        stored = [StoredEntry(position=no, body=body, hash=h, sig=sig) for no, body, h, sig in session.execute(
            select(AlibiEntry.alibi_no, AlibiEntry.body, AlibiEntry.hash, AlibiEntry.sig)
            .where(AlibiEntry.node_id == node_id).order_by(AlibiEntry.alibi_no))]
        weighings: dict[str, Weighing] = {w.record_id: w for w in session.execute(
            select(Weighing).where(Weighing.node_id == node_id)).scalars()}
    claimed: Mapping[int, str] = {w.alibi_no: rid for rid, w in weighings.items() if w.alibi_no is not None}
    check = check_chain(stored, trust.keys, node=node_id, claimed=claimed, suspects=trust.suspects)
    problems = [*trust.problems(), *head_problems, *check.problems]
    by_no: dict[int, CheckedEntry] = {}
    checked = 0
    for entry in check.entries:
        if not entry.signed or entry.signed_no is None or entry.signed_no in by_no:
            continue
        by_no[entry.signed_no] = entry
        if entry.real_hash != entry.stored_hash:
            continue
        checked += 1
        found = _cross_check(entry, weighings.get(entry.record_id or ""))
        if found is not None:
            problems.append(found)
    for rid, w in sorted(weighings.items(), key=lambda kv: kv[1].alibi_no or 0):
        mirrored = by_no.get(w.alibi_no) if w.alibi_no is not None else None
        if mirrored is not None and mirrored.record_id != rid:
            problems.append(Problem("weighing_altered", (w.alibi_no or 0,),
                                    f"weighing {w.id} (record {rid}) claims alibi number {w.alibi_no}, whose signed "
                                    f"entry mirrors record {mirrored.record_id}"))
    positions = [e.position for e in check.entries]
    if head is not None:
        present = set(positions) | {n for p in check.problems for n in p.entries}
        problems += check_head(head, {n: e.real_hash for n, e in by_no.items()}, present)
    problems.sort(key=lambda p: (min(p.entries) if p.entries else 0, p.kind))
    return Report(node=node_id, entries=len(positions), first=min(positions) if positions else None,
                  last=max(positions) if positions else None, head_hash=check.head_hash, weighings_checked=checked,
                  problems=problems, head=head, untrusted_keys=list(trust.untrusted))


__all__ = ["RETENTION_DAYS", "AlibiVerifyError", "Report", "StoredAlibi", "entry_from_record", "verify_chain"]
