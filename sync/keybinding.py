"""Key-binding statements: the fleet CA vouches that an Ed25519 signing key is a node's, from when, and when it
ended — so that the trust in a node's key does not rest on a database column or on the node's own key file.

The CA (``central.fleet.pki``: an EC P-256 key kept in ``pki.dir``, a file, never in central's database) signs
statements; both central (``central.fleet.keys``) and the node (``floorgate edge alibi``) check them against the
CA's certificate (``ca.crt``, in every node bundle)::

    binding    {"v": 1, "type": "key-binding", "node": "mill-01", "key": "ed25519:<base64>",
                "fingerprint": "<16 hex>", "valid_from_ns": 1765150000000000000,
                "supersedes": "<fingerprint of the key it replaces>" | null, "cert_serial": "<hex>" | null}
    revocation {"v": 1, "type": "key-revocation", "node": "mill-01", "fingerprint": "<16 hex>",
                "at_ns": 1765150000000000000, "reason": "device stolen"}

A signed statement travels and is stored as JSON text ``{"statement": "<canonical JSON>", "sig": "<base64 DER
ECDSA-SHA256>", "ca": "<SHA-256 of the CA certificate, hex>"}``.

A key's validity interval is entirely signed by the CA: it starts at its binding's ``valid_from_ns`` and ends at the
``valid_from_ns`` of the binding that ``supersedes`` it (a rotation: ``node add --reissue``) or at a revocation's
``at_ns``. ``key_periods`` turns a node's statements into those intervals.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sync.errors import SyncError
from sync.signing import canonical_json, fingerprint, parse_public_key, public_key_text

VERSION = 1
BINDING = "key-binding"
REVOCATION = "key-revocation"
MAX_STATEMENT_CHARS = 4096


class BindingError(SyncError):
    """A statement that does not prove what it claims; ``reason`` says why (naming the node and key)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Statement:
    """A verified statement: its decoded body and the signed text it came as."""

    body: dict[str, Any]
    text: str  # the JSON text {"statement", "sig", "ca"} as stored

    @property
    def type(self) -> str:
        return str(self.body["type"])

    @property
    def node(self) -> str:
        return str(self.body["node"])

    @property
    def fingerprint(self) -> str:
        return str(self.body["fingerprint"])


def ca_fingerprint(ca_cert: x509.Certificate) -> str:
    return ca_cert.fingerprint(hashes.SHA256()).hex()


def _sign(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, body: dict[str, Any]) -> str:
    text = canonical_json(body).decode()
    sig = ca_key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
    return json.dumps({"statement": text, "sig": base64.b64encode(sig).decode(), "ca": ca_fingerprint(ca_cert)},
                      sort_keys=True, separators=(",", ":"))


def make_binding(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, node: str, public_key: str,
                 valid_from_ns: int, supersedes: str | None = None, cert_serial: str | None = None) -> str:
    """The CA's statement that ``public_key`` is ``node``'s signing key from ``valid_from_ns`` on."""
    key = parse_public_key(public_key)
    return _sign(ca_key, ca_cert, {"v": VERSION, "type": BINDING, "node": node, "key": public_key_text(key),
                                   "fingerprint": fingerprint(key), "valid_from_ns": int(valid_from_ns),
                                   "supersedes": supersedes, "cert_serial": cert_serial})


def make_revocation(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, node: str, key_fingerprint: str,
                    at_ns: int, reason: str | None = None) -> str:
    """The CA's statement that the key ``key_fingerprint`` of ``node`` is no longer valid from ``at_ns`` on."""
    return _sign(ca_key, ca_cert, {"v": VERSION, "type": REVOCATION, "node": node, "fingerprint": key_fingerprint,
                                   "at_ns": int(at_ns), "reason": reason})


def verify_statement(text: str | None, ca_cert: x509.Certificate, *, node: str) -> Statement:
    """Check ``text`` (as stored) is a statement about ``node`` signed by the CA of ``ca_cert``; ``BindingError``
    says why not."""
    if not text:
        raise BindingError(f"node {node}: no statement of the fleet CA")
    if len(text) > MAX_STATEMENT_CHARS:
        raise BindingError(f"node {node}: statement longer than {MAX_STATEMENT_CHARS} characters")
    try:
        outer = json.loads(text)
        inner_text, sig = outer["statement"], base64.b64decode(outer["sig"], validate=True)
        body = json.loads(inner_text)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BindingError(f"node {node}: the statement is not a signed statement of the fleet CA") from None
    if not isinstance(body, dict) or not isinstance(inner_text, str) or canonical_json(body).decode() != inner_text:
        raise BindingError(f"node {node}: the statement is not in canonical form")
    if outer.get("ca") != ca_fingerprint(ca_cert):
        raise BindingError(f"node {node}: the statement names another CA ({str(outer.get('ca'))[:16]}…) than the "
                           f"fleet CA ({ca_fingerprint(ca_cert)[:16]}…)")
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise BindingError("the fleet CA certificate has no EC key")
    try:
        public.verify(sig, inner_text.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BindingError(f"node {node}: the fleet CA's signature over the statement does not verify") from None
    if body.get("v") != VERSION or body.get("type") not in (BINDING, REVOCATION):
        raise BindingError(f"node {node}: not a key statement of version {VERSION}")
    if body.get("node") != node:
        raise BindingError(f"the statement is about node {body.get('node')!r}, not {node}")
    if not isinstance(body.get("fingerprint"), str):
        raise BindingError(f"node {node}: the statement names no key fingerprint")
    stamp = body.get("valid_from_ns" if body["type"] == BINDING else "at_ns")
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise BindingError(f"node {node}: the statement has no time")
    if body["type"] == BINDING:
        try:
            key = parse_public_key(str(body.get("key")))
        except SyncError:
            raise BindingError(f"node {node}: the statement's key is not an Ed25519 key") from None
        if fingerprint(key) != body["fingerprint"]:
            raise BindingError(f"node {node}: the statement's fingerprint is not its key's")
    return Statement(body=body, text=text)


@dataclass(frozen=True)
class KeyPeriod:
    """A key of a node and the interval the CA vouches for: ``[valid_from_ns, valid_until_ns)``."""

    node: str
    public_key: str
    fingerprint: str
    valid_from_ns: int
    valid_until_ns: int | None  # None: still the node's key
    end: str | None  # "rotated" / "revoked" / None
    revoked_at_ns: int | None = None  # a revocation, also one after a rotation (it cuts the rotation's grace)

    def covers(self, t_ns: int, *, tolerance_ns: int = 0, rotation_grace_ns: int = 0) -> bool:
        """Whether an artefact stamped ``t_ns`` (the node's clock) may carry this key's signature: inside the
        interval, give or take ``tolerance_ns`` of clock difference; a rotated key also for ``rotation_grace_ns``
        after its end (the agent may get its new bundle later); a revoked key never after its revocation."""
        if t_ns < self.valid_from_ns - tolerance_ns:
            return False
        if self.valid_until_ns is None:
            return True
        grace = rotation_grace_ns if self.end == "rotated" else 0
        if self.revoked_at_ns is not None and t_ns >= self.revoked_at_ns + tolerance_ns:
            return False
        return t_ns < self.valid_until_ns + tolerance_ns + grace


def key_periods(statements: Iterable[Statement]) -> list[KeyPeriod]:
    """The intervals of one node's keys from its verified statements (oldest first). A key is ended by the first
    binding that supersedes it or by its first revocation, whichever comes first."""
    bindings = sorted((s for s in statements if s.type == BINDING), key=lambda s: int(s.body["valid_from_ns"]))
    revocations = [s for s in statements if s.type == REVOCATION]
    out = []
    for b in bindings:
        fp = b.fingerprint
        ends: list[tuple[int, str]] = []
        ends += [(int(s.body["valid_from_ns"]), "rotated") for s in bindings if s.body.get("supersedes") == fp
                 and int(s.body["valid_from_ns"]) >= int(b.body["valid_from_ns"])]
        ends += [(int(s.body["at_ns"]), "revoked") for s in revocations if s.fingerprint == fp]
        until, end = min(ends) if ends else (None, None)
        revoked = min((t for t, why in ends if why == "revoked"), default=None)
        out.append(KeyPeriod(node=b.node, public_key=str(b.body["key"]), fingerprint=fp,
                             valid_from_ns=int(b.body["valid_from_ns"]), valid_until_ns=until, end=end,
                             revoked_at_ns=revoked))
    return out


__all__ = ["BINDING", "REVOCATION", "BindingError", "KeyPeriod", "Statement", "ca_fingerprint", "key_periods",
           "make_binding", "make_revocation", "verify_statement"]
