"""The alibi mirror's entry format and its chain check, shared by the edge (which writes the chain) and central
(which keeps a copy and re-checks it).

A software copy does not replace a scale's alibi memory (devices.md §4); it makes tampering detectable. Every
weighing a node takes is appended to a hash-chained log signed with the node's Ed25519 key::

    body  canonical JSON (sync.signing.canonical_json) of
          {"v": 1, "node": "mill-01", "alibi_no": 17, "record_id": "<uuid>", "device": "bridge-1",
           "weighed_at_ns": 1732400000000000000, "gross": "24560", "tare": "8420", "tare_preset": false,
           "net": "16140", "unit": "kg", "scale_serial": "B123456", "instrument_alibi": "004711",
           "prev_hash": "<hash of entry 16>"}
    hash  SHA-256 (hex) of the body bytes
    sig   Ed25519 signature of the body bytes (base64)

    entry 1               entry 2               entry 3
    [ prev_hash 000…0 ]   [ prev_hash h1 ]      [ prev_hash h2 ]
    [ hash h1         ]<──┘                     │
                          [ hash h2      ]<─────┘

``alibi_no`` counts 1, 2, 3 … per node without gaps; the first entry's ``prev_hash`` is 64 zeros. Legal values are
the strings the instrument delivered (never recomputed); a field the record does not have is ``null``. The entry
travels inside its weighing record as ``data.alibi = {"no", "body", "hash", "sig"}``, ``body`` being the exact
text that was hashed and signed; the weighing's fields it signs are ``sync.records.weighing.LEGAL_FIELDS``.

``check_chain`` re-checks a stored chain and names every problem by entry number and kind: ``altered`` (a body that
does not match its hash, or whose signature fails where the node's entry stood), ``removed`` (a number missing:
the next entry's ``prev_hash`` is the hash of an entry that is not there), ``inserted`` (an entry not signed by the
node), ``reordered`` (entries stored under numbers other than the ones they were signed with), ``chain_break``
(two signed entries that do not link), ``invalid`` (a signed body that is not an alibi entry) and
``untrusted_key`` (an entry whose signature verifies only with a key that was not the node's trusted key when the
entry was made: a key the fleet CA did not bind, or a bound key outside its interval).

A node may have had several keys (a re-enrolment rotates it; ``sync.keybinding``): the check takes the key, or a
resolver that gives for each entry the keys that may have signed it — the ones whose interval covers the entry's
``weighed_at_ns`` — so a chain whose older entries were signed with the rotated key verifies as one chain.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync import bounded as bounded_json
from sync.errors import DecodeError, SyncError
from sync.records.weighing import LEGAL_FIELDS
from sync.signing import canonical_json, sign, verify

ALIBI_VERSION = 1
ZERO_HASH = "0" * 64
MAX_BODY_CHARS = 16_384
MAX_ALIBI_NO = 2**63 - 1
# an entry is one flat object: nesting, sizes and integers are bounded before the body is parsed (``sync.bounded``)
BODY_LIMITS = bounded_json.JsonLimits(max_bytes=4 * MAX_BODY_CHARS, max_depth=4, max_values=256, max_items=64,
                                      max_string_chars=MAX_BODY_CHARS, max_key_chars=64)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SIG = re.compile(r"^[A-Za-z0-9+/]{86}==$")  # base64 of the 64 bytes of an Ed25519 signature

KINDS = ("altered", "removed", "inserted", "reordered", "chain_break", "invalid", "untrusted_key")

KeyResolver = Callable[[Mapping[str, Any]], Sequence[Ed25519PublicKey]]
"""an entry's decoded body → the keys that may have signed it (trusted, their interval covering the entry)"""
SuspectResolver = Callable[[Mapping[str, Any]], Sequence[tuple[Ed25519PublicKey, str]]]
"""an entry's decoded body → keys that are known but not trusted for it, each with a description that says why
(an entry verifying only with one of them is ``untrusted_key``, not ``altered``)"""


class AlibiError(SyncError):
    """An alibi part that cannot be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class AlibiPart:
    """One entry as it travels in ``data.alibi`` and is stored on both sides."""

    no: int
    body: str
    hash: str
    sig: str

    def to_json(self) -> dict[str, Any]:
        return {"no": self.no, "body": self.body, "hash": self.hash, "sig": self.sig}


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def make_entry(key: Ed25519PrivateKey, *, node: str, alibi_no: int, record_id: str, device: str,
               weighed_at_ns: int, data: Mapping[str, Any], prev_hash: str) -> AlibiPart:
    """The entry for one weighing: its body (legal values taken from the record's ``data`` as they are), hash and
    signature."""
    body: dict[str, Any] = {"v": ALIBI_VERSION, "node": node, "alibi_no": alibi_no, "record_id": record_id,
                            "device": device, "weighed_at_ns": weighed_at_ns, "prev_hash": prev_hash}
    for name in LEGAL_FIELDS:
        body[name] = data.get(name)
    text = canonical_json(body).decode()
    return AlibiPart(no=alibi_no, body=text, hash=body_hash(text), sig=sign(key, text.encode()))


def parse_part(obj: object) -> tuple[AlibiPart, dict[str, Any]]:
    """``data.alibi`` → (the part, its body decoded). Checks the shape, that the body is canonical JSON of an alibi
    entry of this version with the part's number, and that the hash is the body's. Raises ``AlibiError``.
    The signature is not checked here (that needs the node's key: ``verify``)."""
    if not isinstance(obj, dict):
        raise AlibiError("data.alibi: expected an object with no, body, hash, sig")
    missing = [k for k in ("no", "body", "hash", "sig") if k not in obj]
    if missing:
        raise AlibiError(f"data.alibi: missing {', '.join(missing)}")
    no, text, digest, sig = obj["no"], obj["body"], obj["hash"], obj["sig"]
    if isinstance(no, bool) or not isinstance(no, int) or not 1 <= no <= MAX_ALIBI_NO:
        raise AlibiError(f"data.alibi.no: expected an entry number ≥ 1, got {no!r}")
    if not isinstance(text, str) or not 0 < len(text) <= MAX_BODY_CHARS:
        raise AlibiError(f"data.alibi.body: expected the entry's JSON text (at most {MAX_BODY_CHARS} characters)")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise AlibiError("data.alibi.hash: expected 64 lowercase hex digits (SHA-256)")
    if not isinstance(sig, str) or not _SIG.match(sig):
        raise AlibiError("data.alibi.sig: expected the base64 of a 64-byte Ed25519 signature")
    try:
        body = bounded_json.loads(text, BODY_LIMITS)
    except DecodeError as exc:
        raise AlibiError(f"data.alibi.body: not JSON within the limits of an entry ({exc.reason})") from None
    if not isinstance(body, dict):
        raise AlibiError("data.alibi.body: expected a JSON object")
    if canonical_json(body).decode() != text:
        raise AlibiError("data.alibi.body: not in canonical form (sorted keys, no spaces)")
    if body.get("v") != ALIBI_VERSION:
        raise AlibiError(f"data.alibi.body.v: expected {ALIBI_VERSION}, got {body.get('v')!r}")
    if body.get("alibi_no") != no or isinstance(body.get("alibi_no"), bool):
        raise AlibiError(f"data.alibi.body.alibi_no: {body.get('alibi_no')!r} is not the entry's number {no}")
    prev = body.get("prev_hash")
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise AlibiError("data.alibi.body.prev_hash: expected 64 lowercase hex digits")
    ts = body.get("weighed_at_ns")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise AlibiError("data.alibi.body.weighed_at_ns: expected an integer")
    for name in ("node", "record_id", "device"):
        if not isinstance(body.get(name), str):
            raise AlibiError(f"data.alibi.body.{name}: expected text")
    missing = [name for name in LEGAL_FIELDS if name not in body]
    if missing:
        raise AlibiError(f"data.alibi.body: missing {', '.join(missing)}")
    if body_hash(text) != digest:
        raise AlibiError("data.alibi.hash: not the SHA-256 of the body")
    return AlibiPart(no=no, body=text, hash=digest, sig=sig), body


# -- re-checking a stored chain ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEntry:
    """An entry as a store holds it: ``position`` is the number it is stored under (which a tampered store may have
    changed; the signed number is inside the body)."""

    position: int
    body: str
    hash: str
    sig: str


@dataclass(frozen=True)
class Problem:
    kind: str  # one of KINDS, or a kind a caller adds (central: weighing_altered, weighing_missing)
    entries: tuple[int, ...]  # the entry numbers it names
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "entries": list(self.entries), "message": self.message}


@dataclass
class CheckedEntry:
    """What the check learnt of one stored entry (compact: a chain of two years is held in memory)."""

    position: int
    signed: bool  # the signature over the body verifies with the node's key and the body is an entry of the node
    signed_no: int | None  # the number inside the body
    record_id: str | None
    prev_hash: str | None
    real_hash: str  # SHA-256 of the body as stored
    stored_hash: str
    legal: tuple[Any, ...] = ()  # the body's LEGAL_FIELDS values, in that order
    device: str | None = None
    verdict: str | None = None  # altered / inserted / invalid / untrusted_key when not the node's intact entry
    untrusted_by: str | None = None  # untrusted_key: the key it verifies with, and why that key is not trusted


@dataclass
class ChainCheck:
    entries: list[CheckedEntry]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def head_hash(self) -> str | None:
        """Hash of the highest signed entry (what the next entry must link to)."""
        signed = [e for e in self.entries if e.signed and e.signed_no is not None]
        return max(signed, key=lambda e: e.signed_no or 0).real_hash if signed else None


def _examine(entry: StoredEntry, keys: KeyResolver, node: str, suspects: SuspectResolver | None) -> CheckedEntry:
    real = body_hash(entry.body)
    body: Any = None
    try:
        body = bounded_json.loads(entry.body, BODY_LIMITS)
    except DecodeError:
        body = None
    if not isinstance(body, dict):
        return CheckedEntry(entry.position, False, None, None, None, real, entry.hash, verdict="invalid")
    no = body.get("alibi_no")
    no = no if isinstance(no, int) and not isinstance(no, bool) else None
    prev = body.get("prev_hash") if isinstance(body.get("prev_hash"), str) else None
    rid = body.get("record_id") if isinstance(body.get("record_id"), str) else None
    ours = body.get("node") == node and no is not None
    data = entry.body.encode()
    signed = ours and any(verify(k, data, entry.sig) is None for k in keys(body))
    dev = body.get("device") if isinstance(body.get("device"), str) else None
    row = CheckedEntry(entry.position, signed, no, rid, prev, real, entry.hash,
                       legal=tuple(body.get(n) for n in LEGAL_FIELDS), device=dev)
    if not signed and ours and suspects is not None:
        row.untrusted_by = next((why for k, why in suspects(body) if verify(k, data, entry.sig) is None), None)
        if row.untrusted_by is not None:
            row.verdict = "untrusted_key"
    return row


def _fixed(key: Ed25519PublicKey) -> KeyResolver:
    keys = (key,)
    return lambda _body: keys


def _runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def _span(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}…{b}"


def check_chain(stored: Iterable[StoredEntry], key: Ed25519PublicKey | KeyResolver, *, node: str,
                pruned: bool = False, claimed: Mapping[int, str] | None = None, holder: str = "central",
                suspects: SuspectResolver | None = None) -> ChainCheck:
    """Re-check a chain of one node from its stored entries (in any order).

    ``key``: the node's key, or a ``KeyResolver`` giving each entry the keys that may have signed it (the node's
    key history). ``suspects``: the keys known but not trusted for an entry (``SuspectResolver``); an entry that
    verifies only with one of them is named ``untrusted_key`` (consecutive ones in one problem).

    ``pruned``: older entries may have been given up (the edge's retention), so the chain may start after 1.
    ``claimed``: entry number → record id of the weighings that arrived with that number (central's weighings
    table) — they name entries missing at the end of the chain, and tell an altered last entry from an inserted one.
    ``holder`` names the store in messages ("central", "this node").
    """
    claimed = claimed or {}
    keys = _fixed(key) if isinstance(key, Ed25519PublicKey) else key
    rows = sorted((_examine(e, keys, node, suspects) for e in stored), key=lambda c: c.position)
    check = ChainCheck(entries=rows)
    problems = check.problems
    add = problems.append

    # 1. entries that are not the node's intact entry
    for i, row in enumerate(rows):
        n = row.position
        if row.signed and row.real_hash != row.stored_hash:
            add(Problem("altered", (n,), f"entry {n}: its stored hash was changed (the body and its signature are "
                                         "intact)"))
            continue
        if row.signed:
            continue
        if row.verdict == "invalid":
            add(Problem("invalid", (n,), f"entry {n}: the body is not an alibi entry (not a JSON object)"))
            continue
        if row.verdict == "untrusted_key" and row.real_hash == row.stored_hash:
            continue  # named below, consecutive ones together
        if row.real_hash != row.stored_hash:
            row.verdict = "altered"
            add(Problem("altered", (n,), f"entry {n}: body does not match its hash and the signature is invalid: "
                                         "changed after the node signed it"))
            continue
        pred = rows[i - 1] if i > 0 and rows[i - 1].signed else None
        succ = rows[i + 1] if i + 1 < len(rows) and rows[i + 1].signed else None
        if succ is not None and succ.prev_hash == row.real_hash:
            row.verdict = "altered"
            add(Problem("altered", (n,), f"entry {n}: signature invalid, though entry {succ.signed_no} links to "
                                         "its body: the signature was changed"))
        elif succ is not None and pred is not None and succ.prev_hash == pred.real_hash:
            row.verdict = "inserted"
            add(Problem("inserted", (n,), f"entry {n} is not signed by the node: inserted between entries "
                                          f"{pred.signed_no} and {succ.signed_no}, which link to each other"))
        elif succ is not None:
            row.verdict = "altered"
            add(Problem("altered", (n,), f"entry {n}: signature invalid and entry {succ.signed_no} links to another "
                                         f"hash: the node's entry {n} was replaced (body and hash changed)"))
        elif claimed.get(n) is not None and claimed.get(n) == row.record_id:
            row.verdict = "altered"
            add(Problem("altered", (n,), f"entry {n}: signature invalid: the entry of weighing record {row.record_id} "
                                         "was changed (body and hash)"))
        else:
            row.verdict = "inserted"
            add(Problem("inserted", (n,), f"entry {n} is not signed by the node (forged)"
                        + ("" if pred is None else f" and follows entry {pred.signed_no}")
                        + ": no weighing arrived with this number"))

    untrusted: list[CheckedEntry] = [r for r in rows if r.verdict == "untrusted_key"]
    i = 0
    while i < len(untrusted):
        j = i
        while (j + 1 < len(untrusted) and untrusted[j + 1].position == untrusted[j].position + 1
               and untrusted[j + 1].untrusted_by == untrusted[i].untrusted_by):
            j += 1
        a, b = untrusted[i].position, untrusted[j].position
        add(Problem("untrusted_key", tuple(range(a, b + 1)),
                    f"entr{'y' if a == b else 'ies'} {_span(a, b)}: signed only with {untrusted[i].untrusted_by}"))
        i = j + 1

    # 2. signed entries stored under another number than the one they were signed with, or twice
    signed: dict[int, CheckedEntry] = {}
    for row in rows:
        if row.signed and row.signed_no is not None:
            if row.signed_no in signed:
                add(Problem("inserted", (row.signed_no,),
                            f"entry {row.signed_no} is stored twice (under {signed[row.signed_no].position} and "
                            f"{row.position}): a copy was inserted"))
                continue
            signed[row.signed_no] = row
    moved = {r.position: r.signed_no for r in signed.values() if r.signed_no != r.position}
    done: set[int] = set()
    for pos, no in sorted(moved.items()):
        if pos in done or no is None:
            continue
        if moved.get(no) == pos:
            done |= {pos, no}
            add(Problem("reordered", (min(pos, no), max(pos, no)),
                        f"entries {min(pos, no)} and {max(pos, no)} swapped: each is stored under the other's number"))
    rest = {p: no for p, no in moved.items() if p not in done and no is not None}
    shifts: dict[int, list[int]] = {}
    for p, no in rest.items():
        shifts.setdefault(no - p, []).append(no)
    for d, nos in sorted(shifts.items()):
        for a, b in _runs(nos):
            add(Problem("reordered", tuple(range(a, b + 1)),
                        f"entr{'y' if a == b else 'ies'} {_span(a, b)} stored under number{'s' if a != b else ''} "
                        f"{_span(a - d, b - d)}: renumbered ({'+' if -d > 0 else ''}{-d})"))

    # 3. the signed chain: numbers without gaps, each entry linking to the one before
    present = set(signed) | {r.position for r in rows if r.verdict in ("altered", "untrusted_key")}
    if not present and not claimed:
        return check
    top = max([*present, *claimed])
    start = min(present) if pruned and present else 1
    missing: list[int] = []
    for n in range(start, top + 1):
        entry = signed.get(n)
        if entry is None:
            if n not in present:
                missing.append(n)
            continue
        if n == start and (pruned and n > 1):
            continue  # the oldest entry kept: its predecessor was given up to retention
        if n == 1:
            if entry.prev_hash != ZERO_HASH:
                add(Problem("chain_break", (1,), "entry 1: prev_hash is not 64 zeros: it does not start a chain"))
            continue
        before = signed.get(n - 1)
        if before is not None and entry.prev_hash != before.real_hash:
            add(Problem("chain_break", (n - 1, n), f"entries {n - 1} and {n} do not link: entry {n}'s prev_hash is "
                                                   f"not the hash of entry {n - 1}"))
    for a, b in _runs(missing):
        nxt = signed.get(b + 1)
        last = signed.get(a - 1)
        if nxt is not None and last is not None and nxt.prev_hash == last.real_hash:
            add(Problem("chain_break", tuple(range(a, b + 1)),
                        f"number{'s' if a != b else ''} {_span(a, b)} skipped by the node: entry {b + 1} links to "
                        f"entry {a - 1}"))
            continue
        if nxt is not None:
            why = f"entry {b + 1}'s prev_hash is the hash of an entry {holder} does not have"
        elif any(claimed.get(n) for n in range(a, b + 1)):
            rid = next(claimed[n] for n in range(a, b + 1) if claimed.get(n))
            why = f"the weighings arrived with these numbers (e.g. record {rid}) but their entries are not here"
        else:
            why = "the numbering has a gap"
        add(Problem("removed", tuple(range(a, b + 1)),
                    f"entr{'y' if a == b else 'ies'} {_span(a, b)} missing: {why}"))
    return check


__all__ = [
    "ALIBI_VERSION",
    "KINDS",
    "ZERO_HASH",
    "AlibiError",
    "AlibiPart",
    "ChainCheck",
    "CheckedEntry",
    "KeyResolver",
    "Problem",
    "StoredEntry",
    "SuspectResolver",
    "body_hash",
    "check_chain",
    "make_entry",
    "parse_part",
]
