"""The one configuration base and loader (``sync.runtime.config``, ``sync.runtime.limits.read_yaml``) that node,
central, alert-rules and profile files go through: unknown keys refused, results frozen, every fault one
``ConfigError`` line naming file and key, a secret's value never echoed whatever the field is called."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator

from edge.config import parse_config
from sync.runtime.config import ConfigError, ConfigModel, parse_model, secret_fields
from sync.runtime.limits import MAX_YAML_DEPTH, read_yaml

TSS = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


class Inner(ConfigModel):
    pin: SecretStr | None = None
    size: int = Field(1, gt=0)


class Outer(ConfigModel):
    name: str
    inner: Inner = Inner()
    vault: dict[str, SecretStr] = Field(default_factory=dict)
    items: list[Inner] = Field(default_factory=list)
    base: Path | None = None

    @field_validator("base")
    @classmethod
    def _base(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        root = (info.context or {}).get("base_dir")
        return Path(root) / v if v is not None and root is not None else v


class _Frozen(Mapping[str, Any]):
    """A mapping that is not a dict (what a caller may hand in instead of a YAML document)."""

    def __init__(self, **data: Any) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_a_config_model_refuses_unknown_keys_and_cannot_be_changed() -> None:
    with pytest.raises(ValidationError):
        Outer.model_validate({"name": "a", "colour": "red"})
    model = Outer(name="a")
    with pytest.raises(ValidationError):
        model.name = "b"  # type: ignore[misc]


def test_parse_model_names_the_source_the_key_and_what_was_expected() -> None:
    with pytest.raises(ConfigError) as err:
        parse_model(Outer, [1, 2], source="x.yaml", expected="a mapping with name")
    assert str(err.value) == "x.yaml: (top level): expected a mapping with name"
    with pytest.raises(ConfigError) as err:
        parse_model(Outer, {"name": "a", "inner": {"size": 0}, "items": [{}, {"size": -1}], "colour": 1},
                    source="x.yaml", expected="a mapping")
    assert err.value.problems == ["inner.size: Input should be greater than 0 (got 0)",
                                  "items[1].size: Input should be greater than 0 (got -1)",
                                  "colour: unknown key (check the spelling; see the example config)"]
    assert parse_model(Outer, _Frozen(name="m"), source="x", expected="a mapping").name == "m"
    with_base = parse_model(Outer, {"name": "a", "base": "d"}, source="x", expected="-", context={"base_dir": "/r"})
    assert with_base.base == Path("/r/d")


def test_a_secret_field_is_never_echoed_whatever_its_name() -> None:
    assert secret_fields(Outer) == frozenset({"pin", "vault"})
    with pytest.raises(ConfigError) as err:
        parse_model(Outer, {"name": "a", "inner": {"pin": 987654}, "vault": {"k": 123456}, "items": [{"pin": 555777}]},
                    source="x.yaml", expected="a mapping")
    text = str(err.value)
    for key in ("inner.pin", "vault.k", "items[0].pin"):
        assert f"{key}: Input should be a valid string (the value given is not shown: it may be a secret)" in text
    for value in ("987654", "123456", "555777"):
        assert value not in text


def test_the_fiskaly_admin_pin_in_a_node_config_is_not_echoed() -> None:
    fiskaly = {"api_key": "k", "api_secret": "s", "tss_id": TSS, "admin_pin": 24681357}
    with pytest.raises(ConfigError) as err:
        parse_config({"node_id": "n1", "broker": {"url": "mqtt://h"},
                      "tse": {"id": "tse-1", "driver": "fiskaly", "clients": ["K1"], "fiskaly": fiskaly}},
                     source="node.yaml")
    assert "node.yaml: tse.fiskaly.admin_pin: Input should be a valid string" in str(err.value)
    assert "24681357" not in str(err.value)


def test_read_yaml_gives_the_document_or_one_config_error(tmp_path: Path) -> None:
    def write(text: str) -> Path:
        path = tmp_path / "c.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    assert read_yaml(write("")) is None
    assert read_yaml(write("a: [1, 2]\nb: {c: x}\n")) == {"a": [1, 2], "b": {"c": "x"}}
    with pytest.raises(ConfigError) as err:
        read_yaml(write('a: 1\nsecret: "hunter2-value\n'))
    assert err.value.problems[0].startswith("not valid YAML: while scanning a quoted scalar")
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML: .*"):
        read_yaml(write("when: 2024-02-30\n"))  # a date YAML cannot build
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML"):
        read_yaml(write("a: !!python/object:os.system x\n"))  # safe loading only
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_YAML_DEPTH} levels"):
        read_yaml(write("[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1)))
    with pytest.raises(ConfigError, match=r"cannot read"):
        read_yaml(tmp_path / "missing.yaml")


def test_read_yaml_builds_with_the_loader_given(tmp_path: Path) -> None:
    class NoFloats(yaml.SafeLoader):
        pass

    def refuse(loader: NoFloats, node: yaml.ScalarNode) -> None:
        raise yaml.constructor.ConstructorError(None, None, "floats are refused here", node.start_mark)

    NoFloats.add_constructor("tag:yaml.org,2002:float", refuse)
    path = tmp_path / "p.yaml"
    path.write_text("a: 1.5\n", encoding="utf-8")
    assert read_yaml(path) == {"a": 1.5}
    with pytest.raises(ConfigError, match=r"not valid YAML: floats are refused here \(line 1, column 4\)"):
        read_yaml(path, loader=NoFloats)
