"""SQLAlchemy models of central's business data and ingest bookkeeping.

Weights are exact decimals with their unit; times are UTC with time zone. The schema is created by Alembic
(``central/migrations``); ``floorgate central migrate`` applies it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

from central.db.types import ExactDecimal, ExactText, UtcDateTime
from central.db.values import as_delivered

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger autoincrement does not work on SQLite; INTEGER PRIMARY KEY is its rowid (64 bit anyway)
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Node(Base):
    """A node: its signing key (registered at enrolment), what its last heartbeat said, and its clock."""

    __tablename__ = "nodes"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    cert_fingerprint: Mapped[str | None] = mapped_column(String(95))  # SHA-256 of its X.509 certificate (hex)
    epoch: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime())
    public_key: Mapped[str | None] = mapped_column(String(128))  # "ed25519:<base64>"
    key_fingerprint: Mapped[str | None] = mapped_column(String(32))
    enrolled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    software_version: Mapped[str | None] = mapped_column(String(32))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    heartbeat: Mapped[dict[str, Any] | None] = mapped_column(Json)  # streams backlog + alarms as last reported
    last_hb_bno: Mapped[int | None] = mapped_column(BigInteger)
    clock_skew_s: Mapped[float | None] = mapped_column(Float)  # central receive time − node send time
    wall_mono_offset_ns: Mapped[int | None] = mapped_column(BigInteger)  # wall − monotonic, within boot_id
    clock_flag: Mapped[str | None] = mapped_column(Text)  # the last clock problem seen (jump back, far off)
    clock_flag_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # the newest heads the node signed (its alibi head, its TSEs' highest numbers; sync.envelope.Heads), as
    # verified, with the signed heartbeat body and signature they came in, so an auditor can re-check them
    heads: Mapped[dict[str, Any] | None] = mapped_column(Json)
    heads_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    heads_body: Mapped[str | None] = mapped_column(Text)
    heads_sig: Mapped[str | None] = mapped_column(String(128))


class NodeKey(Base):
    """Every signing key a node ever had (``central.fleet.keys``): bound to the node by the fleet CA's signature
    over a key-binding statement (kept off this database's trust: the CA key is a file), with the interval in which
    it was the node's key. ``nodes.public_key`` is the current one."""

    __tablename__ = "node_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[str] = mapped_column(String(128))  # "ed25519:<base64>"
    fingerprint: Mapped[str] = mapped_column(String(32))
    binding: Mapped[str | None] = mapped_column(Text)  # the CA-signed statement; None: registered without the CA
    valid_from: Mapped[datetime] = mapped_column(UtcDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime())  # None: the current key
    end_reason: Mapped[str | None] = mapped_column(String(16))  # rotated / revoked
    end_statement: Mapped[str | None] = mapped_column(Text)  # CA-signed: the revocation, or the successor's binding
    registered_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Device(Base):
    __tablename__ = "devices"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(64))  # its profile name (sync.records MAX_DEVICE_KIND)
    profile: Mapped[str | None] = mapped_column(String(64))  # device profile from firmware-config/
    bus: Mapped[str | None] = mapped_column(String(128))  # serial port or tcp endpoint it is polled on
    name: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime())
    counters: Mapped[dict[str, Any] | None] = mapped_column(Json)


class Weighing(Base):
    __tablename__ = "weighings"
    __table_args__ = (
        UniqueConstraint("node_id", "record_id"),
        Index("ix_weighings_node_device_time", "node_id", "device_id", "weighed_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    device_id: Mapped[str] = mapped_column(String(64))
    # legal values exactly as the instrument delivered them (ExactText: "24560.0" stays "24560.0")
    gross: Mapped[Decimal | None] = mapped_column(ExactText())  # None: the instrument delivered net + tare only
    unit: Mapped[str] = mapped_column(String(8))
    scale_serial: Mapped[str | None] = mapped_column(String(64))
    raw: Mapped[str | None] = mapped_column(Text)
    weighed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # legal-for-trade (devices.md §4): tare with the preset flag, net, as the instrument delivered them
    tare: Mapped[Decimal | None] = mapped_column(ExactText())
    tare_preset: Mapped[bool | None] = mapped_column(Boolean)
    net: Mapped[Decimal | None] = mapped_column(ExactText())
    alibi_no: Mapped[int | None] = mapped_column(BigInteger)  # the node's consecutive alibi-mirror number
    instrument_alibi: Mapped[str | None] = mapped_column(String(128))  # the scale's own alibi id / checksum
    reference: Mapped[str | None] = mapped_column(String(64), index=True)  # ticket reference from the weigh command
    vehicle: Mapped[str | None] = mapped_column(String(32), index=True)  # number plate
    trigger: Mapped[str | None] = mapped_column(String(16))  # auto / command

    # each value exactly as the scale wrote it (ExactText keeps every digit, trailing zeros too): "24560.0", None
    gross_as_delivered = property(lambda self: as_delivered(self.gross))
    tare_as_delivered = property(lambda self: as_delivered(self.tare))
    net_as_delivered = property(lambda self: as_delivered(self.net))


class InboxEntry(Base):
    """One row per record central holds: a resent record finds its row and changes nothing."""

    __tablename__ = "ingest_inbox"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())  # central's clock
    first_seq: Mapped[int | None] = mapped_column(BigInteger)  # set when the record stands for first_seq..seq
    device_time: Mapped[datetime | None] = mapped_column(UtcDateTime())  # the node's wall clock
    mono_ns: Mapped[int | None] = mapped_column(BigInteger)  # the node's monotonic clock …
    boot_id: Mapped[str | None] = mapped_column(String(64))  # … within this OS boot


class StreamMark(Base):
    """Per (node, epoch, stream): everything up to ``acked_seq`` is held (the contiguous mark)."""

    __tablename__ = "ingest_marks"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(String(16), primary_key=True)
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    last_batch_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    lost: Mapped[int] = mapped_column(BigInteger, default=0)  # seqs the node gave up to its disk quota
    last_bno: Mapped[int] = mapped_column(BigInteger, default=0)  # newest batch number applied (replay check)
    replays_requested: Mapped[int] = mapped_column(BigInteger, default=0)


class QuarantineEntry(Base):
    """A message central could not use, kept with the reason; nothing in it was applied."""

    __tablename__ = "ingest_quarantine"
    __table_args__ = (Index("ix_ingest_quarantine_received_at", "received_at"),)  # the retention prune
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    topic: Mapped[str] = mapped_column(Text)
    node_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # whole, or its first bytes when payload_truncated
    payload_sha256: Mapped[str] = mapped_column(String(64))  # hex, of the whole message
    payload_size: Mapped[int] = mapped_column(BigInteger)  # bytes of the whole message
    payload_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    # node:<id> (authenticated as that enrolled node), unauthenticated, or NULL (written with an applied batch)
    source: Mapped[str | None] = mapped_column(String(80))


QUARANTINE_KEEP_BYTES = 4096  # what a row written without central.ingest.quarantine keeps of its payload


@event.listens_for(QuarantineEntry, "before_insert")
def _compact_quarantine_payload(_mapper: Any, _connection: Any, row: QuarantineEntry) -> None:
    """Every quarantine row is bounded, also one written directly (apply's rejected records and conflicts):
    the SHA-256 and size of the whole payload, and at most QUARANTINE_KEEP_BYTES of it."""
    if row.payload_sha256 is None:
        payload = bytes(row.payload or b"")
        row.payload_sha256 = hashlib.sha256(payload).hexdigest()
        row.payload_size = len(payload)
        row.payload_truncated = len(payload) > QUARANTINE_KEEP_BYTES
        row.payload = payload[:QUARANTINE_KEEP_BYTES]


# --- business master data ----------------------------------------------------------------------------------------


class Site(Base):
    """A plant or yard: its nodes are grouped under it."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Berlin")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Article(Base):
    """Goods that are weighed or sold: wheat, barley, a 25 kg bag of layer feed."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    unit: Mapped[str] = mapped_column(String(8))  # the unit it is traded in: kg, t, piece
    price: Mapped[Decimal | None] = mapped_column(ExactDecimal())  # per unit, exact
    currency: Mapped[str | None] = mapped_column(String(3))  # ISO 4217, with price
    vat_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal())  # percent: 7, 19, 10.7 (§24 UStG)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Partner(Base):
    """A customer or supplier (farmer, haulier, feed buyer)."""

    __tablename__ = "partners"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # customer / supplier / both
    address: Mapped[str | None] = mapped_column(Text)
    vat_id: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Lot(Base):
    """A lot (Charge): goods of one article traced from delivery to sale."""

    __tablename__ = "lots"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), index=True)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AlibiEntry(Base):
    """Central's copy of a node's alibi mirror entry: hash-chained and signed on the node; never changed here.
    ``floorgate central verify-alibi`` re-checks the chain from these rows."""

    __tablename__ = "alibi_entries"
    __table_args__ = (UniqueConstraint("node_id", "alibi_no"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(String(64))
    alibi_no: Mapped[int] = mapped_column(BigInteger)  # consecutive per node, no gaps
    record_id: Mapped[str] = mapped_column(String(64))  # the weighing it mirrors
    body: Mapped[str] = mapped_column(Text)  # the canonical JSON exactly as the node hashed and signed it
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    sig: Mapped[str] = mapped_column(String(128))
    weighed_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Ticket(Base):
    """A weighing ticket: first and second weighing of a vehicle, net by difference (paired in issue 6)."""

    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    direction: Mapped[str] = mapped_column(String(8))  # in (incoming goods) / out (outgoing goods)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open / complete / cancelled
    vehicle: Mapped[str | None] = mapped_column(String(32))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), index=True)
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id"), index=True)
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("lots.id"), index=True)
    delivery_note: Mapped[str | None] = mapped_column(String(64), index=True)
    reference: Mapped[str | None] = mapped_column(String(64), index=True)  # the weigh command's ticket reference
    paired_by: Mapped[str | None] = mapped_column(String(16))  # reference / plate / manual
    first_weighing_id: Mapped[int | None] = mapped_column(ForeignKey("weighings.id"))
    second_weighing_id: Mapped[int | None] = mapped_column(ForeignKey("weighings.id"))
    gross: Mapped[Decimal | None] = mapped_column(ExactText())  # as delivered (ExactText)
    tare: Mapped[Decimal | None] = mapped_column(ExactText())
    net: Mapped[Decimal | None] = mapped_column(ExactText())  # calculated: gross − tare, the decimals of both
    unit: Mapped[str] = mapped_column(String(8), default="kg")
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    cancelled_by: Mapped[str | None] = mapped_column(String(80))  # the actor (user:<name> / apikey:<prefix>)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class TseTransaction(Base):
    """A sale signed by a TSE (KassenSichV), as synced from the node; ``verified`` by central (``central.fiscal``).

    A sale the node made while its TSE had failed ("TSE ausgefallen") has ``tse_failed`` and ``verified =
    "tse_failed"``: no signature, counter or QR code, the node's reason in ``tse_error``, and a transaction number
    only when the TSE had started the transaction. ``gap_before`` / ``gap_since``: how many transaction numbers of
    this TSE are missing right below this one, and since when central knows it (kept up to date as records arrive,
    rebuilt by ``floorgate central verify-tse``)."""

    __tablename__ = "tse_transactions"
    __table_args__ = (
        UniqueConstraint("tse_serial", "tx_number"),
        Index("ix_tse_transactions_serial_counter", "tse_serial", "signature_counter"),
        Index("ix_tse_transactions_serial_start_counter", "tse_serial", "start_counter"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(String(64), index=True)
    record_id: Mapped[str | None] = mapped_column(String(64))
    tse_serial: Mapped[str | None] = mapped_column(String(128))  # hex SHA-256 of the TSE public key
    client_id: Mapped[str] = mapped_column(String(64))  # the cash register (Kassen-Seriennummer)
    tx_number: Mapped[int | None] = mapped_column(BigInteger)
    signature_counter: Mapped[int | None] = mapped_column(BigInteger)  # of the FinishTransaction
    process_type: Mapped[str] = mapped_column(String(64))  # Kassenbeleg-V1, …
    process_data: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime())
    signature: Mapped[str | None] = mapped_column(Text)  # base64
    algorithm: Mapped[str | None] = mapped_column(String(64))
    time_format: Mapped[str] = mapped_column(String(32), default="unixTime")
    total: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    qr: Mapped[str | None] = mapped_column(Text)
    tse_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    verified: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending / valid / invalid /
    # tse_failed
    verify_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # migration 0005: what central needs to verify a row on its own, and the node's side of a failure
    device_id: Mapped[str | None] = mapped_column(String(64))  # the TSE's id on the node
    start_counter: Mapped[int | None] = mapped_column(BigInteger)  # signature counter of the StartTransaction
    public_key: Mapped[str | None] = mapped_column(String(200))  # base64 of the uncompressed point
    log_time: Mapped[int | None] = mapped_column(BigInteger)  # logTime of the FinishTransaction, unix seconds
    receipt_id: Mapped[str | None] = mapped_column(String(64))  # the register's receipt number (DSFinV-K BON_ID)
    tse_error: Mapped[str | None] = mapped_column(Text)  # why the TSE failed, as the node said
    gap_before: Mapped[int | None] = mapped_column(BigInteger, index=True)
    gap_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # tx_number for sorting and keyset pages, which need a value in every row: -1 for a failed sale without one
    tx_order: Mapped[int] = column_property(func.coalesce(tx_number, -1))


class TseExport(Base):
    """A TSE's TAR export, byte for byte as uploaded (``POST /api/v1/tse-exports``), verified on upload."""

    __tablename__ = "tse_exports"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tse_serial: Mapped[str | None] = mapped_column(String(128), index=True)  # of its log messages
    filename: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)  # verified as a filtered export
    log_messages: Mapped[int] = mapped_column(Integer)
    first_counter: Mapped[int | None] = mapped_column(BigInteger)
    last_counter: Mapped[int | None] = mapped_column(BigInteger)
    first_tx: Mapped[int | None] = mapped_column(BigInteger)
    last_tx: Mapped[int | None] = mapped_column(BigInteger)
    report: Mapped[dict[str, Any]] = mapped_column(Json)  # the verification, summed up
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    uploaded_by: Mapped[str] = mapped_column(String(80))
    stated_range: Mapped[dict[str, Any] | None] = mapped_column(Json)  # the range the uploader said it covers


class TsePin(Base):
    """The TSE registry (``central.fiscal.registry``): each TSE pinned with its key the first time central sees it
    (or listed in the config); every transaction is verified against the pinned key, never the key a row brings.
    The pin is signed with central's signing key (``statement`` / ``sig`` / ``kid``)."""

    __tablename__ = "tse_registry"
    tse_serial: Mapped[str] = mapped_column(String(128), primary_key=True)  # hex SHA-256 of the public key
    public_key: Mapped[str] = mapped_column(String(200))  # base64 of the uncompressed point
    certificate: Mapped[str | None] = mapped_column(Text)  # PEM, when known
    algorithm: Mapped[str | None] = mapped_column(String(64))
    time_format: Mapped[str | None] = mapped_column(String(32))
    node_id: Mapped[str | None] = mapped_column(String(64))  # where it was first seen
    device_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # unconfirmed / confirmed / rejected
    source: Mapped[str] = mapped_column(String(16))  # seen / config / admin
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    confirmed_by: Mapped[str | None] = mapped_column(String(80))
    statement: Mapped[str | None] = mapped_column(Text)
    sig: Mapped[str | None] = mapped_column(Text)
    kid: Mapped[str | None] = mapped_column(String(64))


class TseHead(Base):
    """Per TSE, the highest transaction number and signature counter its node signed in a heartbeat (newest
    verified): ``verify-tse`` names what that head says exists but central lacks (``truncated``)."""

    __tablename__ = "tse_heads"
    tse_serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64))
    tx_number: Mapped[int] = mapped_column(BigInteger)
    signature_counter: Mapped[int] = mapped_column(BigInteger)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Checkpoint(Base):
    """An external checkpoint (``central.fleet.checkpoint``): the chain heads as a statement signed by central's
    key, written to places outside this database; kept here too, with where it went."""

    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    made_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    statement: Mapped[str] = mapped_column(Text)  # canonical JSON
    sig: Mapped[str] = mapped_column(Text)
    kid: Mapped[str] = mapped_column(String(64))
    delivered: Mapped[dict[str, Any] | None] = mapped_column(Json)  # destination → "ok" / the error


# --- people, machines, audit -------------------------------------------------------------------------------------


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))  # argon2id
    role: Mapped[str] = mapped_column(String(16))  # admin / operator / auditor / viewer
    full_name: Mapped[str | None] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # raised on a password change and when the user is disabled: access tokens carry the version they were
    # issued with (claim ``ver``) and one with another version is refused
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiKey(Base):
    """A machine's credential: only an argon2 hash of the secret is kept; ``prefix`` finds the row."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # the person behind the key (its creator, or the creator of the key that created it): disabling them ends it
    owner_user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"), index=True)


class LoginAttempt(Base):
    """Failed logins, shared by every API worker: the rate limit counts them."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client: Mapped[str | None] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class LoginThrottle(Base):
    """The login throttle's counters (``central.api.throttle``), shared by every API worker: one row per
    (user, address) pair (``kind`` pair), per user from addresses it never logged in from (``user``) and per
    address (``address``). ``next_at`` is when the key may try again; ``last_success_at`` of a pair marks the
    address as known-good for that user."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("kind", "username", "client"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))  # pair / user / address
    username: Mapped[str] = mapped_column(String(64))  # "" for kind address
    client: Mapped[str] = mapped_column(String(64))  # "" for kind user
    failures: Mapped[int] = mapped_column(Integer, default=0)  # attempts since the last success or reset
    next_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class AuditEntry(Base):
    """Every change made through the API: who, when, what, before and after."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(80))  # user:<name> / apikey:<prefix> / system
    action: Mapped[str] = mapped_column(String(16))  # create / update / delete / cancel / revoke / command / login
    resource: Mapped[str] = mapped_column(String(32), index=True)
    resource_id: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict[str, Any] | None] = mapped_column(Json)
    after: Mapped[dict[str, Any] | None] = mapped_column(Json)


# --- device commands and alerts ----------------------------------------------------------------------------------


class Command(Base):
    """A command for a device on a node (tare, zero, weigh, poll, reload), tracked until the node answers or the
    timeout passes."""

    __tablename__ = "commands"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(String(36), unique=True)  # uuid sent to the node
    node_id: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict[str, Any] | None] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued / sent / succeeded / failed / timeout
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    timeout_s: Mapped[float] = mapped_column(Float, default=30.0)


class Alert(Base):
    """One firing of an alert rule for one subject (a device point, a device, a node): firing until resolved."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_rule_subject_state", "rule", "subject", "state"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))  # node/device/point the rule fired for
    severity: Mapped[str] = mapped_column(String(16))  # info / warning / critical
    state: Mapped[str] = mapped_column(String(16))  # firing / resolved
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    notified_firing_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    notified_resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    details: Mapped[dict[str, Any] | None] = mapped_column(Json)


class Notification(Base):
    """Each notification sent (or suppressed by the rate limit) for an alert, per channel."""

    __tablename__ = "alert_notifications"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(64))  # webhook:<name> / email:<name>
    event: Mapped[str] = mapped_column(String(16))  # firing / resolved
    status: Mapped[str] = mapped_column(String(16))  # sent / failed / suppressed
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class Certificate(Base):
    """Every X.509 certificate the fleet CA issued (``central.fleet.pki``): nodes, the broker, central's connection.
    The CRL (``crl.pem``) is built from the rows with ``revoked_at``; rows are never deleted."""

    __tablename__ = "certificates"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(40), unique=True)  # hex
    common_name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # node / server / client
    node_id: Mapped[str | None] = mapped_column(String(64), index=True)  # kind node: the node (= common_name)
    fingerprint: Mapped[str] = mapped_column(String(95))  # SHA-256 of the DER, "AB:CD:…" as openssl prints it
    not_before: Mapped[datetime] = mapped_column(UtcDateTime())
    not_after: Mapped[datetime] = mapped_column(UtcDateTime())
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoke_reason: Mapped[str | None] = mapped_column(String(200))
