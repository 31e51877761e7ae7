"""The edge role for real: ``ansible-playbook edge.yml`` converges two booted Debian 12 containers (systemd as PID 1,
each in its own network namespace, reached over SSH — tests/ansible/nspawn.py), a second run changes nothing, and
on each node the agent runs under systemd as user ``floorgate`` with the rendered config and its certificate: it is
ready (READY=1, STATUS) with the watchdog armed, answers /health, polls a simulated probe through the deployed
profile, and its heartbeats reach a Mosquitto configured by the broker role (tests/broker_support.py) on the host,
authenticated by the node's client certificate. A config that does not validate is never deployed and the running
agent is not restarted; an agent whose event loop hangs is killed by systemd's watchdog and restarted.

The wheelhouse is built once per session with scripts/build-wheelhouse.sh (the containers have no index); the
image is cached in /var/cache/floorgate-tests (built on first use, ~1 min). Runtime with a cached image: about
1.5 min."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from tests.ansible.fleet import HTTP_LISTEN, NODES, WATCHDOG_SEC, Fleet
from tests.ansible.support import changed_tasks, recap

pytestmark = [pytest.mark.ansible, pytest.mark.timeout(900)]


def test_converges_and_a_second_run_changes_nothing(fleet: Fleet) -> None:
    first, second = fleet.runs["first"], fleet.runs["second"]
    assert first.returncode == 0, f"converge failed (see {fleet.work / 'converge.log'}):\n{first.stdout[-6000:]}"
    first_recap = recap(first.stdout)
    assert sorted(first_recap) == NODES, first.stdout[-3000:]
    for node, counts in first_recap.items():
        assert counts["failed"] == 0, node
        assert counts["unreachable"] == 0, node
        assert counts["changed"] > 10, f"{node}: a first run changes the node ({counts})"
    assert second.returncode == 0, f"second run failed:\n{second.stdout[-6000:]}"
    second_recap = recap(second.stdout)
    assert sorted(second_recap) == NODES
    for node, counts in second_recap.items():
        assert counts["changed"] == 0, f"{node}: the second run changed something: {changed_tasks(second.stdout)}"
        assert counts["failed"] == 0, node
    # no udevd in a container: the rules are written, the reload is skipped (virtualization fact)
    assert "RUNNING HANDLER [edge : Reload the udev rules]" in first.stdout
    assert "skipping: [mill-a]" in first.stdout.split("RUNNING HANDLER [edge : Reload the udev rules]")[1][:400]


def test_the_agent_runs_under_systemd_as_its_user(fleet: Fleet) -> None:
    for node in NODES:
        props = fleet.show(node, "ActiveState", "SubState", "MainPID", "Type", "NotifyAccess", "WatchdogUSec",
                           "User", "UnitFileState", "StatusText", "NRestarts", "Restart")
        assert props["ActiveState"] == "active", (node, props)
        assert props["SubState"] == "running", (node, props)
        assert props["Type"] == "notify", props  # active means READY=1 arrived
        assert props["NotifyAccess"] == "main", props
        assert props["WatchdogUSec"] == f"{WATCHDOG_SEC}s", props
        assert props["UnitFileState"] == "enabled", props
        assert props["Restart"] == "always", props
        assert props["NRestarts"] == "0", props
        assert "device(s) online" in props["StatusText"], props  # STATUS= from the agent
        pid = props["MainPID"]
        owner = fleet.ssh(node, f"stat -c '%U %G' /proc/{pid}").split()
        assert owner == ["floorgate", "floorgate"], (node, owner)
        groups = fleet.ssh(node, f"grep ^Groups: /proc/{pid}/status; getent group dialout | cut -d: -f3")
        status_groups, dialout_gid = groups.splitlines()
        assert dialout_gid in status_groups.split()[1:], groups
        cmdline = fleet.ssh(node, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
        assert "/opt/floorgate/venv/bin/floorgate" in cmdline, cmdline
        assert "edge run --config /etc/floorgate/node.yaml" in cmdline, cmdline
        login = fleet.ssh(node, "getent passwd floorgate").strip().split(":")
        assert login[5:] == ["/var/lib/floorgate", "/usr/sbin/nologin"], login


def test_the_node_config_is_the_rendered_one_and_the_files_are_locked_down(fleet: Fleet) -> None:
    for node in NODES:
        deployed = yaml.safe_load(fleet.ssh(node, "cat /etc/floorgate/node.yaml"))
        assert deployed == fleet.expected_config[node]
        modes = fleet.ssh(node, "stat -c '%n %U:%G %a' /etc/floorgate /etc/floorgate/node.yaml /etc/floorgate/pki "
                                "/etc/floorgate/pki/{ca.crt,central.pub,node.key,tls.crt,tls.key} /var/lib/floorgate "
                                "/etc/floorgate/profiles/th-probe.yaml")
        assert modes.splitlines() == [
            "/etc/floorgate root:floorgate 750",
            "/etc/floorgate/node.yaml root:floorgate 640",
            "/etc/floorgate/pki root:floorgate 750",
            "/etc/floorgate/pki/ca.crt root:floorgate 644",
            "/etc/floorgate/pki/central.pub root:floorgate 644",
            "/etc/floorgate/pki/node.key root:floorgate 640",
            "/etc/floorgate/pki/tls.crt root:floorgate 644",
            "/etc/floorgate/pki/tls.key root:floorgate 640",
            "/var/lib/floorgate floorgate:floorgate 750",
            "/etc/floorgate/profiles/th-probe.yaml root:floorgate 640",
        ], modes
        rules = fleet.ssh(node, "cat /etc/udev/rules.d/99-floorgate-serial.rules")
        assert ('SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", ATTRS{serial}=="A50285BI", '
                'SYMLINK+="floorgate/scale-line", GROUP="dialout", MODE="0660"') in rules
        journald = fleet.ssh(node, "cat /etc/systemd/journald.conf.d/floorgate.conf")
        assert "SystemMaxUse=200M" in journald
        assert "RateLimitBurst=10000" in journald
        # the agent could not write its config or code even if it wanted to
        props = fleet.show(node, "ProtectSystem", "ReadWritePaths", "NoNewPrivileges", "LimitCORE")
        assert props == {"ProtectSystem": "strict", "ReadWritePaths": "/var/lib/floorgate", "NoNewPrivileges": "yes",
                         "LimitCORE": "0"}, props


def test_the_node_holds_its_own_certificate_and_signing_key(fleet: Fleet) -> None:
    for node in NODES:
        pem = fleet.ssh(node, "cat /etc/floorgate/pki/tls.crt").encode()
        cert = x509.load_pem_x509_certificate(pem)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node
        assert cert.fingerprint(hashes.SHA256()).hex() == fleet.certs[node].fingerprint
        other = next(n for n in NODES if n != node)
        assert cert.fingerprint(hashes.SHA256()).hex() != fleet.certs[other].fingerprint
        enrol = fleet.ssh(node, "runuser -u floorgate -- /opt/floorgate/venv/bin/floorgate edge enrol "
                                "--config /etc/floorgate/node.yaml")
        assert "existing signing key /etc/floorgate/pki/node.key" in enrol, enrol
        assert f"fingerprint {fleet.signing_fps[node]}" in enrol, enrol


def test_the_agent_logs_to_the_journal_and_answers_health(fleet: Fleet) -> None:
    for node in NODES:
        journal = fleet.ssh(node, "journalctl -u floorgate-edge --no-pager -o cat")
        assert f"edge agent {node} starting: 1 device(s) on 1 bus(es)" in journal, journal[-3000:]
        assert f"node {node}: ready (told systemd; watchdog every {WATCHDOG_SEC / 2:g} s)" in journal, journal[-3000:]
        health = _health(fleet, node)
        assert health["node"] == node
        assert health["status"] == "ok", health  # the broker is connected (over TLS with the node's certificate)
        assert health["dependencies"]["broker"]["ok"] is True, health
        assert health["devices"]["probe-1"]["online"] is True, health  # the profile from /etc/floorgate/profiles


def _health(fleet: Fleet, node: str, timeout_s: float = 30) -> dict[str, Any]:
    script = ("import json, urllib.request; print(urllib.request.urlopen("
              f"'http://{HTTP_LISTEN}/health', timeout=5).read().decode())")
    deadline = time.monotonic() + timeout_s
    while True:
        done = fleet.containers[node].ssh(f'python3 -c "{script}"', check=False)
        body = json.loads(done.stdout) if done.returncode == 0 else {}
        ready = body.get("status") == "ok" and (body.get("devices", {}).get("probe-1") or {}).get("online")
        if ready or time.monotonic() > deadline:
            return body or {"error": done.stderr}
        time.sleep(0.5)


def test_heartbeats_reach_the_broker_under_each_nodes_certificate(fleet: Fleet) -> None:
    deadline = time.monotonic() + 30
    seen: set[str] = set()
    while time.monotonic() < deadline and seen != set(NODES):
        seen = {t.split("/")[2] for t in fleet.observer.topics()}
        time.sleep(0.2)
    assert seen == set(NODES), f"heartbeats from {seen}\n{fleet.broker.log()[-3000:]}"
    log = fleet.broker.log()
    for node in NODES:  # the broker took the user name from the client certificate's CN
        assert f" as {node} " in log, log[-3000:]
        assert f"u'{node}'" in log, log[-3000:]


def test_a_config_that_does_not_validate_is_not_deployed(fleet: Fleet) -> None:
    node = NODES[0]
    before = fleet.ssh(node, "sha256sum /etc/floorgate/node.yaml")
    pid = fleet.show(node, "MainPID")["MainPID"]
    bad = {"edge_devices": [{"id": "probe-1", "profile": "no-such-profile", "bus": "probe-bus"}]}
    done = fleet.playbook("--limit", node, "-e", json.dumps(bad), log="invalid-config.log")
    assert done.returncode != 0, done.stdout[-3000:]
    assert "failed to validate" in done.stdout, done.stdout[-3000:]
    assert "no-such-profile" in done.stdout, done.stdout[-3000:]
    assert recap(done.stdout)[node]["failed"] == 1
    assert "RUNNING HANDLER [edge : Restart the edge agent]" not in done.stdout
    assert fleet.ssh(node, "sha256sum /etc/floorgate/node.yaml") == before
    props = fleet.show(node, "MainPID", "ActiveState", "NRestarts")
    assert props == {"MainPID": pid, "ActiveState": "active", "NRestarts": "0"}, props


def test_the_watchdog_restarts_an_agent_that_hangs(fleet: Fleet) -> None:
    node = NODES[1]
    pid = fleet.show(node, "MainPID")["MainPID"]
    fleet.ssh(node, f"kill -STOP {pid}")  # the event loop stops: no more WATCHDOG=1
    deadline = time.monotonic() + WATCHDOG_SEC + 30
    props: dict[str, str] = {}
    while time.monotonic() < deadline:
        props = fleet.show(node, "MainPID", "ActiveState", "NRestarts")
        if props["NRestarts"] == "1" and props["ActiveState"] == "active" and props["MainPID"] not in (pid, "0"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"not restarted: {props}\n{fleet.ssh(node, 'journalctl -n 30 --no-pager')}")
    journal = fleet.ssh(node, "journalctl -u floorgate-edge --no-pager -o cat")
    assert "Watchdog timeout" in journal, journal[-2000:]
    assert journal.count(f"edge agent {node} starting") == 2, journal[-2000:]
    health = _health(fleet, node)
    assert health["status"] == "ok", health

