"""processData of processType ``Kassenbeleg-V1`` (DSFinV-K): build it from exact amounts, and parse it back.

    Beleg^<19 %>_<7 %>_<§24(1)3>_<§24(1)1>_<0 %>^<amount>:<Bar|Unbar>[:<currency>]_<amount>:…

    Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF

* the first part is the kind of transaction: ``Beleg`` for a receipt, or one of the other DSFinV-K kinds
  (``AVTransfer``, ``AVBestellung``, ``AVTraining``, ``AVBelegstorno``, ``AVBelegabbruch``, ``AVSachbezug``,
  ``AVSonstige``, ``AVRechnung``);
* then the gross amount per VAT bucket, always five and in this order: the general rate (19 %), the reduced rate
  (7 %), the flat rate for farmers of §24(1) Nr. 3 UStG (10.7 % when the reference was written; lowered several
  times since 2022, which is why the field is named by its paragraph), the flat rate of §24(1) Nr. 1 UStG (5.5 %,
  forestry) and 0 % — the §24 buckets are what a farm-trade business uses;
* then the payments, ``_``-separated: amount, ``Bar`` (cash) or ``Unbar`` (card, transfer …), and the ISO 4217
  currency only when it is not EUR. A cancelled receipt may have no payment at all.

Every amount has exactly two decimals, comes from a ``Decimal`` or ``int`` (never a ``float``), may be negative
(refunds) and never has more than two decimals (``1.005`` is refused rather than rounded).
Errors are :class:`ProcessDataError` whose ``field`` names the bucket or payment (``vat_7``, ``payments[1].currency``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final

from protocols.tse.errors import ProcessDataError

PROCESS_TYPE: Final = "Kassenbeleg-V1"
KINDS: Final = ("Beleg", "AVTransfer", "AVBestellung", "AVTraining", "AVBelegstorno", "AVBelegabbruch",
                "AVSachbezug", "AVSonstige", "AVRechnung")  # fmt: skip
#: the five VAT buckets in processData order: (field name, what it is)
VAT_BUCKETS: Final = (
    ("vat_19", "general rate 19 %"),
    ("vat_7", "reduced rate 7 %"),
    ("vat_24_1_3", "flat rate §24(1) Nr. 3 UStG (farmers; 10.7 % until 2021)"),
    ("vat_24_1_1", "flat rate §24(1) Nr. 1 UStG (forestry, 5.5 %)"),
    ("vat_0", "0 %"),
)
CASH: Final = "Bar"
NON_CASH: Final = "Unbar"
_AMOUNT: Final = re.compile(r"-?\d+\.\d{2}", re.ASCII)  # "١٢.٥٠" is not an amount
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_CENT: Final = Decimal("0.01")


def format_amount(value: Decimal | int, *, field_name: str) -> str:
    """``value`` with exactly two decimals; refuses floats, non-finite values and a third decimal."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ProcessDataError(
            f"amount {value!r} is a {type(value).__name__}; give a Decimal or an int (floats are not exact)",
            field=field_name,
        )
    amount = Decimal(value)
    if not amount.is_finite():
        raise ProcessDataError(f"amount {value} is not a finite number", field=field_name)
    try:
        cents = amount.quantize(_CENT)
    except InvalidOperation:
        raise ProcessDataError(f"amount {value} is too large", field=field_name) from None
    if cents != amount:
        raise ProcessDataError(f"amount {value} has more than two decimals", field=field_name)
    text = f"{cents:.2f}"
    return "0.00" if text == "-0.00" else text


@dataclass(frozen=True)
class Payment:
    """One payment: ``amount`` in ``currency``, cash (``Bar``) or not (``Unbar``)."""

    amount: Decimal
    cash: bool
    currency: str = "EUR"


@dataclass(frozen=True)
class Kassenbeleg:
    """A parsed (or to be built) ``Kassenbeleg-V1`` processData; amounts gross, per bucket."""

    vat_19: Decimal = Decimal("0.00")
    vat_7: Decimal = Decimal("0.00")
    vat_24_1_3: Decimal = Decimal("0.00")
    vat_24_1_1: Decimal = Decimal("0.00")
    vat_0: Decimal = Decimal("0.00")
    payments: tuple[Payment, ...] = field(default_factory=tuple)
    kind: str = "Beleg"

    @property
    def total(self) -> Decimal:
        """The gross total over the five buckets."""
        return sum((getattr(self, name) for name, _ in VAT_BUCKETS), Decimal("0.00"))

    def build(self) -> str:
        return build_kassenbeleg_v1(
            vat_19=self.vat_19, vat_7=self.vat_7, vat_24_1_3=self.vat_24_1_3, vat_24_1_1=self.vat_24_1_1,
            vat_0=self.vat_0, payments=self.payments, kind=self.kind,
        )  # fmt: skip


def build_kassenbeleg_v1(
    *,
    vat_19: Decimal | int = 0,
    vat_7: Decimal | int = 0,
    vat_24_1_3: Decimal | int = 0,
    vat_24_1_1: Decimal | int = 0,
    vat_0: Decimal | int = 0,
    payments: Sequence[Payment] = (),
    kind: str = "Beleg",
) -> str:
    """The processData text, e.g. ``Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF``."""
    if kind not in KINDS:
        raise ProcessDataError(f"{kind!r} is not a Kassenbeleg-V1 kind ({', '.join(KINDS)})", field="kind")
    values = dict(vat_19=vat_19, vat_7=vat_7, vat_24_1_3=vat_24_1_3, vat_24_1_1=vat_24_1_1, vat_0=vat_0)
    buckets = "_".join(format_amount(values[name], field_name=name) for name, _ in VAT_BUCKETS)
    parts: list[str] = []
    for index, payment in enumerate(payments):
        where = f"payments[{index}]"
        if not isinstance(payment, Payment):
            raise ProcessDataError(f"{payment!r} is not a Payment", field=where)
        text = f"{format_amount(payment.amount, field_name=where + '.amount')}:{CASH if payment.cash else NON_CASH}"
        if not _CURRENCY.fullmatch(payment.currency):
            raise ProcessDataError(f"currency {payment.currency!r} is not an ISO 4217 code (three capital letters)",
                                   field=where + ".currency")  # fmt: skip
        if payment.currency != "EUR":
            text += f":{payment.currency}"
        parts.append(text)
    return f"{kind}^{buckets}^{'_'.join(parts)}"


def parse_kassenbeleg_v1(text: str) -> Kassenbeleg:
    """Parse a ``Kassenbeleg-V1`` processData; :class:`ProcessDataError` naming the part that is wrong."""
    sections = text.split("^")
    if len(sections) != 3:
        raise ProcessDataError(f"expected kind^buckets^payments (three parts separated by '^'), got {len(sections)} "
                               f"part(s) in {text!r}", field="processData")  # fmt: skip
    kind, bucket_text, payment_text = sections
    if kind not in KINDS:
        raise ProcessDataError(f"{kind!r} is not a Kassenbeleg-V1 kind ({', '.join(KINDS)})", field="kind")
    amounts = bucket_text.split("_")
    if len(amounts) != len(VAT_BUCKETS):
        raise ProcessDataError(f"expected {len(VAT_BUCKETS)} VAT amounts separated by '_', got {len(amounts)} in "
                               f"{bucket_text!r}", field="vat")  # fmt: skip
    buckets: dict[str, Decimal] = {}
    for (name, _), amount in zip(VAT_BUCKETS, amounts, strict=True):
        buckets[name] = _parse_amount(amount, name)
    payments: list[Payment] = []
    for index, item in enumerate(payment_text.split("_") if payment_text else []):
        where = f"payments[{index}]"
        pieces = item.split(":")
        if len(pieces) not in (2, 3):
            raise ProcessDataError(f"{item!r} is not amount:Bar|Unbar[:currency]", field=where)
        paid = _parse_amount(pieces[0], where + ".amount")
        if pieces[1] not in (CASH, NON_CASH):
            raise ProcessDataError(f"payment type {pieces[1]!r} is neither {CASH} nor {NON_CASH}",
                                   field=where + ".type")  # fmt: skip
        currency = "EUR"
        if len(pieces) == 3:
            currency = pieces[2]
            if not _CURRENCY.fullmatch(currency):
                raise ProcessDataError(f"currency {currency!r} is not an ISO 4217 code", field=where + ".currency")
            if currency == "EUR":
                raise ProcessDataError("EUR must not be written (the currency is given only when not EUR)",
                                       field=where + ".currency")  # fmt: skip
        payments.append(Payment(paid, pieces[1] == CASH, currency))
    return Kassenbeleg(**buckets, payments=tuple(payments), kind=kind)


def _parse_amount(text: str, field_name: str) -> Decimal:
    if not _AMOUNT.fullmatch(text):
        raise ProcessDataError(f"amount {text!r} does not have exactly two decimals (e.g. 12.50)", field=field_name)
    return Decimal(text)


__all__ = [
    "CASH", "KINDS", "NON_CASH", "PROCESS_TYPE", "VAT_BUCKETS", "Kassenbeleg", "Payment", "build_kassenbeleg_v1",
    "format_amount", "parse_kassenbeleg_v1",
]  # fmt: skip
