"""The rules a sale must follow — one validator for the node's POS API and for central (stdlib only).

A sale the node's TSE signs becomes a ``tse_transaction`` record; central stores it or, if it cannot, quarantines it
— and a quarantined signed sale is a gap in the TSE's sequence. So the node checks every field the cash register
controls with **these** functions *before* it signs, and central checks the same fields of the record with the same
functions: nothing the node signs can be refused by central for a rule the node did not check.

The fields the register controls, and their rules (``SaleError.field`` names the field as the record has it)::

    client_id     1..64 characters, printable (the node also needs it among ``tse.clients``, TR-03151: ≤ 30)
    receipt_id    optional; 1..64 characters, printable: no NUL, no control / format / unassigned characters,
                  no line or paragraph separators, no lone surrogates (str.isprintable(); the space is allowed)
    amounts       (POS body) ASCII decimal strings: -?[0-9]{1,12}(.[0-9]{1,2})? — JSON numbers, non-ASCII digits,
                  exponents, "NaN", "+1" are refused
    total         the sum of the five VAT buckets, written -?[0-9]{1,12}.[0-9]{2}: |total| < 10**12
    currency      three ASCII capital letters (ISO 4217)
    kind          a Kassenbeleg-V1 kind (KINDS)
    process_type  1..64 characters of the TR-03151 PrintableString set
    process_data  printable text without NUL or control characters, at most MAX_PROCESS_DATA characters

:func:`check_sale_record` applies all of them to a record's ``data`` (central: ``central.fiscal.records``; the
node: ``edge.pos.sales`` on the record it is about to sign). The parts of the POS body are checked with the functions
below (``parse_amount``, ``check_receipt_id``, …) so the register gets a 422 naming the body's field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

MAX_RECEIPT_ID: Final = 64  # central's column (DSFinV-K BON_ID)
MAX_CLIENT_ID: Final = 64  # central's column; a TSE client id is at most 30 (TR-03151 PrintableString)
MAX_PROCESS_TYPE: Final = 64
MAX_PROCESS_DATA: Final = 8192  # a Kassenbeleg-V1 with 100 payments is under 3,000
MAX_INTEGER_DIGITS: Final = 12  # of an amount and of the total (central: NUMERIC with 12 digits before the point)
MAX_PAYMENTS: Final = 100
PROCESS_TYPE: Final = "Kassenbeleg-V1"
KINDS: Final = ("Beleg", "AVTransfer", "AVBestellung", "AVTraining", "AVBelegstorno", "AVBelegabbruch",
                "AVSachbezug", "AVSonstige", "AVRechnung")  # fmt: skip  # = protocols.tse.processdata.KINDS
VAT_BUCKETS: Final = ("vat_19", "vat_7", "vat_24_1_3", "vat_24_1_1", "vat_0")
PRINTABLE_STRING: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")

_AMOUNT: Final = re.compile(rf"-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}(\.[0-9]{{1,2}})?", re.ASCII)
_TOO_PRECISE: Final = re.compile(r"-?[0-9]+\.[0-9]{3,}", re.ASCII)
_TOTAL: Final = re.compile(rf"-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}\.[0-9]{{2}}", re.ASCII)
_CURRENCY: Final = re.compile(r"[A-Z]{3}", re.ASCII)
LIMIT: Final = Decimal(10) ** MAX_INTEGER_DIGITS


class SaleError(ValueError):
    """A sale (or a record of one) that breaks a rule; ``field`` names the field, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _show(value: object) -> str:
    return f"{value!r:.80}"


def _printable_text(value: object, field: str, limit: int, what: str) -> str:
    if not isinstance(value, str):
        raise SaleError(field, f"expected {what}, got {type(value).__name__} {_show(value)}")
    if not value:
        raise SaleError(field, f"empty; expected {what}")
    if len(value) > limit:
        raise SaleError(field, f"expected text of at most {limit} characters, got {len(value)}")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise SaleError(field, f"expected text without NUL or other control characters, got U+{ord(bad):04X} in "
                        f"{_show(value)}")  # fmt: skip
    return value


def check_receipt_id(value: object, field: str = "receipt_id") -> str:
    """The register's receipt number: 1..64 printable characters."""
    return _printable_text(value, field, MAX_RECEIPT_ID, f"the receipt number as text of 1 to {MAX_RECEIPT_ID} "
                           "printable characters")


def check_client_id(value: object, field: str = "client_id") -> str:
    """The cash register's id: 1..64 printable characters."""
    return _printable_text(value, field, MAX_CLIENT_ID, "the cash register's id")


def check_kind(value: object, field: str = "kind") -> str:
    if not isinstance(value, str) or value not in KINDS:
        raise SaleError(field, f"{_show(value)} is not a Kassenbeleg-V1 kind ({', '.join(KINDS)})")
    return value


def parse_amount(value: object, field: str) -> Decimal:
    """An amount of the POS body: an ASCII decimal string with at most two decimals and 12 digits before the point."""
    if not isinstance(value, str):
        raise SaleError(field, 'expected the amount as a string such as "12.50" (JSON numbers are refused: not exact)')
    if _TOO_PRECISE.fullmatch(value):
        raise SaleError(field, f"amount {_show(value)} has more than two decimals")
    if not _AMOUNT.fullmatch(value):
        raise SaleError(field, f"{_show(value)} is not an amount such as 12.50 or -3.00 (ASCII digits, at most "
                        f"{MAX_INTEGER_DIGITS} before the point)")  # fmt: skip
    return Decimal(value)


def format_total(total: Decimal, field: str = "total") -> str:
    """The total as the record carries it (two decimals); refused if central could not store it."""
    if not total.is_finite() or abs(total) >= LIMIT:
        raise SaleError(field, f"the total {total} has more than {MAX_INTEGER_DIGITS} digits before the point")
    text = f"{total.quantize(Decimal('0.01')):.2f}"
    return "0.00" if text == "-0.00" else text


def check_total(value: object, field: str = "total") -> Decimal:
    """The record's total: an ASCII decimal string with exactly two decimals, fewer than 10**12 in magnitude."""
    if not isinstance(value, str) or not _TOTAL.fullmatch(value):
        raise SaleError(field, f"expected a decimal number as a string such as \"12.50\" (ASCII digits, two decimals, "
                        f"at most {MAX_INTEGER_DIGITS} before the point), got {_show(value)}")  # fmt: skip
    return Decimal(value)


def check_currency(value: object, field: str = "currency") -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise SaleError(field, f"expected an ISO 4217 code such as EUR (three capital letters), got {_show(value)}")
    return value


def check_process_type(value: object, field: str = "process_type") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_PROCESS_TYPE or set(value) - PRINTABLE_STRING:
        raise SaleError(field, f"expected a PrintableString of 1 to {MAX_PROCESS_TYPE} characters such as "
                        f"{PROCESS_TYPE}, got {_show(value)}")  # fmt: skip
    return value


def check_process_data(value: object, field: str = "process_data") -> str:
    if not isinstance(value, str):
        raise SaleError(field, f"expected text, got {type(value).__name__} {_show(value)}")
    if len(value) > MAX_PROCESS_DATA:
        raise SaleError(field, f"expected text of at most {MAX_PROCESS_DATA} characters, got {len(value)}")
    if not value.isprintable():
        raise SaleError(field, f"expected text without NUL or other control characters, got {_show(value)}")
    return value


def check_sale_record(data: Mapping[str, object], *, signed: bool) -> None:
    """The fields of a ``tse_transaction`` record's ``data`` that come from the cash register. ``signed``: the
    record of a signed sale (process type and data required); a failed sale needs only ``client_id``."""
    check_client_id(data.get("client_id"))
    if data.get("receipt_id") is not None:
        check_receipt_id(data["receipt_id"])
    if data.get("total") is not None:
        check_total(data["total"])
    check_currency(data.get("currency", "EUR"))
    for name, check in (("process_type", check_process_type), ("process_data", check_process_data)):
        if data.get(name) is not None:
            check(data[name])
        elif signed:
            raise SaleError(name, "missing")


def clean_text(value: str, limit: int = 1000) -> str:
    """``value`` with every non-printable character replaced by ``?`` and cut to ``limit`` (an error text the node
    records: central stores text without NUL only)."""
    out = "".join(c if c.isprintable() else "?" for c in value[:limit])
    return out


__all__ = ["KINDS", "MAX_CLIENT_ID", "MAX_INTEGER_DIGITS", "MAX_PAYMENTS", "MAX_PROCESS_DATA", "MAX_RECEIPT_ID",
           "PROCESS_TYPE", "VAT_BUCKETS", "SaleError", "check_client_id", "check_currency", "check_kind",
           "check_process_data", "check_process_type", "check_receipt_id", "check_sale_record", "check_total",
           "clean_text", "format_total", "parse_amount"]
