"""``TicketSettings``: the ``tickets:`` block of central.yaml.

    tickets:
      pairing_window_h: 24       # a plate's second weighing pairs with its open ticket this many hours at most
      timezone: Europe/Berlin    # local time printed on tickets whose site has no zone of its own
      issuer:                    # who hands the ticket out: printed at the top of every ticket and delivery note
        name: Mühle Hansen GmbH & Co. KG
        address: [Deichstraße 4, 21680 Stade]
        vat_id: DE123456789      # optional (USt-IdNr.)
      sites:                     # by site code: the weighbridge's address, printed beside the site's name
        HAM-1: {address: [Hafenweg 2, 21680 Stade]}
      scales:                    # by node/device: the scale's name and its verification mark (Eichkennzeichen)
        mill-01/bridge-1: {name: Brückenwaage Einfahrt, verification_mark: "M 24 DE-M 17 0001"}

Without ``issuer`` a ticket says so where the issuer would be ("Aussteller nicht eingerichtet: tickets.issuer"):
a paper without an issuer is not one an office should hand out, and the gap must show.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from sync.runtime.config import ConfigModel

DEFAULT_PAIRING_WINDOW_H = 24.0
DEFAULT_TIMEZONE = "Europe/Berlin"
MAX_ADDRESS_LINES = 6
LINE = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"  # one printable line, not blank
SCALE_KEY = re.compile(r"^[^/\s]+/[^/\s]+$")  # node/device


class Issuer(ConfigModel):
    """``tickets.issuer``: the company that issues the tickets."""

    name: str = Field(min_length=1, max_length=120, pattern=LINE, description="company name as printed")
    address: tuple[str, ...] = Field((), max_length=MAX_ADDRESS_LINES,
                                     description="address lines as printed (street, postcode and town, …)")
    vat_id: str | None = Field(None, min_length=1, max_length=32, pattern=LINE, description="VAT id (USt-IdNr.)")

    @field_validator("address")
    @classmethod
    def _lines(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_lines(v)


class SiteInfo(ConfigModel):
    """``tickets.sites.<site code>``: what a ticket prints about the site beyond its name."""

    address: tuple[str, ...] = Field((), max_length=MAX_ADDRESS_LINES, description="the site's address lines")

    @field_validator("address")
    @classmethod
    def _lines(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_lines(v)


class ScaleInfo(ConfigModel):
    """``tickets.scales.<node>/<device>``: the scale as the ticket names it."""

    name: str = Field(min_length=1, max_length=80, pattern=LINE, description="the scale's name as printed")
    verification_mark: str | None = Field(None, min_length=1, max_length=80, pattern=LINE,
                                          description="its verification mark (Eichkennzeichen) as on the scale")


def _check_lines(lines: tuple[str, ...]) -> tuple[str, ...]:
    for i, line in enumerate(lines):
        if not re.match(LINE, line) or len(line) > 120:
            raise ValueError(f"line {i + 1}: expected one printable line of at most 120 characters, got {line!r}")
    return lines


class TicketSettings(ConfigModel):
    """``tickets:`` in central.yaml."""

    pairing_window_h: float = Field(
        DEFAULT_PAIRING_WINDOW_H, gt=0, le=24 * 31,
        description="a weighing without reference pairs with the open ticket of its plate whose weighing is at most "
                    "this many hours away; further away it opens a new ticket")
    timezone: str = Field(DEFAULT_TIMEZONE, description="IANA time zone of the times printed on tickets whose site "
                                                        "has none")
    issuer: Issuer | None = Field(None, description="the company printed as the issuer of tickets and delivery notes")
    sites: dict[str, SiteInfo] = Field(default_factory=dict, description="by site code: the site's address")
    scales: dict[str, ScaleInfo] = Field(default_factory=dict,
                                         description="by node/device: the scale's name and verification mark")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            raise ValueError(f"expected an IANA time zone such as 'Europe/Berlin', got {v!r}") from None
        return v

    @field_validator("scales")
    @classmethod
    def _scale_keys(cls, v: dict[str, ScaleInfo]) -> dict[str, ScaleInfo]:
        for key in v:
            if not SCALE_KEY.match(key):
                raise ValueError(f"scale {key!r}: expected the key node/device, e.g. 'mill-01/bridge-1'")
        return v

    def scale(self, node_id: str, device_id: str) -> ScaleInfo | None:
        return self.scales.get(f"{node_id}/{device_id}")
