"""The TSE registry (``tse_registry``): each TSE central knows, pinned with its public key, and whether it is trusted.

A TSE's transactions are verified against the key **pinned** here, never against the key a row brings: a row re-signed
with a fresh key names a serial central never pinned (the serial is the SHA-256 of the key), and a row whose key is
not its TSE's pinned key fails — both ``untrusted_key: …`` (``central.fiscal.verify``).

**Pinning.** The first time ingest sees a signed transaction of a serial (its key a point whose SHA-256 is the
serial), it pins it: key, algorithm, time format, the node and device it came from — ``unconfirmed`` (source
``seen``), or ``confirmed`` (source ``config``) when ``fiscal.tse`` of central's config lists it
(``central.fiscal.config``). An admin confirms or rejects a pin (``floorgate central tse confirm|reject SERIAL``,
``POST /api/v1/tse-registry/{serial}/confirm|reject``). Every pin, confirmation and rejection is an audit-log row
(resource ``tse_pin``, id the serial). A transaction is trusted only under a ``confirmed`` pin (or a TSE the config
lists); under an ``unconfirmed`` or ``rejected`` pin it is ``invalid`` saying so.

**The pin is signed** with central's own Ed25519 key (``central.fleet.signing_key``, the key that signs acks): the
canonical JSON of :func:`statement` in ``statement``, its signature in ``sig``, the key's fingerprint in ``kid``.
Whoever can write the database but does not hold central's key file cannot add a pin, confirm one or change one:
:func:`check_pin` verifies the signature against the public halves of central's key files (active, next, old) and
compares every column with the signed statement; a pin that fails counts as no pin at all.

    {"type": "floorgate.tse-pin", "v": 1, "serial": "<hex>", "public_key": "<base64>",
     "certificate_sha256": "<hex>"|null, "algorithm": …, "time_format": …, "node_id": …, "device_id": …,
     "status": "unconfirmed|confirmed|rejected", "source": "seen|config|admin",
     "first_seen_at": "<ISO 8601 UTC>", "confirmed_at": …|null, "confirmed_by": "<actor>"|null}

``confirmed_at`` / ``confirmed_by`` say who decided last (a confirmation or a rejection).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from central.db import audit
from central.db.models import TsePin, TseTransaction
from central.db.types import as_utc
from central.fiscal.config import FiscalSettings, ListedTse
from protocols.tse import crypto
from sync.signing import canonical_json, fingerprint, load_private_key, sign, verify

if TYPE_CHECKING:
    from central.config import CentralSettings

log = logging.getLogger(__name__)

PIN_TYPE: Final = "floorgate.tse-pin"
RESOURCE: Final = "tse_pin"
UNCONFIRMED: Final = "unconfirmed"
CONFIRMED: Final = "confirmed"
REJECTED: Final = "rejected"
STATUSES: Final = (UNCONFIRMED, CONFIRMED, REJECTED)
SEEN, CONFIG, ADMIN = "seen", "config", "admin"
INGEST_ACTOR: Final = "system:ingest"
CONFIG_ACTOR: Final = "system:config"
REGISTRY_KEY: Final = "floorgate.tse_registry"
_ANCHORS: Final = "floorgate.tse_anchors"


class RegistryError(Exception):
    """A registry change that cannot be made; the message names the TSE and why."""


class NoSuchTse(RegistryError):
    """A decision about a TSE central neither pinned nor holds a transaction of, and no key given."""


# --- what a process knows: central's keys, the config's list ----------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """What verifying and pinning need besides the database: the key that signs new pins (None: this process cannot
    sign — pins it makes are unsigned, so untrusted), the public keys a pin may be signed with (by fingerprint) and
    the TSEs the config lists (by serial)."""

    signer: Ed25519PrivateKey | None = None
    trusted: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    listed: Mapping[str, ListedTse] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: FiscalSettings | None = None, *, signer: Ed25519PrivateKey | None = None,
           trusted: Iterable[Ed25519PublicKey] = ()) -> Registry:  # fmt: skip
        keys = {fingerprint(k): k for k in trusted}
        if signer is not None:
            keys[fingerprint(signer)] = signer.public_key()
        listed = {t.serial: t for t in settings.tse} if settings is not None else {}
        return cls(signer=signer, trusted=keys, listed=listed)


def central_keys(path: Path | None) -> list[Ed25519PublicKey]:
    """The public halves of central's signing keys kept as files — the active one, the next (a rotation under way)
    and the old one (retired by the last ``signing-key activate``): the keys a pin may be signed with."""
    from central.fleet.signing_key import next_path, old_path

    if path is None:
        return []
    out: list[Ed25519PublicKey] = []
    for p in (path, next_path(path), old_path(path)):
        if p.exists():
            out.append(load_private_key(p).public_key())
    return out


def load_registry(settings: CentralSettings, *, signer: Ed25519PrivateKey | None = None) -> Registry:
    """The registry of ``settings``: ``fiscal.tse``, central's key files; ``signer`` signs new pins."""
    return Registry.of(settings.fiscal, signer=signer, trusted=central_keys(settings.signing_key_file))


def active_signer(settings: CentralSettings) -> Ed25519PrivateKey:
    """Central's active signing key (made if missing, as ``central run`` does); RegistryError naming the file."""
    from central.fleet.signing_key import key_path, load_or_create
    from sync.signing import SigningKeyError

    try:
        key, _ = load_or_create(key_path(settings.signing_key_file))
    except SigningKeyError as exc:
        raise RegistryError(f"central's signing key: {exc}") from None
    return key


def use_registry(sessions: sessionmaker[Session], registry: Registry) -> None:
    """Hand ``registry`` to every session of ``sessions`` (``session.info``), where ingest and the sweep find it."""
    info = dict(sessions.kw.get("info") or {})
    info[REGISTRY_KEY] = registry
    sessions.configure(info=info)


def registry_of(session: Session) -> Registry:
    found = session.info.get(REGISTRY_KEY)
    return found if isinstance(found, Registry) else Registry()


# --- the signed statement ---------------------------------------------------------------------------------------


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else as_utc(dt).isoformat(timespec="microseconds").replace("+00:00", "Z")


def statement(pin: TsePin) -> dict[str, Any]:
    """What central signs for ``pin``: every column that matters, the certificate by its SHA-256."""
    cert = hashlib.sha256(pin.certificate.encode()).hexdigest() if pin.certificate else None
    return {
        "type": PIN_TYPE, "v": 1, "serial": pin.tse_serial, "public_key": pin.public_key, "certificate_sha256": cert,
        "algorithm": pin.algorithm, "time_format": pin.time_format, "node_id": pin.node_id,
        "device_id": pin.device_id, "status": pin.status, "source": pin.source,
        "first_seen_at": _iso(pin.first_seen_at), "confirmed_at": _iso(pin.confirmed_at),
        "confirmed_by": pin.confirmed_by,
    }  # fmt: skip


def sign_pin(pin: TsePin, signer: Ed25519PrivateKey | None) -> None:
    """(Re-)sign ``pin`` as it is now; without a signer the pin is left unsigned (so untrusted)."""
    if signer is None:
        pin.statement, pin.sig, pin.kid = None, None, None
        return
    body = canonical_json(statement(pin))
    pin.statement, pin.sig, pin.kid = body.decode(), sign(signer, body), fingerprint(signer)


def key_serial(public_key: str | None) -> str | None:
    """The serial (hex SHA-256) of a base64 public key, None when it is not base64."""
    if not public_key:
        return None
    try:
        return hashlib.sha256(base64.b64decode(public_key, validate=True)).hexdigest()
    except (binascii.Error, ValueError):
        return None


def check_pin(pin: TsePin, registry: Registry) -> str | None:
    """None when ``pin`` is signed by one of central's keys and every column is what was signed; else why not."""
    if not pin.sig or not pin.statement or not pin.kid:
        return "is not signed by central (written without central's signing key)"
    key = registry.trusted.get(pin.kid)
    if key is None:
        known = ", ".join(sorted(registry.trusted)) or "none found"
        return f"is signed with key {pin.kid}, none of central's signing keys ({known})"
    if verify(key, pin.statement.encode(), pin.sig) is not None:
        return f"does not verify with central's key {pin.kid}: forged or altered"
    try:
        signed = json.loads(pin.statement)
    except ValueError:
        return "has a statement that is not JSON"
    now = statement(pin)
    differ = sorted(k for k in set(now) | set(signed) if now.get(k) != signed.get(k))
    if differ:
        return f"was changed in the database after central signed it ({', '.join(differ)} differ)"
    if key_serial(pin.public_key) != pin.tse_serial:
        return "holds a key whose SHA-256 is not the serial"
    return None


# --- what a TSE's transactions are verified with -----------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A TSE as the registry vouches for it: the key to verify with (base64; None when nothing is trusted) and, when
    its transactions are not to be trusted, why (``problem`` → ``untrusted_key: …``)."""

    serial: str
    public_key: str | None
    algorithm: str | None = None
    status: str | None = None  # the valid pin's status; None: no valid pin
    source: str | None = None
    problem: str | None = None
    pin_problem: str | None = None  # a pin row that is there but does not verify (a finding of its own)

    @property
    def trusted(self) -> bool:
        return self.problem is None


def _fp(public_key: str | None) -> str:
    return (key_serial(public_key) or "?")[:16]


def resolve(serial: str, pin: TsePin | None, registry: Registry) -> Anchor:
    """The anchor of ``serial`` from its pin row (None: none) and the config's list."""
    listed = registry.listed.get(serial)
    pin_problem = check_pin(pin, registry) if pin is not None else None
    if pin is not None and pin_problem is None:
        if pin.status == CONFIRMED or (pin.status == UNCONFIRMED and listed is not None):
            return Anchor(serial, pin.public_key, pin.algorithm, pin.status, pin.source)
        if pin.status == REJECTED:
            problem = f"TSE {serial} was rejected by {pin.confirmed_by or '?'} at {_iso(pin.confirmed_at)}"
        else:
            problem = (f"TSE {serial} was pinned on first sight (node {pin.node_id or '?'}, device "
                       f"{pin.device_id or '?'}, {_iso(pin.first_seen_at)}) and is not confirmed: `floorgate central "
                       f"tse confirm {serial}` once it is known to be the TSE registered for the register")
        return Anchor(serial, pin.public_key, pin.algorithm, pin.status, pin.source, problem)
    if listed is not None:  # the config vouches for it (the key: the listed one, or any whose SHA-256 is the serial)
        return Anchor(serial, listed.public_key, listed.algorithm, CONFIRMED, CONFIG,
                      pin_problem=None if pin_problem is None else f"the pin of TSE {serial} {pin_problem}")
    if pin is not None:
        return Anchor(serial, None, problem=f"TSE {serial} has no valid pin: its pin {pin_problem}",
                      pin_problem=f"the pin of TSE {serial} {pin_problem}")
    return Anchor(serial, None, problem=f"TSE {serial} is unknown to central's TSE registry (never pinned by "
                                        "central): another TSE, or transactions re-signed with another key")


def key_problem(anchor: Anchor, row_key: str | None) -> str | None:
    """Why a row of the anchor's TSE bringing ``row_key`` is not to be trusted; None when it is."""
    if anchor.public_key is not None and row_key != anchor.public_key:
        return (f"the row's public key (SHA-256 {_fp(row_key)}…) is not the key pinned for TSE "
                f"{anchor.serial} ({_fp(anchor.public_key)}…)")
    if anchor.public_key is None and anchor.trusted and key_serial(row_key) != anchor.serial:
        return f"the row's public key (SHA-256 {_fp(row_key)}…) is not TSE {anchor.serial}'s key"
    return anchor.problem


def trusted_key(anchor: Anchor, row_key: str | None) -> str | None:
    """The key (base64) to verify a row of the anchor's TSE with: the pinned one, or for a TSE the config lists by
    serial only the row's key when its SHA-256 is the serial; None: nothing to verify with."""
    if anchor.public_key is not None:
        return anchor.public_key
    if anchor.trusted and key_serial(row_key) == anchor.serial:
        return row_key
    return None


def anchor_for(session: Session, serial: str) -> Anchor:
    """The anchor of ``serial`` as held now (cached in the session)."""
    cache: dict[str, Anchor] = session.info.setdefault(_ANCHORS, {})
    if serial not in cache:
        cache[serial] = resolve(serial, session.get(TsePin, serial), registry_of(session))
    return cache[serial]


def _pinnable(row: TseTransaction) -> bool:
    """A signed row whose key is a TSE point and whose serial is the key's SHA-256."""
    if row.tse_failed or row.tse_serial is None or row.public_key is None:
        return False
    try:
        crypto.load_public_key(base64.b64decode(row.public_key, validate=True))
    except (binascii.Error, ValueError):
        return False
    return key_serial(row.public_key) == row.tse_serial


def see(session: Session, row: TseTransaction, now: datetime) -> Anchor:
    """At ingest, before ``row`` is verified: its TSE's anchor — pinned now if central never saw the TSE (signed,
    audited), confirmed now if the config lists a TSE pinned unconfirmed. The pin row is read ``FOR SHARE``, so a
    confirmation made meanwhile is waited for and then seen."""
    assert row.tse_serial is not None
    serial = row.tse_serial
    cache: dict[str, Anchor] = session.info.setdefault(_ANCHORS, {})
    if serial in cache:
        return cache[serial]
    registry = registry_of(session)
    pin = session.execute(select(TsePin).where(TsePin.tse_serial == serial).with_for_update(read=True)
                          ).scalar_one_or_none()  # fmt: skip
    if pin is None and _pinnable(row):
        pin = _pin(session, row, registry, now)
    elif pin is not None and registry.signer is not None and check_pin(pin, registry) is None:
        _complete(session, pin, row, registry, now)
    cache[serial] = resolve(serial, pin, registry)
    return cache[serial]


def _complete(session: Session, pin: TsePin, row: TseTransaction, registry: Registry, now: datetime) -> None:
    """A valid pin that the config now lists is confirmed by it; one an admin made before the TSE's first sale
    learns where the TSE is (node, device, algorithm, time format). Re-signed, audited."""
    listed = pin.status == UNCONFIRMED and pin.tse_serial in registry.listed
    learn = pin.node_id is None and _pinnable(row)
    if not (listed or learn):
        return
    before = audit.snapshot(pin)
    if listed:
        pin.status, pin.source, pin.confirmed_at, pin.confirmed_by = CONFIRMED, CONFIG, now, CONFIG_ACTOR
    if learn:
        pin.node_id, pin.device_id = row.node_id, row.device_id
        pin.algorithm = pin.algorithm or (row.algorithm if row.algorithm in crypto.ALGORITHMS else None)
        pin.time_format = pin.time_format or row.time_format
    sign_pin(pin, registry.signer)
    actor = CONFIG_ACTOR if listed else INGEST_ACTOR
    audit.record(session, actor, "confirm" if listed else "update", RESOURCE, pin.tse_serial, before=before,
                 after=audit.snapshot(pin))


def _pin(session: Session, row: TseTransaction, registry: Registry, now: datetime) -> TsePin | None:
    assert row.tse_serial is not None
    assert row.public_key is not None
    serial = row.tse_serial
    listed = registry.listed.get(serial)
    algorithm = row.algorithm if row.algorithm in crypto.ALGORITHMS else None
    pin = TsePin(tse_serial=serial, public_key=row.public_key, certificate=None,
                 algorithm=listed.algorithm if listed is not None and listed.algorithm else algorithm,
                 time_format=row.time_format, node_id=row.node_id, device_id=row.device_id,
                 status=CONFIRMED if listed is not None else UNCONFIRMED, source=CONFIG if listed is not None else SEEN,
                 first_seen_at=now, confirmed_at=now if listed is not None else None,
                 confirmed_by=CONFIG_ACTOR if listed is not None else None)  # fmt: skip
    sign_pin(pin, registry.signer)
    try:
        with session.begin_nested():
            session.add(pin)
            session.flush()
    except IntegrityError:  # pinned at the same moment by another worker: that pin stands
        return session.execute(select(TsePin).where(TsePin.tse_serial == serial).with_for_update(read=True)
                               ).scalar_one_or_none()  # fmt: skip
    if registry.signer is None:
        log.warning("TSE %s pinned without a signature: this process holds no central signing key, so the pin is "
                    "not trusted until `floorgate central tse confirm %s`", serial, serial)
    else:
        log.info("TSE %s of node %s (device %s) pinned %s", serial, row.node_id, row.device_id, pin.status)
    audit.record(session, INGEST_ACTOR, "create", RESOURCE, serial, after=audit.snapshot(pin))
    return pin


# --- an admin's decision ----------------------------------------------------------------------------------------


def _key_from_rows(session: Session, serial: str) -> TseTransaction | None:
    """A signed transaction held of ``serial`` whose key is the serial's (to pin it from)."""
    t = TseTransaction
    for row in session.execute(select(t).where(t.tse_serial == serial, t.public_key.is_not(None),
                                               t.tse_failed.is_(False)).order_by(t.id).limit(50)).scalars():
        if _pinnable(row):
            return row
    return None


def decide(session: Session, serial: str, status: str, *, actor: str, now: datetime, registry: Registry,
           public_key: str | None = None, reason: str | None = None) -> TsePin:  # fmt: skip
    """Confirm or reject TSE ``serial`` (``status``), signed and audited (not committed). A TSE without a pin is
    pinned from a transaction central holds of it, or from ``public_key`` (base64, its SHA-256 the serial). A pin
    that is not signed by central, or was changed, is signed anew as decided now — the serial is what the admin
    vouches for, and the key is the serial's (its SHA-256). RegistryError naming the TSE."""
    if status not in (CONFIRMED, REJECTED):
        raise RegistryError(f"status: expected {CONFIRMED} or {REJECTED}, got {status!r}")
    if registry.signer is None:
        raise RegistryError("no central signing key to sign the pin with")
    serial = serial.strip().lower()
    if public_key is not None and key_serial(public_key) != serial:
        raise RegistryError(f"public_key: its SHA-256 is {key_serial(public_key) or 'not computable (not base64)'}, "
                            f"not the serial {serial}")
    pin = session.execute(select(TsePin).where(TsePin.tse_serial == serial).with_for_update()).scalar_one_or_none()
    before = audit.snapshot(pin)
    if pin is None:
        row = _key_from_rows(session, serial)
        key = public_key or (row.public_key if row is not None else None)
        if key is None:
            raise NoSuchTse(f"TSE {serial} is not pinned and central holds no signed transaction of it: give its "
                                "public key (--public-key, base64 of the uncompressed point) or list it in fiscal.tse "
                                "of the config")
        pin = TsePin(tse_serial=serial, public_key=key, certificate=None,
                     algorithm=row.algorithm if row is not None and row.algorithm in crypto.ALGORITHMS else None,
                     time_format=row.time_format if row is not None else None,
                     node_id=row.node_id if row is not None else None,
                     device_id=row.device_id if row is not None else None,
                     status=status, source=ADMIN, first_seen_at=now)  # fmt: skip
        session.add(pin)
    elif key_serial(pin.public_key) != serial:
        if public_key is None:
            raise RegistryError(f"the pin of TSE {serial} holds a key whose SHA-256 is not the serial (changed in the "
                                "database?): give the TSE's key with --public-key")
        pin.public_key = public_key
    pin.status, pin.confirmed_at, pin.confirmed_by = status, now, actor
    sign_pin(pin, registry.signer)
    session.flush()
    after = audit.snapshot(pin)
    assert after is not None
    if reason:
        after["reason"] = reason
    audit.record(session, actor, "confirm" if status == CONFIRMED else "reject", RESOURCE, serial,
                 before=before, after=after)
    session.info.get(_ANCHORS, {}).pop(serial, None)
    return pin


# --- the list ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinState:
    """One TSE of the registry, or seen in transactions without a pin, as an admin sees it."""

    serial: str
    status: str  # unconfirmed / confirmed / rejected, or "not pinned"
    source: str | None
    trusted: bool
    problem: str | None  # why its transactions are not trusted / its pin does not verify
    node_id: str | None
    device_id: str | None
    algorithm: str | None
    first_seen_at: datetime | None
    decided_at: datetime | None
    decided_by: str | None
    transactions: int
    key_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "status": self.status, "source": self.source, "trusted": self.trusted,
                "problem": self.problem, "node_id": self.node_id, "device_id": self.device_id,
                "algorithm": self.algorithm, "first_seen_at": _iso(self.first_seen_at),
                "decided_at": _iso(self.decided_at), "decided_by": self.decided_by,
                "transactions": self.transactions, "key_sha256": self.key_sha256}  # fmt: skip


def states(session: Session, registry: Registry, *, status: str | None = None,
           serial: str | None = None) -> list[PinState]:  # fmt: skip
    """Every pinned TSE and every TSE with transactions but no pin (or only ``serial``), by serial; ``status``
    filters (``not pinned`` too)."""
    from sqlalchemy import func

    t = TseTransaction
    q = select(t.tse_serial, func.count()).where(t.tse_serial.is_not(None)).group_by(t.tse_serial)
    pq = select(TsePin)
    if serial is not None:
        q, pq = q.where(t.tse_serial == serial), pq.where(TsePin.tse_serial == serial)
    counts = {s: int(n) for s, n in session.execute(q)}
    pins = {p.tse_serial: p for p in session.execute(pq).scalars()}
    out: list[PinState] = []
    for serial in sorted(set(pins) | {s for s in counts if s is not None}):
        pin = pins.get(serial)
        anchor = resolve(serial, pin, registry)
        valid = pin is not None and anchor.pin_problem is None
        shown = pin.status if pin is not None and valid else "not pinned"
        if pin is not None and not valid:
            shown = f"{pin.status} (pin invalid)"
        problem = anchor.pin_problem or anchor.problem
        row = _key_from_rows(session, serial) if pin is None else None
        out.append(PinState(
            serial=serial, status=shown, source=pin.source if pin is not None else None, trusted=anchor.trusted,
            problem=problem, node_id=pin.node_id if pin is not None else (row.node_id if row else None),
            device_id=pin.device_id if pin is not None else (row.device_id if row else None),
            algorithm=pin.algorithm if pin is not None else None,
            first_seen_at=pin.first_seen_at if pin is not None else None,
            decided_at=pin.confirmed_at if pin is not None else None,
            decided_by=pin.confirmed_by if pin is not None else None,
            transactions=int(counts.get(serial, 0)), key_sha256=key_serial(pin.public_key) if pin else None))
    if status is not None:
        out = [s for s in out if s.status == status or s.status.startswith(f"{status} (")]
    return out


__all__ = [
    "ADMIN", "CONFIG", "CONFIRMED", "PIN_TYPE", "REJECTED", "RESOURCE", "SEEN", "STATUSES", "UNCONFIRMED", "Anchor",
    "NoSuchTse", "PinState", "Registry", "RegistryError", "active_signer", "anchor_for", "central_keys", "check_pin",
    "decide", "key_problem", "key_serial", "load_registry", "registry_of", "resolve", "see", "sign_pin", "statement",
    "states", "trusted_key", "use_registry",
]
