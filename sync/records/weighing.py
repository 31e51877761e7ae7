"""The ``weighing`` record (business stream): one weighing, its values exactly as the instrument delivered them
(devices.md §4).

Every scale driver builds it (``edge.devices.weighing.weighing_record``), in automatic mode and for a ``weigh``
command alike; the node's outbox adds its alibi part (``edge.store.alibi``, ``sync.alibi``); central checks it with
:meth:`WeighingPayload.from_payload`, stores it (``central.ingest.handlers.weighing``) and pairs it into a ticket
(``central.tickets.pairing``)::

    {"gross": "24560", "unit": "kg", "stable": true,                 legal values: strings exactly as the
     "net": "10500", "tare": "14960", "tare_preset": true,            instrument delivered them (never
     "scale_serial": "0123456789", "instrument_alibi": "4711",        recomputed, never re-rounded)
     "raw": "S S      10500 kg | TA A      14960 kg", "trigger": "auto" | "command",
     "reference": "T-000123", "vehicle": "B-AB 1234", "partner": …, "article": …, "lot": …, "delivery_note": …,
     "alibi": {"no": 17, "body": "…", "hash": "…", "sig": "…"}}

A value the instrument did not deliver is left out, not computed: an untared weighing has ``gross`` only; a tared
one has ``net`` and ``tare`` (with ``tare_preset`` when the driver knows how the tare was set) and ``gross`` only when
the instrument sends it too (Sartorius 22-character prints, Laumas registers). The codes after ``trigger`` come with
a ``weigh`` command (:data:`CODES`, the command's arguments: ``sync.commands``).

What central checks (a failure names the field; central quarantines the record):

    gross, tare, net   ASCII decimal strings ("24560", "-8.5") that NUMERIC(18, 6) holds unchanged: at most 6
                       decimal places and 12 integer digits (``legal_decimal``); gross or net must be there
    unit               1 to 8 characters;  tare_preset, stable  true / false / absent
    scale_serial, instrument_alibi, reference, vehicle, trigger, raw
                       text within central's columns (:data:`TEXT_LIMITS`), without NUL; older nodes say
                       ``trigger: "automatic"`` (:data:`LEGACY_TRIGGERS`)

The codes ``partner``, ``article``, ``lot``, ``delivery_note`` and ``direction`` are advice for the ticket rules
(``central.tickets.pairing`` notes what it cannot use): never a reason to refuse the legal record. The ``alibi`` part
is checked by ``sync.alibi.parse_part``: an unusable part is quarantined on its own, the weighing is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Final

from sync.records.base import bad, drop_none, flag, text

WEIGHING: Final = "weighing"

TRIGGER_AUTO: Final = "auto"  # the detector took it: stable above the threshold after motion
TRIGGER_COMMAND: Final = "command"  # a weigh command from the API (operator or ERP)
LEGACY_TRIGGERS: Final = {"automatic": TRIGGER_AUTO}  # what older nodes wrote → what it means
# the codes a weigh command carries into its weighing record (= the weigh command's arguments, ``sync.commands``)
CODES: Final = ("reference", "vehicle", "partner", "article", "lot", "delivery_note")
# the fields of a weighing its alibi entry signs (``sync.alibi``)
LEGAL_FIELDS: Final = ("gross", "tare", "tare_preset", "net", "unit", "scale_serial", "instrument_alibi")
MAX_PLACES: Final = 6  # central's NUMERIC(18, 6)
MAX_INTEGER_DIGITS: Final = 12
TEXT_LIMITS: Final = {"unit": 8, "scale_serial": 64, "instrument_alibi": 128, "reference": 64, "vehicle": 32,
                      "trigger": 16, "raw": None}  # fmt: skip  # central's columns (None: Text)
_DECIMAL: Final = re.compile(r"[+-]?[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII)  # digits as the instrument sent them


def places(value: Decimal) -> int:
    """Decimal places as written: "8420.5" → 1, "24560" → 0."""
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def legal_decimal(data: Mapping[str, Any], name: str) -> Decimal | None:
    """``data[name]`` as an exact decimal (None when absent); ``DecodeError`` when it cannot be stored unchanged.

    It must be a string of ASCII digits with an optional sign and point (``_DECIMAL``): ``Decimal`` itself also
    reads Arabic-Indic and other Unicode digits ("١٢٣" → 123), underscores, exponents, "NaN" and blanks — a value the
    instrument never showed —, and a JSON number is not the text the instrument delivered (8420.50 arrives as 8420.5).
    """
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(name, f"expected a decimal number, got {value!r:.40}: a legal value travels as the text the "
                        "instrument delivered (such as '24560'), never as a JSON number")
    if not _DECIMAL.fullmatch(value):
        raise bad(name, f"expected a decimal number, got {value[:40]!r} (ASCII digits 0-9 with an optional sign and "
                        "point, such as '24560' or '-8.5')")
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):  # pragma: no cover - the pattern admits only what Decimal reads
        raise bad(name, f"expected a decimal number, got {value!r}") from None
    if places(number) > MAX_PLACES:
        raise bad(name, f"{value!r} has more than {MAX_PLACES} decimal places; central would have to round it")
    if abs(number) >= Decimal(10) ** MAX_INTEGER_DIGITS:
        raise bad(name, f"{value!r} has more than {MAX_INTEGER_DIGITS} digits before the point")
    return number


@dataclass(frozen=True)
class WeighingValues:
    """One weighing's values, each a string exactly as the instrument delivered it; None: not delivered. What a
    scale driver knows of a weighing (also the values of a weigh command's result)."""

    unit: str
    raw: str | None  # the frame(s) the values come from, as text
    gross: str | None = None
    net: str | None = None
    tare: str | None = None
    tare_preset: bool | None = None  # None: the tare's origin is not known (or there is no tare)
    instrument_alibi: str | None = None  # the instrument's own alibi id / checksum, when it has one

    def __post_init__(self) -> None:
        if self.gross is None and self.net is None:
            raise ValueError("a weighing needs a gross or a net value")

    def as_dict(self) -> dict[str, Any]:
        """The legal values that were delivered (``unit`` always, ``stable`` always true)."""
        out = drop_none({"gross": self.gross, "net": self.net, "tare": self.tare, "tare_preset": self.tare_preset,
                         "unit": self.unit})
        out["stable"] = True
        return out


@dataclass(frozen=True)
class WeighingPayload:
    """The ``data`` of a ``weighing`` record (see the module)."""

    KIND: ClassVar[str] = WEIGHING

    values: WeighingValues
    scale_serial: str | None = None
    trigger: str | None = None  # TRIGGER_AUTO / TRIGGER_COMMAND
    stable: bool | None = True
    reference: str | None = None  # the weigh command's codes (CODES)
    vehicle: str | None = None
    partner: str | None = None
    article: str | None = None
    lot: str | None = None
    delivery_note: str | None = None
    direction: str | None = None  # "in" / "out" of a single weighing with a preset tare (ticket rules)
    alibi: Any = None  # the alibi part the node's outbox adds (checked by sync.alibi.parse_part, not here)

    def to_payload(self) -> dict[str, Any]:
        v = self.values
        out = drop_none({"gross": v.gross, "net": v.net, "tare": v.tare, "tare_preset": v.tare_preset,
                         "unit": v.unit, "stable": self.stable})
        out["scale_serial"] = self.scale_serial
        if v.instrument_alibi is not None:
            out["instrument_alibi"] = v.instrument_alibi
        out["raw"] = v.raw
        out["trigger"] = self.trigger
        for name in (*CODES, "direction"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.alibi is not None:
            out["alibi"] = self.alibi
        return out

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> WeighingPayload:
        gross, _tare, net = (legal_decimal(data, name) for name in ("gross", "tare", "net"))
        if gross is None and net is None:
            raise bad("gross", f"expected a decimal number, got {data.get('gross')!r}")
        # a tared weighing whose instrument delivers net and tare but no gross keeps gross None: never computed
        unit = text(data, "unit", limit=TEXT_LIMITS["unit"])
        if not unit:
            raise bad("unit", "expected a unit such as 'kg'")
        preset = flag(data, "tare_preset")
        trigger = _text(data, "trigger")
        serial = _text(data, "scale_serial")
        values = WeighingValues(unit=unit, raw=_text(data, "raw"), gross=data.get("gross"), net=data.get("net"),
                                tare=data.get("tare"), tare_preset=preset,
                                instrument_alibi=_text(data, "instrument_alibi"))
        return cls(values=values, scale_serial=serial, trigger=trigger,
                   reference=_text(data, "reference"), vehicle=_text(data, "vehicle"), stable=flag(data, "stable"),
                   partner=_advice(data, "partner"), article=_advice(data, "article"), lot=_advice(data, "lot"),
                   delivery_note=_advice(data, "delivery_note"), direction=_advice(data, "direction"),
                   alibi=data.get("alibi"))


def _text(data: Mapping[str, Any], name: str) -> str | None:
    return text(data, name, limit=TEXT_LIMITS[name])


def _advice(data: Mapping[str, Any], name: str) -> str | None:
    """A code for the ticket rules: the text as sent, None when it is not text (the rules note what they cannot
    use; ``central.tickets.pairing`` reads the record's own value)."""
    value = data.get(name)
    return value if isinstance(value, str) else None


__all__ = ["CODES", "LEGACY_TRIGGERS", "LEGAL_FIELDS", "MAX_INTEGER_DIGITS", "MAX_PLACES", "TEXT_LIMITS",
           "TRIGGER_AUTO", "TRIGGER_COMMAND", "WEIGHING", "WeighingPayload", "WeighingValues", "legal_decimal",
           "places"]
