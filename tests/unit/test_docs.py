"""The README's configuration examples are valid configs, and the commands it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from central.config import parse_settings
from edge.config import parse_config
from floorgate_cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def test_readme_yaml_examples_validate() -> None:
    blocks = _yaml_blocks()
    assert len(blocks) == 2
    node = parse_config(yaml.safe_load(blocks[0]), source="README node example")
    assert [d.profile for d in node.devices] == ["mettler-toledo-mtsics", "eastron-sdm630", "th-probe"]
    assert [b.kind for b in node.buses] == ["line", "rtu"]
    central = parse_settings(yaml.safe_load(blocks[1]), source="README central example")
    assert central.api.port == 8000


def test_readme_quickstart_is_exactly_the_two_commands() -> None:
    quick = README.split("## Quickstart", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert quick.split("\n")[:2] == ["make demo", "make test"]
    assert quick.strip().splitlines() == ["make demo", "make test"]


def test_floorgate_commands_in_the_readme_exist() -> None:
    parser = build_parser()
    for line in re.findall(r"`(floorgate [a-z][^`]*)`", README):
        words = [w for w in line.split()[1:]
                 if (not w.startswith("-") and re.fullmatch(r"[A-Za-z_][\w-]*", w)) or "|" in w]
        first = words[0].split("|")[0] if words else None
        if first is None:
            continue
        top = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert first in top, line
        if len(words) > 1 and first in ("central", "edge"):
            sub = top[first]._subparsers._group_actions[0].choices  # type: ignore[union-attr]
            for choice in words[1].split("|"):
                assert choice in sub, line
