"""Device profiles: one YAML file per device model in ``firmware-config/profiles``, validated on load.

A profile says how to talk to a model (protocol, default transport settings that a node config may override per
bus) and, for Modbus devices, its register map; for scales, the unit and how to poll::

    profile: eastron-sdm630            # = the file name without .yaml
    vendor: Eastron
    model: SDM630
    protocol: modbus                   # modbus | mtsics | sartorius-sbi | toledo-continuous
    transport: {kind: rtu, baudrate: 9600, parity: N, stopbits: 1, bytesize: 8, timeout_s: 1.0, retries: 1}
    modbus: {address_base: 0, word_order: ABCD, max_gap: 8, max_registers: 100}
    poll_groups: {fast: {interval_s: 5}, slow: {interval_s: 60}}
    points:
      - {name: voltage_l1, register_type: input, address: 0x0000, data_type: float32, unit: V, poll_group: fast}

Validation runs in two steps and reports every problem, one line each, in the shape of ``sync.runtime.config``
(``FILE: key.path: what was expected``):

1. the JSON Schema ``profile.schema.json`` beside the profiles (Draft 2020-12; editors can use it too): keys,
   types, enumerations, ranges - ``points[3].data_type: 'flot32' is not one of ['int8', …] (did you mean
   'float32'?)``;
2. what a schema cannot say: the profile name equals the file name, the sections fit the protocol, point names
   are unique, poll groups exist, ``bit`` / ``length`` / ``mask`` fit the data type, addresses are not below the
   address base and their registers end by 65535, a point fits ``max_registers``, a legal weight (``gross``,
   ``net``, ``tare``, ``preset_tare``) has no ``scale`` or ``offset`` (``profile_model.legal_point_problems``).

Then the profile becomes the frozen dataclasses of ``edge.devices.profile_model``; ``Profile.modbus_points()`` gives
``protocols.modbus.Point`` records with wire addresses (the address base applied) and the profile's default word
order filled in.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final, get_args

import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from edge.devices.profile_model import (
    DEFAULT_POLL_GROUP,
    DEFAULT_SBI_FORM,
    POLL_COMMANDS,
    PROTOCOLS,
    SCALE_PROTOCOLS,
    TRANSPORTS_OF_PROTOCOL,
    ModbusOptions,
    PollGroup,
    Profile,
    ProfilePoint,
    ScaleOptions,
    TransportDefaults,
    TransportKind,
    legal_point_problems,
)
from protocols.modbus import MAX_ADDRESS, AddressBase, Point, wire_address
from protocols.modbus.points import BIT_REGISTER_TYPES, MASKABLE_TYPES, NUMBER_TYPES, REGISTERS_OF_TYPE, VALUE_BITS
from sync.runtime.config import ConfigError, key_path
from sync.runtime.limits import read_yaml


def _default_profiles_dir() -> Path:
    """``firmware-config/profiles`` of a checkout; an installed wheel carries them in ``<prefix>/share/floorgate``."""
    checkout = Path(__file__).resolve().parents[2] / "firmware-config" / "profiles"
    installed = Path(sys.prefix) / "share" / "floorgate" / "profiles"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


DEFAULT_PROFILES_DIR: Final = _default_profiles_dir()
SCHEMA_PATH: Final = DEFAULT_PROFILES_DIR / "profile.schema.json"
PROFILE_SUFFIX: Final = ".yaml"

# ---------------------------------------------------------------------------------------------- YAML
class _ProfileLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and octal-looking numbers (``address: 0100`` would be 64)."""


def _mapping_without_duplicates(loader: _ProfileLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:  # a list or mapping as a key (``? {a: 1}``): what SafeLoader itself reports too
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_mapping(node))


_OCTAL_LOOKING = re.compile(r"^[-+]?0[0-9_]+$")


def _int_without_octal(loader: _ProfileLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if isinstance(text, str) and _OCTAL_LOOKING.match(text):
        raise yaml.constructor.ConstructorError(
            None, None, f"{text} has a leading zero, which YAML reads as octal: write {text.lstrip('0') or '0'} "
            "or a hex number (0x...)", node.start_mark,
        )  # fmt: skip
    return int(loader.construct_yaml_int(node))


_ProfileLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_ProfileLoader.add_constructor("tag:yaml.org,2002:int", _int_without_octal)


# ---------------------------------------------------------------------------------------------- JSON Schema
def _schema_for(path: Path) -> Path:
    """The schema beside the profile when there is one (a profiles directory deployed to a node, e.g.
    /etc/floorgate/profiles, carries its copy; an installed wheel has no firmware-config/), else ``SCHEMA_PATH``."""
    beside = path.parent / SCHEMA_PATH.name
    return beside if beside.is_file() else SCHEMA_PATH


@cache
def _validator(schema_path: Path = SCHEMA_PATH) -> Draft202012Validator:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


_TYPE_NAMES: Final = {
    "integer": "an integer",
    "number": "a number",
    "string": "text",
    "boolean": "true or false",
    "object": "a mapping of keys",
    "array": "a list",
}
_PATTERN_HINTS: Final = {
    "^[a-z0-9][a-z0-9-]{0,63}$": "lower-case letters, digits and '-' (at most 64)",
    "^[a-z][a-z0-9_]{0,63}$": "lower-case letters, digits and '_', starting with a letter (at most 64)",
    "^[A-Za-z0-9_-]{1,32}$": "letters, digits, '_' and '-' (at most 32)",
}


def _did_you_mean(word: object, choices: Iterable[object]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [c for c in choices if isinstance(c, str)], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path != "(top level)" else str(key)


def _schema_problems(error: ValidationError) -> list[str]:
    """One or more lines for one JSON Schema error: the key path, then what was expected."""
    path = key_path(error.absolute_path)
    keyword, expected, given = error.validator, error.validator_value, error.instance
    if keyword == "additionalProperties" and isinstance(given, dict):
        known = list(error.schema.get("properties", {}))
        extra = [k for k in given if k not in known]
        return [
            f"{_join(path, key)}: unknown key{_did_you_mean(key, known)} (expected one of: {', '.join(known)})"
            for key in extra
        ]
    if keyword == "required" and isinstance(given, dict):
        return [f"{_join(path, key)}: missing (required)" for key in expected if key not in given]
    if keyword == "enum":
        return [f"{path}: {error.message}{_did_you_mean(given, expected)}"]
    if keyword == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return [f"{path}: expected {wanted}, got {given!r}"]
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[keyword]
        return [f"{path}: expected a number {sign} {expected}, got {given!r}"]
    if keyword == "pattern":
        hint = _PATTERN_HINTS.get(expected, f"text matching {expected}")
        return [f"{path}: expected {hint}, got {given!r}"]
    if keyword in ("minItems", "minProperties"):
        return [f"{path}: expected at least {expected} entr{'y' if expected == 1 else 'ies'}"]
    if keyword == "minLength":
        return [f"{path}: must not be empty"]
    return [f"{path}: {error.message}"]


def _path_key(error: ValidationError) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path)


# ---------------------------------------------------------------------------------------------- semantic checks
def _get(mapping: object, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sections(data: dict[str, Any], protocol: str) -> list[str]:
    problems: list[str] = []
    kind = _get(data.get("transport"), "kind")
    allowed = TRANSPORTS_OF_PROTOCOL[protocol]
    if isinstance(kind, str) and kind in get_args(TransportKind) and kind not in allowed:
        expected = ", ".join(allowed)
        problems.append(f"transport.kind: {kind!r} is not a transport of protocol {protocol} (expected: {expected})")
    if protocol == "modbus":
        if "scale" in data:
            problems.append(f"scale: only for the scale protocols ({', '.join(SCALE_PROTOCOLS)}), not for modbus")
        if "points" not in data:
            problems.append("points: missing (protocol modbus needs a register map)")
        return problems
    for section in ("modbus", "points"):
        if section in data:
            problems.append(f"{section}: only for protocol modbus, not for {protocol}")
    scale = data.get("scale")
    if scale is None:
        problems.append(f"scale: missing (protocol {protocol} needs unit and poll_command)")
        return problems
    command = _get(scale, "poll_command")
    commands = POLL_COMMANDS[protocol]
    if isinstance(command, str) and command in ("SI", "S", "print", "stream") and command not in commands:
        problems.append(
            f"scale.poll_command: {command!r} is not a poll command of {protocol} (expected one of: "
            f"{', '.join(commands)})"
        )
    if protocol != "sartorius-sbi" and isinstance(scale, dict) and "form" in scale:
        problems.append(f"scale.form: only for protocol sartorius-sbi, not for {protocol}")
    return problems


def _check_point_fields(where: str, raw: dict[str, Any]) -> list[str]:
    """Rules between the fields of one point (before any address arithmetic)."""
    problems = []
    register_type, data_type = raw["register_type"], raw["data_type"]
    if register_type in BIT_REGISTER_TYPES:
        if data_type != "bit":
            problems.append(f"{where}.data_type: a {register_type} is a single bit: expected 'bit', got {data_type!r}")
        if "bit" in raw:
            problems.append(f"{where}.bit: not for a {register_type} (a {register_type} is itself one bit)")
    elif data_type == "bit" and "bit" not in raw:
        problems.append(f"{where}.bit: missing (data_type bit on a {register_type} register needs bit: 0..15)")
    if data_type != "bit" and "bit" in raw:
        problems.append(f"{where}.bit: only for data_type bit, not {data_type}")
    if data_type == "string" and "length" not in raw:
        problems.append(f"{where}.length: missing (data_type string needs length: registers, 2 characters each)")
    if data_type != "string" and "length" in raw:
        problems.append(f"{where}.length: only for data_type string, not {data_type}")
    if "mask" in raw:
        if data_type not in MASKABLE_TYPES:
            problems.append(f"{where}.mask: only for integer and BCD types, not {data_type}")
        elif raw["mask"] >= 1 << VALUE_BITS[data_type]:
            top = (1 << VALUE_BITS[data_type]) - 1
            problems.append(f"{where}.mask: 0x{raw['mask']:X} is wider than {data_type} (expected 1..0x{top:X})")
    if raw.get("scale") == 0:
        problems.append(f"{where}.scale: must not be 0")
    problems += legal_point_problems(where, raw)  # no scale / offset on a legal weight
    if data_type not in NUMBER_TYPES:
        for key in ("scale", "offset", "deadband"):
            if key in raw:
                problems.append(f"{where}.{key}: only for numbers, not {data_type}")
    access = raw.get("access", "read")
    if access != "read" and register_type in ("input", "discrete"):
        problems.append(f"{where}.access: {register_type} registers are read-only, expected 'read', got {access!r}")
    return problems


def _check_points(data: dict[str, Any], broken: set[int]) -> list[str]:
    points = data.get("points")
    if not isinstance(points, list):
        return []
    modbus = data.get("modbus")
    base: AddressBase = 1 if _get(modbus, "address_base") == 1 else 0
    max_registers = _get(modbus, "max_registers") or ModbusOptions.max_registers
    groups = data.get("poll_groups")
    group_names = list(groups) if isinstance(groups, dict) else None
    problems: list[str] = []
    names: dict[str, int] = {}
    for index, raw in enumerate(points):
        where = f"points[{index}]"
        name = _get(raw, "name")
        if isinstance(name, str):
            if name in names:
                problems.append(f"{where}.name: {name!r} is already used by points[{names[name]}]")
            else:
                names[name] = index
        if index in broken or not isinstance(raw, dict):
            continue  # the schema already said what is wrong with it
        if raw.get("access") == "write":
            if "poll_group" in raw:
                problems.append(f"{where}.poll_group: a write-only point is not polled (remove poll_group)")
        elif group_names is not None:
            group = raw.get("poll_group", DEFAULT_POLL_GROUP)
            if group not in group_names:
                given = f"{group!r} is" if "poll_group" in raw else f"not given, and the default {group!r} is"
                problems.append(f"{where}.poll_group: {given} not defined in poll_groups (defined: "
                                f"{', '.join(group_names) or 'none'})")  # fmt: skip
        field_problems = _check_point_fields(where, raw)
        problems += field_problems
        if field_problems:
            continue
        register_type, data_type = raw["register_type"], raw["data_type"]
        count = raw["length"] if data_type == "string" else REGISTERS_OF_TYPE[data_type]
        try:
            wire = wire_address(raw["address"], register_type, address_base=base)
        except ValueError as exc:
            problems.append(f"{where}.address: {exc}")
            continue
        if wire + count - 1 > MAX_ADDRESS:
            problems.append(
                f"{where}.address: {data_type} at wire address {wire} needs registers {wire}..{wire + count - 1}, "
                f"beyond {MAX_ADDRESS}"
            )
        if register_type not in BIT_REGISTER_TYPES and _is_int(max_registers) and count > max_registers:
            key = "length" if data_type == "string" else "data_type"
            problems.append(
                f"{where}.{key}: {data_type} needs {count} registers, more than modbus.max_registers {max_registers}"
            )
    return problems


# ---------------------------------------------------------------------------------------------- building
def _point(raw: dict[str, Any], options: ModbusOptions) -> ProfilePoint:
    def number(key: str, default: float) -> float:
        value = raw.get(key, default)
        return float(value) if value is not None else default

    point = Point(
        raw["name"],
        wire_address(int(raw["address"]), raw["register_type"], address_base=options.address_base),
        raw["register_type"],
        raw["data_type"],
        number("scale", 1.0),
        raw.get("unit", ""),
        word_order=raw.get("word_order", options.word_order),
        offset=number("offset", 0.0),
        mask=raw.get("mask"),
        bit=raw.get("bit"),
        length=raw.get("length"),
        kind=raw.get("kind", "metric"),
        poll_group=raw.get("poll_group", DEFAULT_POLL_GROUP),
        deadband=float(raw["deadband"]) if "deadband" in raw else None,
    )
    return ProfilePoint(point, int(raw["address"]), raw.get("access", "read"), raw.get("description", ""))


def _build(data: dict[str, Any], source: Path) -> tuple[Profile | None, list[str]]:
    transport_raw = dict(data["transport"])
    for key in ("timeout_s",):
        if key in transport_raw:
            transport_raw[key] = float(transport_raw[key])
    transport = TransportDefaults(**transport_raw)
    groups = tuple(PollGroup(name, float(g["interval_s"])) for name, g in data["poll_groups"].items())
    modbus = scale = None
    points: list[ProfilePoint] = []
    problems: list[str] = []
    if data["protocol"] == "modbus":
        modbus_raw = dict(data.get("modbus", {}))
        if "pause_between_requests_s" in modbus_raw:
            modbus_raw["pause_between_requests_s"] = float(modbus_raw["pause_between_requests_s"])
        modbus = ModbusOptions(**modbus_raw)
        for index, raw in enumerate(data["points"]):
            try:
                points.append(_point(raw, modbus))
            except ValueError as exc:  # a rule of the codec that the checks above do not know (yet)
                problems.append(f"points[{index}]: {exc}")
    else:
        scale_raw = dict(data["scale"])
        if data["protocol"] == "sartorius-sbi":
            scale_raw.setdefault("form", DEFAULT_SBI_FORM)
        scale = ScaleOptions(**scale_raw)
    if problems:
        return None, problems
    profile = Profile(
        profile=data["profile"],
        vendor=data["vendor"],
        model=data["model"],
        description=data.get("description", ""),
        protocol=data["protocol"],
        transport=transport,
        poll_groups=groups,
        modbus=modbus,
        points=tuple(points),
        scale=scale,
        source=source,
    )
    return profile, []


def _check(path: Path) -> tuple[Profile | None, list[str]]:
    """The profile in ``path`` and no problems, or ``None`` and every problem (without the file prefix)."""
    try:
        data = read_yaml(path, loader=_ProfileLoader)  # bounded: size, encoding, depth, alias bombs
    except ConfigError as exc:
        return None, exc.problems
    if not isinstance(data, dict):
        return None, ["(top level): expected a mapping of keys (profile, vendor, model, protocol, transport, …)"]
    errors = sorted(_validator(_schema_for(path)).iter_errors(data), key=_path_key)
    problems: list[str] = []
    for error in errors:
        for line in _schema_problems(error):
            if line not in problems:
                problems.append(line)
    broken = {int(e.absolute_path[1]) for e in errors if len(e.absolute_path) > 1 and e.absolute_path[0] == "points"}
    if isinstance(data.get("profile"), str) and data["profile"] != path.stem:
        problems.append(
            f"profile: {data['profile']!r} does not match the file name {path.name!r} (expected {path.stem!r})"
        )
    protocol = data.get("protocol")
    if isinstance(protocol, str) and protocol in PROTOCOLS:
        problems += _check_sections(data, protocol)
    if protocol == "modbus":
        problems += _check_points(data, broken if errors else set())
    if problems:
        return None, problems
    return _build(data, path)


# ---------------------------------------------------------------------------------------------- public API
def validate_profile_file(path: str | Path) -> list[str]:
    """Every problem of the profile in ``path`` as ``FILE: key.path: what was expected``; ``[]`` when valid."""
    _, problems = _check(Path(path))
    return [f"{path}: {problem}" for problem in problems]


def _profile_path(name_or_path: str | Path, profiles_dir: Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return Path(name_or_path)
    return Path(profiles_dir) / f"{text}{PROFILE_SUFFIX}"


def profile_paths(profiles_dir: str | Path = DEFAULT_PROFILES_DIR) -> list[Path]:
    """The profile files in ``profiles_dir`` (``*.yaml``), sorted by name."""
    return sorted(Path(profiles_dir).glob(f"*{PROFILE_SUFFIX}"))


def load_profile(name_or_path: str | Path, *, profiles_dir: str | Path = DEFAULT_PROFILES_DIR) -> Profile:
    """The profile called ``name_or_path`` in ``profiles_dir``, or in the file ``name_or_path``.

    A name is looked up as ``profiles_dir/NAME.yaml``; a ``Path``, a string with a ``/`` or ending in ``.yaml`` is a
    file. Raises ``ConfigError(file, problems)`` with every problem (``key.path: what was expected``).
    """
    path = _profile_path(name_or_path, Path(profiles_dir))
    if not path.exists() and path.parent == Path(profiles_dir) and not isinstance(name_or_path, Path):
        known = ", ".join(p.stem for p in profile_paths(profiles_dir)) or "none"
        problem = f"cannot read: no profile {str(name_or_path)!r} in {profiles_dir} (known: {known})"
        raise ConfigError(str(path), [problem])
    profile, problems = _check(path)
    if profile is None:
        raise ConfigError(str(path), problems)
    return profile


def load_profiles(paths: Iterable[str | Path]) -> dict[str, Profile]:
    """``{name: profile}`` for profile files and directories (every ``*.yaml`` in them), in name order.

    Raises ``ConfigError`` for the first file (in the order given) that has problems, with all of its problems,
    or for a name that two files define.
    """
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        files += profile_paths(path) if path.is_dir() else [path]
    profiles: dict[str, Profile] = {}
    origins: dict[str, Path] = {}
    for path in files:
        profile = load_profile(path)
        if profile.profile in profiles:
            raise ConfigError(
                str(path), [f"profile: {profile.profile!r} is already defined by {origins[profile.profile]}"]
            )
        profiles[profile.profile] = profile
        origins[profile.profile] = path
    return dict(sorted(profiles.items()))


def profile_problems(paths: Sequence[str | Path]) -> dict[Path, list[str]]:
    """``{file: problems}`` for every profile file in ``paths`` (files and directories; none: the default dir)."""
    entries = [Path(p) for p in paths] or [DEFAULT_PROFILES_DIR]
    out: dict[Path, list[str]] = {}
    for entry in entries:
        if entry.is_dir():
            files = profile_paths(entry)
            if not files:
                out[entry] = [f"{entry}: no *{PROFILE_SUFFIX} profiles in this directory"]
            for path in files:
                out[path] = validate_profile_file(path)
        else:
            out[entry] = validate_profile_file(entry)
    return out


__all__ = [
    "DEFAULT_PROFILES_DIR",
    "PROFILE_SUFFIX",
    "SCHEMA_PATH",
    "load_profile",
    "load_profiles",
    "profile_paths",
    "profile_problems",
    "validate_profile_file",
]
