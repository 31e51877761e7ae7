"""The plant the Ansible tests share (tests/ansible/fleet.py): built once per session, the edge role converged onto
it twice (``fleet.runs["first"]``, ``fleet.runs["second"]``) before the first test that needs it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.ansible.fleet import Fleet, edge_fleet


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with edge_fleet(tmp_path_factory.mktemp("fleet")) as f:
        started_at = time.monotonic()
        f.runs["first"] = f.playbook(log="converge.log")
        converged_at = time.monotonic()
        f.runs["second"] = f.playbook(log="idempotence.log")
        second_s = time.monotonic() - converged_at
        print(f"edge role: converge {converged_at - started_at:.0f} s, second run {second_s:.0f} s")
        yield f
