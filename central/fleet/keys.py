"""Every signing key a node ever had, anchored in the fleet CA (``sync.keybinding``), with its validity interval.

The ``node_keys`` table holds, per node, each key with the CA's key-binding statement (and, for a key that ended,
the CA-signed revocation or the successor's binding). The table is a cache of signed facts, not a trust anchor:
``key_history`` re-verifies every statement against ``ca.crt`` from ``pki.dir`` (a file), so a key someone wrote
into the database without the CA — or an interval someone changed — is reported (``untrusted``), whatever the
entries signed with it say. Verifiers (``verify-alibi``, ingest, command results) take the key whose interval
covers the time an artefact was made (``KeyPeriod.covers``).

The write side (``set_key``, ``revoke_keys``; called by ``central.fleet.nodes``) keeps that history: a new key is
bound by the CA (``make_binding``, ``supersedes`` the key it replaces), the key it replaces ends with the new
binding as its signed end (``rotated``), a revoked key with the CA's revocation (``revoked``); ``nodes.public_key``
stays the current key (ingest's fast path). Without the CA key at hand a key is registered unbound (``binding``
None: untrusted). Every registration, binding, rotation and revocation is an audit-log row (resource ``node_key``,
resource id the node).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db import audit
from central.db.models import Node, NodeKey
from central.db.types import as_utc, utc_from_ns
from sync.keybinding import (
    BINDING,
    REVOCATION,
    BindingError,
    KeyPeriod,
    Statement,
    key_periods,
    make_binding,
    make_revocation,
    verify_statement,
)
from sync.signing import fingerprint, parse_public_key, public_key_text
from sync.signing import verify as verify_signature

if TYPE_CHECKING:
    from central.fleet.pki import CertificateAuthority

ROTATION_GRACE_NS = 7 * 86_400 * 10**9  # a rotated key still signs what the agent made before it got its new bundle
CLOCK_TOLERANCE_NS = 300 * 10**9  # the node's clock may differ from central's / the CA's this much
RESOURCE = "node_key"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CaCertError(Exception):
    """The fleet CA certificate cannot be read; the message names the file."""


def load_ca_cert(pki_dir: str | Path | None) -> x509.Certificate | None:
    """``ca.crt`` of the fleet CA in ``pki_dir`` (None when central has no ``pki`` section). ``CaCertError`` when
    the directory is configured but the certificate cannot be read."""
    if pki_dir is None:
        return None
    path = Path(pki_dir) / "ca.crt"
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise CaCertError(f"{path}: cannot read the fleet CA certificate: {exc.strerror}") from None
    except ValueError as exc:
        raise CaCertError(f"{path}: not a PEM certificate: {exc}") from None


def _us(dt: datetime) -> int:
    """Microseconds since the epoch (what a database timestamp holds)."""
    return (as_utc(dt) - _EPOCH) // timedelta(microseconds=1)


def _dt(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _now_ns() -> int:
    """Now, to the microsecond (so the signed nanoseconds and the database column say the same)."""
    return time.time_ns() // 1000 * 1000


@dataclass(frozen=True)
class UntrustedKey:
    """A key row the CA did not bind (or whose statements do not verify): never used to verify anything."""

    public_key: str
    fingerprint: str
    why: str


@dataclass(frozen=True)
class KeyRow:
    """One ``node_keys`` row as verified: its CA-signed period, or why it is not trusted."""

    id: int
    public_key: str
    fingerprint: str
    valid_from: datetime  # as the database says (the signed interval is ``period``)
    valid_until: datetime | None
    end_reason: str | None
    registered_by: str
    period: KeyPeriod | None  # None: untrusted
    why: str | None  # why it is untrusted


@dataclass
class KeyHistory:
    node: str
    periods: list[KeyPeriod] = field(default_factory=list)  # the keys the CA vouches for, oldest first
    untrusted: list[UntrustedKey] = field(default_factory=list)
    rows: list[KeyRow] = field(default_factory=list)  # every row, in node_keys.id order

    def candidates(self, t_ns: int, *, tolerance_ns: int = CLOCK_TOLERANCE_NS,
                   rotation_grace_ns: int = ROTATION_GRACE_NS) -> list[KeyPeriod]:
        """The trusted keys that may have signed an artefact stamped ``t_ns`` (newest first)."""
        return [p for p in reversed(self.periods)
                if p.covers(t_ns, tolerance_ns=tolerance_ns, rotation_grace_ns=rotation_grace_ns)]

    def current(self) -> KeyPeriod | None:
        """The newest trusted key the CA has not ended (None: none)."""
        return next((p for p in reversed(self.periods) if p.valid_until_ns is None), None)


def _end_of(st: Statement, fp: str) -> int | None:
    """When ``st`` ends key ``fp``: a revocation of it, or a binding that supersedes it (None: it does not)."""
    if st.type == REVOCATION and st.fingerprint == fp:
        return int(st.body["at_ns"])
    if st.type == BINDING and st.body.get("supersedes") == fp:
        return int(st.body["valid_from_ns"])
    return None


def _check_row(row: NodeKey, node_id: str, ca_cert: x509.Certificate) -> tuple[Statement, Statement | None]:
    """The row's binding (and signed end) if they verify and the row's columns say what they sign."""
    st = verify_statement(row.binding, ca_cert, node=node_id)
    if st.type != BINDING or st.body.get("key") != row.public_key or st.fingerprint != row.fingerprint:
        raise BindingError(f"node {node_id}: the statement does not bind key {row.fingerprint}")
    signed_from = int(st.body["valid_from_ns"])
    if _us(row.valid_from) != signed_from // 1000:
        raise BindingError(f"node {node_id}: key {row.fingerprint}: valid_from in the database "
                           f"({as_utc(row.valid_from).isoformat()}) is not the start the CA signed "
                           f"({_dt(signed_from).isoformat()}): the row was changed")
    if not row.end_statement:
        return st, None  # an end without a signed statement (registered without the CA) leaves the key open
    try:
        end = verify_statement(row.end_statement, ca_cert, node=node_id)
    except BindingError as exc:
        raise BindingError(f"node {node_id}: key {row.fingerprint}: its end statement: {exc.reason}") from None
    at = _end_of(end, row.fingerprint)
    if at is None:
        raise BindingError(f"node {node_id}: key {row.fingerprint}: its end statement does not end this key")
    if row.valid_until is None or _us(row.valid_until) != at // 1000:
        until = as_utc(row.valid_until).isoformat() if row.valid_until else "none"
        raise BindingError(f"node {node_id}: key {row.fingerprint}: valid_until in the database ({until}) is not "
                           f"the end the CA signed ({_dt(at).isoformat()}): the row was changed")
    return st, end


def key_history(session: Session, node_id: str, ca_cert: x509.Certificate | None) -> KeyHistory:
    """The node's keys from ``node_keys``, each statement verified against ``ca_cert``. Without a CA certificate
    (central has no ``pki`` section) no key can be anchored: every key is untrusted. A row whose columns
    (valid_from, valid_until, key) differ from what the CA signed is untrusted too: the database was changed."""
    rows = list(session.execute(select(NodeKey).where(NodeKey.node_id == node_id).order_by(NodeKey.id)).scalars())
    history = KeyHistory(node=node_id)
    statements: dict[str, Statement] = {}  # by text: a rotation's end is its successor's binding
    trusted: dict[int, tuple[str, int]] = {}  # row id → (fingerprint, valid_from_ns) of its period
    why: dict[int, str] = {}
    for row in rows:
        if ca_cert is None:
            why[row.id] = "central has no fleet CA (pki.dir): no key can be anchored"
            continue
        try:
            binding, end = _check_row(row, node_id, ca_cert)
        except BindingError as exc:
            why[row.id] = f"not bound by the fleet CA: {exc.reason}"
            continue
        statements[binding.text] = binding
        if end is not None:
            statements[end.text] = end
        trusted[row.id] = (binding.fingerprint, int(binding.body["valid_from_ns"]))
    # only the trusted rows' bindings make periods (an end statement is a successor's binding: it only ends)
    periods = {(p.fingerprint, p.valid_from_ns): p for p in key_periods(statements.values())}
    kept = set(trusted.values())
    history.periods = [p for k, p in periods.items() if k in kept]
    for row in rows:
        period = periods.get(trusted[row.id]) if row.id in trusted else None
        if period is None:
            reason = why.get(row.id, "not bound by the fleet CA")
            history.untrusted.append(UntrustedKey(row.public_key, row.fingerprint, reason))
        history.rows.append(KeyRow(id=row.id, public_key=row.public_key, fingerprint=row.fingerprint,
                                   valid_from=row.valid_from, valid_until=row.valid_until, end_reason=row.end_reason,
                                   registered_by=row.registered_by, period=period,
                                   why=None if period is not None else why.get(row.id)))
    return history


def current_key_problem(node: Node | None, history: KeyHistory) -> str | None:
    """Why the node's registered key (``nodes.public_key``) is not the key the CA vouches for now (None: it is, or
    the node has no key)."""
    if node is None or not node.public_key:
        return None
    current = history.current()
    if current is not None and current.public_key == node.public_key:
        return None
    fp = node.key_fingerprint or "?"
    bound = [p for p in history.periods if p.public_key == node.public_key]
    if bound:
        return (f"node {history.node}: its registered key {fp} was {bound[-1].end or 'ended'} by the fleet CA, "
                "yet it is still registered in nodes.public_key")
    untrusted = next((u for u in reversed(history.untrusted) if u.public_key == node.public_key), None)
    if untrusted is not None:
        return f"node {history.node}: its registered key {fp} is {untrusted.why}"
    return (f"node {history.node}: its registered key {fp} (nodes.public_key) is in no node_keys row: it was "
            "written into the database without the fleet CA")


@dataclass(frozen=True)
class TrustedKeys:
    """A node's keys as the fleet CA vouches for them, parsed once: what ingest verifies batches, heartbeats and
    command results with."""

    periods: tuple[tuple[Ed25519PublicKey, KeyPeriod], ...]  # newest first
    unbound: str | None  # why the registered key (nodes.public_key) is not one of them

    @classmethod
    def of(cls, history: KeyHistory, registered: str, registered_fp: str | None) -> TrustedKeys:
        periods = tuple((parse_public_key(p.public_key), p) for p in reversed(history.periods))
        unbound = None
        if not any(p.public_key == registered for p in history.periods):
            why = next((u.why for u in reversed(history.untrusted) if u.public_key == registered),
                       "it is in no node_keys row: written into the database without the CA")
            unbound = (f"its key {registered_fp or '?'} is not bound by the fleet CA "
                       f"({why.removeprefix('not bound by the fleet CA: ')}); `floorgate central node register` "
                       "with the CA's key (pki.dir/ca.key) or `node add --reissue` binds one")
        return cls(periods=periods, unbound=unbound)

    def verify(self, body: bytes, sig: str | None, at_ns: int, now_ns: int) -> str | None:
        """None when a key the CA vouches for at ``at_ns`` (not revoked by ``now_ns``) signed ``body``."""
        problem: str | None = None
        for key, p in self.periods:
            if not p.covers(at_ns, tolerance_ns=CLOCK_TOLERANCE_NS, rotation_grace_ns=ROTATION_GRACE_NS):
                continue
            if p.end == "revoked" and p.valid_until_ns is not None and p.valid_until_ns <= now_ns:
                continue
            problem = verify_signature(key, body, sig)
            if problem is None:
                return None
        if self.unbound is not None:
            return self.unbound
        return problem or f"no key the fleet CA bound is valid at {utc_from_ns(at_ns).isoformat()}"

    def explain(self, body: bytes, sig: str, at_ns: int) -> str | None:
        """Why a signature by one of the node's former keys is refused (None: no known key made it)."""
        for key, p in self.periods:
            if verify_signature(key, body, sig) is None:
                return (f"signed with its key {p.fingerprint}, which the fleet CA vouches for only from "
                        f"{utc_from_ns(p.valid_from_ns).isoformat()}"
                        + (f" until {utc_from_ns(p.valid_until_ns).isoformat()} ({p.end})"
                           if p.valid_until_ns is not None else "")
                        + f", not at {utc_from_ns(at_ns).isoformat()}")
        return None



# -- the write side ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyChange:
    """What ``set_key`` did: ``create`` (the node's first key, or its first after a revocation), ``rotate`` (a
    new key replaced ``previous``), ``bind`` (the CA bound the key that was registered without it), ``unchanged``."""

    node_id: str
    fingerprint: str
    action: str
    bound: bool
    previous: str | None = None
    valid_from: datetime | None = None


def _snap(row: NodeKey) -> dict[str, Any]:
    return {"fingerprint": row.fingerprint, "public_key": row.public_key, "bound": row.binding is not None,
            "valid_from": as_utc(row.valid_from).isoformat(),
            "valid_until": as_utc(row.valid_until).isoformat() if row.valid_until else None,
            "end_reason": row.end_reason}


def _open_rows(session: Session, node_id: str) -> list[NodeKey]:
    return list(session.execute(select(NodeKey).where(NodeKey.node_id == node_id, NodeKey.valid_until.is_(None))
                                .order_by(NodeKey.id).with_for_update()).scalars())


def set_key(session: Session, node: Node, public_key: str, *, ca: CertificateAuthority | None, actor: str,
            cert_serial: str | None = None) -> KeyChange:
    """Make ``public_key`` the node's key (in ``session``; the caller commits). With ``ca`` the key is bound by the
    fleet CA; the key it replaces ends at the new binding's start with that binding as its signed end; the same key
    registered before without the CA is bound from the start central recorded for it. Without ``ca`` the key is
    registered unbound. SigningKeyError / DecodeError for a bad key."""
    key = parse_public_key(public_key)
    text, fp = public_key_text(key), fingerprint(key)
    now_ns = _now_ns()
    now = _dt(now_ns)
    open_rows = _open_rows(session, node.node_id)
    previous = node.key_fingerprint if node.public_key and node.public_key != text else None
    same = [r for r in open_rows if r.public_key == text]
    if node.public_key == text and same:
        row = same[-1]
        if row.binding is not None or ca is None:
            return KeyChange(node.node_id, fp, "unchanged", row.binding is not None)
        before = _snap(row)
        start_ns = _us(row.valid_from) * 1000
        row.binding = make_binding(ca.key, ca.cert, node=node.node_id, public_key=text, valid_from_ns=start_ns,
                                   supersedes=None, cert_serial=cert_serial)
        audit.record(session, actor, "bind", RESOURCE, node.node_id, before=before, after=_snap(row))
        return KeyChange(node.node_id, fp, "bind", True, valid_from=row.valid_from)
    # a node's first key is its key from the node's beginning: what the node signed between `edge enrol` and the
    # registration (it may weigh before an admin registers it) is its own; a later key starts when it is set
    first = session.execute(select(NodeKey.id).where(NodeKey.node_id == node.node_id).limit(1)).first() is None
    start_ns = 0 if first else now_ns
    binding = None
    if ca is not None:
        binding = make_binding(ca.key, ca.cert, node=node.node_id, public_key=text, valid_from_ns=start_ns,
                               supersedes=previous, cert_serial=cert_serial)
    ended = []
    for old in open_rows:  # normally one: the key being replaced
        before = _snap(old)
        old.valid_until = now
        if previous is not None and old.fingerprint == previous:
            old.end_reason, old.end_statement = "rotated", binding
        else:  # a stray open row (not the registered key): ended as revoked
            old.end_reason = "revoked"
            old.end_statement = None if ca is None else make_revocation(
                ca.key, ca.cert, node=node.node_id, key_fingerprint=old.fingerprint, at_ns=now_ns,
                reason=f"replaced by key {fp}")
        ended.append((before, old))
    row = NodeKey(node_id=node.node_id, public_key=text, fingerprint=fp, binding=binding, valid_from=_dt(start_ns),
                  registered_by=actor[:80], created_at=datetime.now(UTC))
    session.add(row)
    node.public_key, node.key_fingerprint, node.enrolled_at = text, fp, now
    session.flush()
    action = "rotate" if previous else "create"
    after = {**_snap(row), "id": row.id, "supersedes": previous, "binding": binding}
    if previous:
        old_before = next((b for b, o in ended if o.fingerprint == previous), {"fingerprint": previous})
        audit.record(session, actor, action, RESOURCE, node.node_id, before=old_before, after=after)
    else:
        audit.record(session, actor, action, RESOURCE, node.node_id, after=after)
    for before, old in ended:
        if old.fingerprint != previous:
            audit.record(session, actor, "revoke", RESOURCE, node.node_id, before=before, after=_snap(old))
    return KeyChange(node.node_id, fp, action, binding is not None, previous=previous, valid_from=row.valid_from)


def revoke_keys(session: Session, node: Node | None, node_id: str, *, ca: CertificateAuthority, actor: str,
                reason: str | None) -> list[str]:
    """End every open key of the node with the CA's revocation (in ``session``) and clear ``nodes.public_key``.
    Returns the fingerprints revoked."""
    now_ns = _now_ns()
    revoked = []
    for row in _open_rows(session, node_id):
        before = _snap(row)
        row.valid_until = _dt(now_ns)
        row.end_reason = "revoked"
        row.end_statement = make_revocation(ca.key, ca.cert, node=node_id, key_fingerprint=row.fingerprint,
                                            at_ns=now_ns, reason=(reason or "revoked")[:200])
        audit.record(session, actor, "revoke", RESOURCE, node_id, before=before,
                     after={**_snap(row), "reason": reason, "revocation": row.end_statement})
        revoked.append(row.fingerprint)
    if node is not None:
        node.public_key = None
        node.key_fingerprint = None
    return revoked


def statement_texts(session: Session, node_id: str) -> list[str]:
    """Every CA statement about the node as stored (each row's binding, then its end statement, in node_keys.id
    order; each text once): what ``bindings.json`` of a node bundle holds."""
    out: dict[str, None] = {}
    for binding, end in session.execute(select(NodeKey.binding, NodeKey.end_statement)
                                        .where(NodeKey.node_id == node_id).order_by(NodeKey.id)):
        for text in (binding, end):
            if text:
                out.setdefault(text, None)
    return list(out)


def bindings_json(texts: list[str]) -> str:
    return json.dumps(texts, indent=1) + "\n"


__all__ = ["CLOCK_TOLERANCE_NS", "RESOURCE", "ROTATION_GRACE_NS", "CaCertError", "KeyChange", "KeyHistory", "KeyRow",
           "TrustedKeys", "UntrustedKey", "bindings_json", "current_key_problem", "key_history", "load_ca_cert",
           "revoke_keys", "set_key", "statement_texts"]
