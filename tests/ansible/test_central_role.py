"""The central role for real, on the first container of the plant (tests/ansible/fleet.py) beside its edge agent:
``ansible-playbook central.yml`` writes central.yaml (no secret in it) and central.env (0600), migrates the SQLite
database once — the first run reports the migration as a change, the second run changes nothing — and runs the API
(``floorgate central run``, with ingest) and one ``floorgate-central-ingest@1`` worker, each with its own client
certificate at the broker role's Mosquitto. Once the nodes' signing keys are registered, central acknowledges what
both edge agents send: their backlog drains to zero — node → broker → central → node, all deployed by the roles."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from sync.signing import load_private_key, public_key_text
from tests.ansible.fleet import CENTRAL_API_PORT, HTTP_LISTEN, NODES, Fleet
from tests.ansible.support import changed_tasks, recap

pytestmark = [pytest.mark.ansible, pytest.mark.timeout(900)]

HOST = NODES[0]
UNITS = ["floorgate-central", "floorgate-central-ingest@1"]
AS_SERVICE_USER = ("set -a; . /etc/floorgate/central.env; set +a; cd /var/lib/floorgate; "
                   "runuser -u floorgate -- /opt/floorgate/venv/bin/floorgate")


@pytest.fixture(scope="module")
def central(fleet: Fleet) -> Fleet:
    started_at = time.monotonic()
    fleet.runs["central-first"] = fleet.playbook(log="central-converge.log", playbook="central.yml")
    converged_at = time.monotonic()
    fleet.runs["central-second"] = fleet.playbook(log="central-idempotence.log", playbook="central.yml")
    print(f"central role: converge {converged_at - started_at:.0f} s, second run "
          f"{time.monotonic() - converged_at:.0f} s")
    return fleet


def test_converges_migrates_once_and_a_second_run_changes_nothing(central: Fleet) -> None:
    first, second = central.runs["central-first"], central.runs["central-second"]
    assert first.returncode == 0, f"converge failed (see {central.work}/central-converge.log):\n{first.stdout[-6000:]}"
    assert recap(first.stdout)[HOST]["failed"] == 0
    migrate = first.stdout.split("TASK [central : Migrate the database to the installed version (once per play)]")[1]
    assert migrate.split("\n\n")[0].strip().splitlines()[-1].startswith(f"changed: [{HOST}]"), migrate[:500]
    assert second.returncode == 0, f"second run failed:\n{second.stdout[-6000:]}"
    counts = recap(second.stdout)[HOST]
    assert counts["changed"] == 0, f"the second run changed something: {changed_tasks(second.stdout)}"
    assert "ok: [" in second.stdout.split("TASK [central : Migrate the database")[1][:400]  # ran, no new revision


def test_the_services_run_as_their_user_with_their_own_broker_identity(central: Fleet) -> None:
    for unit in UNITS:
        props = central.show(HOST, "ActiveState", "MainPID", "UnitFileState", "NRestarts", unit=unit)
        assert props["ActiveState"] == "active", (unit, props)
        assert props["UnitFileState"] in ("enabled", "indirect"), (unit, props)
        owner = central.ssh(HOST, f"stat -c %U /proc/{props['MainPID']}").strip()
        assert owner == "floorgate", (unit, owner)
    environ = central.ssh(HOST, "systemctl show floorgate-central-ingest@1 -p Environment")
    assert "FLOORGATE_BROKER__TLS__CERT_FILE=/etc/floorgate/pki/central-ingest-1/tls.crt" in environ, environ
    assert "FLOORGATE_INGEST__METRICS_LISTEN=127.0.0.1:9464" in environ, environ
    deadline = time.monotonic() + 30
    while True:  # the worker's own /metrics (the role's drop-in), connected to the broker role's Mosquitto
        metrics = central.containers[HOST].ssh(
            "python3 -c \"import urllib.request; print(urllib.request.urlopen("
            "'http://127.0.0.1:9464/metrics', timeout=5).read().decode())\"", check=False).stdout
        if "floorgate_ingest_connected 1.0" in metrics or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "floorgate_ingest_connected 1.0" in metrics, metrics[-2000:]
    log = central.broker.log()
    for cn in ("floorgate:central", "floorgate:ingest-1"):
        assert f"u'{cn}'" in log, f"{cn} never connected:\n{log[-3000:]}"


def test_secrets_only_in_the_environment_file(central: Fleet) -> None:
    config = yaml.safe_load(central.ssh(HOST, "cat /etc/floorgate/central.yaml"))
    assert "database_url" not in config
    assert "jwt_secret" not in json.dumps(config)
    assert config["ingest"] == {"share_group": "ingest"}
    assert config["broker"]["tls"]["cert_file"] == "/etc/floorgate/pki/central/tls.crt"
    modes = central.ssh(HOST, "stat -c '%n %U:%G %a' /etc/floorgate/central.env /etc/floorgate/central.yaml "
                              "/var/lib/floorgate").splitlines()
    assert modes == ["/etc/floorgate/central.env root:root 600", "/etc/floorgate/central.yaml root:floorgate 640",
                     "/var/lib/floorgate floorgate:floorgate 750"], modes
    # migrated as the service user: the services can write the SQLite database
    assert central.ssh(HOST, "stat -c %U:%G /var/lib/floorgate/central.db").strip() == "floorgate:floorgate"
    env = central.ssh(HOST, "cat /etc/floorgate/central.env")
    assert 'FLOORGATE_DATABASE_URL="sqlite:////var/lib/floorgate/central.db"' in env
    assert 'FLOORGATE_AUTH__JWT_SECRET="test-jwt-secret-of-at-least-32-characters"' in env


def test_the_api_answers_and_central_acknowledges_the_nodes(central: Fleet) -> None:
    health = _get(central, f"http://127.0.0.1:{CENTRAL_API_PORT}/health")
    assert health.get("status") in ("ok", "degraded"), health
    for node in NODES:  # what an admin does for a node enrolled with `floorgate central node add`
        key = public_key_text(load_private_key(central.signing_keys[node]))
        out = central.ssh(HOST, f"{AS_SERVICE_USER} central node register {node} --public-key {key} "
                                "--config /etc/floorgate/central.yaml")
        assert f"node {node} registered" in out, out
    deadline = time.monotonic() + 60
    pending: dict[str, int] = {}
    while time.monotonic() < deadline:
        for node in NODES:
            backlog = _get(central, f"http://{HTTP_LISTEN}/health", node=node).get("backlog", {})
            pending[node] = sum(s.get("pending", 0) for s in backlog.values()) if backlog else -1
        if all(v == 0 for v in pending.values()):
            break
        time.sleep(1)
    assert all(v == 0 for v in pending.values()), (
        f"backlog not acknowledged: {pending}\n"
        f"{central.ssh(HOST, 'journalctl -u floorgate-central -u floorgate-central-ingest@1 -n 40 --no-pager')}")
    listed = central.ssh(HOST, f"{AS_SERVICE_USER} central node list --config /etc/floorgate/central.yaml")
    for node in NODES:
        assert node in listed, listed


def test_fewer_workers_stop_and_disable_the_surplus_ones(central: Fleet) -> None:
    """Scaling from two ingest workers back to one: worker 2 is stopped and disabled (it would go on taking its
    share of the nodes' batches), worker 1 and the API keep running; a run after that changes nothing."""
    two = central.playbook("-e", '{"central_ingest_workers": 2}', log="central-two.log", playbook="central.yml")
    assert two.returncode == 0, two.stdout[-6000:]
    second = "floorgate-central-ingest@2"
    assert central.show(HOST, "ActiveState", unit=second)["ActiveState"] == "active"
    back = central.playbook(log="central-one.log", playbook="central.yml")
    assert back.returncode == 0, back.stdout[-6000:]
    stopped = back.stdout.split("TASK [central : Stop and disable the surplus ingest workers]")[1].split("TASK [")[0]
    assert f"changed: [{HOST}] => (item={second}.service)" in stopped, stopped
    props = central.show(HOST, "ActiveState", "UnitFileState", unit=second)
    assert props["ActiveState"] == "inactive", props
    assert props["UnitFileState"] != "enabled", props
    for unit in UNITS:
        assert central.show(HOST, "ActiveState", unit=unit)["ActiveState"] == "active", unit
    again = central.playbook(log="central-one-again.log", playbook="central.yml")
    assert again.returncode == 0, again.stdout[-6000:]
    assert recap(again.stdout)[HOST]["changed"] == 0, changed_tasks(again.stdout)


def _get(fleet: Fleet, url: str, *, node: str = HOST) -> dict[str, Any]:
    script = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=5).read().decode())"
    done = fleet.containers[node].ssh(f'python3 -c "{script}"', check=False)
    if done.returncode != 0:  # a 503 raises: the body is still worth showing
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout)
