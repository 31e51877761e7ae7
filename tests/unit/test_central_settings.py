"""Central's settings: file plus FLOORGATE_… environment, precise errors, secrets kept out of logs and reprs;
``floorgate central create-admin`` as the only way to the first login."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from central.config import load_settings
from sync.runtime.config import ConfigError

SECRET = "s3cr3t-" * 6


def _file(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "central.yaml"
    path.write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'c.db'}",
                                    "metrics": {"kind": "sqlite", "path": str(tmp_path / "m.db")}, **extra}))
    return path


def test_environment_overrides_the_file_including_nested_keys(tmp_path: Path) -> None:
    path = _file(tmp_path, api={"port": 8000})
    s = load_settings(path, environ={"FLOORGATE_API__PORT": "9001", "FLOORGATE_AUTH__JWT_SECRET": SECRET,
                                     "FLOORGATE_FAULT_CRASH_AFTER_COMMITS": "3", "PATH": "/bin"})
    assert s.api.port == 9001
    assert s.auth.secret() == SECRET
    assert SECRET not in repr(s)
    assert SECRET not in str(s.model_dump())


def test_a_misspelt_environment_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_file(tmp_path), environ={"FLOORGATE_AUTH__JWT_SECRT": SECRET})
    assert "FLOORGATE_AUTH__JWT_SECRT" in str(err.value)
    assert "auth.jwt_secrt: unknown key" in str(err.value)


def test_a_short_token_secret_and_open_access_off_loopback_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth\.jwt_secret: .*at least 32 characters"):
        load_settings(_file(tmp_path, auth={"jwt_secret": "short"}), environ={})
    with pytest.raises(ConfigError, match=r"open_read_only needs host 127\.0\.0\.1"):
        load_settings(_file(tmp_path, api={"host": "0.0.0.0", "open_read_only": True}), environ={})  # noqa: S104
    assert load_settings(_file(tmp_path, api={"open_read_only": True}), environ={}).api.open_read_only


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floorgate_cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def test_create_admin_is_the_way_in_and_refuses_weak_or_duplicate(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert _cli("central", "migrate", "--config", str(path)).returncode == 0
    weak = _cli("central", "create-admin", "--config", str(path), "--username", "root", "--password-stdin",
                stdin="short\n")
    assert weak.returncode == 2
    assert "at least 10 characters" in weak.stderr
    ok = _cli("central", "create-admin", "--config", str(path), "--username", "root", "--password-stdin",
              stdin="a long admin password\n")
    assert ok.returncode == 0, ok.stderr
    again = _cli("central", "create-admin", "--config", str(path), "--username", "root", "--password-stdin",
                 stdin="a long admin password\n")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    no_tty = _cli("central", "create-admin", "--config", str(path), "--username", "other")
    assert no_tty.returncode == 2
    assert "--password-stdin" in no_tty.stderr
    from central.api.security import verify_secret
    from central.db.engine import make_engine, make_session_factory
    from central.db.models import AuditEntry, User

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with make_session_factory(engine)() as s:
        user = s.query(User).one()
        assert (user.username, user.role) == ("root", "admin")
        assert user.password_hash.startswith("$argon2id$")
        assert verify_secret(user.password_hash, "a long admin password")
        assert [(e.actor, e.action, e.resource) for e in s.query(AuditEntry)] == [
            ("cli:create-admin", "create", "users")]
    engine.dispose()


def test_central_run_refuses_to_start_without_a_token_secret(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert _cli("central", "migrate", "--config", str(path)).returncode == 0
    run = _cli("central", "run", "--config", str(path))
    assert run.returncode != 0
    assert "auth.jwt_secret is not set" in run.stderr + run.stdout
    assert "FLOORGATE_AUTH__JWT_SECRET" in run.stderr + run.stdout
