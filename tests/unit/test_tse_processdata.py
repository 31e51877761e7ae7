"""processData of Kassenbeleg-V1: five VAT buckets in the DSFinV-K order, exactly two decimals, payments."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.tse.errors import ProcessDataError
from protocols.tse.processdata import Kassenbeleg, Payment, build_kassenbeleg_v1, parse_kassenbeleg_v1

D = Decimal


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"vat_19": D("75.33"), "vat_7": D("7.99"), "payments": [Payment(D("10.00"), True), Payment(D(5), True, "CHF")]},
     "Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF"),
    ({"vat_19": D("21.42"), "payments": [Payment(D("21.42"), False)]},
     "Beleg^21.42_0.00_0.00_0.00_0.00^21.42:Unbar"),
    # the §24 flat-rate buckets are third (Nr. 3, farmers) and fourth (Nr. 1, forestry), 0 % last
    ({"vat_24_1_3": D("107.1"), "vat_24_1_1": 55, "vat_0": D("2.10"), "payments": [Payment(D("164.20"), True)]},
     "Beleg^0.00_0.00_107.10_55.00_2.10^164.20:Bar"),
    ({"vat_19": D("-12.5"), "payments": [Payment(D("-12.50"), True)], "kind": "AVBelegstorno"},
     "AVBelegstorno^-12.50_0.00_0.00_0.00_0.00^-12.50:Bar"),
    ({"kind": "AVBelegabbruch"}, "AVBelegabbruch^0.00_0.00_0.00_0.00_0.00^"),
    ({"vat_7": D("1E+1"), "vat_0": D("-0.00"), "payments": [Payment(D("10"), False, "USD")]},
     "Beleg^0.00_10.00_0.00_0.00_0.00^10.00:Unbar:USD"),
])  # fmt: skip
def test_build(kwargs: dict[str, object], expected: str) -> None:
    assert build_kassenbeleg_v1(**kwargs) == expected  # type: ignore[arg-type]
    parsed = parse_kassenbeleg_v1(expected)
    assert parsed.build() == expected


@pytest.mark.parametrize(("kwargs", "field", "why"), [
    ({"vat_19": D("1.005")}, "vat_19", "more than two decimals"),
    ({"vat_7": 1.5}, "vat_7", "float"),
    ({"vat_24_1_3": D("NaN")}, "vat_24_1_3", "not a finite number"),
    ({"vat_24_1_1": "3.00"}, "vat_24_1_1", "give a Decimal or an int"),
    ({"vat_0": True}, "vat_0", "bool"),
    ({"payments": [Payment(D("1.00"), True), Payment(D("0.001"), True)]}, "payments[1].amount", "more than two"),
    ({"payments": [Payment(D("1.00"), True, "chf")]}, "payments[0].currency", "ISO 4217"),
    ({"payments": [Payment(D("1.00"), True, "EURO")]}, "payments[0].currency", "ISO 4217"),
    ({"payments": [(D("1.00"), True)]}, "payments[0]", "is not a Payment"),
    ({"kind": "Rechnung"}, "kind", "not a Kassenbeleg-V1 kind"),
])  # fmt: skip
def test_build_refuses_with_the_field_named(kwargs: dict[str, object], field: str, why: str) -> None:
    with pytest.raises(ProcessDataError, match=why) as info:
        build_kassenbeleg_v1(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(("text", "field"), [
    ("Beleg^1.00_0.00_0.00_0.00^1.00:Bar", "vat"),
    ("Beleg^1.0_0.00_0.00_0.00_0.00^1.00:Bar", "vat_19"),
    ("Beleg^1.00_0.00_0.00_0.00_0,00^1.00:Bar", "vat_0"),
    ("Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Karte", "payments[0].type"),
    ("Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Bar_1:Bar", "payments[1].amount"),
    ("Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Bar:EUR", "payments[0].currency"),
    ("Beleg^1.00_0.00_0.00_0.00_0.00^1.00", "payments[0]"),
    ("Beleg^1.00_0.00_0.00_0.00_0.00", "processData"),
    ("Kassenbon^1.00_0.00_0.00_0.00_0.00^", "kind"),
])  # fmt: skip
def test_parse_names_the_broken_part(text: str, field: str) -> None:
    with pytest.raises(ProcessDataError) as info:
        parse_kassenbeleg_v1(text)
    assert info.value.field == field


def test_parse_gives_exact_amounts_and_the_total() -> None:
    beleg = parse_kassenbeleg_v1("Beleg^2.90_0.00_0.00_0.00_2.10^5.00:Unbar")
    assert beleg == Kassenbeleg(vat_19=D("2.90"), vat_0=D("2.10"), payments=(Payment(D("5.00"), False),))
    assert beleg.total == D("5.00")


_cents = st.integers(-10**9, 10**9).map(lambda c: Decimal(c).scaleb(-2))


_payments = st.lists(st.tuples(_cents, st.booleans(), st.sampled_from(["EUR", "CHF", "USD"])), max_size=4)


@given(buckets=st.lists(_cents, min_size=5, max_size=5), payments=_payments)
def test_round_trip(buckets: list[Decimal], payments: list[tuple[Decimal, bool, str]]) -> None:
    beleg = Kassenbeleg(*buckets, payments=tuple(Payment(*p) for p in payments))
    text = beleg.build()
    assert parse_kassenbeleg_v1(text) == beleg
    assert all(len(part.split(".")[1]) == 2 for part in text.split("^")[1].split("_"))
