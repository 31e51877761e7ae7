"""Central's TSE registry on real Postgres (``central.fiscal.registry``): sales made by the real software TSE
(``tests.fiscal_support.Register``) applied with the real ``apply_batch``, checked by ``floorgate central verify-tse``
and administered with ``floorgate central tse list|confirm|reject`` as subprocesses.

The attacks of issue 16: every row re-signed with a fresh key and one total lowered (the new serial is unknown →
``untrusted_key``, exit 1; the pinned serial whose rows vanished is named ``removed``); a row of a pinned TSE signed
with another key; a pin written into the database without central's key; the newest transaction deleted at central
while the node's signed head names it (``truncated``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import AuditEntry, TseHead, TsePin, TseTransaction
from central.fiscal.config import ListedTse
from central.fiscal.records import tse_row
from central.fiscal.registry import check_pin, registry_of
from central.fiscal.sweep import sweep
from tests.fiscal_support import Register, use_test_registry

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
    r = Register(sessions, tmp_path / "tse")  # listed in fiscal.tse: confirmed from its first sale
    yield r
    r.close()


def central(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``floorgate central ARGS --config`` with a config beside the test's central-signing.key."""
    config = tmp_path / "central.yaml"
    config.write_text(f"database_url: {url}\nmetrics: {{kind: sqlite, path: {tmp_path / 'm.db'}}}\n")
    return subprocess.run([sys.executable, "-m", "floorgate_cli", "central", *args, "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def verdicts(sessions: sessionmaker[Session], serial: str) -> dict[int | None, tuple[str, str | None]]:
    with sessions() as s:
        return {t.tx_number: (t.verified, t.verify_error) for t in s.execute(
            select(TseTransaction).where(TseTransaction.tse_serial == serial)).scalars()}


def audit_rows(sessions: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with sessions() as s:
        return [(a.actor, a.action, a.resource_id) for a in s.execute(
            select(AuditEntry).where(AuditEntry.resource == "tse_pin").order_by(AuditEntry.id)).scalars()]


def test_a_listed_tse_is_pinned_confirmed_signed_and_audited_on_its_first_sale(
        register: Register, sessions: sessionmaker[Session], tmp_path: Path, pg_url: str) -> None:
    register.send(register.sale("1.00"), register.sale("2.00"))
    assert set(verdicts(sessions, register.serial).values()) == {("valid", None)}
    with sessions() as s:
        pin = s.get(TsePin, register.serial)
        assert pin is not None
        assert (pin.status, pin.source, pin.public_key, pin.node_id, pin.device_id, pin.algorithm) == (
            "confirmed", "config", register.public_key, "shop-1", "tse-1", "ecdsa-plain-SHA256")
        assert check_pin(pin, registry_of(s)) is None
    assert audit_rows(sessions) == [("system:ingest", "create", register.serial)]
    run = central(tmp_path, pg_url, "verify-tse")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("2 transactions 1…2 (2 valid): verified, no gaps")


def test_every_row_re_signed_with_a_fresh_key_and_a_total_lowered_is_untrusted_and_the_old_tse_named(
        register: Register, sessions: sessionmaker[Session], tmp_path: Path, pg_url: str) -> None:
    amounts = ("12.50", "3.20", "8.00", "5.10")
    register.send(*[register.sale(a) for a in amounts])
    assert set(verdicts(sessions, register.serial).values()) == {("valid", None)}
    # the attacker: a TSE of their own rings the same sales up again, the third for less, and puts its rows in
    # central's database in place of the genuine ones (as someone with write access to it would)
    forger = Register(sessions, tmp_path / "forger", listed=False)
    try:
        forged = [forger.sale("0.80" if i == 2 else a) for i, a in enumerate(amounts)]
    finally:
        forger.close()
    received = datetime.now(UTC)
    with sessions.begin() as s:
        s.execute(delete(TseTransaction))
        for record in forged:
            row = tse_row(node=register.node, record=record, received_at=received)
            row.verified = "valid"
            s.add(row)
    assert forger.serial != register.serial

    run = central(tmp_path, pg_url, "verify-tse")
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert f"TSE {forger.serial} (node shop-1): 4 transactions 1…4 (4 invalid)" in out
    assert f"untrusted_key TSE {forger.serial} is unknown to central's TSE registry" in out
    assert f"TSE {register.serial} (node ?): 0 transactions none (none)" in out
    assert f"removed       TSE {register.serial} was pinned when central saw its transactions (node shop-1" in out
    rows = verdicts(sessions, forger.serial)
    assert {v for v, _ in rows.values()} == {"invalid"}
    assert all("untrusted_key: TSE " in (e or "") and "signature: not checked" in (e or "") for _, e in rows.values())

    as_json = json.loads(central(tmp_path, pg_url, "verify-tse", "--tse", register.serial, "--json").stdout)
    assert [(f["kind"], r["registry"]["status"]) for r in as_json for f in r["findings"]] == [
        ("removed", "confirmed")]


def test_a_row_of_a_pinned_tse_signed_with_another_key_is_untrusted(register: Register,
                                                                    sessions: sessionmaker[Session],
                                                                    tmp_path: Path) -> None:
    register.send(register.sale("1.00"))
    other = Register(sessions, tmp_path / "other", listed=False)
    try:  # a sale signed by another TSE, sent under the pinned TSE's serial with the other TSE's key
        impostor = other.record_of(*other.signed("2.00"), tse_serial=register.serial)
    finally:
        other.close()
    impostor.data["tx_number"] = 2
    register.seq += 1  # the next record of shop-1's business stream
    result = register.send(replace(impostor, seq=register.seq, record_id=f"shop-1-s{register.seq}"))
    assert result.rejected == []
    verified, error = verdicts(sessions, register.serial)[2]
    assert verified == "invalid"
    assert f"untrusted_key: the row's public key (SHA-256 {other.serial[:16]}…) is not the key pinned for TSE " \
           f"{register.serial} ({register.serial[:16]}…)" in (error or "")
    assert "signature: does not verify" in (error or "")  # checked with the pinned key, not the row's
    assert "untrusted_key" not in (verdicts(sessions, register.serial)[1][1] or "")  # (its counters: used twice)


def test_an_unknown_tse_is_pinned_unconfirmed_listed_then_confirmed_and_rejected_by_the_cli_audited(
        sessions: sessionmaker[Session], tmp_path: Path, pg_url: str) -> None:
    unknown = Register(sessions, tmp_path / "tse", listed=False)
    try:
        unknown.send(unknown.sale("1.00"), unknown.sale("2.00"))
    finally:
        unknown.close()
    serial = unknown.serial
    rows = verdicts(sessions, serial)
    assert {v for v, _ in rows.values()} == {"invalid"}
    assert all(e is not None and e.startswith(f"untrusted_key: TSE {serial} was pinned on first sight (node shop-1, "
                                              f"device tse-1, ") and "is not confirmed" in e for _, e in rows.values())
    with sessions() as s:
        pin = s.get(TsePin, serial)
        assert pin is not None
        assert (pin.status, pin.source, pin.confirmed_by) == ("unconfirmed", "seen", None)
        assert check_pin(pin, registry_of(s)) is None  # signed by central's key at ingest

    listed = central(tmp_path, pg_url, "tse", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [state] = json.loads(listed.stdout)
    assert (state["serial"], state["status"], state["source"], state["trusted"], state["transactions"]) == (
        serial, "unconfirmed", "seen", False, 2)
    text = central(tmp_path, pg_url, "tse", "list", "--status", "unconfirmed")
    assert text.stdout.startswith(f"{serial}  unconfirmed  seen    node shop-1, device tse-1  2 transaction(s)")
    assert central(tmp_path, pg_url, "verify-tse").returncode == 1

    confirmed = central(tmp_path, pg_url, "tse", "confirm", serial.upper(), "--reason", "registered 2026-01-05")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert f"TSE {serial} confirmed by cli:tse-confirm" in confirmed.stdout
    assert confirmed.stdout.splitlines()[1].endswith("2 transactions 1…2 (2 valid): verified, no gaps")
    assert set(verdicts(sessions, serial).values()) == {("valid", None)}
    assert central(tmp_path, pg_url, "verify-tse").returncode == 0
    with sessions() as s:
        entry = s.execute(select(AuditEntry).where(AuditEntry.actor == "cli:tse-confirm")).scalar_one()
        assert (entry.action, entry.resource, entry.resource_id) == ("confirm", "tse_pin", serial)
        assert (entry.before or {})["status"] == "unconfirmed"
        assert (entry.after or {})["status"] == "confirmed"
        assert (entry.after or {})["reason"] == "registered 2026-01-05"

    rejected = central(tmp_path, pg_url, "tse", "reject", serial, "--reason", "not ours")
    assert rejected.returncode == 0, rejected.stderr
    assert all("untrusted_key: TSE " + serial + " was rejected by cli:tse-reject" in (e or "")
               for _, e in verdicts(sessions, serial).values())
    assert audit_rows(sessions) == [("system:ingest", "create", serial), ("cli:tse-confirm", "confirm", serial),
                                    ("cli:tse-reject", "reject", serial)]

    nothing = central(tmp_path, pg_url, "tse", "confirm", "ab" * 32)
    assert nothing.returncode == 1
    assert f"TSE {'ab' * 32} is not pinned and central holds no signed transaction of it" in nothing.stderr
    assert "usage:" in central(tmp_path, pg_url, "tse", "reject", serial).stderr  # a rejection needs a reason


def test_a_pin_written_or_changed_in_the_database_is_not_trusted(sessions: sessionmaker[Session], tmp_path: Path,
                                                                 pg_url: str) -> None:
    honest = Register(sessions, tmp_path / "tse", listed=False)
    forger = Register(sessions, tmp_path / "forger", node="shop-2", listed=False)
    try:
        honest.send(honest.sale("1.00"))
        with sessions.begin() as s:  # the forger's TSE, "confirmed" by a row written into the table
            s.add(TsePin(tse_serial=forger.serial, public_key=forger.public_key, status="confirmed", source="admin",
                         first_seen_at=datetime.now(UTC), confirmed_by="user:admin"))
            s.get(TsePin, honest.serial).status = "confirmed"  # type: ignore[union-attr]  # not through central
        forger.send(forger.sale("9.00"))
    finally:
        honest.close()
        forger.close()
    run = central(tmp_path, pg_url, "verify-tse")
    assert run.returncode == 1
    assert f"TSE {forger.serial} has no valid pin: its pin is not signed by central" in run.stdout
    assert f"TSE {honest.serial} has no valid pin: its pin was changed in the database after central signed it " \
           "(status differ)" in run.stdout
    listed = {s["serial"]: s for s in json.loads(central(tmp_path, pg_url, "tse", "list", "--json").stdout)}
    assert listed[forger.serial]["status"] == "confirmed (pin invalid)"
    assert listed[forger.serial]["trusted"] is False


def test_the_newest_transaction_deleted_at_central_is_truncated_by_the_node_s_signed_head(
        register: Register, sessions: sessionmaker[Session], tmp_path: Path, pg_url: str) -> None:
    sales = [register.sale(f"{i}.00") for i in range(1, 4)]
    register.send(*sales)
    with sessions.begin() as s:  # the node's heartbeat named transaction 3 (central.fleet.heads keeps it so)
        s.add(TseHead(tse_serial=register.serial, node_id=register.node, tx_number=3,
                      signature_counter=sales[2].data["signature_counter"], reported_at=datetime.now(UTC)))
    [report] = sweep(sessions)
    assert report.ok
    with sessions.begin() as s:
        s.execute(delete(TseTransaction).where(TseTransaction.tx_number == 3))
    run = central(tmp_path, pg_url, "verify-tse")
    assert run.returncode == 1, run.stdout
    assert f"TSE {register.serial} (node shop-1): 2 transactions 1…2 (2 valid): 1 problem(s), 1 number(s) missing" \
        in run.stdout
    assert "truncated     transaction number(s) 3 missing at the end: node shop-1's signed head" in run.stdout
    assert "says transaction 3 (signature counter 6) exists, central holds up to 2" in run.stdout

    with sessions.begin() as s:  # every row gone: the head still names them all
        s.execute(delete(TseTransaction))
    [report] = sweep(sessions)
    assert [(f.kind, f.numbers) for f in report.findings] == [("truncated", (1, 3))]
    with sessions.begin() as s:  # and without the head: the pin names the TSE whose rows vanished
        s.execute(delete(TseHead))
    [report] = sweep(sessions, register.serial)
    assert [f.kind for f in report.findings] == ["removed"]


def test_a_tse_listed_in_the_config_after_it_was_pinned_is_confirmed_by_the_config(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    first = Register(sessions, tmp_path / "tse", listed=False)
    try:
        first.send(first.sale("1.00"))
        assert verdicts(sessions, first.serial)[1][0] == "invalid"
        use_test_registry(sessions, first.key_file, ListedTse(serial=first.serial))  # now in fiscal.tse
        first.send(first.sale("2.00"))
    finally:
        first.close()
    with sessions() as s:
        pin = s.get(TsePin, first.serial)
        assert pin is not None
        assert (pin.status, pin.source, pin.confirmed_by) == ("confirmed", "config", "system:config")
    assert verdicts(sessions, first.serial)[2] == ("valid", None)
    assert audit_rows(sessions) == [("system:ingest", "create", first.serial),
                                    ("system:config", "confirm", first.serial)]


def test_a_tse_confirmed_before_its_first_sale_is_trusted_from_it_and_learns_its_node(
        sessions: sessionmaker[Session], tmp_path: Path, pg_url: str) -> None:
    new = Register(sessions, tmp_path / "tse", listed=False)
    try:
        wrong = central(tmp_path, pg_url, "tse", "confirm", new.serial, "--public-key", "QUJD")
        assert wrong.returncode == 1
        assert "public_key: its SHA-256 is b5d4045c3f466fa91fe2cc6abe79232a1a57cdf104f7a26e716e0a1e2789df78, not " \
               f"the serial {new.serial}" in wrong.stderr
        done = central(tmp_path, pg_url, "tse", "confirm", new.serial, "--public-key", new.public_key)
        assert done.returncode == 0, done.stdout + done.stderr
        new.send(new.sale("1.00"), new.sale("2.00"))
    finally:
        new.close()
    assert set(verdicts(sessions, new.serial).values()) == {("valid", None)}
    with sessions() as s:
        pin = s.get(TsePin, new.serial)
        assert pin is not None
        assert (pin.status, pin.source, pin.node_id, pin.device_id, pin.algorithm) == (
            "confirmed", "admin", "shop-1", "tse-1", "ecdsa-plain-SHA256")
        assert check_pin(pin, registry_of(s)) is None
    assert audit_rows(sessions) == [("cli:tse-confirm", "confirm", new.serial),
                                    ("system:ingest", "update", new.serial)]
