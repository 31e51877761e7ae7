"""External checkpoints: the chain heads central holds, as a statement signed with central's key and kept outside its
database, and the proof that the database still holds everything a checkpoint vouched for.

**The statement** (``make``; written by ``floorgate central checkpoint`` and on a schedule, ``checkpoint_out``)::

    {"type": "floorgate.checkpoint", "v": 1, "made_at": "2026-12-08T10:15:00.123456+00:00", "kid": "<16 hex>",
     "alibi": [{"node": "mill-01", "no": 812, "hash": "<64 hex>", "count": 812, "first": 1}, …],
     "tse": [{"serial": "<hex>", "node": "shop-1", "tx": 4711, "counter": 9423, "row_hash": "<64 hex>",
              "count": 4711, "first": 1}, …],
     "sig": "<base64>"}

``alibi``: per node the newest entry of central's alibi mirror (its number and hash) and how many entries it held
from ``first`` to ``no``. ``tse``: per TSE the transaction with the highest number, its signature counter, the SHA-256
of its signature as stored (the base64 text, UTF-8) and how many transactions were held from ``first`` to ``tx``.
``sig`` is central's Ed25519 signature (``central.fleet.signing_key``, key id ``kid``) over the canonical JSON of
everything else (``sync.signing.canonical_json``); the ``checkpoints`` table keeps a copy and where it went.

**The proof** (``load`` then ``compare_alibi`` / ``compare_tse``): the file's signature must verify with one of
central's keys (active, next, or the one retired last) — a changed or forged file is refused. Then, per node: the
entry ``no`` is held and its body hashes to the vouched hash; walking down, each entry's body hashes to the
``prev_hash`` the entry above signed, so every entry below the head is the one the checkpoint vouched for, whatever
key signed it; fewer entries in ``first…no`` than vouched for names the numbers missing. Per TSE: the transaction
``tx`` is held with the same counter and signature hash; fewer transactions in ``first…tx`` names the missing ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import AlibiEntry, TseTransaction
from central.fleet import signing_key
from sync.alibi import body_hash
from sync.signing import SigningKeyError, canonical_json, fingerprint, load_private_key, sign, verify

TYPE = "floorgate.checkpoint"
VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024  # a head per node and TSE: far below this
MAX_LISTED = 20  # runs of missing numbers named in one finding
_HEX64 = frozenset("0123456789abcdef")


class CheckpointError(Exception):
    """A checkpoint that cannot be used (unreadable, malformed, not signed by central); the message names the file."""


def row_hash(signature: str | None) -> str | None:
    """What a checkpoint vouches for a TSE transaction: SHA-256 of its signature as stored (base64 text)."""
    return None if signature is None else hashlib.sha256(signature.encode()).hexdigest()


# -- making -----------------------------------------------------------------------------------------------------------


def alibi_heads(session: Session) -> list[dict[str, Any]]:
    """Per node: the newest entry central holds (number, hash), the lowest number and how many entries."""
    agg = (select(AlibiEntry.node_id, func.max(AlibiEntry.alibi_no).label("no"),
                  func.min(AlibiEntry.alibi_no).label("first"), func.count().label("count"))
           .group_by(AlibiEntry.node_id).subquery())
    rows = session.execute(
        select(agg.c.node_id, agg.c.no, agg.c.first, agg.c.count, AlibiEntry.hash)
        .join(AlibiEntry, and_(AlibiEntry.node_id == agg.c.node_id, AlibiEntry.alibi_no == agg.c.no))
        .order_by(agg.c.node_id))
    return [{"node": node, "no": int(no), "hash": h, "count": int(count), "first": int(first)}
            for node, no, first, count, h in rows]


def tse_heads(session: Session) -> list[dict[str, Any]]:
    """Per TSE: the transaction with the highest number (its counter and signature hash), the lowest number and how
    many numbered transactions are held."""
    numbered = and_(TseTransaction.tse_serial.is_not(None), TseTransaction.tx_number.is_not(None))
    agg = (select(TseTransaction.tse_serial, func.max(TseTransaction.tx_number).label("tx"),
                  func.min(TseTransaction.tx_number).label("first"), func.count().label("count"))
           .where(numbered).group_by(TseTransaction.tse_serial).subquery())
    rows = session.execute(
        select(agg.c.tse_serial, agg.c.tx, agg.c.first, agg.c.count, TseTransaction.node_id,
               TseTransaction.signature_counter, TseTransaction.signature)
        .join(TseTransaction, and_(TseTransaction.tse_serial == agg.c.tse_serial,
                                   TseTransaction.tx_number == agg.c.tx))
        .order_by(agg.c.tse_serial))
    return [{"serial": serial, "node": node, "tx": int(tx), "counter": counter, "row_hash": row_hash(sig),
             "count": int(count), "first": int(first)}
            for serial, tx, first, count, node, counter, sig in rows]


def make(session: Session, key: Ed25519PrivateKey, *, now: datetime | None = None) -> dict[str, Any]:
    """The signed statement of the heads ``session`` sees now (the document written out: statement + ``sig``)."""
    made_at = (now or datetime.now(UTC)).astimezone(UTC)
    statement: dict[str, Any] = {"type": TYPE, "v": VERSION, "made_at": made_at.isoformat(timespec="microseconds"),
                                 "kid": fingerprint(key), "alibi": alibi_heads(session), "tse": tse_heads(session)}
    return {**statement, "sig": sign(key, canonical_json(statement))}


def document_bytes(doc: Mapping[str, Any]) -> bytes:
    """The file's content: the document as indented JSON (the signature covers its canonical form, not the layout)."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def file_name(made_at: str) -> str:
    """``checkpoint-20261208T101500Z.json`` for a statement made at ``made_at`` (ISO 8601)."""
    return f"checkpoint-{datetime.fromisoformat(made_at).astimezone(UTC):%Y%m%dT%H%M%SZ}.json"


# -- reading ----------------------------------------------------------------------------------------------------------


def trusted_keys(signing_key_file: Path | None) -> dict[str, Ed25519PublicKey]:
    """Central's public keys by key id: the active key, the next one (a rotation under way) and the one the last
    ``signing-key activate`` retired. Nothing is made: a missing active key is a ``CheckpointError``."""
    try:
        active = signing_key.key_path(signing_key_file)
    except SigningKeyError as exc:
        raise CheckpointError(f"central's signing key: {exc}") from None
    if not active.exists():
        raise CheckpointError(f"central's signing key {active} does not exist: no checkpoint can be verified "
                              "(signing_key_file in the config)")
    out: dict[str, Ed25519PublicKey] = {}
    for path in (active, signing_key.next_path(active), signing_key.old_path(active)):
        if path == active or path.exists():
            try:
                pub = load_private_key(path).public_key()
            except SigningKeyError as exc:
                raise CheckpointError(f"central's signing key: {exc}") from None
            out[fingerprint(pub)] = pub
    return out


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def _hex64(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and set(v) <= _HEX64


def _check_shape(doc: Mapping[str, Any]) -> str | None:
    if doc.get("type") != TYPE or doc.get("v") != VERSION:
        return f"not a floorgate checkpoint (type {doc.get('type')!r}, v {doc.get('v')!r})"
    for name in ("made_at", "kid", "sig"):
        if not isinstance(doc.get(name), str):
            return f"field {name}: expected a string"
    try:
        datetime.fromisoformat(doc["made_at"])
    except ValueError:
        return f"field made_at: {doc['made_at']!r} is not an ISO 8601 time"
    alibi, tse = doc.get("alibi"), doc.get("tse")
    if not isinstance(alibi, list) or not isinstance(tse, list):
        return "fields alibi and tse: expected lists"
    for i, h in enumerate(alibi):
        if not (isinstance(h, dict) and isinstance(h.get("node"), str) and _hex64(h.get("hash"))
                and all(_int(h.get(k)) for k in ("no", "count", "first"))):
            return f"alibi[{i}]: expected node, no, hash (64 hex), count, first"
    for i, h in enumerate(tse):
        if not (isinstance(h, dict) and isinstance(h.get("serial"), str)
                and all(_int(h.get(k)) for k in ("tx", "count", "first"))
                and (h.get("counter") is None or _int(h.get("counter")))
                and (h.get("row_hash") is None or _hex64(h.get("row_hash")))):
            return f"tse[{i}]: expected serial, tx, counter, row_hash (64 hex), count, first"
    return None


def load(path: str | Path, keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The checkpoint document in ``path``, its signature verified with ``keys`` (``trusted_keys``); a
    ``CheckpointError`` naming the file for anything else — a changed or forged file among them."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {p}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise CheckpointError(f"checkpoint {p}: larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {p}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"checkpoint {p}: expected a JSON object")
    problem = _check_shape(doc)
    if problem is not None:
        raise CheckpointError(f"checkpoint {p}: {problem}")
    key = keys.get(doc["kid"])
    if key is None:
        raise CheckpointError(f"checkpoint {p}: REFUSED — signed by key {doc['kid']!r}, which is not one of central's "
                              f"keys ({', '.join(sorted(keys)) or 'none'}): forged, or signed by a key retired since")
    if verify(key, canonical_json(doc), doc["sig"]) is not None:
        raise CheckpointError(f"checkpoint {p}: REFUSED — the signature does not verify with central's key "
                              f"{doc['kid']}: the file was altered or forged")
    return doc


# -- comparing --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    kind: str  # missing / altered / removed
    subject: str  # "node mill-01" / "TSE <serial>"
    numbers: tuple[int, ...]  # the entry / transaction numbers concerned (runs of missing numbers: first, last, …)
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "numbers": list(self.numbers), "message": self.message}


@dataclass
class Comparison:
    """What ``compare_alibi`` / ``compare_tse`` found for one checkpoint."""

    file: str
    made_at: str
    kid: str
    part: str  # alibi / tse
    heads: int = 0  # heads compared
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        what = "node(s)" if self.part == "alibi" else "TSE(s)"
        state = "everything it vouched for is held" if self.ok else f"{len(self.findings)} problem(s)"
        return (f"checkpoint {self.file} of {self.made_at} (central key {self.kid}): {self.heads} {what} "
                f"compared: {state}")

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "made_at": self.made_at, "kid": self.kid, "part": self.part, "heads": self.heads,
                "ok": self.ok, "findings": [f.to_json() for f in self.findings]}


def _runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def _listed(runs: list[tuple[int, int]]) -> str:
    text = ", ".join(str(a) if a == b else f"{a}…{b}" for a, b in runs[:MAX_LISTED])
    return text + (f", … ({len(runs) - MAX_LISTED} more runs)" if len(runs) > MAX_LISTED else "")


def _select(heads: list[dict[str, Any]], key: str, only: str | None, what: str, file: str) -> list[dict[str, Any]]:
    if only is None:
        return heads
    chosen = [h for h in heads if h[key] == only]
    if not chosen:
        raise CheckpointError(f"checkpoint {file} vouches for nothing of {what} {only!r} (it covers: "
                              f"{', '.join(h[key] for h in heads) or 'nothing'})")
    return chosen


def _removed(subject: str, what: str, head: Mapping[str, Any], top: int, held: set[int]) -> Finding | None:
    first, count = head["first"], head["count"]
    within = sum(1 for n in held if first <= n <= top)
    if within >= count:
        return None
    runs = _runs(set(range(first, top + 1)) - held)
    numbers = tuple(n for run in runs for n in run)
    return Finding("removed", subject, numbers,
                   f"{subject}: {count - within} of the {count} {what} {first}…{top} the checkpoint vouched for are "
                   f"missing; not held now: {_listed(runs)}")


def _compare_node(session: Session, head: Mapping[str, Any], made_at: str) -> list[Finding]:
    node, top, vouched = head["node"], head["no"], head["hash"]
    subject = f"node {node}"
    rows = session.execute(select(AlibiEntry.alibi_no, AlibiEntry.body)
                           .where(AlibiEntry.node_id == node, AlibiEntry.alibi_no.between(head["first"], top))
                           .order_by(AlibiEntry.alibi_no.desc())).yield_per(1000)
    findings: list[Finding] = []
    held: set[int] = set()
    expected: str | None = None  # the hash the entry now due must have: the vouched one, then each prev_hash
    expected_from = f"the checkpoint of {made_at}"
    at = top + 1  # the number the walk expects next (downwards)
    for no, body in rows:
        held.add(no)
        if no == top:
            expected = vouched
        elif no != at - 1:
            expected = None  # entries between are missing (named below): the chain cannot link across the gap
        actual = body_hash(body)
        if expected is not None and actual != expected:
            findings.append(Finding("altered", subject, (no,),
                                    f"{subject}: entry {no} hashes to {actual[:16]}…, {expected_from} says "
                                    f"{expected[:16]}…: it is not the entry the checkpoint vouched for"))
        try:
            prev = json.loads(body).get("prev_hash")
        except (ValueError, AttributeError):
            prev = None
        expected = prev if isinstance(prev, str) else None
        expected_from = f"entry {no}'s prev_hash"
        at = no
    if top not in held:
        findings.insert(0, Finding("missing", subject, (top,),
                                   f"{subject}: entry {top} (hash {vouched[:16]}…), the head the checkpoint of "
                                   f"{made_at} vouched for, is not held"))
    removed = _removed(subject, "entries", head, top, held)
    if removed is not None:
        findings.append(removed)
    return findings


def compare_alibi(sessions: sessionmaker[Session], doc: Mapping[str, Any], *, file: str,
                  node: str | None = None) -> Comparison:
    """Does the database still hold the alibi entries ``doc`` (a loaded checkpoint) vouched for — of every node, or
    only of ``node``?"""
    heads = _select(list(doc["alibi"]), "node", node, "node", file)
    out = Comparison(file=file, made_at=doc["made_at"], kid=doc["kid"], part="alibi", heads=len(heads))
    with sessions() as session:
        for head in heads:
            out.findings += _compare_node(session, head, doc["made_at"])
    return out


def _compare_tse(session: Session, head: Mapping[str, Any], made_at: str) -> list[Finding]:
    serial, top = head["serial"], head["tx"]
    subject = f"TSE {serial}"
    row = session.execute(select(TseTransaction.signature_counter, TseTransaction.signature)
                          .where(TseTransaction.tse_serial == serial, TseTransaction.tx_number == top)).first()
    findings: list[Finding] = []
    if row is None:
        findings.append(Finding("missing", subject, (top,),
                                f"{subject}: transaction {top} (signature counter {head['counter']}), the head the "
                                f"checkpoint of {made_at} vouched for, is not held"))
    else:
        counter, sig = row
        now_hash = row_hash(sig)
        if now_hash != head["row_hash"]:
            findings.append(Finding("altered", subject, (top,),
                                    f"{subject}: transaction {top}: its signature differs from the one the checkpoint "
                                    f"vouched for (SHA-256 {(now_hash or 'none')[:16]}…, vouched "
                                    f"{(head['row_hash'] or 'none')[:16]}…)"))
        if counter != head["counter"]:
            findings.append(Finding("altered", subject, (top,),
                                    f"{subject}: transaction {top}: signature counter {counter}, the checkpoint "
                                    f"vouched for {head['counter']}"))
    held = set(session.execute(select(TseTransaction.tx_number).where(
        TseTransaction.tse_serial == serial, TseTransaction.tx_number.between(head["first"], top))).scalars())
    removed = _removed(subject, "transactions", head, top, {n for n in held if n is not None})
    if removed is not None:
        findings.append(removed)
    return findings


def compare_tse(sessions: sessionmaker[Session], doc: Mapping[str, Any], *, file: str,
                serial: str | None = None) -> Comparison:
    """Does the database still hold the TSE transactions ``doc`` vouched for — of every TSE, or only of ``serial``?"""
    heads = _select(list(doc["tse"]), "serial", serial, "TSE", file)
    out = Comparison(file=file, made_at=doc["made_at"], kid=doc["kid"], part="tse", heads=len(heads))
    with sessions() as session:
        for head in heads:
            out.findings += _compare_tse(session, head, doc["made_at"])
    return out


__all__ = ["TYPE", "CheckpointError", "Comparison", "Finding", "alibi_heads", "compare_alibi", "compare_tse",
           "document_bytes", "file_name", "load", "make", "row_hash", "trusted_keys", "tse_heads"]
