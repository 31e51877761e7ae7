"""Issue 16, values exactly as delivered: every weight is written with its own digits (``as_delivered``, never
``plain``'s normalisation nor another value's decimals), ``ExactText`` keeps them and refuses a float, a net by
difference keeps the decimals of its operands, a change of digits is a change; ``scale`` / ``offset`` on a legal
weight are refused by the profile validator; the weighbridge simulator's multi-interval display (``mixed_decimals``)
writes frames with mixed decimals within MT-SICS."""

from __future__ import annotations

import argparse
import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.dialects import postgresql, sqlite

from central.db.models import Article, Ticket, Weighing
from central.db.types import ExactText
from central.db.values import as_delivered, plain, set_if_changed
from central.tickets import rules
from edge.devices.profile_model import LEGAL_WEIGHT_POINTS, legal_point_problems
from edge.devices.profiles import DEFAULT_PROFILES_DIR, load_profile, profile_paths, validate_profile_file
from protocols import cli, mtsics
from protocols.sim.load import Phase
from protocols.sim.weighbridge import Weighbridge
from sync.records.weighing import legal_decimal
from sync.runtime.config import ConfigError

T0 = datetime(2025, 3, 4, 7, 12, 9, tzinfo=UTC)
DIGITS = ["24560", "24560.0", "8420.5", "8.425", "100.00", "0.0", "0", "-0.5", "16139.500", "0.000001",
          "999999999999.999999"]


# ---------------------------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("text", DIGITS)
def test_a_weight_is_written_with_exactly_its_own_digits(text: str) -> None:
    assert as_delivered(Decimal(text)) == text
    assert ExactText().process_result_value(ExactText().process_bind_param(Decimal(text), sqlite.dialect()),
                                            sqlite.dialect()) == Decimal(text)
    stored = ExactText().process_bind_param(Decimal(text), postgresql.dialect())
    assert stored == text  # the text column holds the instrument's digits
    assert as_delivered(ExactText().process_result_value(stored, postgresql.dialect())) == text


def test_as_delivered_is_not_plain() -> None:
    assert as_delivered(None) is None
    assert (as_delivered(Decimal("24560.0")), plain(Decimal("24560.0"))) == ("24560.0", "24560")  # plain: money
    assert as_delivered(Decimal("1E+1")) == "10"  # never exponent notation
    for bad in (Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(ValueError, match="finite"):
            as_delivered(bad)


@pytest.mark.parametrize("value", [24560.0, 8420.5, "8420.5", 24560, Decimal("NaN"), Decimal("-Infinity")])
def test_exact_text_refuses_anything_but_a_finite_decimal(value: object) -> None:
    with pytest.raises(ValueError, match="finite Decimal for a legal value"):
        ExactText().process_bind_param(value, postgresql.dialect())


def test_the_record_contract_keeps_the_digits_the_node_sent() -> None:
    for text in DIGITS:
        number = legal_decimal({"gross": text}, "gross")
        assert number is not None
        assert as_delivered(number) == text


# ---------------------------------------------------------------------------------------------- net by difference
def _w(wid: int, value: str, minutes: int, unit: str = "kg", *, net: str | None = None) -> Weighing:
    return Weighing(id=wid, gross=None if net else Decimal(value), net=Decimal(net) if net else None,
                    unit=unit, weighed_at=T0 + timedelta(minutes=minutes))


@pytest.mark.parametrize(("first", "second", "unit", "gross", "tare", "net"), [
    ("24560", "8420.5", "kg", "24560", "8420.5", "16139.5"),  # issue 16: tare was "8420", net "16140"
    ("24560.0", "8420.5", "kg", "24560.0", "8420.5", "16139.5"),
    ("32980", "8420.0", "kg", "32980", "8420.0", "24560.0"),  # the trailing zero of the tare carries into the net
    ("24.56", "8.425", "t", "24.56", "8.425", "16.135"),  # 8.425 t never "8.42"
    ("2.486", "100.00", "g", "100.00", "2.486", "97.514"),
    ("24560.0", "24560", "kg", "24560.0", "24560", "0.0"),  # equal values keep their own digits (not max/min)
    ("24560", "24560.0", "kg", "24560", "24560.0", "0.0"),
])
def test_a_net_by_difference_keeps_the_decimals_of_its_operands(first: str, second: str, unit: str, gross: str,
                                                               tare: str, net: str) -> None:
    a, b = _w(1, first, 0, unit), _w(2, second, 30, unit)
    w = rules.difference(a, b)
    assert (as_delivered(w.gross), as_delivered(w.tare), as_delivered(w.net)) == (gross, tare, net)


def test_a_preset_tare_weighing_is_measured_by_its_net_as_delivered() -> None:
    tared = _w(1, "", 0, net="16139.5")
    assert as_delivered(rules.measured(tared)) == "16139.5"


def test_a_sum_of_nets_keeps_the_finest_decimals() -> None:
    total = sum((Decimal(x) for x in ("16139.5", "24560.0", "100")), Decimal(0))
    assert as_delivered(total) == "40799.5"
    assert as_delivered(Decimal(0) + Decimal("8.425") + Decimal("16.135")) == "24.560"


# ---------------------------------------------------------------------------------------------- changes
def test_other_digits_of_a_weight_are_a_change_other_padding_of_money_is_not() -> None:
    ticket = Ticket(gross=Decimal("24560"), net=Decimal("16139.5"))
    assert set_if_changed(ticket, "gross", Decimal("24560.0")) is True
    assert as_delivered(ticket.gross) == "24560.0"
    assert set_if_changed(ticket, "gross", Decimal("24560.0")) is False
    assert set_if_changed(ticket, "net", Decimal("16139.50")) is True
    article = Article(price=Decimal("12.500000"))  # NUMERIC(18, 6) pads: the same amount
    assert set_if_changed(article, "price", Decimal("12.5")) is False
    assert set_if_changed(article, "price", Decimal("12.51")) is True


# ---------------------------------------------------------------------------------------------- profiles
LAUMAS = DEFAULT_PROFILES_DIR / "laumas-tlu.yaml"


def _profile_with(tmp_path: Path, point: str, **keys: Any) -> Path:
    data = yaml.safe_load(LAUMAS.read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    for raw in data["points"]:
        if raw["name"] == point:
            raw.update(keys)
    path = tmp_path / "laumas-tlu.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _index(path: Path, name: str) -> int:
    points = yaml.safe_load(path.read_text(encoding="utf-8"))["points"]
    return next(i for i, p in enumerate(points) if p["name"] == name)


@pytest.mark.parametrize(("point", "keys"), [
    ("gross", {"scale": 0.1}),
    ("gross", {"scale": 1}),  # whatever its value: a legal weight is taken as the register holds it
    ("net", {"offset": -5}),
    ("net", {"scale": 10, "offset": 0}),
])
def test_scale_or_offset_on_a_legal_weight_is_refused_naming_file_point_and_key(
        tmp_path: Path, point: str, keys: dict[str, Any]) -> None:
    path = _profile_with(tmp_path, point, **keys)
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    index = _index(path, point)
    assert caught.value.source == str(path)
    assert len(caught.value.problems) == len(keys)
    for key, value in keys.items():
        line = f"points[{index}].{key}: not allowed on {point!r}, a legal weight"
        assert any(p.startswith(line) and f"got {key}: {value!r}" in p for p in caught.value.problems), \
            caught.value.problems
        assert f"{path}: {line}" in str(caught.value)  # the message names the file
    assert validate_profile_file(path)[0].startswith(f"{path}: points[{index}].")


def test_scale_on_another_point_of_a_weighing_terminal_is_fine(tmp_path: Path) -> None:
    path = _profile_with(tmp_path, "peak", scale=0.1)
    assert load_profile(path).profile == "laumas-tlu"


def test_the_shipped_profiles_keep_their_legal_weights_unscaled() -> None:
    for path in profile_paths(DEFAULT_PROFILES_DIR):
        profile = load_profile(path)
        for p in profile.points:
            if p.point.name in LEGAL_WEIGHT_POINTS:
                assert (p.point.scale, p.point.offset) == (1.0, 0.0), (path, p.point.name)
    assert legal_point_problems("points[0]", {"name": "temperature_1", "scale": 0.1}) == []
    assert set(LEGAL_WEIGHT_POINTS) == {"gross", "net", "tare", "preset_tare"}


# ---------------------------------------------------------------------------------------------- the simulator
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _one(bridge: Weighbridge, line: bytes) -> bytes:
    [reply] = bridge.handle_line(line)
    return reply


def test_a_multi_interval_weighbridge_writes_mixed_decimals_within_mt_sics() -> None:
    clock = Clock()
    bridge = Weighbridge(trucks=[Decimal("24560"), Decimal("8420.5"), 32980, Decimal("8420"), 40000],
                         mixed_decimals=True, clock=clock)
    expected = [b"S S    24560.0 kg\r\n", b"S S     8420.5 kg\r\n", b"S S      32980 kg\r\n",
                b"S S     8420.0 kg\r\n", b"S S      40000 kg\r\n"]
    for visit, line in enumerate(expected):
        clock.now = bridge.time_of(visit, Phase.SETTLED)
        assert _one(bridge, b"S") == line
        weight = mtsics.parse_response(line)
        assert isinstance(weight, mtsics.WeightResponse)
        assert len(line.split(b" S ")[1].rsplit(b" ", 1)[0]) == 10  # the weight field, right-aligned
    # a preset tare in the fine range under a coarse-range net: one weighing, two numbers of decimals
    assert _one(bridge, b"TA 8420.5 kg") == b"TA A     8420.5 kg\r\n"
    assert _one(bridge, b"S") == b"S S      31580 kg\r\n"  # 40000 - 8420.5 = 31579.5, shown in 20 kg steps
    clock.now = bridge.time_of(0, Phase.SETTLED)
    assert _one(bridge, b"S") == b"S S    16139.5 kg\r\n"  # 24560 - 8420.5 in the fine range
    assert _one(bridge, b"TA 0 kg") == b"TA A        0.0 kg\r\n"
    assert _one(bridge, b"S") == b"S S    24560.0 kg\r\n"


def test_a_multi_interval_weighbridge_in_tonnes() -> None:
    clock = Clock()
    bridge = Weighbridge(trucks=[24560, 8425, 41230], unit="t", mixed_decimals=True, fine_increment_kg=5,
                         clock=clock)
    shown = []
    for visit in range(3):
        clock.now = bridge.time_of(visit, Phase.SETTLED)
        shown.append(_one(bridge, b"SI"))
    assert shown == [b"S S     24.560 t\r\n", b"S S      8.425 t\r\n", b"S S      41.24 t\r\n"]


def test_without_mixed_decimals_the_display_is_unchanged() -> None:
    clock = Clock()
    bridge = Weighbridge(trucks=[24560], clock=clock)
    clock.now = bridge.time_of(0, Phase.SETTLED)
    assert _one(bridge, b"S") == b"S S      24560 kg\r\n"
    assert (bridge.increment_kg, bridge.fine) == (20, None)


@pytest.mark.parametrize(("options", "message"), [
    ({"fine_increment_kg": 0}, "fine_increment_kg must be > 0"),
    ({"fine_increment_kg": 3}, "fine_increment_kg 3 must divide increment_kg 20"),
    ({"fine_increment_kg": 20}, "must divide increment_kg 20"),
    ({"fine_below_kg": 70_000}, "fine_below_kg must be within"),
])
def test_bad_multi_interval_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Weighbridge(trucks=[24560], mixed_decimals=True, **options)


def _simulate(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="floorgate")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["simulate", *argv])


def test_the_simulate_command_takes_mixed_decimals_for_the_weighbridge_only(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = _simulate(["weighbridge", "--mixed-decimals", "--trucks", "24560,8420.5"])
    assert args.mixed_decimals is True
    assert args.trucks == [Decimal("24560"), Decimal("8420.5")]
    wrong = _simulate(["sartorius-sbi", "--mixed-decimals"])
    assert wrong.func(wrong) == 2
    assert "--mixed-decimals applies to mettler-toledo-mtsics (weighbridge) only, not sartorius-sbi" in \
        capsys.readouterr().err
