"""Weighings are taken once per vehicle, only from a stable value, only after motion."""

from __future__ import annotations

from decimal import Decimal

from edge.devices.weighing import WeighingDetector

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


def test_empty_below_gives_hysteresis() -> None:
    d = WeighingDetector(threshold=D(500), empty_below=D(100))
    # dropping under threshold but not under empty_below does not re-arm
    assert run(d, [(0, True), (1000, False), (1000, True), (300, True), (900, False), (900, True)]) == [D(1000)]
