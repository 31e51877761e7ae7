"""``TicketSettings``: the ``tickets:`` block of central.yaml.

    tickets:
      pairing_window_h: 24       # a plate's second weighing pairs with its open ticket this many hours at most
      timezone: Europe/Berlin    # local time printed on tickets whose site has no zone of its own
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from sync.runtime.config import ConfigModel

DEFAULT_PAIRING_WINDOW_H = 24.0
DEFAULT_TIMEZONE = "Europe/Berlin"


class TicketSettings(ConfigModel):
    """``tickets:`` in central.yaml."""

    pairing_window_h: float = Field(
        DEFAULT_PAIRING_WINDOW_H, gt=0, le=24 * 31,
        description="a weighing without reference pairs with the open ticket of its plate whose weighing is at most "
                    "this many hours away; further away it opens a new ticket")
    timezone: str = Field(DEFAULT_TIMEZONE, description="IANA time zone of the times printed on tickets whose site "
                                                        "has none")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            raise ValueError(f"expected an IANA time zone such as 'Europe/Berlin', got {v!r}") from None
        return v
