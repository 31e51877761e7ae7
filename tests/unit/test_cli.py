"""The ``floorgate`` command: ``--help`` everywhere, and configuration errors as precise messages with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from floorgate_cli import main

COMMANDS = [
    [], ["demo"], ["edge"], ["edge", "run"], ["edge", "check-config"], ["edge", "status"], ["central"],
    ["central", "migrate"], ["central", "run"], ["central", "ingest"], ["simulate"], ["bench"],
    ["edge", "enrol"], ["central", "node"], ["central", "node", "register"], ["central", "node", "list"],
    ["edge", "alibi"], ["central", "verify-alibi"], ["central", "verify-tse"],
    ["central", "node", "add"], ["central", "node", "revoke"], ["central", "ca"], ["central", "ca", "init"],
    ["central", "ca", "server-cert"], ["central", "ca", "client-cert"], ["central", "ca", "crl"],
    ["central", "ca", "list"], ["central", "ca", "revoke"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "floorgate")
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: floorgate")
    assert len(out.splitlines()) > 3


def test_console_script_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "floorgate_cli", "--help"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0
    for sub in ("demo", "edge", "central", "simulate", "bench"):
        assert sub in done.stdout


def test_bad_node_config_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text("node_id: n1\nbroker: {url: 'mqtt://127.0.0.1:1883'}\n"
                   "devices:\n  - {id: m1, type: sdm630, address: 'tcp://127.0.0.1:502', interval_s: 0}\n")
    assert main(["edge", "check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: devices[0].interval_s: Input should be greater than 0 (got 0)" in err


def test_check_config_needs_central_key_the_agent_would_refuse_to_start_without(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sync.signing import generate_key, public_key_text

    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"node_id: n1\ndata_dir: {tmp_path / 'data'}\nbroker: {{url: 'mqtt://127.0.0.1:1883'}}\n")
    assert main(["edge", "check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "central_keys_file" in err
    assert str(tmp_path / "data" / "central.pub") in err

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "central.pub").write_text(public_key_text(generate_key()) + "\n")
    assert main(["edge", "check-config", "--config", str(cfg)]) == 0
    assert "1 trusted central key(s)" in capsys.readouterr().out


def test_bad_central_config_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "central.yaml"
    cfg.write_text("database_url: mysql://x\nmetrics: {kind: influxdb-v1, url: 'http://127.0.0.1:8086'}\n"
                   "api: {port: 99999}\n")
    assert main(["central", "migrate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: database_url: expected a postgresql+psycopg://" in err
    assert f"{cfg}: api.port: Input should be less than or equal to 65535" in err
    assert "metrics" in err
    assert "database" in err


def test_the_example_central_config_is_valid() -> None:
    from central.config import load_settings

    root = Path(__file__).resolve().parents[2]
    settings = load_settings(root / "firmware-config/examples/central.yaml")
    assert settings.metrics.kind == "influxdb-v1"


def test_enrol_makes_a_key_once_and_a_bad_public_key_is_refused_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text("node_id: n-1\ndata_dir: data\nbroker: {url: 'mqtt://127.0.0.1:1883'}\n")
    assert main(["edge", "enrol", "--config", str(cfg)]) == 0
    first = capsys.readouterr().out
    assert "new signing key" in first
    assert (tmp_path / "data" / "node.key").stat().st_mode & 0o077 == 0  # nobody but the owner reads it
    assert main(["edge", "enrol", "--config", str(cfg)]) == 0
    second = capsys.readouterr().out
    assert "existing signing key" in second
    key = next(line.split()[-1] for line in first.splitlines() if line.startswith("public key"))
    assert key in second
    assert key.startswith("ed25519:")
    central = tmp_path / "central.yaml"
    central.write_text(f"database_url: sqlite:///{tmp_path / 'c.db'}\nmetrics: {{kind: sqlite, path: m.db}}\n")
    assert main(["central", "node", "register", "n-1", "--public-key", "ed25519:AAAA", "--config",
                 str(central)]) == 2
    assert "an Ed25519 public key has 32 bytes, this one 3" in capsys.readouterr().out
