"""The broker role's access control on a real Mosquitto: the configuration and the dynamic-security file are rendered
from ``ansible/roles/broker`` with its defaults (tests/broker_support.py); certificates come from ``central.fleet.pki``.

Node A may publish its batches, heartbeats and command results and read its own acks, replays and commands —
nothing of node B's; central reads everybody's. A node cannot join central's ``$share`` group (the subscription
caveat of ``acl_file``: the plugin checks subscriptions), cannot take over another node's session by its client id,
and a client without a certificate or with one from another CA fails at TLS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from central.fleet import pki
from tests.broker_support import Recorder, RoleBroker, mqtt_client, tls_probe

pytestmark = pytest.mark.integration

A, B, C = "node-a", "node-b", "node-c"  # C has a valid certificate but is not in the broker's node list
CENTRAL = "floorgate:central"
P = "floorgate/v1"
NOT_AUTHORIZED = "Not authorized"
ACCEPTED = ("Success", "No matching subscribers")  # PUBACK reason codes 0x00 and 0x10


@dataclass
class Fleet:
    ca: pki.CertificateAuthority
    dir: Path
    foreign_ca: Path

    def cert(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def _write(d: Path, name: str, issued: pki.Issued) -> None:
    pki.write_certificate(d / f"{name}.crt", issued.cert)
    pki.write_private_key(d / f"{name}.key", issued.key)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    d = tmp_path_factory.mktemp("fleet")
    ca = pki.init_ca(d / "pki")
    _write(d, "server", pki.issue(ca, kind="server", common_name="localhost", dns_names=("localhost",),
                                  ip_addresses=("127.0.0.1",)))
    for node in (A, B, C):
        _write(d, node, pki.issue(ca, kind="node", common_name=node))
    _write(d, "central", pki.issue(ca, kind="client", common_name=CENTRAL))
    for i in (1, 2):  # one certificate per ingest worker: the client id is the CN
        _write(d, f"ingest-{i}", pki.issue(ca, kind="client", common_name=f"floorgate:ingest-{i}"))
    foreign = pki.init_ca(d / "foreign")  # another CA, issuing a certificate with A's name
    _write(d, "forged-a", pki.issue(foreign, kind="node", common_name=A))
    return Fleet(ca=ca, dir=d, foreign_ca=foreign.cert_path)


@pytest.fixture(scope="module")
def broker(fleet: Fleet) -> Iterator[RoleBroker]:
    files = {"ca.crt": fleet.ca.cert_path, "crl.pem": fleet.ca.crl_path, "server.crt": fleet.dir / "server.crt",
             "server.key": fleet.dir / "server.key"}
    with RoleBroker(files, nodes=[A, B], central_identities=[CENTRAL, "floorgate:ingest-1", "floorgate:ingest-2"],
                    ) as server:
        yield server


class Clients:
    def __init__(self, broker: RoleBroker, fleet: Fleet) -> None:
        self.broker, self.fleet, self.open = broker, fleet, []  # type: list[Recorder]

    def connect(self, cert: str | None, client_id: str, *, ca_file: Path | None = None) -> Recorder:
        rec = mqtt_client(self.broker.port, ca_file or self.fleet.ca.cert_path,
                          self.fleet.cert(cert) if cert else None, client_id=client_id)
        self.open.append(rec)
        return rec

    def close(self) -> None:
        for rec in self.open:
            rec.close()


@pytest.fixture
def clients(broker: RoleBroker, fleet: Fleet, unique_id: str) -> Iterator[Clients]:
    c = Clients(broker, fleet)
    yield c
    c.close()


def _settle(*recs: Recorder, count: int, timeout_s: float = 3) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(len(r.messages) for r in recs) < count:
        time.sleep(0.02)


def test_the_rendered_files_are_the_roles(broker: RoleBroker) -> None:
    conf = broker.rendered["floorgate.conf"]
    for line in ("require_certificate true", "use_identity_as_username true", "use_username_as_clientid true",
                 "allow_anonymous false", f"crlfile {broker.cert_dir}/crl.pem", "tls_version tlsv1.2"):
        assert line in conf.splitlines(), line
    directives = [line.split()[0] for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    assert "acl_file" not in directives  # it would grant every subscription before the plugin is asked
    assert "plugin" in directives
    import json

    dynsec = json.loads(broker.rendered["dynamic-security.json"])
    assert {c["username"] for c in dynsec["clients"]} == {A, B, CENTRAL, "floorgate:ingest-1", "floorgate:ingest-2"}
    assert dynsec["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                          "subscribe": False, "unsubscribe": True}


def test_a_node_publishes_its_own_topics_and_receives_its_own_acks(clients: Clients) -> None:
    central = clients.connect("central", "central-1")
    assert central.subscribe(f"$share/ingest/{P}/+/up/+") == "Granted QoS 1"
    assert central.subscribe(f"{P}/+/heartbeat") == "Granted QoS 1"
    assert central.subscribe(f"$share/ingest/{P}/+/cmd/result") == "Granted QoS 1"
    a = clients.connect(A, "floorgate-edge-node-a")
    for leaf in ("ack", "replay", "cmd"):
        assert a.subscribe(f"{P}/{A}/{leaf}") == "Granted QoS 1"
    for topic in (f"{P}/{A}/up/business", f"{P}/{A}/up/readings", f"{P}/{A}/heartbeat", f"{P}/{A}/cmd/result"):
        assert a.publish(topic) == "Success"
    _settle(central, count=4)
    assert sorted(central.topics()) == sorted([f"{P}/{A}/up/business", f"{P}/{A}/up/readings", f"{P}/{A}/heartbeat",
                                               f"{P}/{A}/cmd/result"])
    for leaf in ("ack", "replay", "cmd"):
        assert central.publish(f"{P}/{A}/{leaf}", leaf.encode()) == "Success"
    assert central.publish(f"{P}/_central/ping", b"") in ("Success", "No matching subscribers")
    _settle(a, count=3)
    assert sorted(a.messages) == sorted([(f"{P}/{A}/ack", b"ack"), (f"{P}/{A}/replay", b"replay"),
                                         (f"{P}/{A}/cmd", b"cmd")])


def test_a_node_cannot_publish_for_another_node_nor_anywhere_else(clients: Clients) -> None:
    central = clients.connect("central", "central-2")
    assert central.subscribe(f"{P}/#") == NOT_AUTHORIZED  # central, too, only where it needs to
    for leaf in ("+/up/+", "+/heartbeat", "+/cmd/result"):
        assert central.subscribe(f"{P}/{leaf}") == "Granted QoS 1"
    a = clients.connect(A, "floorgate-edge-node-a")
    for topic in (f"{P}/{B}/up/business", f"{P}/{B}/heartbeat", f"{P}/{B}/cmd/result", f"{P}/{A}/ack",
                  f"{P}/{B}/ack", f"{P}/{A}/cmd", f"{P}/{A}/up/business/x", "elsewhere", f"{P}/_central/ping"):
        assert a.publish(topic) == NOT_AUTHORIZED, topic
    b = clients.connect(B, "floorgate-edge-node-b")
    assert b.publish(f"{P}/{B}/up/business", b"from b") == "Success"
    _settle(central, count=1)
    time.sleep(0.2)
    assert central.messages == [(f"{P}/{B}/up/business", b"from b")]  # none of A's attempts arrived


def test_a_node_cannot_read_another_nodes_acks_or_commands(clients: Clients) -> None:
    a = clients.connect(A, "floorgate-edge-node-a")
    b = clients.connect(B, "floorgate-edge-node-b")
    for topic in (f"{P}/{B}/ack", f"{P}/{B}/cmd", f"{P}/{B}/replay", f"{P}/+/ack", f"{P}/#", "#"):
        assert a.subscribe(topic) == NOT_AUTHORIZED, topic
    for leaf in ("ack", "cmd"):
        assert b.subscribe(f"{P}/{B}/{leaf}") == "Granted QoS 1"
    central = clients.connect("central", "central-3")
    for leaf in ("ack", "cmd"):
        assert central.publish(f"{P}/{B}/{leaf}", b"for b") == "Success"
    _settle(b, count=2)
    time.sleep(0.2)
    assert sorted(b.topics()) == [f"{P}/{B}/ack", f"{P}/{B}/cmd"]
    assert a.messages == []


def test_a_node_cannot_join_centrals_shared_subscription_so_central_gets_every_batch(clients: Clients,
                                                                                    unique_id: str) -> None:
    """The subscription caveat: with acl_file a node could subscribe to $share/ingest/… and be dealt (and drop)
    half of the batches. The plugin refuses the subscription; central's members get all of them."""
    members = [clients.connect(f"ingest-{i}", f"ingest-{i}") for i in (1, 2)]
    group = unique_id
    for m in members:
        assert m.subscribe(f"$share/{group}/{P}/+/up/+") == "Granted QoS 1"
    a = clients.connect(A, "floorgate-edge-node-a")
    for topic in (f"$share/{group}/{P}/+/up/+", f"$share/{group}/{P}/{B}/up/+", f"$share/{group}/{P}/{A}/ack",
                  f"{P}/+/up/+", f"{P}/{B}/up/business"):
        assert a.subscribe(topic) == NOT_AUTHORIZED, topic
    b = clients.connect(B, "floorgate-edge-node-b")
    for i in range(20):
        assert b.publish(f"{P}/{B}/up/business", str(i).encode()) == "Success"
    _settle(*members, count=20)
    got = sorted(int(p) for m in members for _, p in m.messages)
    assert got == list(range(20))
    assert all(m.messages for m in members)  # really shared between the two
    assert a.messages == []


def test_a_node_not_on_the_broker_list_connects_but_may_do_nothing(clients: Clients) -> None:
    c = clients.connect(C, "floorgate-edge-node-c")
    assert c.publish(f"{P}/{C}/up/business") == NOT_AUTHORIZED
    assert c.subscribe(f"{P}/{C}/ack") == NOT_AUTHORIZED


def test_a_node_cannot_take_over_another_nodes_session_by_its_client_id(clients: Clients) -> None:
    a = clients.connect(A, "floorgate-edge-node-a")
    b = clients.connect(B, "floorgate-edge-node-a")  # B pretends to be A's agent
    time.sleep(0.3)
    assert a.client.is_connected()
    assert not a.disconnects
    assert b.publish(f"{P}/{B}/heartbeat") in ACCEPTED
    assert b.publish(f"{P}/{A}/heartbeat") == NOT_AUTHORIZED


def test_no_certificate_and_a_foreign_certificate_fail_at_tls(broker: RoleBroker, fleet: Fleet) -> None:
    assert tls_probe(broker.port, fleet.ca.cert_path, fleet.cert(A)) == "connack"  # the probe itself works
    before = broker.log()
    no_cert = tls_probe(broker.port, fleet.ca.cert_path, None)
    forged = tls_probe(broker.port, fleet.ca.cert_path, fleet.cert("forged-a"))
    assert no_cert != "connack", no_cert
    assert forged != "connack", forged
    time.sleep(0.2)
    log = broker.log()[len(before):]
    assert "peer did not return a certificate" in log, log
    assert "certificate verify failed" in log, log
    assert "New client connected" not in log  # neither got as far as an MQTT session
    # and a client refuses a broker whose certificate is not from the CA it trusts
    assert tls_probe(broker.port, fleet.foreign_ca, fleet.cert(A)).startswith("SSLCertVerificationError")


def test_a_revoked_node_is_refused_once_the_broker_has_the_new_crl_and_restarts(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`node revoke` rewrites crl.pem; the role copies it and restarts Mosquitto. A reload (SIGHUP) alone refuses
    new connections of the revoked node but leaves a connected one connected — hence the restart."""
    from central.db import migrate
    from central.db.engine import make_engine
    from floorgate_cli import main
    from tests.procs import write_yaml

    engine = make_engine(pg_url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    cfg = str(write_yaml(tmp_path / "central.yaml", {
        "database_url": pg_url, "metrics": {"kind": "sqlite", "path": str(tmp_path / "m.sqlite")},
        "pki": {"dir": str(tmp_path / "pki")}}))
    for args in (["ca", "init"], ["ca", "server-cert", "--dns", "localhost", "--ip", "127.0.0.1", "--out",
                                  str(tmp_path / "broker")],
                 ["node", "add", A, "--out", str(tmp_path / "bundles")],
                 ["node", "add", B, "--out", str(tmp_path / "bundles")]):
        assert main(["central", *args, "--config", cfg]) == 0, capsys.readouterr()
    pki_dir, bundles = tmp_path / "pki", tmp_path / "bundles"
    files = {"ca.crt": pki_dir / "ca.crt", "crl.pem": pki_dir / "crl.pem",
             "server.crt": tmp_path / "broker" / "server.crt", "server.key": tmp_path / "broker" / "server.key"}

    def bundle(node: str) -> tuple[Path, Path]:
        return bundles / node / "tls.crt", bundles / node / "tls.key"

    with RoleBroker(files, nodes=[A, B]) as broker:
        a = mqtt_client(broker.port, bundles / A / "ca.crt", bundle(A), client_id="agent-a")
        try:
            assert a.publish(f"{P}/{A}/heartbeat") in ACCEPTED
            assert main(["central", "node", "revoke", A, "--config", cfg, "--reason", "stolen"]) == 0
            broker.update_crl(pki_dir / "crl.pem")  # the role's copy task
            broker.reload()  # SIGHUP
            time.sleep(0.3)
            assert tls_probe(broker.port, pki_dir / "ca.crt", bundle(A)) != "connack"
            assert tls_probe(broker.port, pki_dir / "ca.crt", bundle(B)) == "connack"
            assert a.publish(f"{P}/{A}/heartbeat") in ACCEPTED  # still connected after the reload
            broker.restart()  # the role's handler
            deadline = time.monotonic() + 5
            while a.client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not a.client.is_connected()
            time.sleep(1.5)  # paho reconnects by itself after 1 s: the broker must refuse it
            assert not a.client.is_connected()
            refused = tls_probe(broker.port, pki_dir / "ca.crt", bundle(A))
            # refused in the handshake; the client sees the "certificate revoked" alert, or — TLS 1.3 checks the
            # client certificate after the client's side is done — only the closed connection (seen both ways)
            assert refused != "connack"
            assert "revoked" in refused or "EOF" in refused or "closed" in refused, refused
            assert tls_probe(broker.port, pki_dir / "ca.crt", bundle(B)) == "connack"
            after_restart = re.split(r"mosquitto version \S+ running", broker.log())[-1]
            assert "certificate verify failed" in after_restart
            assert "as node-a" not in after_restart
        finally:
            a.close()


def test_an_expired_crl_locks_everybody_out(tmp_path: Path, fleet: Fleet) -> None:
    """Why `central ca crl` has to run before crl.pem's next update: OpenSSL then refuses every client."""
    from datetime import UTC, datetime, timedelta

    ca = pki.load_ca(fleet.ca.directory)
    ca = pki.CertificateAuthority(key=ca.key, cert=ca.cert, directory=tmp_path)  # a CRL of its own, same CA
    pki.write_crl(ca, [], days=1, now=datetime.now(UTC) - timedelta(days=2))
    files = {"ca.crt": fleet.ca.cert_path, "crl.pem": ca.crl_path, "server.crt": fleet.dir / "server.crt",
             "server.key": fleet.dir / "server.key"}
    with RoleBroker(files, nodes=[A]) as broker:
        assert tls_probe(broker.port, fleet.ca.cert_path, fleet.cert(A)) != "connack"
        pki.write_crl(ca, [], days=30)
        broker.update_crl(ca.crl_path)
        broker.restart()
        assert tls_probe(broker.port, fleet.ca.cert_path, fleet.cert(A)) == "connack"
