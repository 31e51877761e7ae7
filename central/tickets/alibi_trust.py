"""What the alibi check trusts: the node's keys as the fleet CA vouches for them, and the head the node signed.

**Keys** (``NodeTrust``): every key of the node from ``central.fleet.keys.key_history`` — each CA-signed statement
re-verified against ``ca.crt`` (a file, not central's database). An entry is checked with the trusted keys whose
interval covers its ``weighed_at_ns`` (``KeyHistory.candidates``: clock tolerance, a rotated key's grace), so a
re-enrolled node's chain verifies across the rotation. Keys the node has in the database that the CA did not bind
— a ``node_keys`` row without a valid statement, or a ``nodes.public_key`` that is in no row — are *suspects*: an
entry that verifies only with one of them, or with a bound key outside its interval, is ``untrusted_key`` (never
``altered``), and each such key is a node-level ``untrusted_key`` problem whatever the entries say.

**Head** (``SignedHead``): the newest alibi head the node signed in a heartbeat (``Node.heads["alibi"]``, stored by
``central.fleet.heads`` with the heartbeat's signed body and signature). It is re-verified here with the key
history (the body and signature as the node sent them), then compared with central's copy: when the head's record
is acknowledged (its ``seq`` ≤ ``StreamMark.acked_seq`` of its epoch and stream) central must hold every entry up
to its number, and that entry must have the head's hash — missing ones are ``truncated``. A head beyond the ack is
in transit, not a problem.

**Ingest** gets the fleet CA certificate with ``use_ca_cert`` (like ``central.tickets.pairing.use_settings``: in
``session.info`` of every session); ``entry_keys`` gives the keys an arriving entry may be signed with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import Node, StreamMark
from central.db.types import utc_from_ns
from central.fleet.keys import KeyHistory, key_history
from sync.alibi import Problem
from sync.errors import SyncError
from sync.keybinding import KeyPeriod
from sync.signing import fingerprint, parse_public_key, verify

CA_KEY = "floorgate_fleet_ca"  # session.info: the fleet CA certificate (ingest)
_HISTORY_CACHE = "floorgate_alibi_keys"  # session.info: node → (keys by text, history), one batch's transaction


def use_ca_cert(sessions: sessionmaker[Session], ca_cert: x509.Certificate | None) -> None:
    """Hand the fleet CA certificate to every session of ``sessions`` (``session.info``), where ingest's
    ``entry_from_record`` finds it to check entries against the node's key history."""
    info = dict(sessions.kw.get("info") or {})
    info[CA_KEY] = ca_cert
    sessions.configure(info=info)


def ca_cert_of(session: Session) -> x509.Certificate | None:
    found = session.info.get(CA_KEY)
    return found if isinstance(found, x509.Certificate) else None


def _parse(text: str) -> Ed25519PublicKey | None:
    try:
        return parse_public_key(text)
    except SyncError:
        return None


def _when(ns: int | None) -> str:
    return "open" if ns is None else utc_from_ns(ns).isoformat(timespec="seconds")


def _interval(p: KeyPeriod) -> str:
    until = "on" if p.valid_until_ns is None else f"until {_when(p.valid_until_ns)} ({p.end})"
    return f"from {_when(p.valid_from_ns)} {until}"


@dataclass(frozen=True)
class Suspect:
    key: Ed25519PublicKey | None  # None: not even an Ed25519 key
    fingerprint: str
    why: str


@dataclass
class NodeTrust:
    """The keys of one node as ``check_chain`` takes them (``keys`` / ``suspects``), and the node-level problems."""

    node: str
    history: KeyHistory
    untrusted: list[Suspect] = field(default_factory=list)
    _keys: dict[str, Ed25519PublicKey | None] = field(default_factory=dict)

    @classmethod
    def of(cls, session: Session, node: Node, ca_cert: x509.Certificate | None) -> NodeTrust:
        history = key_history(session, node.node_id, ca_cert)
        trust = cls(node=node.node_id, history=history)
        for u in history.untrusted:
            trust.untrusted.append(Suspect(trust.key(u.public_key), u.fingerprint, u.why))
        known = {u.fingerprint for u in history.untrusted} | {p.fingerprint for p in history.periods}
        if node.public_key:
            key = trust.key(node.public_key)
            if key is None:
                trust.untrusted.append(Suspect(None, node.key_fingerprint or "?", "the registered key "
                                               "(nodes.public_key) is not an Ed25519 key"))
            elif fingerprint(key) not in known:
                trust.untrusted.append(Suspect(key, fingerprint(key), "the registered key (nodes.public_key) is in "
                                               "no node_keys row: it was written into the database without the "
                                               "fleet CA"))
        return trust

    @property
    def empty(self) -> bool:
        """No key at all: the node was never enrolled."""
        return not self.history.periods and not self.untrusted

    def key(self, text: str) -> Ed25519PublicKey | None:
        if text not in self._keys:
            self._keys[text] = _parse(text)
        return self._keys[text]

    def candidates(self, t_ns: object) -> list[Ed25519PublicKey]:
        """The trusted keys that may have signed something the node made at ``t_ns``."""
        if isinstance(t_ns, bool) or not isinstance(t_ns, int):
            return []
        return [k for p in self.history.candidates(t_ns) if (k := self.key(p.public_key)) is not None]

    def keys(self, body: Mapping[str, Any]) -> Sequence[Ed25519PublicKey]:
        """``sync.alibi.KeyResolver``: the trusted keys whose interval covers the entry's ``weighed_at_ns``."""
        return self.candidates(body.get("weighed_at_ns"))

    def suspects(self, body: Mapping[str, Any]) -> Sequence[tuple[Ed25519PublicKey, str]]:
        """``sync.alibi.SuspectResolver``: the untrusted keys, and the trusted ones outside their interval."""
        return self.suspects_at(body.get("weighed_at_ns"))

    def suspects_at(self, t_ns: object) -> list[tuple[Ed25519PublicKey, str]]:
        out = [(s.key, f"key {s.fingerprint}, which is not trusted: {s.why}") for s in self.untrusted
               if s.key is not None]
        covering = {id(p) for p in self.history.candidates(t_ns)} if isinstance(t_ns, int) else set()
        for p in self.history.periods:  # the same text for every entry: consecutive ones are named together
            k = self.key(p.public_key)
            if k is not None and id(p) not in covering:
                out.append((k, f"key {p.fingerprint}, which the fleet CA vouches for only {_interval(p)}: outside "
                               "that interval"))
        return out

    def problems(self) -> list[Problem]:
        """A node-level ``untrusted_key`` for every key the CA did not bind."""
        return [Problem("untrusted_key", (), f"node {self.node}: key {s.fingerprint} is not trusted: {s.why}")
                for s in self.untrusted]


def entry_keys(session: Session, node: str, public_key: str | None, t_ns: int) -> list[Ed25519PublicKey]:
    """The keys an entry arriving at ingest (made at ``t_ns``) may be signed with: with the fleet CA, the node's
    trusted keys whose interval covers ``t_ns`` (a record sent again after a rotation carries an entry of the old
    key); and the registered key (``nodes.public_key``, the batch's key) as without a CA. A key central cannot
    trust is still reported by ``verify-alibi``: ingest only keeps garbage out of central's copy."""
    keys: list[Ed25519PublicKey] = []
    ca = ca_cert_of(session)
    if ca is not None:
        cache: dict[str, NodeTrust] = session.info.setdefault(_HISTORY_CACHE, {})
        trust = cache.get(node)
        if trust is None:
            trust = NodeTrust(node=node, history=key_history(session, node, ca))
            cache[node] = trust
        keys += trust.candidates(t_ns)
    if public_key:
        key = _parse(public_key)
        if key is not None:
            keys.append(key)
    return keys


# -- the node's signed head -------------------------------------------------------------------------------------------


@dataclass
class SignedHead:
    """The node's newest signed alibi head as central holds it, and what the check made of it."""

    no: int
    hash: str
    epoch: str
    stream: str
    seq: int
    pruned_through: int
    pruned_hash: str | None
    at: datetime | None  # when central stored it
    acked_seq: int  # central's contiguous mark of its epoch and stream
    state: str = "held"  # held / in_transit / truncated / mismatch / invalid

    @property
    def acknowledged(self) -> bool:
        return self.seq <= self.acked_seq

    def to_json(self) -> dict[str, Any]:
        return {"no": self.no, "hash": self.hash, "epoch": self.epoch, "stream": self.stream, "seq": self.seq,
                "acked_seq": self.acked_seq, "pruned_through": self.pruned_through,
                "at": self.at.isoformat() if self.at else None, "state": self.state}

    def describe(self) -> str:
        at = self.at.isoformat(timespec="seconds") if self.at else "an unknown time"
        return f"the node signed head {self.no} (hash {self.hash[:16]}…) at {at}"


def _int(obj: Mapping[str, Any], name: str) -> int | None:
    v = obj.get(name)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_head(session: Session, node: Node, trust: NodeTrust) -> tuple[SignedHead | None, list[Problem]]:
    """The node's signed alibi head, re-verified: its heartbeat body's signature with the node's key valid when it
    was sent, and ``Node.heads`` against that body. A head that does not verify is named ``head_invalid`` and
    returned with state ``invalid``; one that verifies only with a key the CA did not bind is named
    ``untrusted_key`` (and still compared). None when the node never reported one."""
    heads = node.heads if isinstance(node.heads, dict) else None
    alibi = heads.get("alibi") if heads else None
    if not isinstance(alibi, dict):
        return None, []
    name = f"node {node.node_id}: the signed head central holds"
    problems: list[Problem] = []
    signed: Any = None
    try:
        signed = json.loads(node.heads_body) if node.heads_body else None
    except ValueError:
        signed = None
    signed_alibi = signed.get("heads", {}).get("alibi") if isinstance(signed, dict) and isinstance(
        signed.get("heads"), dict) else None
    if not isinstance(signed, dict) or not node.heads_sig:
        problems.append(Problem("head_invalid", (), f"{name} comes without the heartbeat it was signed in"))
    elif signed_alibi != alibi or signed.get("node") != node.node_id:
        problems.append(Problem("head_invalid", (), f"{name} is not the one in the signed heartbeat (nodes.heads was "
                                                    "changed)"))
    else:
        body = (node.heads_body or "").encode()
        sent = signed.get("sent_at_ns")
        if not any(verify(k, body, node.heads_sig) is None for k in trust.candidates(sent)):
            by = next((why for k, why in trust.suspects_at(sent) if verify(k, body, node.heads_sig) is None), None)
            if by is not None:
                problems.append(Problem("untrusted_key", (), f"{name} is signed only with {by}"))
            else:
                problems.append(Problem("head_invalid", (), f"{name}: the heartbeat's signature does not verify with "
                                                            "the node's key: it was changed after the node signed it"))
    no, seq, pruned = _int(alibi, "no"), _int(alibi, "seq"), _int(alibi, "pruned_through")
    epoch, stream, digest = alibi.get("epoch"), alibi.get("stream"), alibi.get("hash")
    if no is None or seq is None or not isinstance(epoch, str) or not isinstance(stream, str) \
            or not isinstance(digest, str):
        return None, [*problems, Problem("head_invalid", (), f"{name} is not an alibi head: {alibi!r}"[:300])]
    acked = session.execute(select(StreamMark.acked_seq).where(
        StreamMark.node_id == node.node_id, StreamMark.epoch == epoch, StreamMark.stream == stream)).scalar()
    pruned_hash = alibi.get("pruned_hash")
    head = SignedHead(no=no, hash=digest, epoch=epoch, stream=stream, seq=seq, pruned_through=pruned or 0,
                      pruned_hash=pruned_hash if isinstance(pruned_hash, str) else None, at=node.heads_at,
                      acked_seq=int(acked or 0))
    if any(p.kind == "head_invalid" for p in problems):
        head.state = "invalid"  # its numbers prove nothing; one signed with an untrusted key is still compared
    return head, problems


def check_head(head: SignedHead, held: Mapping[int, str], present: set[int]) -> list[Problem]:
    """Central's copy against the node's signed head. ``held``: signed entry number → its real hash; ``present``:
    every number central holds an entry under, or another problem already names."""
    if head.state == "invalid":
        return []
    problems: list[Problem] = []
    at = head.at.isoformat(timespec="seconds") if head.at else "an unknown time"
    if head.no in held and held[head.no] != head.hash:
        head.state = "mismatch"
        problems.append(Problem("altered", (head.no,), f"entry {head.no}: its hash {held[head.no][:16]}… is not the "
                                                       f"hash {head.hash[:16]}… the node signed in its head at {at}"))
    n = head.pruned_through
    if n and head.pruned_hash and n in held and held[n] != head.pruned_hash:
        problems.append(Problem("altered", (n,), f"entry {n}: its hash {held[n][:16]}… is not the hash "
                                                 f"{head.pruned_hash[:16]}… the node signed (at {at}) for the last "
                                                 "entry it gave up to retention"))
    if not head.acknowledged:
        if head.state == "held":
            head.state = "in_transit"
        return problems
    top = max(present, default=0)
    if head.no > top:
        a, b = top + 1, head.no
        head.state = "truncated"
        span = str(a) if a == b else f"{a}…{b}"
        problems.append(Problem("truncated", tuple(range(a, b + 1)),
                                f"entr{'y' if a == b else 'ies'} {span} missing: {head.describe()}; central holds "
                                + (f"up to {top}" if top else "none of its entries")
                                + f" (the head's record, {head.stream} seq {head.seq}, was acknowledged: central's "
                                  f"mark is {head.acked_seq})"))
    return problems


__all__ = ["CA_KEY", "NodeTrust", "SignedHead", "Suspect", "ca_cert_of", "check_head", "entry_keys", "read_head",
           "use_ca_cert"]
