"""Device profiles: the reference profiles validate and decode the device reference's vectors; broken profiles are
rejected with file, key path and expectation; ``floorgate profiles validate`` exit codes."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.devices.profiles import (
    DEFAULT_PROFILES_DIR,
    PROTOCOLS,
    SCHEMA_PATH,
    Profile,
    load_profile,
    load_profiles,
    validate_profile_file,
)
from protocols.modbus_maps import (
    DATA_TYPES,
    POINT_KINDS,
    REGISTER_TYPES,
    SDM630_POINTS,
    TH_PROBE_POINTS,
    WORD_ORDERS,
    Point,
    decode_block,
    encode_block,
    plan_reads,
    write_request,
)
from protocols.sim.modbus_devices import SDM120_POINTS, silo_cable_points
from protocols.sim.weighing_terminals import LAUMAS_TLU_POINTS, SIWAREX_WP_POINTS
from sync.runtime.config import ConfigError
from tools.profiles_cli import register

REFERENCE_PROFILES = [
    "eastron-sdm120",
    "eastron-sdm630",
    "laumas-tlu",
    "mettler-toledo-mtsics",
    "sartorius-sbi",
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


# ---------------------------------------------------------------------------------------------- broken profiles
BASE: dict[str, Any] = {
    "profile": "test-device",
    "vendor": "Test",
    "model": "T1",
    "protocol": "modbus",
    "transport": {"kind": "rtu", "baudrate": 9600},
    "modbus": {"address_base": 0, "max_registers": 32},
    "poll_groups": {"fast": {"interval_s": 1}},
    "points": [
        {"name": "a", "register_type": "holding", "address": 0, "data_type": "uint16", "poll_group": "fast"},
        {"name": "b", "register_type": "holding", "address": 1, "data_type": "float32", "poll_group": "fast"},
    ],
}
SCALE_BASE: dict[str, Any] = {
    "profile": "test-device",
    "vendor": "Test",
    "model": "S1",
    "protocol": "mtsics",
    "transport": {"kind": "serial"},
    "poll_groups": {"default": {"interval_s": 0.5}},
    "scale": {"unit": "kg", "poll_command": "SI"},
}
_TYPES = (
    "['int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float16', 'float32', "
    "'float64', 'bit', 'string', 'bcd16', 'bcd32']"
)
_POINT_KEYS = (
    "name, description, register_type, address, data_type, word_order, scale, offset, unit, mask, bit, length, "
    "kind, poll_group, deadband, access"
)


def _edit(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    change(data)
    return data


def _point(index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                data["points"][index].pop(key, None)
            else:
                data["points"][index][key] = value

    return change


def _add_point(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["points"].append({"register_type": "holding", "poll_group": "fast", **fields})

    return change


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        if value is None:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


BROKEN: list[tuple[str, dict[str, Any] | str, list[str]]] = [
    # (case, profile data or raw YAML text, expected problems - all of them, in order)
    (
        "typo in a point key",
        _edit(BASE, lambda d: d["points"][1].update({"dat_type": d["points"][1].pop("data_type")})),
        [
            f"points[1].dat_type: unknown key (did you mean 'data_type'?) (expected one of: {_POINT_KEYS})",
            "points[1].data_type: missing (required)",
        ],
    ),
    (
        "typo in a top-level key",
        _edit(BASE, lambda d: d.update({"pol_groups": d.pop("poll_groups")})),
        [
            "pol_groups: unknown key (did you mean 'poll_groups'?) (expected one of: profile, vendor, model, "
            "description, protocol, transport, modbus, poll_groups, points, scale)",
            "poll_groups: missing (required)",
        ],
    ),
    ("wrong type", _edit(BASE, _point(0, address="abc")), ["points[0].address: expected an integer, got 'abc'"]),
    ("wrong type, bool", _edit(BASE, _point(0, address=True)), ["points[0].address: expected an integer, got True"]),
    (
        "unknown data type",
        _edit(BASE, _point(1, data_type="flot32")),
        [f"points[1].data_type: 'flot32' is not one of {_TYPES} (did you mean 'float32'?)"],
    ),
    (
        "unknown word order",
        _edit(BASE, _set("modbus", "word_order", value="ABDC")),
        ["modbus.word_order: 'ABDC' is not one of ['ABCD', 'DCBA', 'BADC', 'CDAB'] (did you mean 'BADC'?)"],
    ),
    (
        "duplicate point names",
        _edit(BASE, _point(1, name="a")),
        ["points[1].name: 'a' is already used by points[0]"],
    ),
    (
        "unknown poll group",
        _edit(BASE, _point(1, poll_group="medium")),
        ["points[1].poll_group: 'medium' is not defined in poll_groups (defined: fast)"],
    ),
    (
        "default poll group not defined",
        _edit(BASE, _point(0, poll_group=None)),
        ["points[0].poll_group: not given, and the default 'default' is not defined in poll_groups (defined: fast)"],
    ),
    (
        "address below the base",
        _edit(BASE, _set("modbus", "address_base", value=1)),
        ["points[0].address: address 0 is below address_base 1"],
    ),
    (
        "register number of another type",
        _edit(
            BASE,
            lambda d: (
                d["modbus"].update(address_base=1),
                d["points"][0].update(address=40001),
                d["points"][1].update(address=30002, register_type="holding"),
            ),
        ),
        [
            "points[1].address: address 30002 is an input register number but register_type is holding "
            "(use address_base 0 and the wire address if the device really numbers it so)"
        ],
    ),
    (
        "64-bit value beyond 65535",
        _edit(BASE, _point(1, data_type="float64", address=65533)),
        ["points[1].address: float64 at wire address 65533 needs registers 65533..65536, beyond 65535"],
    ),
    (
        "address beyond 65535 with base 1",
        _edit(
            BASE,
            lambda d: (
                d["modbus"].update(address_base=1),
                d["points"][0].update(address=70000),
                d["points"][1].update(address=2),
            ),
        ),
        ["points[0].address: address 70000 is wire address 69999, beyond 65535"],
    ),
    (
        "bit without bit on a register",
        _edit(BASE, _point(0, data_type="bit")),
        ["points[0].bit: missing (data_type bit on a holding register needs bit: 0..15)"],
    ),
    (
        "bit out of range",
        _edit(BASE, _point(0, data_type="bit", bit=16)),
        ["points[0].bit: expected a number <= 15, got 16"],
    ),
    (
        "bit on a coil",
        _edit(BASE, _point(0, register_type="coil", data_type="bit", bit=1)),
        ["points[0].bit: not for a coil (a coil is itself one bit)"],
    ),
    (
        "coil that is not a bit",
        _edit(BASE, _point(0, register_type="coil")),
        ["points[0].data_type: a coil is a single bit: expected 'bit', got 'uint16'"],
    ),
    ("bit on a number", _edit(BASE, _point(0, bit=3)), ["points[0].bit: only for data_type bit, not uint16"]),
    (
        "string without length",
        _edit(BASE, _add_point(name="serial", address=10, data_type="string")),
        ["points[2].length: missing (data_type string needs length: registers, 2 characters each)"],
    ),
    (
        "length on a number",
        _edit(BASE, _point(1, length=2)),
        ["points[1].length: only for data_type string, not float32"],
    ),
    (
        "more registers than max_registers",
        _edit(BASE, _add_point(name="serial", address=10, data_type="string", length=40)),
        ["points[2].length: string needs 40 registers, more than modbus.max_registers 32"],
    ),
    (
        "a 64-bit value and max_registers 2",
        _edit(BASE, lambda d: (d["modbus"].update(max_registers=2), d["points"][1].update(data_type="uint64"))),
        ["points[1].data_type: uint64 needs 4 registers, more than modbus.max_registers 2"],
    ),
    (
        "mask on a float",
        _edit(BASE, _point(1, mask=255)),
        ["points[1].mask: only for integer and BCD types, not float32"],
    ),
    (
        "mask wider than the type",
        _edit(BASE, _point(0, data_type="uint8", mask=0x1FF)),
        ["points[0].mask: 0x1FF is wider than uint8 (expected 1..0xFF)"],
    ),
    ("scale 0", _edit(BASE, _point(0, scale=0)), ["points[0].scale: must not be 0"]),
    (
        "scale on a bit",
        _edit(BASE, _point(0, data_type="bit", bit=0, scale=0.1)),
        ["points[0].scale: only for numbers, not bit"],
    ),
    (
        "writing an input register",
        _edit(BASE, _point(0, register_type="input", access="read-write")),
        ["points[0].access: input registers are read-only, expected 'read', got 'read-write'"],
    ),
    (
        "write-only point in a poll group",
        _edit(BASE, _point(0, access="write")),
        ["points[0].poll_group: a write-only point is not polled (remove poll_group)"],
    ),
    (
        "bad point name",
        _edit(BASE, _point(0, name="Voltage L1")),
        [
            "points[0].name: expected lower-case letters, digits and '_', starting with a letter (at most 64), "
            "got 'Voltage L1'"
        ],
    ),
    ("no points", _edit(BASE, _set("points", value=[])), ["points: expected at least 1 entry"]),
    (
        "timeout 0",
        _edit(BASE, _set("transport", "timeout_s", value=0)),
        ["transport.timeout_s: expected a number > 0, got 0"],
    ),
    (
        "negative interval",
        _edit(BASE, _set("poll_groups", "fast", "interval_s", value=-1)),
        ["poll_groups.fast.interval_s: expected a number > 0, got -1"],
    ),
    ("missing transport", _edit(BASE, _set("transport", value=None)), ["transport: missing (required)"]),
    (
        "max_registers above the Modbus limit",
        _edit(BASE, _set("modbus", "max_registers", value=126)),
        ["modbus.max_registers: expected a number <= 125, got 126"],
    ),
    (
        "profile name is not the file name",
        _edit(BASE, _set("profile", value="other-device")),
        ["profile: 'other-device' does not match the file name 'test-device.yaml' (expected 'test-device')"],
    ),
    (
        "modbus profile with a scale section",
        _edit(BASE, _set("scale", value={"unit": "kg", "poll_command": "SI"})),
        ["scale: only for the scale protocols (mtsics, sartorius-sbi, toledo-continuous), not for modbus"],
    ),
    (
        "modbus profile without points",
        _edit(BASE, _set("points", value=None)),
        ["points: missing (protocol modbus needs a register map)"],
    ),
    (
        "modbus over a plain serial line",
        _edit(BASE, _set("transport", "kind", value="serial")),
        ["transport.kind: 'serial' is not a transport of protocol modbus (expected: rtu, tcp, rtu-over-tcp)"],
    ),
    (
        "scale profile with a register map",
        _edit(SCALE_BASE, lambda d: d.update(modbus={}, points=copy.deepcopy(BASE["points"]))),
        ["modbus: only for protocol modbus, not for mtsics", "points: only for protocol modbus, not for mtsics"],
    ),
    (
        "scale profile without a scale section",
        _edit(SCALE_BASE, _set("scale", value=None)),
        ["scale: missing (protocol mtsics needs unit and poll_command)"],
    ),
    (
        "poll command of another protocol",
        _edit(SCALE_BASE, _set("scale", "poll_command", value="print")),
        ["scale.poll_command: 'print' is not a poll command of mtsics (expected one of: SI, S)"],
    ),
    (
        "SBI form on MT-SICS",
        _edit(SCALE_BASE, _set("scale", "form", value=22)),
        ["scale.form: only for protocol sartorius-sbi, not for mtsics"],
    ),
    (
        "SBI form that does not exist",
        _edit(
            SCALE_BASE, lambda d: (d.update(protocol="sartorius-sbi"), d["scale"].update(poll_command="print", form=20))
        ),
        ["scale.form: 20 is not one of [16, 22]"],
    ),
    (
        "unknown protocol",
        _edit(SCALE_BASE, _set("protocol", value="mt-sics")),
        [
            "protocol: 'mt-sics' is not one of ['modbus', 'mtsics', 'sartorius-sbi', 'toledo-continuous'] "
            "(did you mean 'mtsics'?)"
        ],
    ),
    (
        "a list, not a mapping",
        "- profile: test-device\n",
        ["(top level): expected a mapping of keys (profile, vendor, model, protocol, transport, …)"],
    ),
]
YAML_BROKEN: list[tuple[str, str, str]] = [
    # (case, YAML text, the start of the one problem)
    ("syntax", "profile: [test-device\n", "not valid YAML: while parsing a flow sequence"),
    ("duplicate key", "profile: test-device\nvendor: a\nvendor: b\n", "not valid YAML: while reading a mapping"),
    ("octal-looking address", "points:\n  - {address: 0100}\n", "not valid YAML: 0100 has a leading zero"),
    ("empty file", "", "(top level): expected a mapping of keys"),
]


@pytest.mark.parametrize(("case", "content", "expected"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_profile_is_rejected_with_key_path(
    tmp_path: Path, case: str, content: dict[str, Any] | str, expected: list[str]
) -> None:
    path = tmp_path / "test-device.yaml"
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False, allow_unicode=True)
    path.write_text(text)
    lines = validate_profile_file(path)
    assert lines == [f"{path}: {problem}" for problem in expected]
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert info.value.source == str(path)
    assert info.value.problems == expected
    assert str(info.value).splitlines() == lines  # "FILE: key.path: message", the shape of every config error


@pytest.mark.parametrize(("case", "text", "start"), YAML_BROKEN, ids=[c[0] for c in YAML_BROKEN])
def test_broken_yaml(tmp_path: Path, case: str, text: str, start: str) -> None:
    path = tmp_path / "test-device.yaml"
    path.write_text(text)
    (line,) = validate_profile_file(path)
    assert line.startswith(f"{path}: {start}")
    assert "\n" not in line


def test_the_duplicate_key_message_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "test-device.yaml"
    path.write_text("profile: test-device\nvendor: a\nvendor: b\n")
    (line,) = validate_profile_file(path)
    assert "found the key 'vendor' twice" in line
    assert "line 3" in line


def test_every_problem_at_once(tmp_path: Path) -> None:
    data = _edit(
        BASE,
        lambda d: (
            d["points"][0].update(data_type="flot32"),
            d["points"][1].update(name="a"),
            d["transport"].update(parity="X"),
        ),
    )
    path = tmp_path / "test-device.yaml"
    path.write_text(yaml.safe_dump(data))
    problems = [line.removeprefix(f"{path}: ") for line in validate_profile_file(path)]
    assert problems == [
        f"points[0].data_type: 'flot32' is not one of {_TYPES} (did you mean 'float32'?)",
        "transport.parity: 'X' is not one of ['N', 'E', 'O']",
        "points[1].name: 'a' is already used by points[0]",  # names count also where the point has other faults
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert validate_profile_file(missing) == [f"{missing}: cannot read: No such file or directory"]


def test_a_valid_profile_in_another_directory(tmp_path: Path) -> None:
    path = tmp_path / "test-device.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert validate_profile_file(path) == []
    profile = load_profile(path)
    assert [(p.name, p.address, p.word_order, p.poll_group) for p in profile.modbus_points()] == [
        ("a", 0, "ABCD", "fast"),
        ("b", 1, "ABCD", "fast"),
    ]
    cdab = _edit(BASE, lambda d: (d["modbus"].update(word_order="CDAB"), d["points"][0].update(word_order="BADC")))
    path.write_text(yaml.safe_dump(cdab))
    assert [p.word_order for p in load_profile(path).modbus_points()] == ["BADC", "CDAB"]  # profile default filled in


# ---------------------------------------------------------------------------------------------- the command
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floorgate")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


def test_cli_validates_every_reference_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["profiles", "validate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"ok {DEFAULT_PROFILES_DIR / name}.yaml" for name in REFERENCE_PROFILES]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "test-device.yaml"
    good.write_text(yaml.safe_dump(BASE))
    assert _run(["profiles", "validate", str(good)]) == 0
    assert capsys.readouterr().out == f"ok {good}\n"

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / "test-device.yaml"
    bad.write_text(yaml.safe_dump(_edit(BASE, _point(1, data_type="flot32"))))
    (bad_dir / "notes.txt").write_text("not a profile")
    assert _run(["profiles", "validate", str(good), str(bad_dir)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"ok {good}",
        f"{bad}: points[1].data_type: 'flot32' is not one of {_TYPES} (did you mean 'float32'?)",
    ]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(["profiles", "validate", str(empty)]) == 1
    assert capsys.readouterr().out == f"{empty}: no *.yaml profiles in this directory\n"
    assert _run(["profiles", "validate", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["profiles", "validate", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: floorgate profiles validate [-h] [PATH ...]" in text
    assert "Validate device profiles" in text
    assert "exits 0 when all are valid, 1 otherwise" in text
