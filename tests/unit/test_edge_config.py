"""Node configs: every error names the file, the key path and what was expected; the shipped example loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_config, parse_config
from sync.runtime.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_node_config_is_valid() -> None:
    cfg = load_config(ROOT / "firmware-config/examples/node.yaml")
    assert cfg.node_id == "mill-01"
    assert [d.id for d in cfg.devices] == ["bridge-1", "meter-1", "probe-1", "silo-3"]
    assert [b.kind for b in cfg.buses] == ["line", "rtu", "tcp"]


BASE = {"node_id": "mill-01", "broker": {"url": "mqtt://127.0.0.1:1883"}}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"node_id": "mill/01"}, "node_id: expected letters"),
        ({"broker": {"url": "http://x"}}, "broker.url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (got 'http://x')"),
        ({"broker": {"url": "mqtt://h", "protocol": "4"}}, "broker.protocol: Input should be '5' or '3.1.1'"),
        ({"devices": [{"id": "m", "type": "sdm630", "address": "tcp://h:502", "interval_s": -1}]},
         "devices[0].interval_s: Input should be greater than 0 (got -1)"),
        ({"devices": [{"id": "m", "type": "sdm630", "address": "tcp://h:502", "interval_s": 1, "unitid": 3}]},
         "devices[0].unitid: unknown key"),
        ({"devices": [{"id": "m", "type": "sdm630", "address": "serial:///dev/ttyS0", "interval_s": 1}]},
         "devices[0].address: expected an address starting with tcp://"),
        ({"devices": [{"id": "m", "type": "toaster", "address": "tcp://h:1", "interval_s": 1}]},
         "devices[0]: Input tag 'toaster'"),
        ({"devices": [{"id": "m", "type": "th-probe", "address": "tcp://h:1", "interval_s": 1},
                      {"id": "m", "type": "th-probe", "address": "tcp://h:1", "interval_s": 1}]},
         "devices: id 'm' of devices[1] is already used by devices[0]"),
        ({"devices": [{"id": "b", "type": "mtsics-scale", "address": "tcp://h:1",
                       "weighing": {"threshold": "heavy"}}]},
         "devices[0].weighing.threshold: Input should be a valid decimal"),
        ({"brokr": {}}, "brokr: unknown key"),
    ],
)
def test_errors_name_file_key_and_expectation(patch: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, **patch}, source="node.yaml")
    text = str(info.value)
    assert f"node.yaml: {expected}" in text, text


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node_id: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match=r"bad.yaml: \(top level\): expected a mapping"):
        load_config(bad)


def test_relative_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "node.yaml"
    f.parent.mkdir()
    f.write_text("node_id: n1\ndata_dir: state\nbroker: {url: 'mqtt://127.0.0.1'}\n")
    assert load_config(f).data_dir == (f.parent / "state").resolve()
