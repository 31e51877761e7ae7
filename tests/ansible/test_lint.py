"""ansible/ stays lint-clean (``ansible-lint --offline``, profile production, as ansible/.ansible-lint sets) and every
playbook passes ``ansible-playbook --syntax-check`` against the example inventory — what an admin's CI would run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ansible.support import ANSIBLE_DIR, ansible_env, run_tool

pytestmark = pytest.mark.ansible

PLAYBOOKS = ["site.yml", "edge.yml", "broker.yml", "central.yml"]


def test_every_playbook_is_there() -> None:
    assert sorted(p.name for p in ANSIBLE_DIR.glob("*.yml")) == sorted(PLAYBOOKS)


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(playbook: str, tmp_path: Path) -> None:
    done = run_tool(["ansible-playbook", "-i", "inventory/example/hosts.yml", "--syntax-check", playbook],
                    ansible_env(tmp_path, tmp_path), timeout_s=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"playbook: {playbook}" in done.stdout


def test_ansible_lint_is_clean(tmp_path: Path) -> None:
    done = run_tool(["ansible-lint", "--offline", "--nocolor"], ansible_env(tmp_path, tmp_path), timeout_s=300)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "0 failure(s), 0 warning(s)" in report, report
    assert "Profile 'production' was required, and it passed" in report, report
