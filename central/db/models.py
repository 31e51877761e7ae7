"""SQLAlchemy models of central's business data and ingest bookkeeping.

Weights are exact decimals with their unit; times are UTC with time zone. The schema is created by Alembic
(``central/migrations``); ``floorgate central migrate`` applies it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

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


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(18, 6) on Postgres; text on SQLite, which has no exact decimal type (never a float)."""

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Node(Base):
    """A node: its signing key (registered at enrolment), what its last heartbeat said, and its clock."""

    __tablename__ = "nodes"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    public_key: Mapped[str | None] = mapped_column(String(128))  # "ed25519:<base64>"
    key_fingerprint: Mapped[str | None] = mapped_column(String(32))
    enrolled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    software_version: Mapped[str | None] = mapped_column(String(32))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat: Mapped[dict[str, Any] | None] = mapped_column(Json)  # streams backlog + alarms as last reported
    last_hb_bno: Mapped[int | None] = mapped_column(BigInteger)
    clock_skew_s: Mapped[float | None] = mapped_column(Float)  # central receive time − node send time
    wall_mono_offset_ns: Mapped[int | None] = mapped_column(BigInteger)  # wall − monotonic, within boot_id
    clock_flag: Mapped[str | None] = mapped_column(Text)  # the last clock problem seen (jump back, far off)
    clock_flag_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Device(Base):
    __tablename__ = "devices"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
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
    gross: Mapped[Decimal] = mapped_column(ExactDecimal())
    decimals: Mapped[int] = mapped_column(Integer)  # as the scale delivered it: 24560 kg → 0, 100.00 g → 2
    unit: Mapped[str] = mapped_column(String(8))
    scale_serial: Mapped[str | None] = mapped_column(String(64))
    raw: Mapped[str | None] = mapped_column(Text)
    weighed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    @property
    def gross_as_delivered(self) -> str:
        """The gross weight with exactly the decimals the scale sent (the column may pad with zeros)."""
        return str(self.gross.quantize(Decimal(1).scaleb(-self.decimals)))


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
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # central's clock
    first_seq: Mapped[int | None] = mapped_column(BigInteger)  # set when the record stands for first_seq..seq
    device_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the node's wall clock
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
    last_batch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lost: Mapped[int] = mapped_column(BigInteger, default=0)  # seqs the node gave up to its disk quota
    last_bno: Mapped[int] = mapped_column(BigInteger, default=0)  # newest batch number applied (replay check)
    replays_requested: Mapped[int] = mapped_column(BigInteger, default=0)


class QuarantineEntry(Base):
    """A message central could not use, kept with the reason; nothing in it was applied."""

    __tablename__ = "ingest_quarantine"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    topic: Mapped[str] = mapped_column(Text)
    node_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
