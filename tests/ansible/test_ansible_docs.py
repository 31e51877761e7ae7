"""ansible/README.md and the roles' READMEs tell an admin what to type: every ``floorgate …`` command line in their
shell blocks parses with the real command-line parser (sub-commands and options), the scripts they name exist, and
the example inventory's buses, devices, TSE and POS sections are valid node config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from edge.config import parse_config
from floorgate_cli import build_parser
from tests.ansible.support import ANSIBLE_DIR, REPO

pytestmark = pytest.mark.ansible

DOCS = [ANSIBLE_DIR / "README.md", *sorted(ANSIBLE_DIR.glob("roles/*/README.md"))]
PLACEHOLDERS = {"$cfg": "central-admin.yaml", "<site>": "site"}


def _command_lines() -> list[tuple[Path, str]]:
    out = []
    for doc in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                for word, value in PLACEHOLDERS.items():
                    line = line.replace(word, value)
                line = re.sub(r"\[[^\]]*\]", "", line)  # [--site MILL]: optional, shown in brackets
                if line.startswith("floorgate "):
                    out.append((doc, line))
    return out


def test_the_docs_show_commands() -> None:
    assert len(_command_lines()) >= 10


@pytest.mark.parametrize(("doc", "line"), _command_lines(),
                         ids=[f"{d.parent.name}/{d.name}: {line[10:70]}" for d, line in _command_lines()])
def test_every_floorgate_command_in_the_docs_parses(doc: Path, line: str) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(shlex.split(line)[1:])
    except SystemExit as exc:
        raise AssertionError(f"{doc.relative_to(REPO)}: `{line}` does not parse") from exc
    assert callable(getattr(args, "func", None)), line


def test_the_scripts_the_docs_name_exist() -> None:
    for doc in DOCS:
        for script in re.findall(r"scripts/[\w.-]+\.sh", doc.read_text()):
            assert (REPO / script).is_file(), f"{doc.relative_to(REPO)} names {script}"


@pytest.mark.parametrize("host_vars", sorted((ANSIBLE_DIR / "inventory/example/host_vars").glob("*.yml")),
                         ids=lambda p: p.name)
def test_the_example_inventory_is_valid_node_config(host_vars: Path) -> None:
    data = yaml.safe_load(host_vars.read_text())
    config = {"node_id": host_vars.stem, "broker": {"url": "mqtt://broker.example:1883"},
              "buses": data.get("edge_buses", []), "devices": data.get("edge_devices", [])}
    for key in ("tse", "pos"):
        if data.get(f"edge_{key}"):
            config[key] = data[f"edge_{key}"]
    node = parse_config(config, source=str(host_vars))
    assert node.devices, host_vars
    names = {a["name"] for a in data.get("edge_serial_adapters", [])}
    serial_paths = {b.address.removeprefix("serial:///dev/floorgate/") for b in node.buses
                    if b.address.startswith("serial:///dev/floorgate/")}
    assert serial_paths <= names, f"{host_vars.name}: buses on adapters the udev rules do not name: {serial_paths}"
