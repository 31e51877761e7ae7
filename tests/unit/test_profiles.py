"""Device profiles: the shipped profiles validate, match the simulators and decode the device reference's vectors.
Broken profiles and ``floorgate profiles validate``: ``test_profile_validation.py``."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest

from edge.devices.profile_model import PROTOCOLS, Profile
from edge.devices.profiles import DEFAULT_PROFILES_DIR, SCHEMA_PATH, load_profile, load_profiles, validate_profile_file
from protocols.modbus import (
    DATA_TYPES,
    POINT_KINDS,
    REGISTER_TYPES,
    WORD_ORDERS,
    Point,
    decode_block,
    encode_block,
    plan_reads,
    write_request,
)
from protocols.sim.modbus_devices import SDM120_POINTS, SDM630_POINTS, TH_PROBE_POINTS, silo_cable_points
from protocols.sim.weighing_terminals import LAUMAS_TLU_POINTS, SIWAREX_WP_POINTS
from sync.runtime.config import ConfigError

REFERENCE_PROFILES = [
    "eastron-sdm120",
    "eastron-sdm630",
    "laumas-tlu",
    "mettler-toledo-mtsics",
    "sartorius-sbi",
    "sdm630",
    "siemens-siwarex-wp",
    "silo-cable-8",
    "th-probe",
    "toledo-continuous",
]


def _core(point: Point) -> tuple[object, ...]:
    return (point.name, point.address, point.register_type, point.data_type, point.scale, point.unit, point.word_order)


# ---------------------------------------------------------------------------------------------- reference profiles
def test_the_profiles_dir_holds_exactly_the_reference_profiles() -> None:
    assert DEFAULT_PROFILES_DIR.is_dir()
    assert sorted(p.stem for p in DEFAULT_PROFILES_DIR.glob("*.yaml")) == REFERENCE_PROFILES
    assert SCHEMA_PATH.parent == DEFAULT_PROFILES_DIR


@pytest.mark.parametrize("name", REFERENCE_PROFILES)
def test_reference_profile_validates(name: str) -> None:
    path = DEFAULT_PROFILES_DIR / f"{name}.yaml"
    assert validate_profile_file(path) == []
    profile = load_profile(name)
    assert profile.profile == name == path.stem
    assert profile.source == path
    assert load_profile(path) == profile
    for point in profile.modbus_points():
        profile.poll_group(point.poll_group)  # every polled point has an interval
    if profile.protocol == "modbus":
        assert profile.modbus is not None
        assert profile.scale is None
        assert profile.read_plan()  # plans with the profile's own limits
    else:
        assert profile.modbus is None
        assert profile.points == ()
        assert profile.scale is not None


def test_sdm630_profile_is_the_built_in_map_and_decodes_230_1_volt() -> None:
    profile = load_profile("eastron-sdm630")
    points = profile.modbus_points()
    assert [_core(p) for p in points] == [_core(p) for p in SDM630_POINTS]
    assert (profile.transport.kind, profile.transport.baudrate) == ("rtu", 9600)
    assert len(plan_reads(points, max_gap=profile.modbus.max_gap, max_count=profile.modbus.max_registers)) == 4  # type: ignore[union-attr]
    first = profile.read_plan("fast")[0]
    assert first.label == "input 0x0000-0x0011"
    registers = list(struct.unpack(">2H", bytes.fromhex("43 66 19 9A"))) + [0] * 16  # response 01 04 04 43 66 19 9A …
    assert decode_block(first, registers)["voltage_l1"] == pytest.approx(230.1, rel=1e-7)
    assert [b.label for b in profile.read_plan("slow")] == ["input 0x0048-0x004B", "input 0x0156-0x0157"]


def test_the_sdm630_profile_is_eastron_sdm630_in_one_poll_group() -> None:
    """The device type sdm630 polls every point in one group: four reads, one reading per poll."""
    profile, eastron = load_profile("sdm630"), load_profile("eastron-sdm630")
    assert [_core(p) for p in profile.modbus_points()] == [_core(p) for p in eastron.modbus_points()]
    assert [g.name for g in profile.poll_groups] == ["default"]
    assert {p.poll_group for p in profile.modbus_points()} == {"default"}
    assert all(p.deadband is None for p in profile.modbus_points())
    assert [b.label for b in profile.read_plan()] == [
        "input 0x0000-0x0011", "input 0x0034-0x0035", "input 0x0046-0x004B", "input 0x0156-0x0157"]


def test_sdm120_profile() -> None:
    profile = load_profile("eastron-sdm120")
    assert profile.transport.baudrate == 2400
    assert [(p.name, p.address, p.register_type, p.data_type) for p in profile.modbus_points()] == [
        ("voltage", 0x0000, "input", "float32"),
        ("current", 0x0006, "input", "float32"),
        ("power", 0x000C, "input", "float32"),
        ("frequency", 0x0046, "input", "float32"),
        ("import_energy", 0x0048, "input", "float32"),
        ("export_energy", 0x004A, "input", "float32"),
        ("total_energy", 0x0156, "input", "float32"),
    ]


def test_th_probe_profile_is_the_built_in_map() -> None:
    profile = load_profile("th-probe")
    assert [_core(p) for p in profile.modbus_points()] == [_core(p) for p in TH_PROBE_POINTS]
    (block,) = profile.read_plan()
    assert decode_block(block, [0x00D7, 0x01F4]) == {"temperature": 21.5, "humidity": 50.0}
    assert decode_block(block, [0xFFDF, 0x0000]) == {"temperature": -3.3, "humidity": 0.0}


def test_silo_cable_profile() -> None:
    profile = load_profile("silo-cable-8")
    points = profile.modbus_points()
    assert [(p.address, p.register_type, p.data_type, p.scale, p.unit) for p in points] == [
        (n, "input", "int16", 0.1, "°C") for n in range(8)
    ]
    (block,) = profile.read_plan()
    values = decode_block(block, [0x00C8, 0xFFEC, 0, 0, 0, 0, 0, 0x7FFF])
    assert (values["temperature_1"], values["temperature_2"], values["temperature_8"]) == (20.0, -2.0, 3276.7)
    assert "vendors differ" in profile.description


def test_laumas_profile_decodes_the_reference_vector() -> None:
    profile = load_profile("laumas-tlu")
    assert profile.modbus is not None
    assert (profile.modbus.address_base, profile.modbus.max_registers) == (1, 32)
    (block,) = profile.read_plan("fast")
    assert (block.register_type, block.address, block.count) == ("holding", 6, 7)  # 40007..40013 as printed
    vector = [0x0C00, 0x0001, 0x86A0, 0x0000, 0x3039]  # from 40007 (device reference)
    values = decode_block(block, [*vector, 0x0000, 0x0000])
    assert values["gross"] == 100000
    assert values["net"] == 12345
    assert values["stable"] is True
    assert values["net_displayed"] is True
    assert values["status"] == 0x0C00
    flags = [n for n, v in values.items() if isinstance(v, bool) and v]
    assert sorted(flags) == ["net_displayed", "stable"]
    assert encode_block(block, values) == [*vector, 0, 0]
    by_name = {p.point.name: p for p in profile.points}
    assert {by_name[n].point.kind for n in ("load_cell_error", "overload", "stable", "net_negative")} == {"event"}
    assert {by_name[n].point.bit for n in ("load_cell_error", "overload", "stable", "zero")} == {0, 2, 11, 12}
    assert by_name["gross"].address_as_written == 40008
    assert by_name["gross"].point.address == 7
    (command,) = profile.modbus_points(writable=True)
    assert (command.name, command.address) == ("command", 5)
    assert "command" not in [p.name for p in profile.modbus_points()]  # written, never polled
    assert write_request(command, 1) == (6, 5, 1)


def test_siwarex_profile_decodes_dr30() -> None:
    profile = load_profile("siemens-siwarex-wp")
    (block,) = profile.read_plan()
    assert block.label == "holding 0x0BBC-0x0BC5"  # 3004..3013
    # status: tared (bit 2) and standstill (bit 6); gross 1234.5 = 0x449A5000, net 234.5 = 0x436A8000, tare 1000
    registers = [0x0044, 0, 0, 0, 0x449A, 0x5000, 0x436A, 0x8000, 0x447A, 0x0000]
    values = decode_block(block, registers)
    assert (values["gross"], values["net"], values["tare"]) == (1234.5, 234.5, 1000.0)
    assert (values["tared"], values["stable"], values["zero"], values["out_of_range"]) == (True, True, False, False)


def test_scale_profiles() -> None:
    mtsics, sbi, toledo = (load_profile(n) for n in ("mettler-toledo-mtsics", "sartorius-sbi", "toledo-continuous"))
    assert mtsics.protocol == "mtsics"
    assert mtsics.scale is not None
    assert (mtsics.scale.poll_command, mtsics.scale.unit) == ("SI", "kg")
    t = mtsics.transport
    assert (t.kind, t.baudrate, t.parity, t.bytesize, t.stopbits) == ("serial", 9600, "N", 8, 1)
    assert sbi.scale is not None
    assert (sbi.scale.poll_command, sbi.scale.form) == ("print", 16)
    t = sbi.transport
    assert (t.baudrate, t.parity, t.bytesize, t.stopbits) == (1200, "O", 7, 1)  # Sartorius factory settings
    assert toledo.scale is not None
    assert toledo.scale.poll_command == "stream"
    assert toledo.scale.form is None


@pytest.mark.parametrize(
    ("name", "simulated"),
    [
        ("eastron-sdm630", SDM630_POINTS),
        ("sdm630", SDM630_POINTS),
        ("eastron-sdm120", SDM120_POINTS),
        ("th-probe", TH_PROBE_POINTS),
        ("silo-cable-8", silo_cable_points(8)),
        ("laumas-tlu", LAUMAS_TLU_POINTS),
        ("siemens-siwarex-wp", SIWAREX_WP_POINTS),
    ],
)
def test_profiles_match_the_simulators(name: str, simulated: tuple[Point, ...]) -> None:
    """Every register a simulator serves is in the profile at the same wire address with the same type and unit
    (the profiles add the status bits, which the simulators serve as part of the status word)."""
    profile = load_profile(name)
    points = {p.point.name: p.point for p in profile.points}
    assert {p.name for p in simulated} <= set(points)
    for point in simulated:
        assert _core(points[point.name]) == _core(point)
    served = {(p.register_type, a) for p in simulated for a in range(p.address, p.address + p.count)}
    assert {(p.register_type, p.address) for p in points.values()} <= served


def test_profiles_are_frozen() -> None:
    profile = load_profile("th-probe")
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.vendor = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.transport.baudrate = 1  # type: ignore[misc]


def test_schema_lists_match_the_codec() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    point = schema["$defs"]["point"]["properties"]
    assert point["data_type"]["enum"] == list(DATA_TYPES)
    assert point["register_type"]["enum"] == list(REGISTER_TYPES)
    assert point["kind"]["enum"] == list(POINT_KINDS)
    assert schema["$defs"]["word_order"]["enum"] == list(WORD_ORDERS)
    assert schema["properties"]["protocol"]["enum"] == list(PROTOCOLS)
    assert set(schema["$defs"]["point"]["properties"]) - {"description", "access"} == {
        f.name for f in dataclasses.fields(Point)
    } - {"_"}


def test_load_profile_by_name_path_and_unknown() -> None:
    assert load_profile("th-probe") == load_profile(str(DEFAULT_PROFILES_DIR / "th-probe.yaml"))
    with pytest.raises(ConfigError) as info:
        load_profile("sdm999")
    assert info.value.source == str(DEFAULT_PROFILES_DIR / "sdm999.yaml")
    assert info.value.problems[0].startswith("cannot read: no profile 'sdm999' in ")
    assert "known: eastron-sdm120, eastron-sdm630, laumas-tlu" in info.value.problems[0]


def test_load_profiles(tmp_path: Path) -> None:
    profiles = load_profiles([DEFAULT_PROFILES_DIR])
    assert list(profiles) == REFERENCE_PROFILES
    assert all(isinstance(p, Profile) for p in profiles.values())
    copy_dir = tmp_path / "more"
    copy_dir.mkdir()
    (copy_dir / "th-probe.yaml").write_text((DEFAULT_PROFILES_DIR / "th-probe.yaml").read_text())
    with pytest.raises(ConfigError, match="'th-probe' is already defined by"):
        load_profiles([DEFAULT_PROFILES_DIR, copy_dir])
    broken = tmp_path / "broken.yaml"
    broken.write_text("profile: broken\n")
    with pytest.raises(ConfigError) as info:
        load_profiles([DEFAULT_PROFILES_DIR / "th-probe.yaml", broken])
    assert info.value.source == str(broken)
