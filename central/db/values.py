"""What a stored value may hold and how it is written out — shared by the API, ticket pairing and the views.

- **text** never holds NUL (Postgres text cannot) and is no longer than its column (``NO_NUL``, ``NON_BLANK``);
  codes of articles, partners, sites and lots look like an ERP key (``CODE``).
- **exact decimals** travel as JSON strings, never floats. ``plain`` writes a stored value without the padding zeros
  of NUMERIC(18, 6) and never in exponent notation: ``Decimal("16139.500000")`` → ``"16139.5"``, the same number.
  ``money`` keeps at least the currency's minor units: ``"212.50"`` EUR, ``"1200"`` JPY.
- **times** are UTC with a time zone: ``central.db.types.UtcDateTime`` hands every stored one back that way.
- **changes**: ``set_if_changed`` sets a field only if its value really changes, so the audit log shows only those.
"""

from __future__ import annotations

from decimal import Decimal

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
    if getattr(obj, name) == value:
        return False
    setattr(obj, name, value)
    return True
