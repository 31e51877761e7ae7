"""A small plant for the edge role: booted containers (tests/ansible/nspawn.py), a fleet PKI with a bundle per node in
the layout of ``floorgate central node add``, the broker role's Mosquitto on the host (mTLS, per-node ACL) with an
observer subscribed to the heartbeats as central, a simulated temperature probe on Modbus TCP, the wheelhouse, and an
inventory for ``ansible-playbook edge.yml`` — everything torn down on exit.

By hand (as root), to work on the role against live containers::

    .venv/bin/python -m tests.ansible.fleet /tmp/fleet      # prints the ansible-playbook line, Ctrl-C tears down
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.ansible import nspawn
from tests.ansible.support import FleetPki, Issued, ansible_env, build_wheelhouse, run_tool
from tests.broker_support import Recorder, RoleBroker, mqtt_client
from tests.procs import Proc
from tools.devservers import free_port

NODES = ["mill-a", "mill-b"]
WATCHDOG_SEC = 5
HTTP_LISTEN = "127.0.0.1:8181"
CENTRAL_DATA = "/var/lib/floorgate"
CENTRAL_API_PORT = 8000
NODE_EXTRA = {"heartbeat_interval_s": 1, "health_interval_s": 5, "uplink": {"retry_min_s": 0.2, "retry_max_s": 2}}


class FleetBroker(RoleBroker):
    """The broker role's Mosquitto, listening on every address so that the containers reach it through their veth
    (a client certificate is required, as the role configures it)."""

    def _write_config(self, port: int) -> None:
        super()._write_config(port)
        conf = self.directory / "conf.d" / "floorgate.conf"
        conf.write_text(conf.read_text().replace(f"listener {port} 127.0.0.1\n", f"listener {port}\n"))


@dataclass
class Fleet:
    containers: dict[str, nspawn.Container]
    env: dict[str, str]
    inventory: Path
    work: Path
    certs: dict[str, Issued]
    signing_fps: dict[str, str]
    signing_keys: dict[str, Path]
    expected_config: dict[str, dict[str, Any]]
    broker: FleetBroker
    observer: Recorder
    runs: dict[str, Any] = field(default_factory=dict)

    def ssh(self, node: str, command: str, **kw: Any) -> str:
        return self.containers[node].ssh(command, **kw).stdout

    def show(self, node: str, *props: str, unit: str = "floorgate-edge") -> dict[str, str]:
        out = self.ssh(node, f"systemctl show {unit} {' '.join('-p ' + p for p in props)}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def playbook(self, *args: str, log: str, playbook: str = "edge.yml") -> Any:
        """``ansible-playbook -i INVENTORY PLAYBOOK ARGS`` in ansible/; the output also goes to WORK/LOG."""
        return run_tool(["ansible-playbook", "-i", str(self.inventory), playbook, *args], self.env,
                        timeout_s=600, log=self.work / log)


def _empty_crl(pki: FleetPki, path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(pki.cert.subject).last_update(now)
           .next_update(now + dt.timedelta(days=30)).sign(pki.key, hashes.SHA256()))
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def node_vars(host_ip: str, sim_port: int) -> dict[str, Any]:
    return {
        "edge_buses": [{"id": "probe-bus", "kind": "tcp", "address": f"tcp://{host_ip}:{sim_port}"}],
        "edge_devices": [{"id": "probe-1", "profile": "th-probe", "bus": "probe-bus", "unit_id": 1,
                          "poll_groups": {"default": 1}}],
    }


@contextlib.contextmanager
def edge_fleet(work: Path, *, log: Any = print) -> Iterator[Fleet]:
    wheelhouse = work / "wheelhouse"
    started_at = time.monotonic()
    wheels = build_wheelhouse(wheelhouse)
    log(f"wheelhouse: {len(wheels)} wheels in {time.monotonic() - started_at:.0f} s")
    control_dir = Path(tempfile.mkdtemp(prefix="fgcp", dir="/tmp"))  # SSH socket paths must be short
    procs: list[Proc] = []
    broker: FleetBroker | None = None
    observer: Recorder | None = None
    try:
        with nspawn.containers(NODES, work, log=log) as started:
            containers = dict(zip(NODES, started, strict=True))
            host_ip = containers[NODES[0]].net.host_ip  # the broker's and the probe's address, as in a plant LAN

            pki_dir = work / "pki"
            pki = FleetPki(pki_dir)
            certs, signing = {}, {}
            for node in NODES:
                certs[node], signing[node] = pki.node_bundle(pki_dir, node)
            server_crt, server_key = pki.write(pki_dir / "broker", "server",
                                               pki.issue("broker", server_ips=[host_ip, "127.0.0.1"]))
            _empty_crl(pki, pki_dir / "crl.pem")
            # central's identities as `floorgate central ca client-cert --out pki/central[-ingest-N]` writes them
            pki.write(pki_dir / "central", "tls", pki.issue("floorgate:central"))
            shutil.copyfile(pki.ca_file, pki_dir / "central" / "ca.crt")
            for n in (1, 2):  # worker 2: the central test scales to two workers and back
                pki.write(pki_dir / f"central-ingest-{n}", "tls", pki.issue(f"floorgate:ingest-{n}"))
            observer_cert = pki.write(pki_dir / "observer", "tls", pki.issue("floorgate:observer"))
            broker = FleetBroker({"ca.crt": pki.ca_file, "crl.pem": pki_dir / "crl.pem", "server.crt": server_crt,
                                  "server.key": server_key}, nodes=NODES,
                                 central_identities=["floorgate:central", "floorgate:ingest-1", "floorgate:ingest-2",
                                                     "floorgate:observer"])
            broker.start()
            observer = mqtt_client(broker.port, pki.ca_file, observer_cert, client_id="observer")
            granted = observer.subscribe("floorgate/v1/+/heartbeat")
            assert granted == "Granted QoS 1", granted

            sim_port = free_port()
            sim = Proc("sim-th-probe", ["simulate", "th-probe", "--listen", f"tcp://{host_ip}:{sim_port}"], work)
            procs.append(sim.start())
            sim.wait_for_line("listening:")

            broker_url = f"mqtts://{host_ip}:{broker.port}"
            hosts = {node: {"ansible_host": c.net.guest_ip, **node_vars(host_ip, sim_port)}
                     for node, c in containers.items()}
            inventory = work / "hosts.yml"
            central_vars = {  # central on the first node: SQLite, one ingest worker beside the API's own ingest
                "central_database_url": f"sqlite:///{CENTRAL_DATA}/central.db",
                "central_jwt_secret": "test-jwt-secret-of-at-least-32-characters",
                "central_broker_url": f"mqtts://{host_ip}:{broker.port}",
                "central_metrics": {"kind": "sqlite", "path": f"{CENTRAL_DATA}/metrics.sqlite"},
                "central_api_port": CENTRAL_API_PORT,
                "central_ingest_workers": 1,
            }
            inventory.write_text(yaml.safe_dump({"all": {"children": {
                "edge": {"hosts": hosts},
                "central": {"hosts": {NODES[0]: {}}, "vars": central_vars},
            }, "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(work / "id_ed25519"),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3",
                "floorgate_wheelhouse": str(wheelhouse),
                "floorgate_pki_dir": str(pki_dir),
                "edge_broker_url": broker_url,
                "edge_watchdog_sec": WATCHDOG_SEC,
                "edge_restart_sec": 1,
                "edge_config_extra": NODE_EXTRA,
                "edge_serial_adapters": [{"name": "scale-line", "vendor": "0403", "product": "6001",
                                          "serial": "A50285BI"}],
            }}}, sort_keys=False))
            expected = {node: {
                "node_id": node, "data_dir": "/var/lib/floorgate", "key_file": "/etc/floorgate/pki/node.key",
                "central_keys_file": "/etc/floorgate/pki/central.pub", "profiles_dir": "/etc/floorgate/profiles",
                "broker": {"url": broker_url, "protocol": "5", "tls": {
                    "ca_file": "/etc/floorgate/pki/ca.crt", "cert_file": "/etc/floorgate/pki/tls.crt",
                    "key_file": "/etc/floorgate/pki/tls.key"}},
                "http": {"listen": HTTP_LISTEN}, "buses": node_vars(host_ip, sim_port)["edge_buses"],
                "devices": node_vars(host_ip, sim_port)["edge_devices"], **NODE_EXTRA,
            } for node in NODES}
            env = ansible_env(work / "ansible-home", control_dir)
            keys = {node: pki_dir / node / "node.key" for node in NODES}
            yield Fleet(containers, env, inventory, work, certs, signing, keys, expected, broker, observer)
    finally:
        if observer is not None:
            observer.close()
        for p in procs:
            p.stop()
        if broker is not None:
            broker.close()
        shutil.rmtree(control_dir, ignore_errors=True)


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill PID tears down too (not only Ctrl-C)
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    with edge_fleet(work) as fleet:
        env = " ".join(f"{k}={fleet.env[k]}" for k in ("ANSIBLE_CONFIG", "ANSIBLE_SSH_CONTROL_PATH_DIR"))
        print(f"up: {', '.join(f'{n} {c.net.guest_ip}' for n, c in fleet.containers.items())}")
        print(f"cd ansible && {env} ../.venv/bin/ansible-playbook -i {fleet.inventory} edge.yml")
        print(f"ssh: {' '.join(fleet.containers[NODES[0]].ssh_args())}")
        print("Ctrl-C tears everything down")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
