"""Ticket settings and the rules shared by pairing and the API: net by exact difference, direction by weighing time,
values shown as delivered, plates compared loosely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from central.config import load_settings
from central.db.models import Weighing
from central.tickets import pairing, rules
from central.tickets.config import TicketSettings
from central.tickets.errors import UnitMismatch
from central.tickets.views import local_time
from sync.runtime.config import ConfigError

T0 = datetime(2025, 3, 4, 7, 12, 9, tzinfo=UTC)


def _w(wid: int, gross: str, minutes: int, unit: str = "kg") -> Weighing:
    return Weighing(id=wid, gross=Decimal(gross), unit=unit, weighed_at=T0 + timedelta(minutes=minutes))


@pytest.mark.parametrize(("first", "second", "direction", "net"), [
    ("24560", "8420.5", "in", "16139.5"),  # came loaded: incoming goods
    ("8420.5", "24560", "out", "16139.5"),
    ("0.1", "0.3", "out", "0.2"),  # no float drift
    ("100.005", "99.999999", "in", "0.005001"),
    ("12000", "12000", "in", "0"),
])
def test_net_is_the_exact_difference_and_the_earlier_weighing_decides_the_direction(
        first: str, second: str, direction: str, net: str) -> None:
    a, b = _w(1, first, 0), _w(2, second, 30)
    for x, y in ((a, b), (b, a)):  # whatever order they are handed in
        assert rules.direction(x, y) == direction
        weights = rules.difference(x, y)
        assert weights.net == Decimal(net)
        assert weights.gross - weights.tare == weights.net
    with pytest.raises(UnitMismatch, match="kg and t"):
        rules.difference(a, _w(3, "8.4", 60, unit="t"))


def test_times_are_shown_in_local_time_with_the_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert local_time(T0, berlin) == "04.03.2025 08:12:09 CET (UTC+01:00)"
    assert local_time(datetime(2025, 7, 1, 10, 0), berlin) == "01.07.2025 12:00:00 CEST (UTC+02:00)"  # naive = UTC


def test_plates_compare_without_case_hyphens_and_extra_spaces() -> None:
    assert pairing.plate_key("STD-AB 123") == pairing.plate_key(" std ab  123 ") == "STD AB 123"
    assert pairing.plate_key("STD-AB 123") != pairing.plate_key("STD-AB 12")


def test_ticket_settings_in_central_yaml(tmp_path: Path) -> None:
    path = tmp_path / "central.yaml"
    base = {"database_url": "sqlite:///c.db", "metrics": {"kind": "sqlite", "path": "m.db"}}
    path.write_text(yaml.safe_dump(base))
    assert load_settings(path, environ={}).tickets == TicketSettings(pairing_window_h=24, timezone="Europe/Berlin")
    path.write_text(yaml.safe_dump({**base, "tickets": {"pairing_window_h": 2, "timezone": "Europe/Vienna"}}))
    assert load_settings(path, environ={}).tickets.pairing_window_h == 2
    path.write_text(yaml.safe_dump({**base, "tickets": {"pairing_window_h": 0, "timezone": "Mars/Olympus"}}))
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert "tickets.pairing_window_h" in str(err.value)
    assert "tickets.timezone" in str(err.value)


def test_settings_travel_with_the_session_factory() -> None:
    sessions: sessionmaker[Session] = sessionmaker()
    assert pairing.settings_of(sessions()) == TicketSettings()
    pairing.use_settings(sessions, TicketSettings(pairing_window_h=6))
    assert pairing.settings_of(sessions()).pairing_window_h == 6
