"""A ``weighing`` record → a ``Weighing`` row, values exactly as the instrument delivered them (devices.md §4).

The record's ``data`` (the contract every driver and central code against)::

    gross, net, tare   decimal strings as delivered ("24560", "8420.5"): stored as exact decimals, never
                       recomputed or re-rounded; ``decimals`` keeps how many places the scale sent for the
                       gross (NUMERIC pads tare and net with zeros: compare them as numbers)
    tare_preset        true / false / absent;  unit  "kg";  scale_serial, instrument_alibi  as delivered
    trigger            "auto" | "command" (older nodes say "automatic": stored as "auto")
    reference, vehicle the weigh command's ticket reference and number plate
    alibi              the alibi mirror entry (``central.tickets.alibi``)

A value central cannot store as it is (not a number, more than 6 decimal places or 12 integer digits — the
column is NUMERIC(18, 6) and would round —, text longer than its column or holding NUL) makes the record
unusable: ``BadWeighing`` with the field and the reason; ``apply`` quarantines the record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from central.db.models import Weighing
from sync.envelope import Record

MAX_PLACES = 6  # NUMERIC(18, 6)
MAX_INTEGER_DIGITS = 12
TEXT_LIMITS = {"unit": 8, "scale_serial": 64, "instrument_alibi": 128, "reference": 64, "vehicle": 32, "trigger": 16}
LEGACY_TRIGGERS = {"automatic": "auto"}
_DECIMAL = re.compile(r"[+-]?[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII)  # digits as the instrument sent them


class BadWeighing(Exception):
    """A weighing record whose values central cannot store as delivered; ``reason`` names the field."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def places(value: Decimal) -> int:
    """Decimal places as written: "8420.5" → 1, "24560" → 0."""
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def legal_decimal(data: Mapping[str, Any], name: str) -> Decimal | None:
    """``data[name]`` as an exact decimal (None when absent); BadWeighing when it cannot be stored unchanged.

    A string must be ASCII digits with an optional sign and point (``_DECIMAL``): ``Decimal`` itself also reads
    Arabic-Indic and other Unicode digits ("١٢٣" → 123), underscores, exponents, "NaN" and blanks — a value the
    instrument never showed."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise BadWeighing(f"data.{name}: expected a decimal number, got {value[:40]!r} (ASCII digits 0-9 with an "
                          "optional sign and point, such as '24560' or '-8.5')")
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise BadWeighing(f"data.{name}: expected a decimal number, got {value!r}") from None
    if not number.is_finite():
        raise BadWeighing(f"data.{name}: expected a decimal number, got {value!r}")
    if places(number) > MAX_PLACES:
        raise BadWeighing(f"data.{name}: {value!r} has more than {MAX_PLACES} decimal places; central would have to "
                          "round it")
    if abs(number) >= Decimal(10) ** MAX_INTEGER_DIGITS:
        raise BadWeighing(f"data.{name}: {value!r} has more than {MAX_INTEGER_DIGITS} digits before the point")
    return number


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    limit = TEXT_LIMITS[name]
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        raise BadWeighing(f"data.{name}: expected text of at most {limit} characters without NUL, got {value!r:.80}")
    return value


def weighing_row(*, node: str, epoch: str, record: Record, weighed_at: datetime, received_at: datetime) -> Weighing:
    """The row for ``record`` (a ``weighing``); raises BadWeighing."""
    data = record.data
    gross = legal_decimal(data, "gross")
    tare = legal_decimal(data, "tare")
    net = legal_decimal(data, "net")
    if gross is None and net is None:
        raise BadWeighing(f"data.gross: expected a decimal number, got {data.get('gross')!r}")
    # a tared weighing whose instrument delivers net and tare but no gross keeps gross NULL: never computed here
    unit = _text(data, "unit")
    if not unit:
        raise BadWeighing("data.unit: expected a unit such as 'kg'")
    preset = data.get("tare_preset")
    if preset is not None and not isinstance(preset, bool):
        raise BadWeighing(f"data.tare_preset: expected true or false, got {preset!r}")
    trigger = _text(data, "trigger")
    return Weighing(
        node_id=node,
        record_id=record.record_id,
        epoch=epoch,
        seq=record.seq,
        device_id=record.device,
        gross=gross,
        decimals=places(gross if gross is not None else net),  # type: ignore[arg-type]
        unit=unit,
        tare=tare,
        tare_preset=preset,
        net=net,
        scale_serial=_text(data, "scale_serial"),
        instrument_alibi=_text(data, "instrument_alibi"),
        reference=_text(data, "reference"),
        vehicle=_text(data, "vehicle"),
        trigger=LEGACY_TRIGGERS.get(trigger, trigger) if trigger is not None else None,
        raw=data.get("raw"),
        weighed_at=weighed_at,
        received_at=received_at,
    )
