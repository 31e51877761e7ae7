"""Receipt QR codes: the two real ones verify (library and ``floorgate tse verify``); one character changed in the
signature, the processData, the counter or the public key is rejected, and the report names the failing check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from protocols.tse.qr import ReceiptQr, parse_receipt_qr, verify_receipt_qr
from tests.tse_support import (
    BRAINPOOL_QR,
    P256_QR,
    REAL_QR,
    SHARED_VECTORS,
    VECTORS,
    change_one_character,
    floorgate,
)

REAL = REAL_QR


def test_the_embedded_vectors_are_those_of_the_shared_reference() -> None:
    lines = [line.strip() for line in VECTORS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines == [P256_QR, BRAINPOOL_QR]
    if SHARED_VECTORS.exists():  # beside shared/ (a developer's checkout): the repository's copy is verbatim
        assert VECTORS.read_bytes() == SHARED_VECTORS.read_bytes()


@pytest.mark.parametrize("curve", REAL)
def test_real_receipts_verify(curve: str) -> None:
    result = verify_receipt_qr(REAL[curve])
    assert result.valid, result.lines()
    checks = {c.name: c for c in result.checks}
    assert [c.name for c in result.checks] == ["format", "algorithm", "public_key", "log_time_format", "times",
                                                "process_data", "signature"]  # fmt: skip
    assert all(c.ok for c in result.checks)
    assert curve in checks["public_key"].detail
    assert result.qr is not None
    assert result.qr.build() == REAL[curve]


# fields: 3 processData, 5 signatureCounter, 10 signature, 11 publicKey
@pytest.mark.parametrize("curve", REAL)
@pytest.mark.parametrize(("field", "failing"), [
    (3, {"signature"}), (5, {"signature"}), (10, {"signature"}), (11, {"signature", "public_key"}),
])  # fmt: skip
def test_one_character_changed_is_rejected_naming_the_check(curve: str, field: int, failing: set[str]) -> None:
    tampered = change_one_character(REAL[curve], field)
    assert tampered != REAL[curve]
    assert len(tampered) == len(REAL[curve])
    result = verify_receipt_qr(tampered)
    assert not result.valid
    failed = {c.name for c in result.failed}
    assert failed, result.lines()
    assert failed <= failing, result.lines()
    if "signature" in failed:
        assert "rebuilt from the QR fields" in next(c.detail for c in result.failed if c.name == "signature")


def test_every_single_character_change_in_the_signed_fields_is_rejected() -> None:
    """Exhaustive over the P-256 receipt: any field that the signature covers, any position."""
    qr = P256_QR
    starts = [0] + [i + 1 for i, c in enumerate(qr) if c == ";"]
    signed_fields = (1, 2, 3, 4, 5, 7, 8, 10, 11)  # all but the version, the start time and the time format
    for field in signed_fields:
        end = starts[field + 1] - 1 if field + 1 < len(starts) else len(qr)
        for at in range(starts[field], end):
            replacement = "7" if qr[at] != "7" else "8"
            tampered = qr[:at] + replacement + qr[at + 1 :]
            assert not verify_receipt_qr(tampered).valid, (field, at)


def test_base64_padding_bits_cannot_be_altered_unnoticed() -> None:
    # the last character before '==' carries 2 data bits and 4 padding bits: 'w' -> 'x' keeps the data bits
    tampered = P256_QR.replace("ZOH7w==", "ZOH7x==")
    result = verify_receipt_qr(tampered)
    assert not result.valid
    assert result.failed[0].name == "format"
    assert "canonical base64" in result.failed[0].detail


@pytest.mark.parametrize(("text", "why"), [
    ("V1;" + P256_QR[3:], "only V0"),
    (P256_QR.replace(";31;", ";3x;"), "signatureCounter: '3x' is not a whole number"),
    (P256_QR.replace("2021-08-23T14:36:33.000Z", "23.08.2021 14:36"), "end: '23.08.2021 14:36' is not an ISO 8601"),
    (";".join(P256_QR.split(";")[:8]), "8 ';'-separated fields, 12 expected"),
    (P256_QR.replace("TGnW", "TG!W"), "signature: 'TG!W"),
])  # fmt: skip
def test_malformed_codes_fail_the_format_check(text: str, why: str) -> None:
    result = verify_receipt_qr(text)
    assert not result.valid
    assert result.checks[0].name == "format"
    assert result.checks[0].ok is False
    assert why in result.checks[0].detail
    assert result.checks[-1].name == "signature"
    assert result.checks[-1].ok is None


def test_other_checks_say_what_is_wrong() -> None:
    swapped = P256_QR.replace("2021-08-23T14:36:27.000Z;2021-08-23T14:36:33.000Z",
                              "2021-08-23T14:36:33.000Z;2021-08-23T14:36:27.000Z")  # fmt: skip
    checks = {c.name: c for c in verify_receipt_qr(swapped).checks}
    assert checks["times"].ok is False
    assert "is after end" in checks["times"].detail
    assert checks["signature"].ok is False  # the end time is the signed logTime
    unknown = {c.name: c for c in verify_receipt_qr(P256_QR.replace("ecdsa-plain-SHA256", "ecdsa-plain-SHA1")).checks}
    assert unknown["algorithm"].ok is False
    assert unknown["signature"].ok is None
    bad_data = {c.name: c for c in verify_receipt_qr(P256_QR.replace("21.42_0.00", "21.4_0.00")).checks}
    assert bad_data["process_data"].ok is False
    assert "vat_19" in bad_data["process_data"].detail


def test_process_data_with_semicolons_stays_one_field() -> None:
    qr = parse_receipt_qr(P256_QR)
    order = ReceiptQr(**{**qr.__dict__, "process_type": "AVBestellung-V1", "process_data": "Bestellung^1;Brot;2.50"})
    assert parse_receipt_qr(order.build()) == order


# ---- through the command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", REAL)
def test_cli_accepts_the_real_receipts(curve: str) -> None:
    done = floorgate("tse", "verify", REAL[curve])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("receipt QR code: VALID")
    assert "FAIL" not in done.stdout


def test_cli_accepts_the_shared_vector_file_and_rejects_it_with_one_character_changed(tmp_path: Path) -> None:
    done = floorgate("tse", "verify", "--qr-file", str(VECTORS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("receipt QR code: VALID") == 2
    tampered = [change_one_character(qr, field) for qr in REAL.values() for field in (3, 5, 10, 11)]
    one = floorgate("tse", "verify", tampered[0])
    assert one.returncode == 1
    assert "receipt QR code: INVALID" in one.stdout
    assert re.search(r"FAIL +signature +does not verify", one.stdout)
    changed = tmp_path / "changed.txt"
    changed.write_text("\n".join(tampered) + "\n")
    every = floorgate("tse", "verify", "--qr-file", str(changed), "--json")
    assert every.returncode == 1
    receipts = json.loads(every.stdout)["receipts"]
    assert len(receipts) == 8
    for receipt in receipts:
        assert receipt["valid"] is False
        failed = {c["name"] for c in receipt["checks"] if c["ok"] is False}
        assert failed, receipt
        assert failed <= {"signature", "public_key"}, receipt


def test_cli_json_and_stdin() -> None:
    done = floorgate("tse", "verify", "--qr-file", "-", "--json",
                     stdin=f"# two receipts\n{P256_QR}\n\n{change_one_character(BRAINPOOL_QR, 5)}\n")  # fmt: skip
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["valid"] is False
    assert [r["valid"] for r in report["receipts"]] == [True, False]
    failed = [c for c in report["receipts"][1]["checks"] if c["ok"] is False]
    assert [c["name"] for c in failed] == ["signature"]
    assert report["receipts"][0]["serial"] == "aadfb3152cbde762aa5027e350ba9aeacb69b6236b4f25fc3ea78b69e610952a"


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert floorgate("tse", "verify").returncode == 2
    assert floorgate("tse", "verify", P256_QR, "--tar", "x.tar").returncode == 2
    missing = floorgate("tse", "verify", "--qr-file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert floorgate("tse", "verify", "--qr-file", str(empty)).returncode == 2
    assert floorgate("tse", "verify", P256_QR, "--partial").returncode == 2


@pytest.mark.parametrize("command", [["tse"], ["tse", "verify"], ["tse", "info"], ["tse", "init"], ["tse", "selftest"],
                                     ["tse", "receipt"], ["tse", "export"]])  # fmt: skip
def test_every_tse_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from floorgate_cli import main

    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: floorgate tse")
    assert len(out.splitlines()) > 3
