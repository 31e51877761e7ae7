"""The software TSE: real TR-03151 signatures (brainpoolP384r1 and P-256), one signature counter step per log
message, numbers that survive a restart and a crash, the SE API's refusals, and loud "NOT CERTIFIED"."""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.tse import crypto
from protocols.tse.api import TseDriver, ensure_ready
from protocols.tse.errors import (
    TseClientNotRegistered,
    TseInvalidArgument,
    TseNotReady,
    TseUnavailable,
    TseUnknownTransaction,
)
from protocols.tse.logmsg import FINISH, START, UPDATE, decode_log_message
from protocols.tse.qr import ReceiptQr, iso_time, verify_receipt_qr
from protocols.tse.software import NOT_CERTIFIED, SoftwareTse
from tests.tse_support import ROOT, FakeClock

CURVES = {"brainpoolP384r1": "ecdsa-plain-SHA384", "P-256": "ecdsa-plain-SHA256"}
SALE = "Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF"
PTYPE = "Kassenbeleg-V1"


@pytest.fixture(params=list(CURVES))
def curve(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tse(tmp_path: Path, curve: str, clock: FakeClock) -> Iterator[SoftwareTse]:
    with SoftwareTse(tmp_path / "tse", curve=curve, clock=clock) as device:
        ensure_ready(device)
        device.register_client("KASSE-1")
        yield device


def _verify(result_message: bytes, public_key: bytes) -> None:
    message = decode_log_message(result_message)
    key, _ = crypto.load_public_key(public_key)
    algorithm = crypto.ALGORITHMS_BY_OID[message.signature_algorithm]
    assert crypto.verify_plain(key, algorithm, message.signature_value, message.signed_bytes()) == ""


def test_it_says_loudly_that_it_is_not_certified(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="protocols.tse.software"), SoftwareTse(tmp_path / "t") as device:
        info = device.info()
    assert any(r.levelno == logging.WARNING and NOT_CERTIFIED in r.getMessage() for r in caplog.records)
    assert info.description == NOT_CERTIFIED
    assert info.certified is False
    assert "NOT CERTIFIED" in x509.load_pem_x509_certificate(info.certificate_pem).subject.rfc4514_string()


def test_info_serial_key_certificate_and_files(tse: SoftwareTse, curve: str) -> None:
    info = tse.info()
    assert isinstance(tse, TseDriver)
    assert info.curve == curve
    assert info.algorithm == CURVES[curve]
    assert info.time_format == "unixTime"
    assert info.serial_number == hashlib.sha256(info.public_key).digest()
    assert len(info.public_key) == (97 if curve == "brainpoolP384r1" else 65)
    cert_key = x509.load_pem_x509_certificate(info.certificate_pem).public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    assert crypto.public_key_bytes(cert_key) == info.public_key
    key_file = tse.directory / "tse-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert info.clients == ("KASSE-1",)
    assert (info.signature_counter, info.transaction_number, info.open_transactions) == (0, 0, ())


def test_start_update_finish_each_signed_message_steps_the_counter_by_one(
    tse: SoftwareTse, clock: FakeClock
) -> None:
    public_key = tse.info().public_key
    start = tse.start_transaction("KASSE-1", b"", PTYPE)
    clock.advance(2)
    update = tse.update_transaction("KASSE-1", start.transaction_number, "Beleg^1.00_0.00_0.00_0.00_0.00^", PTYPE)
    clock.advance(3)
    finish = tse.finish_transaction("KASSE-1", start.transaction_number, SALE, PTYPE)
    second = tse.start_transaction("KASSE-1", b"", PTYPE)
    assert [r.signature_counter for r in (start, update, finish, second)] == [1, 2, 3, 4]
    assert [r.transaction_number for r in (start, update, finish, second)] == [1, 1, 1, 2]
    assert [r.operation for r in (start, update, finish)] == [START, UPDATE, FINISH]
    assert finish.log_time == start.log_time + 5
    assert finish.start_time == start.log_time
    for result in (start, update, finish, second):
        _verify(result.log_message, public_key)
        message = decode_log_message(result.log_message)
        assert message.signature_counter == result.signature_counter
        assert message.signature_value == result.signature_value
        assert message.log_time.unix == result.log_time
        assert message.serial_number == result.serial_number
        assert message.transaction.operation_type == result.operation
    assert decode_log_message(finish.log_message).transaction.process_data == SALE.encode()
    info = tse.info()
    assert (info.signature_counter, info.transaction_number, info.open_transactions) == (4, 2, (2,))


def test_a_finished_receipt_gives_a_qr_code_that_verifies(tse: SoftwareTse) -> None:
    start = tse.start_transaction("KASSE-1", b"", PTYPE)
    finish = tse.finish_transaction("KASSE-1", start.transaction_number, SALE, PTYPE)
    qr = ReceiptQr(
        client_id="KASSE-1", process_type=PTYPE, process_data=SALE, transaction_number=finish.transaction_number,
        signature_counter=finish.signature_counter, start=iso_time(finish.start_time), end=iso_time(finish.log_time),
        algorithm=finish.algorithm, log_time_format=finish.time_format, signature=finish.signature_value,
        public_key=tse.info().public_key,
    )  # fmt: skip
    result = verify_receipt_qr(qr.build())
    assert result.valid, result.lines()


def test_numbers_and_counters_survive_a_restart(tmp_path: Path, curve: str, clock: FakeClock) -> None:
    directory = tmp_path / "tse"
    with SoftwareTse(directory, curve=curve, clock=clock) as first:
        ensure_ready(first)
        first.register_client("KASSE-1")
        done = first.start_transaction("KASSE-1", b"", PTYPE)
        first.finish_transaction("KASSE-1", done.transaction_number, SALE, PTYPE)
        still_open = first.start_transaction("KASSE-1", b"", PTYPE)
        serial = first.info().serial_number
    with SoftwareTse(directory, clock=clock) as second:  # the curve comes from the key
        info = second.info()
        assert info.serial_number == serial
        assert info.curve == curve
        assert (info.signature_counter, info.transaction_number, info.open_transactions) == (3, 2, (2,))
        assert info.self_test_due  # power-up: self test and time again
        with pytest.raises(TseNotReady):
            second.start_transaction("KASSE-1", b"", PTYPE)
        ensure_ready(second)
        finish = second.finish_transaction("KASSE-1", still_open.transaction_number, SALE, PTYPE)
        new = second.start_transaction("KASSE-1", b"", PTYPE)
        assert (finish.signature_counter, new.signature_counter, new.transaction_number) == (4, 5, 3)
        assert finish.start_time == still_open.log_time


def test_a_crash_after_a_signature_loses_nothing(tmp_path: Path) -> None:
    """The child signs and dies without closing anything: what it was handed is committed."""
    directory = tmp_path / "tse"
    script = (
        "import os\n"
        "from protocols.tse.software import SoftwareTse\n"
        "from protocols.tse.api import ensure_ready\n"
        f"t = SoftwareTse({str(directory)!r}, curve='P-256')\n"
        "ensure_ready(t)\n"
        "t.register_client('K')\n"
        "r = t.start_transaction('K')\n"
        "r = t.finish_transaction('K', r.transaction_number, 'x', 'Kassenbeleg-V1')\n"
        "print(r.signature_counter, flush=True)\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    with SoftwareTse(directory) as again:
        info = again.info()
        assert (info.signature_counter, info.transaction_number, info.open_transactions) == (2, 1, ())
        ensure_ready(again)
        assert again.start_transaction("K").signature_counter == 3


def test_it_refuses_to_sign_before_self_test_and_time_like_a_hardware_tse(tmp_path: Path, clock: FakeClock) -> None:
    with SoftwareTse(tmp_path / "t", clock=clock) as device:
        device.register_client("K")  # allowed: no signature
        with pytest.raises(TseNotReady) as no_test:
            device.start_transaction("K")
        assert no_test.value.reason == "self-test"
        device.self_test()
        with pytest.raises(TseNotReady) as no_time:
            device.start_transaction("K")
        assert no_time.value.reason == "time"
        device.update_time(1_800_000_000)
        assert device.start_transaction("K").log_time == 1_800_000_000  # the TSE's own time, not the host's
        clock.advance(31 * 60)
        assert device.info().time_update_due  # due, but it still signs
        assert device.start_transaction("K").log_time == 1_800_000_000 + 31 * 60
        clock.advance(24 * 3600)
        assert device.info().self_test_due
        with pytest.raises(TseNotReady, match="self test"):
            device.start_transaction("K")
        info = ensure_ready(device)
        assert not info.self_test_due
        assert not info.time_update_due
        assert device.info().signature_counter == 2  # refusals used no counter


@pytest.mark.parametrize(("client_id", "why"), [
    ("", "1 to 30 characters"), ("K" * 31, "1 to 30 characters"), ("KASSE_1", "'_'"), ("Kassé", "'é'"),
])  # fmt: skip
def test_client_ids_are_printable_strings_of_up_to_30_characters(tse: SoftwareTse, client_id: str, why: str) -> None:
    with pytest.raises(TseInvalidArgument, match=why) as info:
        tse.register_client(client_id)
    assert info.value.argument == "client_id"


def test_se_api_refusals_consume_no_counter(tse: SoftwareTse) -> None:
    with pytest.raises(TseClientNotRegistered):
        tse.start_transaction("KASSE-2")
    with pytest.raises(TseUnknownTransaction, match="there is no transaction 7"):
        tse.finish_transaction("KASSE-1", 7, SALE, PTYPE)
    start = tse.start_transaction("KASSE-1")
    tse.register_client("KASSE-2")
    with pytest.raises(TseInvalidArgument, match="belongs to client 'KASSE-1'"):
        tse.finish_transaction("KASSE-2", start.transaction_number, SALE, PTYPE)
    with pytest.raises(TseInvalidArgument, match="process_type"):
        tse.finish_transaction("KASSE-1", start.transaction_number, SALE, "Kassenbeleg_V1")
    tse.finish_transaction("KASSE-1", start.transaction_number, SALE, PTYPE)
    with pytest.raises(TseUnknownTransaction, match="already finished"):
        tse.update_transaction("KASSE-1", start.transaction_number, SALE, PTYPE)
    assert tse.info().signature_counter == 2


def test_one_process_at_a_time_and_closed_means_unavailable(tmp_path: Path) -> None:
    with SoftwareTse(tmp_path / "t") as device:
        with pytest.raises(TseUnavailable, match="in use by another process"):
            SoftwareTse(tmp_path / "t")
        device.close()
        with pytest.raises(TseUnavailable, match="closed"):
            device.info()
    SoftwareTse(tmp_path / "t").close()  # the lock was released


def test_opening_problems_are_tse_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TseUnavailable, match="no software TSE here"):
        SoftwareTse(tmp_path / "none", create=False)
    with SoftwareTse(tmp_path / "t", curve="P-256"):
        pass
    with pytest.raises(TseInvalidArgument, match="made with P-256"):
        SoftwareTse(tmp_path / "t", curve="brainpoolP384r1")
    with pytest.raises(TseInvalidArgument, match="curve"):
        SoftwareTse(tmp_path / "u", curve="secp521r1")
    (tmp_path / "t" / "tse-key.pem").unlink()
    with pytest.raises(TseUnavailable, match="refusing to make a new key"):
        SoftwareTse(tmp_path / "t")


def test_a_key_that_does_not_belong_to_the_state_is_refused(tmp_path: Path) -> None:
    with SoftwareTse(tmp_path / "a"), SoftwareTse(tmp_path / "b"):
        pass
    (tmp_path / "a" / "tse-key.pem").write_bytes((tmp_path / "b" / "tse-key.pem").read_bytes())
    with pytest.raises(TseUnavailable, match="does not belong to"):
        SoftwareTse(tmp_path / "a")


def test_export_filters_by_transactions_time_and_client(tse: SoftwareTse, clock: FakeClock) -> None:
    tse.register_client("KASSE-2")
    for client in ("KASSE-1", "KASSE-2", "KASSE-1"):
        start = tse.start_transaction(client)
        clock.advance(10)
        tse.finish_transaction(client, start.transaction_number, SALE, PTYPE)
    base = int(clock.now) - 30

    def log_names(data: bytes) -> list[str]:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = tar.getnames()
        assert "info.csv" in names
        assert sum(n.endswith("_X509.pem") for n in names) == 1
        return [n for n in names if n.endswith(".log")]

    everything = log_names(tse.export())
    assert [n.split("_Sig-")[1].split("_")[0] for n in everything] == ["1", "2", "3", "4", "5", "6"]
    assert everything[0] == f"Unixt_{base}_Sig-1_Log-Tra_No-1_Start_Client-KASSE-1.log"
    assert everything[5] == f"Unixt_{base + 30}_Sig-6_Log-Tra_No-3_Finish_Client-KASSE-1.log"
    assert len(log_names(tse.export(tx_range=(2, 3)))) == 4
    assert [n.split("_Log-")[1] for n in log_names(tse.export(client_id="KASSE-2"))] == [
        "Tra_No-2_Start_Client-KASSE-2.log", "Tra_No-2_Finish_Client-KASSE-2.log"]  # fmt: skip
    # inclusive: finish 1 and start 2 at +10, finish 2 and start 3 at +20
    assert len(log_names(tse.export(time_range=(base + 10, base + 20)))) == 4
    assert log_names(tse.export(client_id="KASSE-1", tx_range=(2, 2))) == []


def test_state_is_sqlite_with_durable_commits(tse: SoftwareTse) -> None:
    tse.start_transaction("KASSE-1")
    db = sqlite3.connect(tse.directory / "tse-state.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM log_messages").fetchone()[0] == 1
    finally:
        db.close()
