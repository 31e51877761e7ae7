"""What a stored value may hold and how it is written out — shared by the API, ticket pairing and the views.

- **text** never holds NUL (Postgres text cannot) and is no longer than its column (``NO_NUL``, ``NON_BLANK``);
  codes of articles, partners, sites and lots look like an ERP key (``CODE``).
- **exact decimals** travel as JSON strings, never floats. ``plain`` writes a stored amount (``ExactDecimal``: prices,
  rates, totals) without the padding zeros of NUMERIC(18, 6) and never in exponent notation:
  ``Decimal("16139.500000")`` → ``"16139.5"``, the same number. ``money`` keeps at least the currency's minor units:
  ``"212.50"`` EUR, ``"1200"`` JPY.
- **weights as delivered** (``ExactText``: gross, tare, net of weighings and tickets) are written by ``as_delivered``
  with exactly their own digits — never normalised, padded or cut, and never with another value's decimals:
  ``"24560.0"`` stays ``"24560.0"``, ``"8.425"`` stays ``"8.425"``. A net by difference and a sum of nets are exact
  ``Decimal`` arithmetic on those values and keep the decimals of their operands (24560 − 8420.5 → ``"16139.5"``).
- **times** are UTC with a time zone: ``central.db.types.UtcDateTime`` hands every stored one back that way.
- **changes**: ``set_if_changed`` sets a field only if its value really changes, so the audit log shows only those
  (a weight as delivered changes with its digits: ``24560`` → ``24560.0`` is a change).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import inspect

from central.db.types import ExactText

NO_NUL = r"^[^\x00]*$"
NON_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"  # at least one character that is not white space
CODE = r"^[A-Za-z0-9][A-Za-z0-9_./-]*$"  # article, partner, site, lot codes: what an ERP key looks like
DECIMAL_RE = r"^-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?$"  # NUMERIC(18, 6): 12 digits before the point, 6 after
NON_NEGATIVE_DECIMAL_RE = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?$"


def plain(value: Decimal | None) -> str | None:
    """The exact decimal as a string, without padding zeros or exponent: 24560.000000 → "24560"."""
    if value is None:
        return None
    if value.is_zero():
        return "0"
    return format(value.normalize(), "f")


def as_delivered(value: Decimal | None) -> str | None:
    """A weight exactly as the instrument wrote it (an ``ExactText`` value, or a difference or sum of them): its own
    digits, trailing zeros kept, never in exponent notation: ``Decimal("24560.0")`` → ``"24560.0"``, None → None."""
    if value is None:
        return None
    if not value.is_finite():
        raise ValueError(f"a weight must be a finite number, got {value!r}")
    return format(value, "f")


# ISO 4217 minor units where they are not 2
_MINOR_UNITS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
                                 "VND", "VUV", "XAF", "XOF", "XPF"), 0),
                **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3)}


def money(value: Decimal | None, currency: str | None) -> str | None:
    """An exact amount with at least its currency's minor units (212.5 EUR → "212.50"; 0.2125 EUR → "0.2125")."""
    text = plain(value)
    if text is None or currency is None:
        return text
    digits = _MINOR_UNITS.get(currency, 2)
    have = len(text.partition(".")[2])
    if have >= digits:
        return text
    return text + ("." if have == 0 else "") + "0" * (digits - have)


def decimal_or_none(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def set_if_changed(obj: object, name: str, value: object) -> bool:
    """Set ``obj.name`` unless it already holds an equal value (12.5 == 12.500000): the audit log then shows only
    real changes. True if it changed."""
    current = getattr(obj, name)
    if current == value and not _other_digits(obj, name, current, value):
        return False
    setattr(obj, name, value)
    return True


def _other_digits(obj: object, name: str, current: object, value: object) -> bool:
    """Two equal weights as delivered with other digits (``24560`` and ``24560.0``): for an ``ExactText`` column
    these differ (the digits are the record), for any other decimal column they are the same value."""
    if not (isinstance(current, Decimal) and isinstance(value, Decimal)) or current.as_tuple() == value.as_tuple():
        return False
    column = inspect(type(obj)).columns.get(name)
    return column is not None and isinstance(column.type, ExactText)
