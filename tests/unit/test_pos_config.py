"""Node config of the TSE and the sales API (``tse:``, ``pos:``): errors name the key; the bearer token is made
once into a private file, or read from the environment, and never has a working default."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edge.config import load_config, parse_config
from edge.pos.config import PosConfig, load_or_create_token
from sync.runtime.config import ConfigError

BASE = {"node_id": "shop-1", "broker": {"url": "mqtt://127.0.0.1:1883"}}
TSE = {"id": "tse-1", "clients": ["KASSE-1"]}


def test_a_node_with_a_tse_and_the_sales_api() -> None:
    cfg = parse_config({**BASE, "data_dir": "/var/lib/fg", "tse": {**TSE, "algorithm": "P-256"}, "pos": {}},
                       source="node.yaml")
    assert cfg.tse is not None
    assert cfg.pos is not None
    assert (cfg.tse.driver, cfg.tse.algorithm, cfg.tse.clients) == ("software", "P-256", ["KASSE-1"])
    assert cfg.tse.directory(cfg.data_dir) == Path("/var/lib/fg/tse")
    assert (cfg.pos.listen, cfg.pos.host, cfg.pos.port) == ("127.0.0.1:8282", "127.0.0.1", 8282)
    assert cfg.pos.token_path(cfg.data_dir) == Path("/var/lib/fg/pos-token")
    assert parse_config(BASE, source="node.yaml").tse is None  # both are optional


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"pos": {}}, "(top level): pos: the sales API needs a tse section"),
        ({"tse": {"clients": ["KASSE-1"]}}, "tse.id: Field required"),
        ({"tse": {"id": "tse 1", "clients": ["K"]}}, "tse.id: String should match pattern"),
        ({"tse": {"id": "t", "clients": []}}, "tse.clients: List should have at least 1 item"),
        ({"tse": {"id": "t", "clients": ["KASSE_1"]}},
         "tse.clients: clients[0]: 'KASSE_1' has characters a PrintableString cannot hold: '_'"),
        ({"tse": {"id": "t", "clients": ["K" * 31]}},
         "tse.clients: clients[0]: " + repr("K" * 31) + " must be 1 to 30"),
        ({"tse": {"id": "t", "clients": ["K", "K"]}}, "tse.clients: clients[1]: 'K' is given twice"),
        ({"tse": {**TSE, "driver": "swissbit"}}, "tse.driver: Input should be 'software'"),
        ({"tse": {**TSE, "algorithm": "P-384"}}, "tse.algorithm: Input should be 'brainpoolP384r1' or 'P-256'"),
        ({"tse": {**TSE, "clinets": []}}, "tse.clinets: unknown key"),
        ({"tse": TSE, "pos": {"listen": "8282"}}, "pos.listen: expected HOST:PORT, e.g. 127.0.0.1:8282"),
        ({"tse": TSE, "pos": {"token_file": "/t", "token_env": "T"}}, "pos: give token_file or token_env, not both"),
        ({"tse": TSE, "pos": {"token_env": "MY-TOKEN"}}, "pos.token_env: expected the name of an environment"),
        ({"tse": {**TSE, "id": "bridge-1"},
          "devices": [{"id": "bridge-1", "type": "mtsics-scale", "address": "tcp://h:1"}]},
         "(top level): tse.id: 'bridge-1' is already the id of devices[0]"),
    ],
)
def test_errors_name_the_key(patch: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, **patch}, source="node.yaml")
    assert f"node.yaml: {expected}" in str(info.value), str(info.value)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    f = tmp_path / "node.yaml"
    f.write_text("node_id: n1\nbroker: {url: 'mqtt://127.0.0.1'}\ntse: {id: t, dir: fiscal/tse, clients: [K1]}\n"
                 "pos: {token_file: secrets/pos-token}\n")
    cfg = load_config(f)
    assert cfg.tse is not None
    assert cfg.pos is not None
    assert cfg.tse.dir == tmp_path / "fiscal" / "tse"
    assert cfg.pos.token_file == tmp_path / "secrets" / "pos-token"


def test_the_token_is_made_once_into_a_private_file(tmp_path: Path) -> None:
    pos = PosConfig()
    token = load_or_create_token(pos, tmp_path / "data")
    path = tmp_path / "data" / "pos-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n"
    assert len(token) >= 40
    assert load_or_create_token(pos, tmp_path / "data") == token  # kept
    assert load_or_create_token(PosConfig(), tmp_path / "other") != token


def test_a_short_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("changeme\n")
    with pytest.raises(ConfigError, match=r"node.yaml: pos.token_file: the token in .*token has 8 characters; at "
                                          r"least 24"):
        load_or_create_token(PosConfig(token_file=path), tmp_path, source="node.yaml")


def test_the_token_from_the_environment(tmp_path: Path) -> None:
    pos = PosConfig(token_env="FG_POS_TOKEN")  # noqa: S106 — the name of a variable, not a token
    assert load_or_create_token(pos, tmp_path, environ={"FG_POS_TOKEN": "x" * 30}) == "x" * 30
    with pytest.raises(ConfigError, match=r"pos\.token_env: the environment variable FG_POS_TOKEN is not set"):
        load_or_create_token(pos, tmp_path, environ={})
    with pytest.raises(ConfigError, match=r"pos\.token_env: the token in the environment variable FG_POS_TOKEN has 5"):
        load_or_create_token(pos, tmp_path, environ={"FG_POS_TOKEN": "short"})
    assert not (tmp_path / "pos-token").exists()  # never made when the environment is meant
