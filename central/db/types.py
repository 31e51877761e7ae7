"""Column types of central's store that carry a rule, not just a format.

- **times**: every time central stores is UTC. ``UtcDateTime`` is ``TIMESTAMP WITH TIME ZONE`` (Postgres) /
  ``DATETIME`` (SQLite); it takes an aware time in any zone (a naive one is read as UTC) and always gives back an
  aware UTC ``datetime`` — SQLite keeps no zone and hands back naive values, Postgres hands them back in the
  session's zone. No code above the data layer converts a stored time; ``as_utc`` is for the times that do not come
  from the database (query parameters, cursors, certificates).
- **exact decimals**: ``ExactDecimal`` is NUMERIC(18, 6), never a float (prices, rates, amounts).
- **legal values as delivered**: ``ExactText`` keeps a weight exactly as the instrument wrote it — ``"24560"``,
  ``"24560.0"`` and ``"8.425"`` stay those strings (text on every database; a ``Decimal`` in Python, which keeps its
  exponent, so ``Decimal("24560") - Decimal("8420.5")`` is ``16139.5`` and nothing is padded or cut).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


def as_utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC time; a naive one is taken as UTC. ``OverflowError`` if moving it to UTC leaves the
    calendar (``0001-01-01T00:00+01:00``)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def utc_from_ns(ns: int) -> datetime:
    """A record's clock (nanoseconds since the epoch, as the node stamps it) as an aware UTC time."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A time stored as UTC and read back as an aware UTC ``datetime`` on every database (see the module)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        # SQLite drops the zone when it stores a time: it must be UTC by then, so comparing and sorting stay right
        return as_utc(value) if isinstance(value, datetime) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value) if isinstance(value, datetime) else value


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


class ExactText(TypeDecorator[Decimal]):
    """A legal value exactly as delivered (see the module): stored as its plain decimal text, read back as the
    ``Decimal`` of that text. Refuses a float, NaN or infinity."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"expected a finite Decimal for a legal value, got {value!r}")
        return format(value, "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))
