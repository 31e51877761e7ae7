"""Central's verification of TSE-signed sales on real Postgres: records made by the real software TSE
(``tests.fiscal_support.Register``), applied with the real ``apply_batch``, verified at apply time and by the sweep
(``floorgate central verify-tse`` as a subprocess), alerted by the real alert evaluator through a real webhook.

An untouched sale verifies; a changed processData, signature, counter, serial, total or time is ``invalid`` naming
the check; a gap in the transaction numbers is named and closes when the late record arrives; a counter regression
and a counter used twice are named; a sale without signature (TSE failed) is stored and alerted."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.alerts.config import AlertSettings
from central.alerts.engine import AlertEvaluator
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Alert, QuarantineEntry, TseTransaction
from central.fiscal.sweep import UnknownTse, sweep
from central.fiscal.verify import TIME_TOLERANCE_S
from central.ingest.apply import apply_batch
from central.metrics import SQLiteMetricsStore
from protocols.tse.processdata import PROCESS_TYPE
from sync.envelope import Batch
from tests.alert_receivers import WebhookReceiver
from tests.fiscal_support import Register, beleg

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def register(sessions: sessionmaker[Session], tmp_path: Path) -> Iterator[Register]:
    r = Register(sessions, tmp_path / "tse")
    yield r
    r.close()


def quarantined(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as s:
        return [q.reason for q in s.execute(select(QuarantineEntry).order_by(QuarantineEntry.id)).scalars()]


def verdicts(register: Register) -> dict[int | None, tuple[str, str | None]]:
    return {n: (t.verified, t.verify_error) for n, t in register.rows().items()}


def gaps(register: Register) -> dict[int | None, int]:
    return {n: t.gap_before for n, t in register.rows().items() if t.gap_before is not None}


# -- storing and verifying ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", ["P-256", "brainpoolP384r1"])
def test_signed_sales_are_stored_as_sent_and_verify(sessions: sessionmaker[Session], tmp_path: Path,
                                                    curve: str) -> None:
    register = Register(sessions, tmp_path / "tse", curve=curve)
    try:
        records = [register.sale(amount) for amount in ("12.50", "3.20", "0.99")]
        result = register.send(*records)
        assert (result.applied, result.rejected) == (3, [])
        assert register.send(*records).duplicates == 3  # the same batch again changes nothing
        rows = register.rows()
    finally:
        register.close()
    assert {n: t.verified for n, t in rows.items()} == {1: "valid", 2: "valid", 3: "valid"}
    first, data = rows[1], records[0].data
    assert (first.node_id, first.device_id, first.record_id, first.client_id) == ("shop-1", "tse-1", "shop-1-s1",
                                                                                  "KASSE-01")
    assert (first.tse_serial, first.public_key, first.algorithm) == (data["tse_serial"], data["public_key"],
                                                                     data["algorithm"])
    assert (first.start_counter, first.signature_counter, first.log_time) == (1, 2, data["log_time"])
    assert (first.process_data, first.signature, first.qr) == (beleg("12.50"), data["signature"], data["qr"])
    assert (str(first.total.normalize()), first.currency, first.receipt_id) == ("12.5", "EUR", "B-1")
    assert first.finished_at == datetime.fromtimestamp(data["log_time"], UTC)
    assert first.started_at == first.finished_at - timedelta(seconds=30)
    assert (first.verify_error, first.gap_before, first.tse_failed) == (None, None, False)


def test_interleaved_transactions_verify(register: Register) -> None:
    """Transaction numbers follow the starts; finishes may come in another order (two registers on one TSE)."""
    tse, client = register.tse, register.client
    start1 = tse.start_transaction(client, b"", PROCESS_TYPE)
    start2 = tse.start_transaction(client, b"", PROCESS_TYPE)
    finish2 = tse.finish_transaction(client, start2.transaction_number, beleg("2.00"), PROCESS_TYPE)
    finish1 = tse.finish_transaction(client, start1.transaction_number, beleg("1.00"), PROCESS_TYPE)
    assert finish1.signature_counter > finish2.signature_counter  # counters do not follow the numbers at finish
    register.send(register.record_of(start2, finish2), register.record_of(start1, finish1))
    assert verdicts(register) == {1: ("valid", None), 2: ("valid", None)}


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# each: what the record says instead of what was signed → the checks named in verify_error
TAMPERED: list[tuple[str, Any, tuple[str, ...]]] = [
    ("process_data", lambda r: beleg("99.00"), ("signature: does not verify", "qr: verifies, but its processData",
                                                "total: 10 is not the signed processData's total 99.00")),
    ("signature", lambda r: _flip(r.data["signature"]), ("signature: does not verify", "its signature differ")),
    ("signature_counter", lambda r: r.data["signature_counter"] + 1000, ("signature: does not verify",
                                                                         "its signatureCounter differ")),
    ("tx_number", lambda r: r.data["tx_number"] + 1000, ("signature: does not verify",)),
    ("client_id", lambda r: "KASSE-99", ("signature: does not verify", "its clientId differ")),
    ("tse_serial", lambda r: "ab" * 32, ("serial: abab", "is not the SHA-256 of the public key",  # a serial
                                         "untrusted_key: TSE abab", "signature: not checked")),  # never pinned
    ("total", lambda r: "11.00", ("total: 11 is not the signed processData's total 10.00",)),
    ("qr", lambda r: r.data["qr"].replace("Kassenbeleg-V1", "Kassenbeleg-V2"), ("qr: does not verify on its own",)),
    ("algorithm", lambda r: "ecdsa-plain-SHA512", ("algorithm: 'ecdsa-plain-SHA512' is not one of",
                                                   "signature: not checked")),
]


@pytest.mark.parametrize(("field", "change", "reasons"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_a_changed_field_makes_the_transaction_invalid_naming_the_check(
        register: Register, field: str, change: Any, reasons: tuple[str, ...]) -> None:
    before = register.sale("5.00")
    honest = register.sale("10.00")
    after = register.sale("7.00")
    changed = register.record_of(*register.signed("10.00"))  # another real sale, then one field changed
    changed.data[field] = change(changed)
    register.send(before, honest, after, changed)
    result = verdicts(register)
    number = changed.data["tx_number"] if field not in ("tx_number", "tse_serial") else None
    rows = {n: v for n, v in result.items() if n not in (1, 2, 3)}
    if field == "tse_serial":
        with register.sessions() as s:
            row = s.execute(select(TseTransaction).where(TseTransaction.tse_serial == "ab" * 32)).scalar_one()
        rows = {row.tx_number: (row.verified, row.verify_error)}
    [(tx, (verified, error))] = rows.items()
    assert number is None or tx == number
    assert verified == "invalid"
    for reason in reasons:
        assert reason in (error or ""), error
    assert {n: result[n] for n in (1, 2, 3)} == {n: ("valid", None) for n in (1, 2, 3)}  # the others untouched


def test_times_that_are_not_plausible_are_invalid(register: Register) -> None:
    received = datetime.fromtimestamp(register.clock.now, UTC)
    start, finish = register.signed("1.00")
    backwards = register.record_of(start, finish, started_at="2025-12-29T12:00:00.000Z")  # start after finish
    register.clock.advance(3600)  # the TSE's clock runs an hour ahead of central
    future = register.sale("2.00")
    register.send(backwards, future, now=received + timedelta(seconds=120))
    result = verdicts(register)
    assert result[1][0] == "invalid"
    assert "times: start 2025-12-29T12:00:00Z is after the finish" in (result[1][1] or "")
    assert "qr: verifies, but its start differ" in (result[1][1] or "")
    assert result[2][0] == "invalid"
    assert "is after central received it" in (result[2][1] or "")
    assert f"tolerance {TIME_TOLERANCE_S:g} s" in (result[2][1] or "")


# -- sequences ----------------------------------------------------------------------------------------------------


def test_a_gap_is_named_and_closes_when_the_late_record_arrives(register: Register) -> None:
    r = [register.sale(f"{i}.00") for i in range(1, 8)]  # transactions 1..7, stream seqs 1..7
    t1 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    register.send(r[0], r[1], now=t1)
    register.send(r[5], r[6], now=t1 + timedelta(minutes=1))  # 3, 4, 5 late: central holds seqs 6, 7
    assert gaps(register) == {6: 3}
    [report] = sweep(register.sessions)
    assert (report.gaps, report.ok, report.missing) == ([(3, 5)], False, 3)
    assert [f.message for f in report.findings] == ["transaction number(s) 3-5 missing"]
    assert set(verdicts(register).values()) == {("valid", None)}  # a gap is not the neighbours' fault

    register.send(r[3], now=t1 + timedelta(minutes=5))  # 4 arrives: the gap splits and keeps when it was seen
    rows = register.rows()
    assert gaps(register) == {4: 1, 6: 1}
    assert rows[4].gap_since == rows[6].gap_since == t1 + timedelta(minutes=1)

    register.send(r[2], r[4], now=t1 + timedelta(minutes=9))
    assert gaps(register) == {}
    [report] = sweep(register.sessions)
    assert (report.ok, report.gaps, report.first, report.last, report.counts) == (True, [], 1, 7, {"valid": 7})
    assert report.summary().endswith("7 transactions 1…7 (7 valid): verified, no gaps")


def test_a_counter_regression_and_a_counter_used_twice_are_named(register: Register) -> None:
    sales = [register.signed(f"{i}.00") for i in range(1, 6)]
    records = [register.record_of(*sale) for sale in sales]
    records[2].data["start_counter"] = 2  # transaction 3 claims a start counter below transaction 2's (3)
    register.send(*records)
    result = verdicts(register)  # start / finish counters: 1/2, 3/4, 2/6 (was 5/6), 7/8, 9/10
    assert result[1] == ("invalid", "duplicate: signature counter used twice: 2 also in transaction 3")
    assert result[2] == ("invalid", "sequence: counter regression: start counter 3 of transaction 2 is not below 2 "
                                    "of transaction 3")
    assert result[3] == ("invalid", "sequence: counter regression: start counter 2 of transaction 3 is not above 3 "
                                    "of transaction 2; duplicate: signature counter used twice: 2 also in "
                                    "transaction 1")
    assert result[4] == result[5] == ("valid", None)  # their signatures do not cover the start counter
    [report] = sweep(register.sessions)
    assert {(f.kind, f.numbers) for f in report.findings} == {
        ("regression", (2, 3)), ("duplicate", (1, 3)), ("invalid", (1,)), ("invalid", (2,)), ("invalid", (3,))}
    assert (report.counts, report.changed) == ({"valid": 2, "invalid": 3}, 0)  # the sweep decides as apply did
    assert verdicts(register) == result


def test_the_sweep_repairs_rows_changed_behind_its_back(register: Register) -> None:
    register.send(*[register.sale(f"{i}.00") for i in range(1, 5)])
    with register.sessions.begin() as s:  # someone edits a signed sale in the database
        row = s.execute(select(TseTransaction).where(TseTransaction.tx_number == 2)).scalar_one()
        row.process_data = beleg("0.01")
        s.execute(select(TseTransaction).where(TseTransaction.tx_number == 4)).scalar_one().gap_before = 7
    [report] = sweep(register.sessions, register.serial.upper())
    assert report.changed == 2
    assert [(f.kind, f.numbers) for f in report.findings] == [("invalid", (2,))]
    assert "signature: does not verify" in report.findings[0].message
    assert gaps(register) == {}
    with pytest.raises(UnknownTse):
        sweep(register.sessions, "00" * 32)


def test_the_same_transaction_sent_again_is_stored_once_another_with_its_number_is_quarantined(
        register: Register) -> None:
    sale = register.sale("8.00")
    register.send(sale)
    again = Batch(node=register.node, epoch="e2", stream="business", records=(sale,))  # a new epoch: a new inbox key
    assert apply_batch(register.sessions, again).rejected == []
    impostor = register.record_of(*register.signed("9.00"), tx_number=1)
    result = register.send(impostor)
    assert result.rejected == [impostor.seq]
    assert len(register.rows()) == 1
    [reason] = quarantined(register.sessions)
    assert f"data.tx_number: transaction 1 of TSE {register.serial} is already held (record shop-1-s1" in reason


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"tx_number": "12"}, "data.tx_number: expected a whole number"),
    ({"tx_number": True}, "data.tx_number: expected a whole number"),
    ({"signature_counter": -1}, "data.signature_counter: expected a whole number"),
    ({"signature": "not base64!"}, "data.signature: 'not base64!'… is not base64"),
    ({"public_key": None}, "data.public_key: missing"),
    ({"tse_serial": "xyz"}, "data.tse_serial: expected 64 hex digits"),
    ({"finished_at": "yesterday"}, "data.finished_at: 'yesterday' is not an ISO 8601 time"),
    ({"started_at": 1767000000}, "data.started_at: expected an ISO 8601 time"),
    ({"client_id": ""}, "data.client_id: empty"),
    ({"client_id": "K" * 65}, "data.client_id: expected text of at most 64 characters"),
    ({"process_data": "Beleg\x00"}, "data.process_data: expected text without NUL"),
    ({"total": "12.5x"}, "data.total: expected a decimal number"),
    ({"currency": "euro"}, "data.currency: expected an ISO 4217 code"),
    ({"tse_failed": "no"}, "data.tse_failed: expected true or false"),
]


def test_malformed_records_are_quarantined_naming_the_field_and_the_stream_goes_on(register: Register) -> None:
    records = [register.sale("1.00", **override) for override, _ in MALFORMED]
    records.append(register.sale("2.00"))
    result = register.send(*records)
    assert result.rejected == [r.seq for r in records[:-1]]
    assert result.acked_seq == records[-1].seq
    reasons = quarantined(register.sessions)
    for (_, expected), reason in zip(MALFORMED, reasons, strict=True):
        assert expected in reason, reason
    assert {n: t.verified for n, t in register.rows().items()} == {len(MALFORMED) + 1: "valid"}


def test_a_sale_whose_tse_failed_is_stored_and_closes_no_gap_it_has_no_number_for(register: Register) -> None:
    ok = register.sale("1.00")
    failed = register.failed_sale("4.00", error="TSE not reachable: USB device gone")
    start = register.tse.start_transaction(register.client, b"", PROCESS_TYPE)  # then the finish failed
    started = register.failed_sale("5.00", error="finishTransaction timed out", tx_number=start.transaction_number,
                                   start_counter=start.signature_counter)
    later = register.sale("6.00")
    bare = register.failed_sale("7.00", error="no TSE", tse_serial=None, public_key=None, started_at=None,
                                finished_at=None)  # only what the contract requires: the times are the record's
    register.send(ok, failed, started, later, bare)
    with register.sessions() as s:
        rows = s.execute(select(TseTransaction).order_by(TseTransaction.id)).scalars().all()
    assert [(t.tx_number, t.verified, t.tse_failed) for t in rows] == [
        (1, "valid", False), (None, "tse_failed", True), (2, "tse_failed", True), (3, "valid", False),
        (None, "tse_failed", True)]
    assert (rows[4].tse_serial, rows[4].time_format, rows[4].tse_error) == (None, "unixTime", "no TSE")
    assert rows[4].started_at == rows[4].finished_at == datetime.fromtimestamp(bare.ts_ns / 1e9, UTC)
    lost = rows[1]
    assert (lost.signature, lost.signature_counter, lost.qr, lost.tse_error) == (
        None, None, None, "TSE not reachable: USB device gone")
    assert (lost.process_data, str(lost.total.normalize()), lost.tse_serial) == (beleg("4.00"), "4", register.serial)
    assert lost.finished_at == datetime.fromtimestamp(failed.ts_ns / 1e9, UTC)
    assert gaps(register) == {}
    [report] = sweep(register.sessions)
    assert (report.ok, report.counts) == (True, {"valid": 2, "tse_failed": 2})


# -- alerts -------------------------------------------------------------------------------------------------------


def test_an_invalid_signature_a_tse_failure_and_a_gap_left_open_raise_alerts(
        register: Register, tmp_path: Path) -> None:
    store = SQLiteMetricsStore(tmp_path / "metrics.db")
    store.ensure_ready()
    t1 = datetime.now(UTC).replace(microsecond=0)
    r = [register.sale(f"{i}.00") for i in range(1, 5)]
    forged = r[1]
    forged.data["process_data"] = beleg("0.50")
    failed = register.failed_sale("3.00", error="TSE not reachable")
    register.send(r[0], r[1], now=t1)
    register.send(r[3], failed, now=t1)  # 3 late
    with WebhookReceiver() as hook:
        rules = tmp_path / "rules.yaml"
        rules.write_text(yaml.safe_dump({
            "channels": {"hook": {"kind": "webhook", "url": hook.url}},
            "rules": [{"name": "fiscal", "kind": "tse", "gap_after_s": 600, "failed_window_s": 3600,
                       "severity": "critical", "channels": ["hook"]}]}), encoding="utf-8")
        evaluator = AlertEvaluator(AlertSettings(rules_file=rules), register.sessions, store)
        try:
            evaluator.evaluate_once(t1 + timedelta(seconds=10))
            fired = {a.subject: a for a in _alerts(register)}
            node, serial = register.node, register.serial
            assert set(fired) == {f"{node}/{serial}/tx/2", f"{node}/tse-1/tse_failed"}  # the gap is young
            invalid = fired[f"{node}/{serial}/tx/2"]
            assert invalid.message.startswith("TSE transaction 2 of register KASSE-01 on node shop-1 fails "
                                              "verification: signature: does not verify")
            assert fired[f"{node}/tse-1/tse_failed"].message.startswith(
                "TSE tse-1 on node shop-1 failed: 1 sale(s) without signature (TSE ausgefallen)")
            assert fired[f"{node}/tse-1/tse_failed"].message.endswith(": TSE not reachable")

            evaluator.evaluate_once(t1 + timedelta(seconds=700))  # the gap has stayed open past gap_after_s
            gap = next(a for a in _alerts(register) if a.subject == f"{node}/{serial}/gaps")
            assert gap.state == "firing"
            assert "1 transaction number(s) missing (3)" in gap.message
            assert gap.details["gaps"] == [[3, 3]]

            register.send(r[2], now=t1 + timedelta(seconds=800))  # the late sale closes the gap
            evaluator.evaluate_once(t1 + timedelta(seconds=900))
            evaluator.evaluate_once(t1 + timedelta(seconds=3700))  # no failed sale within the window any more
            states = {a.subject: a.state for a in _alerts(register)}
            assert states == {f"{node}/{serial}/tx/2": "firing", f"{node}/tse-1/tse_failed": "resolved",
                              f"{node}/{serial}/gaps": "resolved"}
            bodies = hook.bodies()
            assert [(b["subject"].split("/")[-1], b["state"]) for b in bodies] == [
                ("2", "firing"), ("tse_failed", "firing"), ("gaps", "firing"), ("gaps", "resolved"),
                ("tse_failed", "resolved")]
            assert all(b["severity"] == "critical" for b in bodies)
        finally:
            evaluator.close()
            store.close()


def _alerts(register: Register) -> list[Alert]:
    with register.sessions() as s:
        return list(s.execute(select(Alert).order_by(Alert.id)).scalars())


# -- the command line ---------------------------------------------------------------------------------------------


def verify_tse(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "central.yaml"
    config.write_text(f"database_url: {url}\nmetrics: {{kind: sqlite, path: {tmp_path / 'm.db'}}}\n")
    return subprocess.run([sys.executable, "-m", "floorgate_cli", "central", "verify-tse", "--config", str(config),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_floorgate_central_verify_tse_names_gaps_and_regressions(register: Register, pg_url: str,
                                                                  tmp_path: Path) -> None:
    records = [register.sale(f"{i}.00") for i in range(1, 7)]
    records[4].data["start_counter"] = 1  # transaction 5
    register.send(*records[:2])
    register.send(*records[3:])  # 3 is late
    run = verify_tse(tmp_path, pg_url)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"TSE {register.serial} (node shop-1): 5 transactions 1…6 ")
    assert "problem(s), 1 number(s) missing" in lines[0]
    assert any(line.split() == ["gap", "transaction", "number(s)", "3", "missing"] for line in lines)
    assert any(line.strip().startswith("regression") and "1 at transaction 5" in line for line in lines)
    assert any(line.strip().startswith("invalid") and "transaction 5" in line for line in lines)

    as_json = verify_tse(tmp_path, pg_url, "--tse", register.serial, "--json")
    [report] = json.loads(as_json.stdout)
    assert (report["serial"], report["ok"], report["gaps"]) == (register.serial, False, [[3, 3]])
    assert {"regression", "gap", "invalid"} <= {f["kind"] for f in report["findings"]}

    unknown = verify_tse(tmp_path, pg_url, "--tse", "ff" * 32)
    assert unknown.returncode == 2
    assert f"no transactions, pin or head of TSE '{'ff' * 32}' are held" in unknown.stderr

    clean = Register(register.sessions, tmp_path / "tse2", node="shop-2", client="KASSE-02")
    try:
        clean.send(clean.sale("1.00"), clean.sale("2.00"))
        ok = verify_tse(tmp_path, pg_url, "--tse", clean.serial)
    finally:
        clean.close()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("2 transactions 1…2 (2 valid): verified, no gaps")
