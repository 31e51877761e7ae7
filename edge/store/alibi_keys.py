"""Which keys the node's own alibi check trusts: its keys as the fleet CA bound them, not whatever is in its key file.

The node bundle of ``floorgate central node add`` holds, beside ``node.key``, the CA certificate (``ca.crt``) and
``bindings.json``: a JSON list of the CA's statements about the node's keys (``sync.keybinding``: key bindings,
revocations). With both, ``floorgate edge alibi`` checks every entry with the key the CA vouches for at the entry's
time (a re-enrolled node's older entries with its rotated key), and a key file whose key the CA never bound —
``node.key`` replaced and the chain re-signed — makes its entries ``untrusted_key``. Without them the key is *not
anchored*: the check takes the key file as it is, and says so.

The CA certificate is the broker TLS ``ca_file`` of node.yaml, else ``ca.crt`` beside the key file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.alibi import Problem
from sync.errors import SyncError
from sync.keybinding import BindingError, KeyPeriod, Statement, key_periods, verify_statement
from sync.signing import fingerprint, parse_public_key

BINDINGS_FILE = "bindings.json"
CA_FILE = "ca.crt"
MAX_BINDINGS_BYTES = 1024 * 1024
# as central (central.fleet.keys): the node's clock may differ from the CA's this much; a rotated key still signs
# what the agent made before it got its new bundle
CLOCK_TOLERANCE_NS = 300 * 10**9
ROTATION_GRACE_NS = 7 * 86_400 * 10**9


def _when(ns: int | None) -> str:
    return "open" if ns is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


@dataclass
class KeyAnchor:
    """The node's keys for its own check: ``keys`` / ``suspects`` are ``sync.alibi`` resolvers."""

    node: str
    own: Ed25519PublicKey  # the key file's public key
    key_file: Path
    periods: list[KeyPeriod] = field(default_factory=list)
    anchored: bool = False
    warning: str | None = None  # why the key is not anchored
    problems: list[Problem] = field(default_factory=list)  # node-level: the key file's key not bound, bad statements
    _parsed: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    def _key(self, text: str) -> Ed25519PublicKey | None:
        if text not in self._parsed:
            try:
                self._parsed[text] = parse_public_key(text)
            except SyncError:
                return None
        return self._parsed[text]

    def _covering(self, t_ns: object) -> list[KeyPeriod]:
        if isinstance(t_ns, bool) or not isinstance(t_ns, int):
            return []
        return [p for p in reversed(self.periods)
                if p.covers(t_ns, tolerance_ns=CLOCK_TOLERANCE_NS, rotation_grace_ns=ROTATION_GRACE_NS)]

    def keys(self, body: Mapping[str, Any]) -> Sequence[Ed25519PublicKey]:
        if not self.anchored:
            return (self.own,)
        return [k for p in self._covering(body.get("weighed_at_ns")) if (k := self._key(p.public_key)) is not None]

    def suspects(self, body: Mapping[str, Any]) -> Sequence[tuple[Ed25519PublicKey, str]]:
        if not self.anchored:
            return ()
        out: list[tuple[Ed25519PublicKey, str]] = []
        fp = fingerprint(self.own)
        if all(p.fingerprint != fp for p in self.periods):
            out.append((self.own, f"key {fp} of {self.key_file}, which the fleet CA did not bind"))
        covering = {id(p) for p in self._covering(body.get("weighed_at_ns"))}
        for p in self.periods:  # the same text for every entry: consecutive ones are named together
            k = self._key(p.public_key)
            if k is not None and id(p) not in covering:
                until = "on" if p.valid_until_ns is None else f"until {_when(p.valid_until_ns)} ({p.end})"
                out.append((k, f"key {p.fingerprint}, which the fleet CA vouches for only from "
                               f"{_when(p.valid_from_ns)} {until}: outside that interval"))
        return out


def _load_certs(paths: Sequence[Path]) -> tuple[list[x509.Certificate], list[str]]:
    certs: list[x509.Certificate] = []
    errors: list[str] = []
    for path in paths:
        try:
            certs += x509.load_pem_x509_certificates(path.read_bytes())
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
        except ValueError as exc:
            errors.append(f"{path}: not a PEM certificate ({exc})")
    return certs, errors


def _verify(text: str, certs: Sequence[x509.Certificate], node: str) -> Statement:
    last: BindingError | None = None
    for cert in certs:
        try:
            return verify_statement(text, cert, node=node)
        except BindingError as exc:
            last = exc
    raise last or BindingError(f"node {node}: no CA certificate")


def load_anchor(node: str, own: Ed25519PublicKey, key_file: Path, *, ca_file: Path | None = None) -> KeyAnchor:
    """The node's keys as the fleet CA bound them: ``bindings.json`` beside ``key_file``, checked against the CA
    certificate (``ca_file``, else ``ca.crt`` beside the key file). Without either, a ``KeyAnchor`` that trusts
    ``own`` and carries a ``warning``."""
    anchor = KeyAnchor(node=node, own=own, key_file=key_file)
    bindings = key_file.parent / BINDINGS_FILE
    ca_paths = [p for p in (ca_file, key_file.parent / CA_FILE) if p is not None and p.exists()]
    unanchored = (f"the node's key ({key_file}, {fingerprint(own)}) is NOT anchored in the fleet CA: "
                  "{why} — the check trusts the key file as it is (a replaced key with a re-signed chain would "
                  "not be noticed)")
    if not bindings.exists():
        anchor.warning = unanchored.format(why=f"no {bindings} (it comes with the bundle of `floorgate central "
                                               "node add`)")
        return anchor
    certs, errors = _load_certs(ca_paths)
    if not certs:
        why = "; ".join(errors) if errors else f"no CA certificate ({ca_file or key_file.parent / CA_FILE})"
        anchor.warning = unanchored.format(why=why)
        return anchor
    try:
        if bindings.stat().st_size > MAX_BINDINGS_BYTES:
            raise ValueError(f"larger than {MAX_BINDINGS_BYTES} bytes")
        texts = json.loads(bindings.read_text(encoding="utf-8"))
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("expected a JSON list of statement texts")
    except (OSError, ValueError) as exc:
        anchor.warning = unanchored.format(why=f"{bindings} cannot be read: {exc}")
        return anchor
    statements: list[Statement] = []
    for i, text in enumerate(texts, 1):
        try:
            statements.append(_verify(text, certs, node))
        except BindingError as exc:
            anchor.problems.append(Problem("untrusted_key", (), f"{bindings}: statement {i} is ignored: {exc.reason}"))
    anchor.periods = key_periods(statements)
    anchor.anchored = True
    fp = fingerprint(own)
    if all(p.fingerprint != fp for p in anchor.periods):
        bound = ", ".join(p.fingerprint for p in anchor.periods) or "no key"
        anchor.problems.append(Problem("untrusted_key", (), f"node {node}: the key file {key_file} holds key {fp}, "
                                                           f"which the fleet CA did not bind ({bindings} binds "
                                                           f"{bound})"))
    return anchor


__all__ = ["BINDINGS_FILE", "KeyAnchor", "load_anchor"]
