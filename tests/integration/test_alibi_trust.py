"""The alibi chain's trust anchors on real databases: the node's keys as the fleet CA bound them, and the head the
node signed — tampered with as someone with central's database (but not the CA key, nor the node's key) would.

- the node's key replaced in the database and the whole chain re-signed with one gross lowered → ``untrusted_key``
  (exit 1 of ``verify-alibi``), whether the key came in through ``node register`` or an UPDATE;
- a re-enrolment with the CA (a new key, the old chain signed with the old one, a record of the old key sent again
  after the rotation) → every entry verifies, at central and on the node (``floorgate edge alibi`` with the bundle's
  ``bindings.json``);
- the newest entries deleted at central while the node's signed head says central acknowledged them → ``truncated``;
  a head not yet acknowledged is in transit, not a problem; a stored head changed in the database is named.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Node
from central.fleet.nodes import node_statements, register_node, write_bindings
from central.fleet.pki import CertificateAuthority
from central.ingest.apply import ApplyResult, apply_batch
from central.tickets.alibi import Report, verify_chain
from central.tickets.alibi_trust import use_ca_cert
from edge.agent import OUTBOX_FILE
from edge.store.alibi import DAY_NS, AlibiMirror
from edge.store.outbox import NewRecord, Outbox
from sync.envelope import Batch, Record
from sync.signing import fingerprint, generate_key, public_key_text, save_private_key
from tests.alibi_support import central_yaml, fleet_ca, resign_chain, sql, store_signed_head, verify_cli
from tests.api_support import ApiHarness, build_api
from tests.downlink_support import TRUST

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODE = "mill-01"


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return fleet_ca(tmp_path / "pki")


def weighings(first: int, n: int) -> list[NewRecord]:
    return [NewRecord(kind="weighing", device="bridge-1",
                      data={"gross": f"{20000 + 10 * i}", "tare": "8420.5", "tare_preset": False,
                            "net": f"{11579.5 + 10 * i}", "unit": "kg", "stable": True, "trigger": "auto"})
            for i in range(first, first + n)]


class Node_:
    """A node's outbox with its alibi mirror (the real edge code), its records applied at central."""

    def __init__(self, tmp_path: Path, key: Ed25519PrivateKey) -> None:
        self.path = tmp_path / "data" / OUTBOX_FILE
        self.key = key
        self.box = Outbox(self.path, node_id=NODE, alibi=AlibiMirror(NODE, key))
        self.sent = 0

    def weigh(self, n: int) -> list[Record]:
        self.box.append("business", weighings(self.sent + 1, n))
        return self.box.pending("business", after_seq=self.sent, limit=1000)

    def send(self, sessions: sessionmaker[Session], records: list[Record]) -> ApplyResult:
        result = apply_batch(sessions, Batch(node=NODE, epoch=self.box.epoch, stream="business",
                                             records=tuple(records)))
        self.sent = max(self.sent, max(r.seq for r in records))
        return result

    def rekey(self, key: Ed25519PrivateKey) -> None:
        """The agent restarted with a new key (the bundle of ``node add --reissue``): the same outbox goes on."""
        self.box.close()
        self.key = key
        self.box = Outbox(self.path, node_id=NODE, alibi=AlibiMirror(NODE, key))

    def close(self) -> None:
        self.box.close()


def enrolled(tmp_path: Path, sessions: sessionmaker[Session], ca: CertificateAuthority, n: int = 8) -> Node_:
    node = Node_(tmp_path, generate_key())
    register_node(sessions, NODE, public_key_text(node.key), ca=ca)
    assert node.send(sessions, node.weigh(n)).alibi_rejected == []
    return node


def kinds(report: Report) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.kind, p.entries) for p in report.problems]


# -- keys ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["node register", "update"])
def test_a_replaced_key_with_a_re_signed_chain_is_untrusted(tmp_path: Path, pg_url: str,
                                                            sessions: sessionmaker[Session],
                                                            ca: CertificateAuthority, how: str) -> None:
    node = enrolled(tmp_path, sessions, ca)
    node.close()
    cfg = central_yaml(tmp_path, pg_url, ca.directory)
    assert verify_cli(cfg, NODE).returncode == 0
    forger = generate_key()
    fp = fingerprint(forger)
    if how == "node register":  # `floorgate central node register` without the CA key at hand
        register_node(sessions, NODE, public_key_text(forger))
    else:  # straight into the database
        sql(sessions, "UPDATE nodes SET public_key = :k, key_fingerprint = :fp WHERE node_id = :n",
            k=public_key_text(forger), fp=fp, n=NODE)
        sql(sessions, "UPDATE node_keys SET public_key = :k, fingerprint = :fp WHERE node_id = :n",
            k=public_key_text(forger), fp=fp, n=NODE)
    resign_chain(sessions, NODE, forger, gross={3: "20010"})  # was 20030: lowered in the entry and the weighing
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert kinds(report) == [("untrusted_key", ()), ("untrusted_key", tuple(range(1, 9)))]
    assert report.problems[0].message.startswith(f"node {NODE}: key {fp} is not trusted: ")
    assert report.problems[1].message.startswith(f"entries 1…8: signed only with key {fp}, which is not trusted")
    assert [k.fingerprint for k in report.untrusted_keys] == [fp]
    done = verify_cli(cfg, NODE)
    assert done.returncode == 1, done.stdout
    assert "NOT intact: 2 problem(s)" in done.stdout
    assert f"untrusted_key    node {NODE}: key {fp} is not trusted" in done.stdout
    done = verify_cli(cfg, NODE, "--json")
    body = json.loads(done.stdout)
    assert (body["ok"], body["untrusted_keys"][0]["fingerprint"]) == (False, fp)


def test_without_a_fleet_ca_no_key_is_trusted(tmp_path: Path, pg_url: str, sessions: sessionmaker[Session],
                                               ca: CertificateAuthority) -> None:
    node = enrolled(tmp_path, sessions, ca, n=3)
    node.close()
    report = verify_chain(sessions, NODE, ca_cert=None)
    assert kinds(report) == [("untrusted_key", ()), ("untrusted_key", (1, 2, 3))]
    assert "central has no fleet CA (pki.dir): no key can be anchored" in report.problems[0].message
    done = verify_cli(central_yaml(tmp_path, pg_url, None), NODE)
    assert done.returncode == 1
    (tmp_path / "elsewhere").mkdir()
    done = verify_cli(central_yaml(tmp_path, pg_url, tmp_path / "elsewhere"), NODE)  # pki.dir without ca.crt
    assert done.returncode == 2
    assert "fleet CA" in done.stderr
    assert "ca.crt" in done.stderr


def test_entries_of_a_rotated_key_made_after_its_interval_are_untrusted(tmp_path: Path,
                                                                        sessions: sessionmaker[Session],
                                                                        ca: CertificateAuthority) -> None:
    node = Node_(tmp_path, generate_key())
    old = node.key
    register_node(sessions, NODE, public_key_text(old), ca=ca)
    node.box.append("business", weighings(1, 2))
    later = time.time_ns() + 8 * DAY_NS  # beyond the rotated key's 7-day grace
    node.box.append("business", [NewRecord(kind="weighing", device="bridge-1", data={"gross": str(g), "unit": "kg"},
                                           ts_ns=later + g) for g in (1, 2, 3)])
    node.send(sessions, node.box.pending("business", after_seq=0, limit=10))
    node.close()
    assert verify_chain(sessions, NODE, ca_cert=ca.cert).ok  # the old key is still the node's: open-ended
    register_node(sessions, NODE, public_key_text(generate_key()), ca=ca)  # rotated now
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert kinds(report) == [("untrusted_key", (3, 4, 5))]
    assert report.problems[0].message.startswith(f"entries 3…5: signed only with key {fingerprint(old)}, which the "
                                                 "fleet CA vouches for only from ")
    assert report.problems[0].message.endswith("(rotated): outside that interval")


def _node_yaml(tmp_path: Path, bundle: Path) -> Path:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({"node_id": NODE, "data_dir": str(tmp_path / "data"),
                                   "key_file": str(bundle / "node.key"), "broker": {"url": "mqtt://127.0.0.1:1"},
                                   **TRUST}))
    return cfg


def edge_alibi(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floorgate_cli", "edge", "alibi", "--config", str(cfg), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_a_re_enrolment_with_the_ca_keeps_the_old_and_the_new_entries_verified(
        tmp_path: Path, pg_url: str, sessions: sessionmaker[Session], ca: CertificateAuthority) -> None:
    use_ca_cert(sessions, ca.cert)  # as ingest with pki.dir: arriving entries are checked with the key history
    node = Node_(tmp_path, generate_key())
    old = node.key
    register_node(sessions, NODE, public_key_text(old), ca=ca)
    records = node.weigh(4)
    assert node.send(sessions, records[:3]).alibi_rejected == []  # entry 4 still in flight at the rotation
    new = generate_key()
    register_node(sessions, NODE, public_key_text(new), ca=ca)  # `node add --reissue`: the CA binds the new key
    node.rekey(new)
    later = node.weigh(4)
    assert [r.seq for r in later] == [4, 5, 6, 7, 8]
    result = node.send(sessions, later)  # entry 4 of the old key arrives after the rotation: still accepted
    assert (result.applied, result.alibi_rejected) == (5, [])
    node.close()
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert (report.ok, report.entries, report.weighings_checked, report.problems) == (True, 8, 8, [])
    done = verify_cli(central_yaml(tmp_path, pg_url, ca.directory), NODE)
    assert (done.returncode, done.stdout.strip()) == (0, "node mill-01: chain of 8 entries verified (1…8)")

    # the node: its bundle (node.key, ca.crt, bindings.json) anchors both keys
    bundle = tmp_path / "bundle"
    write_bindings(bundle, ca, node_statements(sessions, NODE))
    save_private_key(new, bundle / "node.key")
    cfg = _node_yaml(tmp_path, bundle)
    done = edge_alibi(cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain verified: 8 entries (1…8)" in done.stdout
    assert "NOT anchored" not in done.stdout + done.stderr
    # the node's key file replaced and the chain re-signed with it: the CA never bound that key
    forger = generate_key()
    save_private_key(forger, bundle / "node.key")
    box = Outbox(tmp_path / "forged" / OUTBOX_FILE, node_id=NODE, alibi=AlibiMirror(NODE, forger))
    box.append("business", weighings(1, 3))
    box.close()
    cfg2 = tmp_path / "forged.yaml"
    cfg2.write_text(cfg.read_text().replace(str(tmp_path / "data"), str(tmp_path / "forged")))
    done = edge_alibi(cfg2, "--json")
    assert done.returncode == 1
    found = json.loads(done.stdout)
    assert found["anchored"] is True
    assert [(p["kind"], p["entries"]) for p in found["problems"]] == [
        ("untrusted_key", []), ("untrusted_key", []), ("untrusted_key", [1, 2, 3])]
    assert f"the key file {bundle / 'node.key'} holds key {fingerprint(forger)}, which the fleet CA did not bind" \
        in found["problems"][0]["message"]


def test_a_node_without_its_bindings_is_checked_with_a_warning(tmp_path: Path, ca: CertificateAuthority) -> None:
    key = generate_key()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    save_private_key(key, bundle / "node.key")
    box = Outbox(tmp_path / "data" / OUTBOX_FILE, node_id=NODE, alibi=AlibiMirror(NODE, key))
    box.append("business", weighings(1, 2))
    box.close()
    done = edge_alibi(_node_yaml(tmp_path, bundle))
    assert done.returncode == 0
    assert "chain verified: 2 entries (1…2); key NOT anchored in the fleet CA" in done.stdout
    assert f"warning: the node's key ({bundle / 'node.key'}, {fingerprint(key)}) is NOT anchored in the fleet CA: " \
           f"no {bundle / 'bindings.json'}" in done.stderr


# -- the node's signed head ---------------------------------------------------------------------------------------


def test_tail_truncation_at_central_is_named_with_the_nodes_signed_head(
        tmp_path: Path, pg_url: str, sessions: sessionmaker[Session], ca: CertificateAuthority) -> None:
    node = enrolled(tmp_path, sessions, ca, n=8)
    heads = store_signed_head(sessions, NODE, node.key, node.path)
    node.close()
    assert heads.alibi is not None
    assert heads.alibi.no == 8
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert report.ok
    assert report.head is not None
    assert (report.head.state, report.head.acked_seq) == ("held", 8)
    assert report.summary() == "node mill-01: chain of 8 entries verified (1…8); up to the node's signed head 8"
    # the newest entry and its weighing deleted: before the heads, that went unnoticed until the node weighed again
    sql(sessions, "DELETE FROM alibi_entries WHERE node_id = :n AND alibi_no = 8", n=NODE)
    sql(sessions, "DELETE FROM weighings WHERE node_id = :n AND alibi_no = 8", n=NODE)
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert kinds(report) == [("truncated", (8,))]
    message = report.problems[0].message
    assert message.startswith(f"entry 8 missing: the node signed head 8 (hash {heads.alibi.hash[:16]}…) at ")
    assert "; central holds up to 7 (the head's record, business seq 8, was acknowledged" in message
    assert report.head is not None
    assert report.head.state == "truncated"
    sql(sessions, "DELETE FROM alibi_entries WHERE node_id = :n AND alibi_no = 7", n=NODE)
    sql(sessions, "DELETE FROM weighings WHERE node_id = :n AND alibi_no = 7", n=NODE)
    done = verify_cli(central_yaml(tmp_path, pg_url, ca.directory), NODE, "--json")
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert [(p["kind"], p["entries"]) for p in body["problems"]] == [("truncated", [7, 8])]
    assert body["head"]["state"] == "truncated"
    assert body["head"]["no"] == 8


def test_a_head_not_yet_acknowledged_is_in_transit(tmp_path: Path, sessions: sessionmaker[Session],
                                                   ca: CertificateAuthority) -> None:
    node = Node_(tmp_path, generate_key())
    register_node(sessions, NODE, public_key_text(node.key), ca=ca)
    records = node.weigh(6)
    node.send(sessions, records[:4])
    store_signed_head(sessions, NODE, node.key, node.path)
    node.close()
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert report.ok
    assert report.summary() == ("node mill-01: chain of 4 entries verified (1…4); the node's signed head 6 is in "
                                "transit (business seq 6, central's mark 4)")
    assert report.to_json()["head"]["state"] == "in_transit"


def test_a_stored_head_changed_in_the_database_is_named(tmp_path: Path, sessions: sessionmaker[Session],
                                                        ca: CertificateAuthority) -> None:
    node = enrolled(tmp_path, sessions, ca, n=5)
    store_signed_head(sessions, NODE, node.key, node.path)
    node.close()
    with sessions.begin() as s:  # the head lowered so that a deleted tail would pass
        row = s.get(Node, NODE)
        assert row is not None
        assert row.heads is not None
        heads: dict[str, Any] = dict(row.heads)
        row.heads = {**heads, "alibi": {**heads["alibi"], "no": 3}}
    sql(sessions, "DELETE FROM alibi_entries WHERE node_id = :n AND alibi_no > 3", n=NODE)
    sql(sessions, "DELETE FROM weighings WHERE node_id = :n AND alibi_no > 3", n=NODE)
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert kinds(report) == [("head_invalid", ())]
    assert "is not the one in the signed heartbeat" in report.problems[0].message
    with sessions.begin() as s:  # and the signed body changed with it: its signature no longer verifies
        row = s.get(Node, NODE)
        assert row is not None
        assert row.heads_body is not None
        row.heads_body = row.heads_body.replace('"no":5', '"no":3')
    report = verify_chain(sessions, NODE, ca_cert=ca.cert)
    assert kinds(report) == [("head_invalid", ())]
    assert "the heartbeat's signature does not verify with the node's key" in report.problems[0].message


@pytest.fixture
def api(pg_url: str, tmp_path: Path, ca: CertificateAuthority) -> Iterator[ApiHarness]:
    yield from build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "metrics.db")},
                         pki={"dir": str(ca.directory)})


def test_the_api_reports_the_head_and_the_untrusted_keys(tmp_path: Path, api: ApiHarness,
                                                         ca: CertificateAuthority) -> None:
    node = enrolled(tmp_path, api.sessions, ca, n=4)
    store_signed_head(api.sessions, NODE, node.key, node.path)
    node.close()
    sql(api.sessions, "DELETE FROM alibi_entries WHERE node_id = :n AND alibi_no = 4", n=NODE)
    sql(api.sessions, "DELETE FROM weighings WHERE node_id = :n AND alibi_no = 4", n=NODE)
    forger = generate_key()
    register_node(api.sessions, NODE, public_key_text(forger))  # unbound: named whatever the entries say
    r = api.client.get(f"/api/v1/nodes/{NODE}/alibi/verify", headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is False
    assert [(p["kind"], p["entries"]) for p in report["problems"]] == [("untrusted_key", []), ("truncated", [4])]
    assert (report["head"]["no"], report["head"]["state"], report["head"]["acked_seq"]) == (4, "truncated", 4)
    assert [k["fingerprint"] for k in report["untrusted_keys"]] == [fingerprint(forger)]
