"""The fleet's X.509 PKI: a small CA kept by central that issues the broker's server certificate, the client
certificates of the nodes (certificate CN = node id = broker user name) and of central itself, and the CRL.

Files in ``pki.dir`` (central settings)::

    ca.key    EC P-256 private key of the fleet CA (PKCS#8 PEM, mode 0600) — the one secret of the fleet
    ca.crt    the CA's self-signed certificate (CA:true, pathlen 0, keyCertSign + cRLSign, 10 years)
    crl.pem   the certificate revocation list the broker checks clients against (``crlfile``)

Every certificate issued is recorded in PostgreSQL (table ``certificates``, ``central.fleet.nodes``); the CRL is built
from the revoked rows. This module does no database work: it makes keys, certificates and CRLs and writes files.

Leaf certificates: EC P-256, SHA-256, ``basicConstraints CA:false`` (critical), ``keyUsage digitalSignature``
(critical), one ``extendedKeyUsage`` — ``clientAuth`` for nodes and central, ``serverAuth`` plus DNS / IP
``subjectAltName`` entries for the broker — and subject / authority key identifiers.

Names: a node's CN is its node id (``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$``); central's client certificates carry a
CN with a ``:`` (``floorgate:central``), outside that syntax, so no node can ever be issued central's identity.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.topics import NODE_ID_RE

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
CRL_FILE = "crl.pem"

CA_DAYS = 3650
DEFAULT_CERT_DAYS = 730
DEFAULT_CRL_DAYS = 365
BACKDATE = timedelta(minutes=5)  # not_before a little in the past: a node whose clock lags still accepts it
DEFAULT_CA_NAME = "floorgate fleet CA"
DEFAULT_CENTRAL_CN = "floorgate:central"
CENTRAL_CN_RE = re.compile(r"^floorgate:[A-Za-z0-9_.-]{1,54}$")

Kind = Literal["node", "server", "client"]
KINDS: tuple[Kind, ...] = ("node", "server", "client")


class PkiError(Exception):
    """A PKI operation that cannot be done; the message names the file, node or value."""


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    directory: Path

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_FILE

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT


@dataclass(frozen=True)
class Issued:
    """A freshly issued certificate with its private key (the key exists only here and in the files written)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    kind: Kind

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.cert.serial_number)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    @property
    def common_name(self) -> str:
        return common_name(self.cert)


@dataclass(frozen=True)
class Revocation:
    serial: int
    revoked_at: datetime
    reason: str | None = None


# -- names and fingerprints ------------------------------------------------------------------------------------------
def serial_hex(serial: int) -> str:
    return format(serial, "x")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as ``AB:CD:…`` — what ``openssl x509 -noout -fingerprint -sha256`` shows."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def check_central_cn(cn: str) -> str:
    """Central's client CN must look like ``floorgate:NAME`` — never a valid node id."""
    if not CENTRAL_CN_RE.match(cn) or NODE_ID_RE.match(cn):
        raise PkiError(f"client certificate CN {cn!r}: expected 'floorgate:NAME' (NAME: letters, digits, '_', '.', "
                       "'-'; the ':' keeps it apart from every node id)")
    return cn


# -- files -----------------------------------------------------------------------------------------------------------
def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically write ``data`` with ``mode`` (the file never exists with a wider mode)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(path, key_pem(key), 0o600)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert_pem(cert), 0o644)


# -- the CA ----------------------------------------------------------------------------------------------------------
def init_ca(directory: str | Path, *, name: str = DEFAULT_CA_NAME, days: int = CA_DAYS,
            crl_days: int = DEFAULT_CRL_DAYS, now: datetime | None = None) -> CertificateAuthority:
    """Create the fleet CA in ``directory`` (made with mode 0700 if missing): ca.key, ca.crt and an empty crl.pem.
    Refuses (PkiError) when a CA is there already — a new CA would lock out every node issued by the old one."""
    d = Path(directory)
    for existing in (d / CA_KEY, d / CA_CERT):
        if existing.exists():
            raise PkiError(f"{existing}: a fleet CA exists already; refusing to overwrite it (every certificate "
                           "issued by it would stop working). Remove it yourself if you really mean to start over.")
    if not name.strip():
        raise PkiError("CA name: expected a non-empty name")
    if days < 1:
        raise PkiError(f"--days {days}: expected at least 1")
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"{d}: cannot create the PKI directory: {exc.strerror}") from None
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "floorgate"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        write_private_key(d / CA_KEY, key)
        write_certificate(d / CA_CERT, cert)
        ca = CertificateAuthority(key=key, cert=cert, directory=d)
        write_crl(ca, [], days=crl_days, now=now)
    except OSError as exc:
        raise PkiError(f"{d}: cannot write the CA files: {exc.strerror}") from None
    return ca


def load_ca(directory: str | Path) -> CertificateAuthority:
    d = Path(directory)
    key_path, cert_path = d / CA_KEY, d / CA_CERT
    if not key_path.exists() and not cert_path.exists():
        raise PkiError(f"{d}: no fleet CA here (create it with `floorgate central ca init --config CENTRAL_YAML`)")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise PkiError(f"{key_path}: cannot read the CA key: {exc.strerror}") from None
    except ValueError as exc:
        raise PkiError(f"{key_path}: not a PEM private key: {exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise PkiError(f"{cert_path}: cannot read the CA certificate: {exc.strerror}") from None
    except ValueError as exc:
        raise PkiError(f"{cert_path}: not a PEM certificate: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: expected an EC private key, found {type(key).__name__}")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise PkiError(f"{key_path}: does not belong to {cert_path}")
    return CertificateAuthority(key=key, cert=cert, directory=d)


# -- issuing ---------------------------------------------------------------------------------------------------------
def issue(ca: CertificateAuthority, *, kind: Kind, common_name: str, days: int = DEFAULT_CERT_DAYS,
          dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
          now: datetime | None = None) -> Issued:
    """A new key pair and a certificate for it, signed by the CA.

    ``node``: CN = the node id (checked), EKU clientAuth. ``client``: central's connection, CN ``floorgate:NAME``,
    EKU clientAuth. ``server``: the broker, EKU serverAuth, at least one DNS name or IP address as SAN (clients
    check the host name against those)."""
    if kind not in KINDS:
        raise PkiError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    if days < 1:
        raise PkiError(f"--days {days}: expected at least 1")
    if kind == "node" and not NODE_ID_RE.match(common_name):
        raise PkiError(f"{common_name!r} is not a valid node id (letters, digits, '_', '.', '-'; at most 64, "
                       "starting with a letter or digit)")
    if kind == "client":
        check_central_cn(common_name)
    sans: list[x509.GeneralName] = []
    if kind == "server":
        for name in dns_names:
            if not re.match(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$", name):
                raise PkiError(f"--dns {name!r}: not a DNS name")
            sans.append(x509.DNSName(name))
        for text in ip_addresses:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(text)))
            except ValueError:
                raise PkiError(f"--ip {text!r}: not an IPv4 or IPv6 address") from None
        if not sans:
            raise PkiError("server certificate: give the broker's host name(s) with --dns and/or address(es) with "
                           "--ip (clients check the name they connect to against them)")
    elif dns_names or ip_addresses:
        raise PkiError(f"{kind} certificate: --dns / --ip are for the server certificate only")
    if not common_name or len(common_name) > 64:
        raise PkiError(f"CN {common_name!r}: expected 1-64 characters")
    now = now or datetime.now(UTC)
    not_after = min(now + timedelta(days=days), ca.cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    eku = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(key=key, cert=builder.sign(ca.key, hashes.SHA256()), kind=kind)


# -- revocation ------------------------------------------------------------------------------------------------------
def build_crl(ca: CertificateAuthority, revoked: list[Revocation], *, days: int = DEFAULT_CRL_DAYS,
              now: datetime | None = None) -> x509.CertificateRevocationList:
    """A CRL listing ``revoked``, valid for ``days``. Mosquitto (OpenSSL) refuses *every* client once the CRL's
    next update has passed, so it is rewritten at each revocation and should be refreshed (``central ca crl``)
    well before that."""
    if days < 1:
        raise PkiError(f"--days {days}: expected at least 1")
    now = now or datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - BACKDATE)
        .next_update(now + timedelta(days=days))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    for r in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.revoked_at)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, hashes.SHA256())


def write_crl(ca: CertificateAuthority, revoked: list[Revocation], *, days: int = DEFAULT_CRL_DAYS,
              now: datetime | None = None) -> x509.CertificateRevocationList:
    crl = build_crl(ca, revoked, days=days, now=now)
    try:
        _write(ca.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise PkiError(f"{ca.crl_path}: cannot write the CRL: {exc.strerror}") from None
    return crl


def crl_next_update(path: str | Path) -> datetime:
    """When the CRL in ``path`` (PEM) expires — its *next update*. Raises ``OSError`` when it cannot be read and
    ``ValueError`` when it is no CRL or has no next update."""
    crl = x509.load_pem_x509_crl(Path(path).read_bytes())
    if crl.next_update_utc is None:
        raise ValueError(f"{path}: the CRL has no next update")
    return crl.next_update_utc
