"""Node enrolment at central: register (or replace) a node's Ed25519 public key, issue a node its certificate bundle,
revoke it, list the nodes.

Two ways in:

* ``floorgate central node register NODE --public-key ed25519:…`` — the key pair was made on the node (``floorgate
  edge enrol`` or the first ``floorgate edge run``); only the public key travels. With the fleet CA's key at hand
  (``pki.dir`` holds ``ca.key``) the key is bound by the CA; without it the key is registered unbound, which
  ``verify-alibi`` reports as ``untrusted_key`` and an ingest with a fleet CA refuses.
* ``floorgate central node add NODE --out DIR`` — central makes everything the node needs and writes the bundle
  (``central.fleet.pki``): an X.509 client certificate from the fleet CA with CN = NODE (the broker takes it as the user
  name and allows the node only its own topics) and the node's Ed25519 signing key, whose public half is registered
  here at once and bound by the CA. Bundle layout (a fixed interface: the Ansible edge role copies it)::

      DIR/NODE/ca.crt     the fleet CA certificate (the node checks the broker with it)
      DIR/NODE/tls.crt    the node's certificate: CN=NODE, EKU clientAuth
      DIR/NODE/tls.key    its EC P-256 key, PKCS#8 PEM, mode 0600
      DIR/NODE/node.key   the Ed25519 signing key, PKCS#8 PEM, mode 0600 (what the agent reads at ``key_file``)
      DIR/NODE/central.pub  central's public signing key(s), one ``ed25519:…`` per line (the agent's
                          ``central_keys_file``: it acts only on acks, replay requests and commands signed with one)
      DIR/NODE/bindings.json  every CA statement about the node's keys (a JSON list of the texts, oldest first:
                          ``floorgate edge alibi`` anchors the keys of the node's alibi chain in ca.crt with them)

Every key a node ever had stays in ``node_keys`` with its CA-signed interval (``central.fleet.keys``): ``--reissue``
rotates the key (the old one ends where the new binding starts, so entries signed before still verify), ``node
revoke`` ends it with the CA's revocation. Each of these is an audit-log row (resource ``node_key``).

``node revoke`` marks the node's certificates revoked, rewrites the CRL the broker checks, and removes the node's
signing key: from then on everything the node sends lands in the quarantine (within ``KEY_TTL_S`` of a running
ingest, which re-reads keys that often), and the broker refuses its certificate once it has the new CRL.

Until a node is registered, everything it sends lands in the quarantine ("not enrolled").
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import Certificate, Node, Site
from central.fleet import pki
from central.fleet.keys import KeyChange, bindings_json, revoke_keys, set_key, statement_texts
from sync.downlink import keys_file_text
from sync.signing import fingerprint, generate_key, parse_public_key, public_key_text, save_private_key
from sync.topics import check_node_id

log = logging.getLogger(__name__)

BUNDLE_FILES = ("ca.crt", "tls.crt", "tls.key", "node.key", "central.pub", "bindings.json")
BINDINGS_FILE = "bindings.json"


def register_key(sessions: sessionmaker[Session], node_id: str, public_key: str, *,
                 ca: pki.CertificateAuthority | None = None, actor: str = "cli:node-register") -> KeyChange:
    """Make ``public_key`` the key of ``node_id`` (SigningKeyError / DecodeError for bad input): bound by ``ca``
    when given, else registered unbound; the key it replaces stays in the node's key history. Audited as
    ``actor``."""
    check_node_id(node_id)
    public_key = public_key_text(parse_public_key(public_key))  # a bad key is refused before the database
    with sessions.begin() as session:
        node = session.get(Node, node_id, with_for_update=True)
        if node is None:
            node = Node(node_id=node_id)
            session.add(node)
            session.flush()
        change = set_key(session, node, public_key, ca=ca, actor=actor)
    log.info("node %s: key %s %s%s%s", node_id, change.fingerprint, change.action,
             f" (replacing {change.previous})" if change.previous else "",
             ", bound by the fleet CA" if change.bound else ", NOT bound by the fleet CA")
    return change


def register_node(sessions: sessionmaker[Session], node_id: str, public_key: str, *,
                  ca: pki.CertificateAuthority | None = None, actor: str = "cli:node-register") -> tuple[str, bool]:
    """``register_key``, returning (fingerprint, replaced) — replaced is True when the node had another key
    before."""
    change = register_key(sessions, node_id, public_key, ca=ca, actor=actor)
    return change.fingerprint, change.previous is not None


def node_statements(sessions: sessionmaker[Session], node_id: str) -> list[str]:
    """Every CA statement about ``node_id``'s keys (what ``bindings.json`` holds)."""
    with sessions() as session:
        return statement_texts(session, node_id)


def write_bindings(directory: Path, ca: pki.CertificateAuthority, statements: Sequence[str]) -> None:
    """``directory/bindings.json`` and ``directory/ca.crt``: what a node needs to anchor its keys in the CA."""
    _prepare_dir(directory)
    try:
        pki.write_certificate(directory / pki.CA_CERT, ca.cert)
        tmp = directory / f".{BINDINGS_FILE}.tmp"
        tmp.write_text(bindings_json(list(statements)), encoding="utf-8")
        tmp.replace(directory / BINDINGS_FILE)
    except OSError as exc:
        raise pki.PkiError(f"{directory}: cannot write {BINDINGS_FILE}: {exc.strerror}") from None


def list_nodes(sessions: sessionmaker[Session]) -> list[Node]:
    with sessions() as session:
        return list(session.execute(select(Node).order_by(Node.node_id)).scalars())


# -- certificates ----------------------------------------------------------------------------------------------------
def _valid_node_certs(session: Session, node_id: str, now: datetime) -> list[Certificate]:
    rows = session.execute(select(Certificate).where(
        Certificate.node_id == node_id, Certificate.kind == "node", Certificate.revoked_at.is_(None))).scalars()
    return [r for r in rows if (r.not_after or now) > now]


def record_certificate(session: Session, issued: pki.Issued, *, node_id: str | None = None,
                       now: datetime | None = None) -> Certificate:
    cert = issued.cert
    row = Certificate(serial=issued.serial_hex, common_name=issued.common_name, kind=issued.kind, node_id=node_id,
                      fingerprint=issued.fingerprint, not_before=cert.not_valid_before_utc,
                      not_after=cert.not_valid_after_utc, issued_at=now or datetime.now(UTC))
    session.add(row)
    return row


def revocations(sessions: sessionmaker[Session]) -> list[pki.Revocation]:
    with sessions() as session:
        rows = session.execute(select(Certificate).where(Certificate.revoked_at.is_not(None))
                               .order_by(Certificate.revoked_at)).scalars()
        return [pki.Revocation(serial=int(r.serial, 16), revoked_at=r.revoked_at or datetime.now(UTC),
                               reason=r.revoke_reason) for r in rows]


def rewrite_crl(sessions: sessionmaker[Session], ca: pki.CertificateAuthority, *, days: int = pki.DEFAULT_CRL_DAYS,
                ) -> list[pki.Revocation]:
    """Write ``crl.pem`` from every revoked row; returns what it lists."""
    revoked = revocations(sessions)
    pki.write_crl(ca, revoked, days=days)
    return revoked


def issue_service_certificate(sessions: sessionmaker[Session], ca: pki.CertificateAuthority, out_dir: Path, *,
                              kind: pki.Kind, common_name: str, days: int, dns_names: tuple[str, ...] = (),
                              ip_addresses: tuple[str, ...] = ()) -> pki.Issued:
    """The broker's server certificate (``server.crt`` / ``server.key``) or central's client certificate
    (``tls.crt`` / ``tls.key``) in ``out_dir``, with ``ca.crt`` beside it; recorded in the database."""
    issued = pki.issue(ca, kind=kind, common_name=common_name, days=days, dns_names=dns_names,
                       ip_addresses=ip_addresses)
    stem = "server" if kind == "server" else "tls"
    _prepare_dir(out_dir)
    with sessions.begin() as session:
        record_certificate(session, issued)
        session.flush()
        try:
            pki.write_private_key(out_dir / f"{stem}.key", issued.key)
            pki.write_certificate(out_dir / f"{stem}.crt", issued.cert)
            pki.write_certificate(out_dir / "ca.crt", ca.cert)
        except OSError as exc:
            raise pki.PkiError(f"{out_dir}: cannot write the certificate files: {exc.strerror}") from None
    log.info("issued %s certificate %s (CN %s) into %s", kind, issued.serial_hex, common_name, out_dir)
    return issued


def revoke_certificate(sessions: sessionmaker[Session], ca: pki.CertificateAuthority, serial: str, *,
                       reason: str | None = None, crl_days: int = pki.DEFAULT_CRL_DAYS) -> Certificate:
    """Revoke a server or client certificate by its (hex) serial and rewrite the CRL. Node certificates go through
    ``revoke_node``, which also blocks the node's signing key."""
    serial = serial.lower().removeprefix("0x").replace(":", "")
    with sessions.begin() as session:
        row = session.execute(select(Certificate).where(Certificate.serial == serial)).scalar_one_or_none()
        if row is None:
            raise pki.PkiError(f"serial {serial}: no such certificate was issued (`floorgate central ca list`)")
        if row.kind == "node":
            raise pki.PkiError(f"serial {serial} is node {row.node_id}'s certificate: use "
                               f"`floorgate central node revoke {row.node_id}` (it also blocks the node's key)")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            row.revoke_reason = (reason or "revoked")[:200]
        session.flush()
        session.expunge(row)
    rewrite_crl(sessions, ca, days=crl_days)
    return row


def list_certificates(sessions: sessionmaker[Session]) -> list[Certificate]:
    with sessions() as session:
        return list(session.execute(select(Certificate).order_by(Certificate.issued_at, Certificate.id)).scalars())


# -- node bundles ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeBundle:
    node_id: str
    directory: Path
    serial: str
    cert_fingerprint: str
    key_fingerprint: str
    not_after: datetime
    revoked: list[str] = field(default_factory=list)  # serials of the certificates --reissue revoked


def _prepare_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise pki.PkiError(f"{path}: cannot create the directory: {exc.strerror}") from None
    if not path.is_dir():
        raise pki.PkiError(f"{path}: not a directory")


def _find_site(session: Session, site: str) -> Site:
    row = session.execute(select(Site).where(Site.code == site)).scalar_one_or_none()
    if row is None and site.isascii() and site.isdigit():
        row = session.get(Site, int(site))
    if row is None:
        raise pki.PkiError(f"--site {site!r}: no site with that code or id (create it with POST /api/v1/sites)")
    return row


def add_node(sessions: sessionmaker[Session], ca: pki.CertificateAuthority, node_id: str, out_dir: Path, *,
             site: str | None = None, days: int = pki.DEFAULT_CERT_DAYS, reissue: bool = False,
             crl_days: int = pki.DEFAULT_CRL_DAYS, central_keys: Sequence[str] = (),
             actor: str = "cli:node-add") -> NodeBundle:
    """Register ``node_id`` with a new Ed25519 signing key bound by the fleet CA and a new certificate, and write its
    bundle to ``out_dir/node_id``. A node that is enrolled already (a valid certificate or a registered key) is
    refused unless ``reissue``, which revokes its old certificates (and rewrites the CRL) and rotates its key: the
    old key stays in the node's history with its interval, so what it signed still verifies. ``central_keys``
    (central's public signing keys, ``central.fleet.signing_key``) go to ``central.pub``; every CA statement about
    the node's keys to ``bindings.json``. The key's registration or rotation is audited as ``actor``."""
    check_node_id(node_id)
    now = datetime.now(UTC)
    issued = pki.issue(ca, kind="node", common_name=node_id, days=days, now=now)
    signing_key = generate_key()
    final = out_dir / node_id
    if final.exists() and not final.is_dir():
        raise pki.PkiError(f"{final}: exists and is not a directory")
    _prepare_dir(out_dir)
    tmp = out_dir / f".{node_id}.tmp-{uuid.uuid4().hex[:8]}"
    revoked: list[str] = []
    try:
        tmp.mkdir(mode=0o700)
        pki.write_certificate(tmp / "ca.crt", ca.cert)
        pki.write_certificate(tmp / "tls.crt", issued.cert)
        pki.write_private_key(tmp / "tls.key", issued.key)
        save_private_key(signing_key, tmp / "node.key")
        if central_keys:
            (tmp / "central.pub").write_text(keys_file_text(central_keys, comment="central's public signing keys"),
                                             encoding="utf-8")
        with sessions.begin() as session:
            node = session.get(Node, node_id)
            valid = _valid_node_certs(session, node_id, now)
            if not reissue and valid:
                c = valid[0]
                raise pki.PkiError(
                    f"node {node_id} has a valid certificate already (serial {c.serial}, until "
                    f"{c.not_after:%Y-%m-%d}); --reissue revokes it and issues a new bundle")
            if not reissue and node is not None and node.public_key:
                raise pki.PkiError(
                    f"node {node_id} is enrolled already with signing key {node.key_fingerprint}; --reissue "
                    "replaces that key (the running agent must get the new bundle)")
            site_row = _find_site(session, site) if site else None
            for c in valid if reissue else ():
                c.revoked_at = now
                c.revoke_reason = f"superseded by {issued.serial_hex}"
                revoked.append(c.serial)
            if node is None:
                node = Node(node_id=node_id)
                session.add(node)
            session.flush()
            record_certificate(session, issued, node_id=node_id, now=now)
            set_key(session, node, public_key_text(signing_key), ca=ca, actor=actor, cert_serial=issued.serial_hex)
            node.cert_fingerprint = issued.fingerprint
            if site_row is not None:
                node.site_id = site_row.id
            session.flush()
            (tmp / BINDINGS_FILE).write_text(bindings_json(statement_texts(session, node_id)), encoding="utf-8")
        if final.exists():
            old = out_dir / f".{node_id}.old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except OSError as exc:
        raise pki.PkiError(f"{out_dir}: cannot write the bundle of node {node_id}: {exc.strerror}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if revoked:
        rewrite_crl(sessions, ca, days=crl_days)
    log.info("node %s added: certificate %s, signing key %s%s", node_id, issued.serial_hex,
             fingerprint(signing_key), f" (revoked {', '.join(revoked)})" if revoked else "")
    return NodeBundle(node_id=node_id, directory=final, serial=issued.serial_hex,
                      cert_fingerprint=issued.fingerprint, key_fingerprint=fingerprint(signing_key),
                      not_after=issued.cert.not_valid_after_utc, revoked=revoked)


@dataclass(frozen=True)
class RevokeResult:
    node_id: str
    serials: list[str]
    key_removed: str | None  # fingerprint of the signing key that was removed


def revoke_node(sessions: sessionmaker[Session], ca: pki.CertificateAuthority, node_id: str, *,
                reason: str | None = None, crl_days: int = pki.DEFAULT_CRL_DAYS,
                actor: str = "cli:node-revoke") -> RevokeResult:
    """Revoke every certificate of ``node_id``, end its signing key with the fleet CA's revocation (audited as
    ``actor``; its messages are quarantined from then on) and rewrite the CRL. Revoking a node that is revoked
    already changes nothing."""
    check_node_id(node_id)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        node = session.get(Node, node_id)
        certs = list(session.execute(select(Certificate).where(
            Certificate.node_id == node_id, Certificate.kind == "node")).scalars())
        if node is None and not certs:
            raise pki.PkiError(f"node {node_id} is not known at central (`floorgate central node list`)")
        serials = []
        for c in certs:
            if c.revoked_at is None:
                c.revoked_at = now
                c.revoke_reason = (reason or "revoked")[:200]
                serials.append(c.serial)
        removed = node.key_fingerprint if node is not None and node.public_key else None
        ended = revoke_keys(session, node, node_id, ca=ca, actor=actor, reason=reason)
        removed = removed or (ended[-1] if ended else None)
        if node is not None:
            node.cert_fingerprint = None
    rewrite_crl(sessions, ca, days=crl_days)
    log.warning("node %s revoked (%s): certificates %s, signing key %s removed", node_id, reason or "no reason given",
                ", ".join(serials) or "none", removed or "none")
    return RevokeResult(node_id=node_id, serials=serials, key_removed=removed)


@dataclass(frozen=True)
class NodeIdentity:
    status: str  # enrolled / revoked / not enrolled
    cert_serial: str | None
    cert_not_after: datetime | None


def identities(sessions: sessionmaker[Session], nodes: Sequence[Node]) -> dict[str, NodeIdentity]:
    """Per node: enrolled (a signing key is registered), revoked (no key, and certificates that were revoked) or
    not enrolled; with its newest valid certificate."""
    now = datetime.now(UTC)
    with sessions() as session:
        rows = list(session.execute(select(Certificate).where(Certificate.kind == "node")
                                    .order_by(Certificate.issued_at)).scalars())
    by_node: dict[str, list[Certificate]] = {}
    for r in rows:
        by_node.setdefault(r.node_id or "", []).append(r)
    out = {}
    for n in nodes:
        certs = by_node.get(n.node_id, [])
        valid = [c for c in certs if c.revoked_at is None and (c.not_after or now) > now]
        if n.public_key:
            status = "enrolled"
        elif any(c.revoked_at is not None for c in certs) and not valid:
            status = "revoked"
        else:
            status = "not enrolled"
        newest = valid[-1] if valid else None
        out[n.node_id] = NodeIdentity(status=status, cert_serial=newest.serial if newest else None,
                                      cert_not_after=newest.not_after if newest else None)
    return out
