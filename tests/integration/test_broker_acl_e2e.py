"""Node identity end to end: a real ``floorgate edge run`` with the bundle of ``floorgate central node add`` talks
mqtts to the broker configured by the Ansible role (rendered from its templates), and a real ``floorgate central
ingest`` with central's client certificate (``central ca client-cert``) stores what it sends and acknowledges it —
the acknowledgements travel back over TLS to the node. Central's config names its TLS files before they exist:
the ``ca`` commands do not need them. After ``central node revoke`` central quarantines what the node sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from central.db.engine import make_engine, make_session_factory
from central.db.models import Node, QuarantineEntry, StreamMark
from edge.store.outbox import read_stats
from floorgate_cli import main
from tests.broker_support import RoleBroker
from tests.procs import Proc, central_yaml, node_yaml, wait_until
from tests.services import free_port

pytestmark = pytest.mark.integration

NODE = "tls-node-1"


def test_an_agent_with_its_bundle_reaches_central_over_mqtts_through_the_role_broker(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    pki_dir, bundle, central_dir = tmp_path / "pki", tmp_path / "bundles" / NODE, tmp_path / "central-tls"
    central_tls = {"ca_file": str(pki_dir / "ca.crt"), "cert_file": str(central_dir / "tls.crt"),
                   "key_file": str(central_dir / "tls.key")}
    broker_port = free_port()
    cfg = central_yaml(tmp_path, database_url=pg_url, broker_url="unused", client_id="unused", api_port=free_port(),
                       broker={"url": f"mqtts://127.0.0.1:{broker_port}", "protocol": "5",
                               "client_id": "floorgate-central", "tls": central_tls},
                       pki={"dir": str(pki_dir)})
    for args in (["migrate"], ["ca", "init"],
                 ["ca", "server-cert", "--dns", "localhost", "--ip", "127.0.0.1", "--out", str(tmp_path / "broker")],
                 ["ca", "client-cert", "--out", str(central_dir)],
                 ["node", "add", NODE, "--out", str(tmp_path / "bundles")]):
        assert main(["central", *args, "--config", str(cfg)]) == 0, capsys.readouterr()
    files = {"ca.crt": pki_dir / "ca.crt", "crl.pem": pki_dir / "crl.pem",
             "server.crt": tmp_path / "broker" / "server.crt", "server.key": tmp_path / "broker" / "server.key"}
    procs: list[Proc] = []
    broker = RoleBroker(files, nodes=[NODE], port=broker_port)  # the port the configs name
    engine = make_engine(pg_url)
    try:
        broker.start()
        probe = Proc("sim-probe", ["simulate", "th-probe", "--seed", "2"],
                     tmp_path).start()
        procs.append(probe)
        probe_addr = probe.wait_for_line("listening:")
        node_cfg = node_yaml(tmp_path, node_id=NODE, broker_url="unused", key_file=str(bundle / "node.key"),
                             broker={"url": f"mqtts://127.0.0.1:{broker_port}", "protocol": "5",
                                     "tls": {"ca_file": "bundles/tls-node-1/ca.crt",  # relative to node.yaml
                                             "cert_file": "bundles/tls-node-1/tls.crt",
                                             "key_file": "bundles/tls-node-1/tls.key"}},
                             devices=[{"id": "probe-1", "type": "th-probe", "address": probe_addr,
                                       "interval_s": 0.5}])
        ingest = Proc("central-ingest", ["central", "ingest", "--config", str(cfg)], tmp_path).start()
        procs.append(ingest)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)
        sessions = make_session_factory(engine)

        def heartbeat_seen() -> bool:
            with sessions() as s:
                node = s.get(Node, NODE)
                return node is not None and node.last_heartbeat_at is not None

        def stored() -> int:
            with sessions() as s:
                return sum(m.acked_seq for m in s.execute(select(StreamMark).where(StreamMark.node_id == NODE))
                           .scalars())

        wait_until("the node's heartbeat at central", heartbeat_seen, timeout_s=30, procs=procs)
        wait_until("records of the node stored at central", stored, timeout_s=30, procs=procs)
        acked = wait_until("central's acknowledgement back at the node", lambda: sum(
            s.acked for s in read_stats(tmp_path / "edge" / "outbox.db")[1].values()), timeout_s=30, procs=procs)
        assert acked >= 1
        log = broker.log()
        assert f"u'{NODE}'" in log  # the node's user name is its certificate's CN
        assert "u'floorgate:central'" in log
        assert "Denied" not in log  # the role's ACL lets both do their job

        # revoked at central: its signing key is gone, so what it sends from then on is quarantined (a running ingest
        # re-reads keys within a minute; a new one at once) — even before the broker has the new CRL
        assert main(["central", "node", "revoke", NODE, "--config", str(cfg), "--reason", "test"]) == 0
        ingest.stop()
        procs.append(Proc("central-ingest-2", ["central", "ingest", "--config", str(cfg)], tmp_path).start())

        def quarantined() -> list[str]:
            with sessions() as s:
                return list(s.execute(select(QuarantineEntry.reason).where(QuarantineEntry.node_id == NODE))
                            .scalars())

        reasons = wait_until("the revoked node's messages in quarantine", quarantined, timeout_s=30, procs=procs[2:])
        assert any("is revoked" in r for r in reasons), reasons
    finally:
        for p in reversed(procs):  # the agent before the simulator it polls
            p.stop()
        broker.close()
        engine.dispose()
