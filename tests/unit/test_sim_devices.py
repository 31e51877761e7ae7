"""Modbus device models through the codec (``encode_point`` -> registers -> ``decode_block``), and the load cycle."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus import Point, decode_block, encode_point, plan_reads
from protocols.sim.load import LoadCycle, Phase, Reading, StableActions
from protocols.sim.modbus_devices import (
    LAUMAS_COMMANDS,
    LAUMAS_TLU_POINTS,
    SDM120_POINTS,
    SIWAREX_WP_POINTS,
    DeviceModel,
    LaumasStatus,
    LaumasTluModel,
    Sdm120Model,
    SiloCableModel,
    SiwarexStatus,
    SiwarexWpModel,
    silo_cable_points,
    sim_devices,
)

SETTLED, CYCLE = 6.0, 11.0  # default load cycle: empty 3 s, on 2 s, settled 4 s, off 2 s
STABLE_AT_ZERO = LaumasStatus.STABLE | LaumasStatus.NEAR_ZERO


def registers_of(model: DeviceModel, now_s: float) -> dict[int, int]:
    """The register image a simulator serves at ``now_s`` (address -> value; reserved registers read 0)."""
    values = model.sample(now_s)
    image = {p.address + i: reg for p in model.points for i, reg in enumerate(encode_point(p, values[p.name]))}
    for _, start, count in getattr(model, "reserved_registers", ()):
        image.update(dict.fromkeys(range(start, start + count), 0))
    return image


def read(model: DeviceModel, now_s: float, *, points: Sequence[Point] | None = None, max_gap: int = 0) -> dict:  # type: ignore[type-arg]
    """Every point as a master reads it: planned blocks, registers from the image, ``decode_block``."""
    image = registers_of(model, now_s)
    values = {}
    for block in plan_reads(points or model.points, max_gap=max_gap):
        values.update(decode_block(block, [image[a] for a in range(block.address, block.address + block.count)]))
    return values


# ---------------------------------------------------------------------------------------------- Laumas TLU
def test_laumas_reference_vector() -> None:
    by_name = {p.name: p for p in LAUMAS_TLU_POINTS}
    (block,) = plan_reads([by_name["status"], by_name["gross"], by_name["net"]])
    assert (block.register_type, block.address, block.count) == ("holding", 6, 5)  # 40007-40011
    values = decode_block(block, [0x0C00, 0x0001, 0x86A0, 0x0000, 0x3039])
    assert (values["gross"], values["net"]) == (100000, 12345)
    assert LaumasStatus(int(values["status"])) == LaumasStatus.STABLE | LaumasStatus.NET_DISPLAYED


def test_laumas_map_is_40006_to_40013() -> None:
    assert [(p.name, p.address + 40001, p.data_type) for p in LAUMAS_TLU_POINTS] == [
        ("command", 40006, "uint16"), ("status", 40007, "uint16"), ("gross", 40008, "uint32"),
        ("net", 40010, "uint32"), ("peak", 40012, "uint32"),
    ]  # fmt: skip
    (block,) = plan_reads(LAUMAS_TLU_POINTS)
    assert (block.address, block.count) == (5, 8)


def test_laumas_status_follows_the_load_cycle() -> None:
    model = LaumasTluModel(loads=[1250, 6000], seed=1, epoch_s=0.0)
    empty = read(model, 1.0)
    assert (empty["gross"], empty["net"], LaumasStatus(int(empty["status"]))) == (0, 0, STABLE_AT_ZERO)
    moving = read(model, 4.0)
    assert not LaumasStatus(int(moving["status"])) & LaumasStatus.STABLE
    assert 0 <= moving["gross"] <= 1400
    settled = read(model, SETTLED)
    assert (settled["gross"], settled["net"]) == (1250, 1250)
    assert LaumasStatus(int(settled["status"])) == LaumasStatus.STABLE
    over = read(model, CYCLE + SETTLED)  # 6000 kg on a 5000 kg hopper: > capacity + 9 d and > 110 %
    assert LaumasStatus(int(over["status"])) == (
        LaumasStatus.STABLE | LaumasStatus.OVER_MAX_9D | LaumasStatus.OVER_110_PERCENT
    )
    assert read(model, 2 * CYCLE + 1.0)["peak"] == 6000  # the highest gross so far


def test_laumas_commands_change_the_state() -> None:
    model = LaumasTluModel(loads=[1250, 3000, 40], seed=2, epoch_s=0.0)
    assert model.write(5, [LAUMAS_COMMANDS["tare"]], 4.0) is None  # moving: carried out once stable
    assert not LaumasStatus(int(read(model, 4.5)["status"])) & LaumasStatus.NET_DISPLAYED
    tared = read(model, SETTLED)
    assert tared["command"] == 2  # reads back the last command
    assert (tared["gross"], tared["net"]) == (1250, 0)
    assert LaumasStatus(int(tared["status"])) == LaumasStatus.STABLE | LaumasStatus.NET_DISPLAYED
    emptied = read(model, CYCLE + 1.0)  # hopper empty: net is -1250, the sign in the status word
    assert (emptied["gross"], emptied["net"]) == (0, 1250)
    assert LaumasStatus(int(emptied["status"])) & LaumasStatus.NET_NEGATIVE
    assert read(model, CYCLE + SETTLED)["net"] == 1750
    assert model.write(5, [LAUMAS_COMMANDS["gross"]], CYCLE + SETTLED) is None
    gross = read(model, CYCLE + SETTLED + 0.1)
    assert gross["net"] == 3000
    assert not LaumasStatus(int(gross["status"])) & LaumasStatus.NET_DISPLAYED
    assert model.write(5, [LAUMAS_COMMANDS["zero"]], CYCLE + SETTLED) is None  # 3000 kg: outside the zero range
    assert read(model, CYCLE + SETTLED + 0.2)["gross"] == 3000
    assert model.write(5, [LAUMAS_COMMANDS["zero"]], 2 * CYCLE + SETTLED) is None  # 40 kg: within +-2 %
    assert read(model, 2 * CYCLE + SETTLED + 0.1)["gross"] == 0
    below = read(model, 3 * CYCLE + 1.0)  # the 40 kg are gone: gross negative
    assert below["gross"] == 40
    assert LaumasStatus(int(below["status"])) & LaumasStatus.GROSS_NEGATIVE
    assert read(model, 3 * CYCLE + 1.5)["peak"] == 3000  # the highest gross seen, whatever the zero is now
    assert model.write(5, [LAUMAS_COMMANDS["reset_peak"]], 3 * CYCLE + 2.0) is None
    assert read(model, 3 * CYCLE + 2.1)["peak"] == 0


@pytest.mark.parametrize(
    ("address", "values", "code"),
    [(5, [9], 0x03), (5, [0xFFFF], 0x03), (6, [1], 0x02), (7, [0], 0x02), (5, [1, 2], 0x02), (4, [1, 0], 0x02)],
)
def test_laumas_rejects_bad_writes(address: int, values: list[int], code: int) -> None:
    model = LaumasTluModel(seed=3, epoch_s=0.0)
    assert model.write(address, values, 1.0) == code
    assert read(model, 1.1)["command"] == 0  # nothing changed


def test_laumas_fault_bits_and_decimals() -> None:
    model = LaumasTluModel(loads=[Decimal("12.5")], division_kg=Decimal("0.5"), decimals=1, capacity_kg=50,
                           random_min_kg=10, random_max_kg=40, epoch_s=0.0)  # fmt: skip
    assert read(model, SETTLED)["gross"] == 125  # 12.5 kg without decimal point
    model.load_cell_error = True
    model.ad_fault = True
    status = LaumasStatus(int(read(model, SETTLED + 0.1)["status"]))
    assert status & (LaumasStatus.LOAD_CELL_ERROR | LaumasStatus.AD_FAULT) == (
        LaumasStatus.LOAD_CELL_ERROR | LaumasStatus.AD_FAULT
    )
    with pytest.raises(ValueError, match="needs more than 0 decimals"):
        LaumasTluModel(division_kg=Decimal("0.5"))


@given(st.floats(min_value=0, max_value=500, allow_nan=False), st.integers(0, 5))
def test_laumas_registers_are_consistent(now_s: float, seed: int) -> None:
    model = LaumasTluModel(seed=seed, epoch_s=0.0, random_max_kg=6000)
    values = read(model, now_s)
    status = LaumasStatus(int(values["status"]))
    reading = model.cycle.at(now_s)
    assert bool(status & LaumasStatus.STABLE) == reading.stable
    if reading.stable:  # the ramps are noisy: another look gives another value
        assert values["gross"] == reading.gross_kg  # magnitude, 1 kg steps, never negative without a zero
    assert bool(status & LaumasStatus.NEAR_ZERO) == (values["gross"] == 0)
    assert bool(status & LaumasStatus.OVER_MAX_9D) == (values["gross"] > 5009)
    assert values["peak"] >= values["gross"]


# ---------------------------------------------------------------------------------------------- SIWAREX WP
def test_siwarex_dr30_reads_in_one_request() -> None:
    (block,) = plan_reads(SIWAREX_WP_POINTS, max_gap=8)
    assert (block.address, block.count) == (3004, 10)  # 3005-3007 are DR30 fields the model reads as 0
    model = SiwarexWpModel(loads=[8000], seed=1, epoch_s=0.0)
    values = read(model, SETTLED, max_gap=8)
    assert (values["gross"], values["net"], values["tare"]) == (8000.0, 8000.0, 0.0)
    assert SiwarexStatus(int(values["status"])) == SiwarexStatus.STANDSTILL


def test_siwarex_status_bits() -> None:
    model = SiwarexWpModel(loads=[4000, 13000], seed=2, preset_tare_kg=500, epoch_s=0.0)
    empty = read(model, 1.0)
    expected = SiwarexStatus.NEAR_ZERO | SiwarexStatus.TARED | SiwarexStatus.STANDSTILL
    assert SiwarexStatus(int(empty["status"])) == expected
    assert (empty["gross"], empty["net"], empty["tare"]) == (0.0, -500.0, 500.0)
    moving = read(model, 4.0)
    assert not SiwarexStatus(int(moving["status"])) & SiwarexStatus.STANDSTILL
    settled = read(model, SETTLED)
    assert (settled["gross"], settled["net"]) == (4000.0, 3500.0)
    over = read(model, CYCLE + SETTLED)
    assert SiwarexStatus(int(over["status"])) & SiwarexStatus.OUT_OF_RANGE


# ---------------------------------------------------------------------------------------------- meters, sensors
def test_sdm120_plausible_and_counting() -> None:
    model = Sdm120Model(seed=4)
    first = read(model, 1000.0, max_gap=8)
    assert set(first) == {p.name for p in SDM120_POINTS}
    assert 227.0 <= first["voltage"] <= 233.0
    assert 1.5 <= first["current"] <= 9.5
    assert first["power"] == pytest.approx(first["voltage"] * first["current"], rel=1e-5)
    assert 49.9 <= first["frequency"] <= 50.1
    later = read(model, 1000.0 + 3600.0, max_gap=8)
    assert 0.3 <= later["import_energy"] - first["import_energy"] <= 2.5  # about 1.3 kW for an hour
    assert later["total_energy"] == pytest.approx(later["import_energy"] + later["export_energy"], rel=1e-6)


def test_silo_cable_hot_spot() -> None:
    model = SiloCableModel(8, seed=5, hot_spot=5)
    assert [p.address for p in model.points] == list(range(8))
    values = read(model, 0.0)
    temperatures = [values[f"temperature_{k}"] for k in range(1, 9)]
    assert all(temperatures[k] == round(temperatures[k], 1) for k in range(8))
    hottest = max(range(8), key=lambda k: temperatures[k])
    assert hottest == 4  # sensor 5
    assert temperatures[4] - statistics.median(temperatures) >= 5.0
    assert all(5.0 <= t <= 40.0 for t in temperatures)
    hours_later = read(model, 6 * 3600.0)
    assert hours_later["temperature_5"] - values["temperature_5"] >= 2.0  # the hot spot heats up
    assert abs(hours_later["temperature_8"] - values["temperature_8"]) <= 1.5  # the rest only drifts


def test_silo_cable_options() -> None:
    assert SiloCableModel(8, seed=1).hot_spot == SiloCableModel(8, seed=1).hot_spot
    assert len(silo_cable_points(16)) == 16
    with pytest.raises(ValueError, match="points"):
        silo_cable_points(0)
    with pytest.raises(ValueError, match="hot_spot"):
        SiloCableModel(4, hot_spot=5)


@pytest.mark.parametrize("unit_id", [0, 248])
def test_sim_devices_rejects_bad_unit_ids(unit_id: int) -> None:
    with pytest.raises(ValueError, match=f"unit id {unit_id}"):
        sim_devices({unit_id: Sdm120Model()})


# ---------------------------------------------------------------------------------------------- load cycle
def test_next_stable_and_stable_actions() -> None:
    cycle = LoadCycle(loads=[1000, 2000], seed=1)
    assert cycle.next_stable(1.0) == (1.0, cycle.at(1.0))
    at, reading = cycle.next_stable(4.0)  # driving on: stable once settled
    assert at == pytest.approx(5.0)
    assert reading == Reading(Phase.SETTLED, 0, Decimal(1000), True, False)
    at, reading = cycle.next_stable(10.0)  # driving off: stable once empty
    assert at == pytest.approx(CYCLE)
    assert (reading.phase, reading.truck_index, reading.gross_kg) == (Phase.EMPTY, 1, 0)
    done: list[tuple[str, Decimal]] = []
    actions = StableActions(cycle)
    actions.add(4.0, lambda r: done.append(("a", r.gross_kg)))
    actions.add(4.5, lambda r: done.append(("b", r.gross_kg)))
    actions.run_due(4.9)
    assert (done, len(actions)) == ([], 2)
    actions.run_due(5.0)
    assert done == [("a", Decimal(1000)), ("b", Decimal(1000))]
    assert cycle.completed(CYCLE * 2 + 0.1) == 2


@given(st.floats(min_value=0, max_value=1000, allow_nan=False), st.integers(0, 9))
def test_next_stable_is_stable_and_not_earlier(elapsed_s: float, seed: int) -> None:
    cycle = LoadCycle(seed=seed)
    at, reading = cycle.next_stable(elapsed_s)
    assert at >= elapsed_s
    assert at - elapsed_s <= 2.0 + 1e-9  # at most one ramp away
    assert reading.stable
    assert reading.gross_kg in (Decimal(0), cycle.load_weight(reading.truck_index))
