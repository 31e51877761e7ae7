"""Weighings are taken once per vehicle, only from a stable value, only after motion; a weighing record holds the
values the instrument delivered and the weigh command's codes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edge.devices.weighing import WeighingDetector, weighing_record
from sync.records.weighing import WeighingValues

D = Decimal


def run(detector: WeighingDetector, answers: list[tuple[int, bool]]) -> list[Decimal]:
    out = []
    for value, stable in answers:
        w = detector.feed(value=D(value), stable=stable, unit="kg", raw=b"")
        if w is not None:
            out.append(w.gross)
    return out


def test_one_weighing_per_truck_from_the_stable_value() -> None:
    d = WeighingDetector(threshold=D(500))
    answers = [(0, True), (3000, False), (18000, False), (24540, False), (24560, True), (24560, True),
               (24560, True), (12000, False), (0, True), (0, True), (9000, False), (18420, True), (0, True)]
    assert run(d, answers) == [D(24560), D(18420)]


def test_never_takes_a_moving_value_or_one_below_threshold() -> None:
    d = WeighingDetector(threshold=D(500))
    assert run(d, [(0, True), (300, False), (400, True), (0, True), (24000, False), (24100, False)]) == []


def test_a_vehicle_already_on_the_bridge_at_start_is_not_weighed_again() -> None:
    d = WeighingDetector(threshold=D(500))
    assert run(d, [(24560, True), (24560, True), (0, True), (5000, False), (20000, True)]) == [D(20000)]


def test_overload_counts_as_motion() -> None:
    d = WeighingDetector(threshold=D(500))
    run(d, [(0, True)])
    d.overload()
    assert run(d, [(59000, True)]) == [D(59000)]


def test_what_never_became_a_weighing_is_counted_as_events() -> None:
    events: list[str] = []
    d = WeighingDetector(threshold=D(500), on_event=events.append)
    # a truck that drives over without stopping: arrived, moved, left — no weighing, one "unstable"
    assert run(d, [(0, True), (9000, False), (24000, False), (3000, False), (0, True)]) == []
    assert events == ["unstable"]
    # an overload episode is one event however many polls it lasts; a new episode after a value is another
    d.overload()
    d.overload()
    d.overload()
    assert events == ["unstable", "overload"]
    assert run(d, [(59000, True)]) == [D(59000)]  # back in range and stable: weighed (overload counts as motion)
    d.overload()
    assert events == ["unstable", "overload", "overload"]
    # a weighing taken is no event, and leaving after it is none either
    assert run(d, [(0, True), (5000, False), (20000, True), (0, True)]) == [D(20000)]
    assert events == ["unstable", "overload", "overload"]
    # an overloaded truck that leaves unweighed is one refusal: "overload", not "unstable" as well
    assert run(d, [(30000, False)]) == []
    d.overload()
    assert run(d, [(20000, False), (0, True)]) == []
    assert events == ["unstable", "overload", "overload", "overload"]


def test_empty_below_gives_hysteresis() -> None:
    d = WeighingDetector(threshold=D(500), empty_below=D(100))
    # dropping under threshold but not under empty_below does not re-arm
    assert run(d, [(0, True), (1000, False), (1000, True), (300, True), (900, False), (900, True)]) == [D(1000)]


def test_a_weighing_record_holds_only_delivered_values_and_the_command_codes() -> None:
    values = WeighingValues(unit="kg", raw="S S      16040 kg | TA A      14960 kg", net="16040", tare="14960",
                            tare_preset=True)
    record = weighing_record("bridge-1", values, scale_serial="0123456789", trigger="command",
                             args={"vehicle": "PT-1", "lot": "L-1", "preset_tare": "14960", "partner": ""})
    assert (record.kind, record.device) == ("weighing", "bridge-1")
    assert record.data == {"net": "16040", "tare": "14960", "tare_preset": True, "unit": "kg", "stable": True,
                           "scale_serial": "0123456789", "raw": "S S      16040 kg | TA A      14960 kg",
                           "trigger": "command", "vehicle": "PT-1", "lot": "L-1"}  # only the weigh codes given
    gross = weighing_record("s", WeighingValues(unit="kg", raw="r", gross="24560", instrument_alibi="4711"),
                            scale_serial=None, trigger="auto")
    assert gross.data == {"gross": "24560", "unit": "kg", "stable": True, "scale_serial": None,
                          "instrument_alibi": "4711", "raw": "r", "trigger": "auto"}
    with pytest.raises(ValueError, match="gross or a net"):
        WeighingValues(unit="kg", raw="r", tare="500")
