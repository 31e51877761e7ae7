"""The alibi mirror end to end on real databases: chains made by the real edge code (AlibiMirror on a SQLite outbox,
the node key registered at central and bound by a fleet CA), applied with central's real ``apply_batch``, then
re-checked by ``floorgate central verify-alibi`` (a subprocess) and ``GET /api/v1/nodes/{node_id}/alibi/verify``.

Central stores every weighing field exactly as delivered and the entry in the same transaction; an untouched chain
verifies; altering, deleting, inserting or reordering one entry in central's copy, or altering a weighing row, is
each named with the entry number and the kind."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import AlibiEntry, QuarantineEntry, Weighing
from central.fleet.nodes import register_node
from central.fleet.pki import CertificateAuthority
from central.ingest.apply import ApplyResult, apply_batch
from central.tickets.alibi import Report, verify_chain
from edge.store.alibi import AlibiMirror
from edge.store.outbox import NewRecord, Outbox
from sync.alibi import body_hash
from sync.envelope import Batch, Record
from sync.signing import canonical_json, generate_key, public_key_text, sign
from tests.alibi_support import central_yaml, fleet_ca, verify_cli
from tests.api_support import ApiHarness, build_api

pytestmark = pytest.mark.integration

FLEET: dict[str, CertificateAuthority] = {}  # the fleet CA of this module's tests (``_fleet_ca``)


@pytest.fixture(scope="module", autouse=True)
def _fleet_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertificateAuthority]:
    FLEET["ca"] = fleet_ca(tmp_path_factory.mktemp("pki"))
    yield FLEET["ca"]
    FLEET.clear()

DATA: list[dict[str, Any]] = [
    {"gross": "24560", "unit": "kg", "scale_serial": "B123456", "instrument_alibi": "004711", "trigger": "auto"},
    {"gross": "32980.5", "tare": "8420.5", "tare_preset": True, "net": "24560.0", "unit": "kg", "trigger": "command",
     "reference": "T-000123", "vehicle": "B-AB 1234", "partner": "P-17", "article": "WHEAT"},
    {"gross": "18420", "tare": "8420", "tare_preset": False, "net": "10000", "unit": "kg", "trigger": "automatic"},
]


def data(i: int) -> dict[str, Any]:
    base = DATA[i - 1] if i <= len(DATA) else {"gross": str(20000 + 10 * i), "unit": "kg", "trigger": "auto"}
    return {"stable": True, "raw": f"S S {base['gross']} kg", **base}


@dataclass
class Chain:
    node: str
    key: Ed25519PrivateKey
    sessions: sessionmaker[Session]
    records: list[Record]
    result: ApplyResult
    epoch: str


def build_chain(tmp_path: Path, sessions: sessionmaker[Session], node: str, n: int = 8, *,
                register: bool = True) -> Chain:
    """``n`` weighings through the real edge outbox with its alibi mirror, applied at central in one batch."""
    key = generate_key()
    box = Outbox(tmp_path / f"{node}.db", node_id=node, alibi=AlibiMirror(node, key))
    box.append("business", [NewRecord(kind="weighing", device="bridge-1", data=data(i)) for i in range(1, n + 1)])
    records = box.pending("business", after_seq=0, limit=1000)
    epoch = box.epoch
    box.close()
    if register:
        register_node(sessions, node, public_key_text(key), ca=FLEET["ca"])
    result = apply_batch(sessions, Batch(node=node, epoch=epoch, stream="business", records=tuple(records)))
    return Chain(node, key, sessions, records, result, epoch)


@pytest.fixture(params=["sqlite", "postgres"])
def any_sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'central.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def api(pg_url: str, tmp_path: Path) -> Iterator[ApiHarness]:
    """Central's API on Postgres with the module's fleet CA (``pki.dir``): the verify route checks keys with it."""
    yield from build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "metrics.db")},
                         pki={"dir": str(FLEET["ca"].directory)})


def sql(sessions: sessionmaker[Session], statement: str, **params: object) -> None:
    with sessions.begin() as s:
        s.execute(text(statement), params)


def verify(sessions: sessionmaker[Session], node: str) -> Report:
    return verify_chain(sessions, node, ca_cert=FLEET["ca"].cert)


def problems(sessions: sessionmaker[Session], node: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.kind, p.entries) for p in verify(sessions, node).problems]


def cli(tmp_path: Path, url: str, node: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return verify_cli(central_yaml(tmp_path, url, FLEET["ca"].directory), node, *extra)


# -- storing ----------------------------------------------------------------------------------------------------------


def test_apply_stores_the_weighing_fields_exactly_and_the_alibi_entry(
        tmp_path: Path, any_sessions: sessionmaker[Session]) -> None:
    chain = build_chain(tmp_path, any_sessions, "mill-01", n=4)
    assert (chain.result.applied, chain.result.rejected, chain.result.alibi_rejected) == (4, [], [])
    with any_sessions() as s:
        ws = s.execute(select(Weighing).order_by(Weighing.seq)).scalars().all()
        entries = s.execute(select(AlibiEntry).order_by(AlibiEntry.alibi_no)).scalars().all()
    w1, w2, w3, _ = ws
    assert (w1.gross_as_delivered, w1.tare, w1.net, w1.tare_preset) == ("24560", None, None, None)
    assert (w1.instrument_alibi, w1.scale_serial, w1.trigger, w1.alibi_no) == ("004711", "B123456", "auto", 1)
    assert w2.gross_as_delivered == "32980.5"
    assert (w2.tare_as_delivered, w2.net_as_delivered, w2.tare_preset) == ("8420.5", "24560.0", True)  # own digits
    assert (w2.reference, w2.vehicle, w2.trigger, w2.alibi_no) == ("T-000123", "B-AB 1234", "command", 2)
    assert (w3.tare, w3.net, w3.tare_preset, w3.trigger) == (Decimal("8420"), Decimal("10000"), False, "auto")
    assert [e.alibi_no for e in entries] == [1, 2, 3, 4]
    for e, r in zip(entries, chain.records, strict=True):
        part = r.data["alibi"]
        assert (e.record_id, e.body, e.hash, e.sig) == (r.record_id, part["body"], part["hash"], part["sig"])
        assert e.prev_hash == json.loads(part["body"])["prev_hash"]
        assert abs(e.weighed_at.timestamp() - r.ts_ns / 1e9) < 1e-3
    assert json.loads(entries[1].body)["net"] == "24560.0"  # the delivered text, verbatim
    # a resent batch changes nothing
    again = apply_batch(any_sessions, Batch(node="mill-01", epoch=chain.epoch, stream="business",
                                            records=tuple(chain.records)))
    assert (again.applied, again.duplicates) == (0, 4)
    assert verify(any_sessions, "mill-01").ok


def test_a_record_without_alibi_from_an_older_node_is_still_accepted(sessions: sessionmaker[Session]) -> None:
    old = Record(seq=1, record_id="w-1", kind="weighing", ts_ns=1_700_000_000_000_000_000, device="bridge-1",
                 data={"gross": "24560", "unit": "kg", "scale_serial": "B1", "raw": "S S 24560 kg"})
    r = apply_batch(sessions, Batch(node="old-node", epoch="e1", stream="business", records=(old,)))
    assert (r.applied, r.rejected, r.alibi_rejected) == (1, [], [])
    with sessions() as s:
        w = s.execute(select(Weighing)).scalar_one()
        assert (w.gross_as_delivered, w.alibi_no, w.tare, w.trigger) == ("24560", None, None, None)
        assert s.execute(select(func.count()).select_from(AlibiEntry)).scalar_one() == 0


def _tamper_sig(part: dict[str, Any]) -> dict[str, Any]:
    return {**part, "sig": sign(generate_key(), part["body"].encode())}


def _tamper_missing(part: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in part.items() if k != "hash"}


@pytest.mark.parametrize(("tamper", "reason"), [
    (_tamper_missing, "data.alibi: missing hash"),
    (_tamper_sig, "entry 2: signature does not match the node's registered key"),
    ("gross", "entry 2: body.gross '32980.5' is not the record's '32981.5'"),
])
def test_a_malformed_alibi_part_keeps_the_weighing_and_quarantines_a_copy(
        tmp_path: Path, sessions: sessionmaker[Session], tamper: Any, reason: str) -> None:
    key = generate_key()
    box = Outbox(tmp_path / "o.db", node_id="mill-01", alibi=AlibiMirror("mill-01", key))
    box.append("business", [NewRecord(kind="weighing", device="bridge-1", data=data(i)) for i in (1, 2)])
    one, two = box.pending("business", after_seq=0, limit=10)
    box.close()
    if tamper == "gross":  # the record says something else than the entry signed for it
        two = replace(two, data={**two.data, "gross": "32981.5"})
    else:
        two = replace(two, data={**two.data, "alibi": tamper(dict(two.data["alibi"]))})
    register_node(sessions, "mill-01", public_key_text(key), ca=FLEET["ca"])
    r = apply_batch(sessions, Batch(node="mill-01", epoch="e1", stream="business", records=(one, two)))
    assert (r.applied, r.rejected, r.alibi_rejected, r.acked_seq) == (2, [], [2], 2)
    with sessions() as s:
        ws = s.execute(select(Weighing).order_by(Weighing.seq)).scalars().all()
        assert [(w.seq, w.alibi_no) for w in ws] == [(1, 1), (2, 2)]  # the weighing is kept, with its number
        assert s.execute(select(AlibiEntry.alibi_no)).scalars().all() == [1]
        q = s.execute(select(QuarantineEntry)).scalar_one()
    assert q.reason.startswith("alibi part not stored: record seq 2")
    assert reason in q.reason
    assert q.reason.endswith("the weighing itself was applied")
    assert json.loads(q.payload)["id"] == two.record_id
    # central's copy now lacks entry 2, and verify says so
    found = verify(sessions, "mill-01").problems
    assert [(p.kind, p.entries) for p in found] == [("removed", (2,))]
    assert f"record {two.record_id}" in found[0].message


def test_a_weighing_central_cannot_store_keeps_its_alibi_entry(tmp_path: Path, sessions: sessionmaker[Session]
                                                               ) -> None:
    key = generate_key()
    box = Outbox(tmp_path / "o.db", node_id="mill-01", alibi=AlibiMirror("mill-01", key))
    box.append("business", [
        NewRecord(kind="weighing", device="bridge-1", data=data(1)),
        NewRecord(kind="weighing", device="bridge-1", data={"net": "10500", "tare": "14960", "unit": "kg"}),
        NewRecord(kind="weighing", device="bridge-1", data={"gross": "24560.1234567", "unit": "kg"}),
    ])
    records = box.pending("business", after_seq=0, limit=10)
    box.close()
    register_node(sessions, "mill-01", public_key_text(key), ca=FLEET["ca"])
    r = apply_batch(sessions, Batch(node="mill-01", epoch="e1", stream="business", records=tuple(records)))
    assert (r.rejected, r.acked_seq) == ([3], 3)
    with sessions() as s:
        reasons = s.execute(select(QuarantineEntry.reason).order_by(QuarantineEntry.id)).scalars().all()
        assert s.execute(select(AlibiEntry.alibi_no).order_by(AlibiEntry.alibi_no)).scalars().all() == [1, 2, 3]
        # net + tare only: stored as delivered, the gross is not computed
        tared = s.execute(select(Weighing).where(Weighing.alibi_no == 2)).scalar_one()
        assert (tared.gross_as_delivered, tared.tare_as_delivered, tared.net_as_delivered) == (None, "14960", "10500")
    assert "data.gross: '24560.1234567' has more than 6 decimal places" in reasons[0]
    # the chain is whole; the weighing it mirrors that central could not store is named by verify
    assert problems(sessions, "mill-01") == [("weighing_missing", (3,))]


def test_a_second_chain_from_a_replaced_outbox_keeps_the_weighings_and_quarantines_the_clash(
        tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    build_chain(tmp_path / "a", sessions, "mill-01", n=2)
    second = build_chain(tmp_path / "b", sessions, "mill-01", n=1)  # new disk: new epoch, new key, entry 1 again
    assert (second.result.applied, second.result.alibi_rejected) == (1, [1])
    with sessions() as s:
        reason = s.execute(select(QuarantineEntry.reason)).scalar_one()
        assert s.execute(select(func.count()).select_from(Weighing)).scalar_one() == 3
    assert "entry 1 of node mill-01 is already held with another hash" in reason


# -- verifying --------------------------------------------------------------------------------------------------------


def test_an_untouched_chain_verifies(tmp_path: Path, pg_url: str, sessions: sessionmaker[Session]) -> None:
    build_chain(tmp_path, sessions, "mill-01", n=8)
    done = cli(tmp_path, pg_url, "mill-01")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "node mill-01: chain of 8 entries verified (1…8)"
    done = cli(tmp_path, pg_url, "mill-01", "--json")
    report = json.loads(done.stdout)
    assert (report["ok"], report["entries"], report["first"], report["last"], report["weighings_checked"],
            report["problems"]) == (True, 8, 1, 8, 8, [])


def test_unknown_or_not_enrolled_nodes_exit_2(tmp_path: Path, pg_url: str, sessions: sessionmaker[Session]) -> None:
    build_chain(tmp_path, sessions, "mill-09", n=1, register=False)
    done = cli(tmp_path, pg_url, "nobody")
    assert (done.returncode, done.stderr.strip()) == (2, "floorgate: no node 'nobody'")
    done = cli(tmp_path, pg_url, "mill-09")
    assert done.returncode == 2
    assert "node mill-09 has no registered public key" in done.stderr


def test_an_altered_entry_is_named_by_the_cli(tmp_path: Path, pg_url: str, sessions: sessionmaker[Session]) -> None:
    build_chain(tmp_path, sessions, "mill-01", n=8)
    sql(sessions, """UPDATE alibi_entries SET body = replace(body, '"gross":"18420"', '"gross":"19420"')
                     WHERE node_id = 'mill-01' AND alibi_no = 3""")
    done = cli(tmp_path, pg_url, "mill-01")
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "node mill-01: chain of 8 entries (1…8) NOT intact: 1 problem(s)"
    assert lines[1].split()[:4] == ["altered", "entry", "3:", "body"]
    assert "entry 3: body does not match its hash and the signature is invalid" in lines[1]


def test_an_altered_entry_with_its_hash_recomputed_is_named(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    build_chain(tmp_path, sessions, "mill-01", n=8)
    with sessions.begin() as s:
        e = s.execute(select(AlibiEntry).where(AlibiEntry.alibi_no == 5)).scalar_one()
        e.body = e.body.replace('"gross":"20050"', '"gross":"20950"')
        e.hash = body_hash(e.body)
    assert problems(sessions, "mill-01") == [("altered", (5,))]


def test_a_deleted_entry_is_named(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    build_chain(tmp_path, sessions, "mill-01", n=8)
    sql(sessions, "DELETE FROM alibi_entries WHERE node_id = 'mill-01' AND alibi_no = 4")
    report = verify(sessions, "mill-01")
    assert [(p.kind, p.entries) for p in report.problems] == [("removed", (4,))]
    assert report.problems[0].message == ("entry 4 missing: entry 5's prev_hash is the hash of an entry central does "
                                          "not have")
    sql(sessions, "DELETE FROM alibi_entries WHERE node_id = 'mill-01' AND alibi_no = 8")  # the last one too
    assert problems(sessions, "mill-01") == [("removed", (4,)), ("removed", (8,))]


def test_a_forged_inserted_entry_is_named(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    chain = build_chain(tmp_path, sessions, "mill-01", n=8)
    forger = generate_key()
    with sessions.begin() as s:
        head = s.execute(select(AlibiEntry).where(AlibiEntry.alibi_no == 8)).scalar_one()
        body = canonical_json({**json.loads(head.body), "alibi_no": 9, "record_id": "forged-1", "gross": "30000",
                               "prev_hash": head.hash}).decode()
        s.add(AlibiEntry(node_id=chain.node, alibi_no=9, record_id="forged-1", body=body, prev_hash=head.hash,
                         hash=body_hash(body), sig=sign(forger, body.encode()), weighed_at=head.weighed_at,
                         received_at=head.received_at))
    report = verify(sessions, "mill-01")
    assert [(p.kind, p.entries) for p in report.problems] == [("inserted", (9,))]
    assert "entry 9 is not signed by the node (forged) and follows entry 8" in report.problems[0].message


def test_a_forged_entry_inserted_in_the_middle_is_named(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    chain = build_chain(tmp_path, sessions, "mill-01", n=6)
    forger = generate_key()
    with sessions.begin() as s:
        for e in s.execute(select(AlibiEntry).where(AlibiEntry.alibi_no >= 4).order_by(AlibiEntry.alibi_no.desc())
                           ).scalars():
            e.alibi_no += 1  # make room at 4, one by one from the top (the numbers are unique)
            s.flush()
        three = s.execute(select(AlibiEntry).where(AlibiEntry.alibi_no == 3)).scalar_one()
        body = canonical_json({**json.loads(three.body), "alibi_no": 4, "record_id": "forged-1",
                               "prev_hash": three.hash}).decode()
        s.add(AlibiEntry(node_id=chain.node, alibi_no=4, record_id="forged-1", body=body, prev_hash=three.hash,
                         hash=body_hash(body), sig=sign(forger, body.encode()), weighed_at=three.weighed_at,
                         received_at=three.received_at))
    found = verify(sessions, "mill-01").problems
    assert [(p.kind, p.entries) for p in found] == [("inserted", (4,)), ("reordered", (4, 5, 6))]
    assert found[0].message == ("entry 4 is not signed by the node: inserted between entries 3 and 4, which link to "
                                "each other")


def test_swapped_entries_are_named_by_the_api(tmp_path: Path, api: ApiHarness) -> None:
    build_chain(tmp_path, api.sessions, "mill-01", n=8)
    r = api.client.get("/api/v1/nodes/mill-01/alibi/verify", headers=api.auth("operator"))
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    for a, b in ((3, -1), (6, 3), (-1, 6)):  # the numbers are unique: through a free one
        sql(api.sessions, "UPDATE alibi_entries SET alibi_no = :b WHERE node_id = 'mill-01' AND alibi_no = :a",
            a=a, b=b)
    r = api.client.get("/api/v1/nodes/mill-01/alibi/verify", headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["ok"], report["entries"], report["first"], report["last"]) == (False, 8, 1, 8)
    assert report["problems"] == [{"kind": "reordered", "entries": [3, 6],
                                   "message": "entries 3 and 6 swapped: each is stored under the other's number"}]


def test_an_altered_weighing_row_is_named(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    build_chain(tmp_path, sessions, "mill-01", n=8)
    sql(sessions, "UPDATE weighings SET gross = 32000.5 WHERE node_id = 'mill-01' AND alibi_no = 2")
    report = verify(sessions, "mill-01")
    assert [(p.kind, p.entries) for p in report.problems] == [("weighing_altered", (2,))]
    assert "gross is 32000.5 in the weighings table, 32980.5 in the entry" in report.problems[0].message
    sql(sessions, "DELETE FROM weighings WHERE node_id = 'mill-01' AND alibi_no = 7")
    assert problems(sessions, "mill-01") == [("weighing_altered", (2,)), ("weighing_missing", (7,))]


def test_the_api_lists_entries_by_number_in_pages(tmp_path: Path, api: ApiHarness) -> None:
    chain = build_chain(tmp_path, api.sessions, "mill-01", n=5)
    headers = api.auth("auditor")
    got, cursor = [], None
    while True:
        r = api.client.get("/api/v1/nodes/mill-01/alibi", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                           headers=headers)
        assert r.status_code == 200, r.text
        got += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert [e["alibi_no"] for e in got] == [1, 2, 3, 4, 5]
    assert [e["body"] for e in got] == [rec.data["alibi"]["body"] for rec in chain.records]
    assert got[0]["prev_hash"] == "0" * 64
    assert got[1]["prev_hash"] == got[0]["hash"]
    r = api.client.get("/api/v1/nodes/mill-01/alibi", params={"sort": "-alibi_no", "limit": 1}, headers=headers)
    assert r.json()["items"][0]["alibi_no"] == 5
    for path in ("/api/v1/nodes/nobody/alibi", "/api/v1/nodes/nobody/alibi/verify"):
        r = api.client.get(path, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    build_chain(tmp_path, api.sessions, "mill-09", n=1, register=False)
    r = api.client.get("/api/v1/nodes/mill-09/alibi/verify", headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_enrolled")
    assert api.client.get("/api/v1/nodes/mill-01/alibi", headers=api.auth("viewer")).status_code == 403
