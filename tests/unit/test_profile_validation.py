"""Broken device profiles are rejected with file, key path and expectation (every problem at once);
``floorgate profiles validate`` and its exit codes."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.devices.profiles import DEFAULT_PROFILES_DIR, load_profile, profile_paths, validate_profile_file
from sync.runtime.config import ConfigError
from tools.profiles_cli import register

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
    assert out == [f"ok {path}" for path in profile_paths(DEFAULT_PROFILES_DIR)]
    assert len(out) >= 10  # the reference profiles (test_profiles.py)


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
