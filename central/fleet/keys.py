"""Every signing key a node ever had, anchored in the fleet CA (``sync.keybinding``), with its validity interval.

The ``node_keys`` table holds, per node, each key with the CA's key-binding statement (and, for a key that ended,
the CA-signed revocation or the successor's binding). The table is a cache of signed facts, not a trust anchor:
``key_history`` re-verifies every statement against ``ca.crt`` from ``pki.dir`` (a file), so a key someone wrote
into the database without the CA — or an interval someone changed — is reported (``untrusted``), whatever the
entries signed with it say. Verifiers (``verify-alibi``, ingest, command results) take the key whose interval
covers the time an artefact was made (``KeyPeriod.covers``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import NodeKey
from sync.keybinding import BindingError, KeyPeriod, Statement, key_periods, verify_statement

ROTATION_GRACE_NS = 7 * 86_400 * 10**9  # a rotated key still signs what the agent made before it got its new bundle
CLOCK_TOLERANCE_NS = 300 * 10**9  # the node's clock may differ from central's / the CA's this much


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


@dataclass(frozen=True)
class UntrustedKey:
    """A key row the CA did not bind (or whose statements do not verify): never used to verify anything."""

    public_key: str
    fingerprint: str
    why: str


@dataclass
class KeyHistory:
    node: str
    periods: list[KeyPeriod] = field(default_factory=list)  # the keys the CA vouches for, oldest first
    untrusted: list[UntrustedKey] = field(default_factory=list)

    def candidates(self, t_ns: int, *, tolerance_ns: int = CLOCK_TOLERANCE_NS,
                   rotation_grace_ns: int = ROTATION_GRACE_NS) -> list[KeyPeriod]:
        """The trusted keys that may have signed an artefact stamped ``t_ns`` (newest first)."""
        return [p for p in reversed(self.periods)
                if p.covers(t_ns, tolerance_ns=tolerance_ns, rotation_grace_ns=rotation_grace_ns)]


def key_history(session: Session, node_id: str, ca_cert: x509.Certificate | None) -> KeyHistory:
    """The node's keys from ``node_keys``, each statement verified against ``ca_cert``. Without a CA certificate
    (central has no ``pki`` section) no key can be anchored: every key is untrusted."""
    rows = list(session.execute(select(NodeKey).where(NodeKey.node_id == node_id).order_by(NodeKey.id)).scalars())
    history = KeyHistory(node=node_id)
    statements: list[Statement] = []
    bound: set[str] = set()
    for row in rows:
        if ca_cert is None:
            history.untrusted.append(UntrustedKey(row.public_key, row.fingerprint, "central has no fleet CA "
                                                  "(pki.dir): no key can be anchored"))
            continue
        try:
            st = verify_statement(row.binding, ca_cert, node=node_id)
            if st.type != "key-binding" or st.body.get("key") != row.public_key:
                raise BindingError(f"node {node_id}: the statement does not bind key {row.fingerprint}")
        except BindingError as exc:
            history.untrusted.append(UntrustedKey(row.public_key, row.fingerprint,
                                                  f"not bound by the fleet CA: {exc.reason}"))
            continue
        statements.append(st)
        bound.add(row.fingerprint)
        if row.end_statement:  # an end the CA did not sign is ignored: the interval is what signed statements say
            with contextlib.suppress(BindingError):
                statements.append(verify_statement(row.end_statement, ca_cert, node=node_id))
    history.periods = key_periods(statements)
    return history


__all__ = ["CLOCK_TOLERANCE_NS", "ROTATION_GRACE_NS", "CaCertError", "KeyHistory", "UntrustedKey", "key_history",
           "load_ca_cert"]
