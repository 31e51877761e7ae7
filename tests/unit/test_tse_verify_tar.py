"""TAR exports: the software TSE's export re-verifies with ``floorgate tse verify --tar``, entry by entry; an altered,
removed or renamed log file, a counter gap, a clock going back, a missing certificate are reported naming the entry."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.tse import crypto
from protocols.tse.api import ensure_ready
from protocols.tse.logmsg import OID_SYSTEM_LOG, LogMessage, LogTime, OtherCertifiedData
from protocols.tse.software import SoftwareTse
from protocols.tse.tarexport import build_tar, parse_log_file_name
from protocols.tse.verify_tar import TarVerification, verify_tar
from tests.tse_support import P256_QR, FakeClock, floorgate

SALE = "Beleg^21.42_0.00_0.00_0.00_0.00^21.42:Unbar"
PTYPE = "Kassenbeleg-V1"


def _sales(device: SoftwareTse, clock: FakeClock, clients: tuple[str, ...] = ("KASSE-1", "KASSE-2")) -> None:
    """Start, update and finish a sale per client, interleaved, with time passing."""
    for client in clients:
        device.register_client(client)
    for round_ in range(2):
        started = {c: device.start_transaction(c, b"", PTYPE).transaction_number for c in clients}
        clock.advance(1)
        for client, number in started.items():
            device.update_transaction(client, number, f"Beleg^{round_}.00_0.00_0.00_0.00_0.00^", PTYPE)
        clock.advance(1)
        for client, number in started.items():
            device.finish_transaction(client, number, SALE, PTYPE)


@pytest.fixture(params=["brainpoolP384r1", "P-256"])
def exported(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SoftwareTse, FakeClock, bytes]]:
    clock = FakeClock()
    with SoftwareTse(tmp_path / "tse", curve=request.param, clock=clock) as device:
        ensure_ready(device)
        _sales(device, clock)
        yield device, clock, device.export()


def _members(data: bytes) -> list[tuple[str, bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = []
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            out.append((member.name, handle.read(), int(member.mtime)))
        return out


def _rewrite(data: bytes, change: Callable[[list[tuple[str, bytes, int]]], list[tuple[str, bytes, int]]]) -> bytes:
    return build_tar(change(_members(data)))


def _log_names(data: bytes) -> list[str]:
    return [name for name, _, _ in _members(data) if name.endswith(".log")]


def _write(tmp_path: Path, data: bytes, name: str = "export.tar") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _entry(report: TarVerification, name: str) -> dict[str, bool | None]:
    entry = next(e for e in report.entries if e.name == name)
    return {c.name: c.ok for c in entry.checks}


def test_the_export_re_verifies_entry_by_entry_through_the_cli(
    exported: tuple[SoftwareTse, FakeClock, bytes], tmp_path: Path
) -> None:
    _, _, data = exported
    logs = _log_names(data)
    assert len(logs) == 12
    done = floorgate("tse", "verify", "--tar", str(_write(tmp_path, data)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("TAR export: VALID (12 log messages, 14 files, 0 invalid)")
    for name in logs:
        assert f"ok    {name}" in done.stdout
    assert "signature_counters  1..12, no gaps" in done.stdout
    as_json = floorgate("tse", "verify", "--tar", str(_write(tmp_path, data)), "--json")
    report = json.loads(as_json.stdout)
    assert report["valid"] is True
    entries = [e for e in report["entries"] if e["kind"] == "log"]
    assert [e["signature_counter"] for e in entries] == list(range(1, 13))
    for entry in entries:
        checks = {c["name"]: c["ok"] for c in entry["checks"]}
        expected = ["der", "name", "serial", "algorithm", "signature", "sequence", "transaction"]
        assert list(checks) == [n for n in expected if n != "sequence" or entry["signature_counter"] > 1]
        assert all(ok is True for ok in checks.values())
    verbose = floorgate("tse", "verify", "--tar", str(_write(tmp_path, data)), "--verbose")
    assert verbose.stdout.count("ok    signature    verifies") == 12


def test_an_altered_log_file_is_named(exported: tuple[SoftwareTse, FakeClock, bytes], tmp_path: Path) -> None:
    _, _, data = exported
    victim = _log_names(data)[5]

    def alter(members: list[tuple[str, bytes, int]]) -> list[tuple[str, bytes, int]]:
        return [(n, c.replace(b"21.42", b"12.42") if n == victim else c, t) for n, c, t in members]

    altered = _rewrite(data, alter)
    assert altered != data
    report = verify_tar(altered)
    assert not report.valid
    assert [e.name for e in report.invalid_entries] == [victim]
    assert _entry(report, victim)["signature"] is False
    done = floorgate("tse", "verify", "--tar", str(_write(tmp_path, altered)))
    assert done.returncode == 1
    assert f"FAIL  {victim}" in done.stdout
    assert re.search(r"FAIL +signature +does not verify", done.stdout)


def test_a_removed_log_file_is_a_gap_named_at_the_next_entry(
    exported: tuple[SoftwareTse, FakeClock, bytes], tmp_path: Path
) -> None:
    _, _, data = exported
    logs = _log_names(data)
    removed, after = logs[8], logs[9]  # an UpdateTransaction: its transaction stays consistent
    assert "_Sig-9_" in removed
    gapped = _rewrite(data, lambda members: [m for m in members if m[0] != removed])
    done = floorgate("tse", "verify", "--tar", str(_write(tmp_path, gapped)))
    assert done.returncode == 1
    assert f"FAIL  {after}" in done.stdout
    assert "counter 10 follows 8: 9 missing (a log message was removed or never exported)" in done.stdout
    assert "FAIL  signature_counters  1..12 with gaps: 9 missing" in done.stdout
    report = verify_tar(gapped)
    assert [e.name for e in report.invalid_entries] == [after]


def test_a_counter_gap_inside_the_tse_is_reported(tmp_path: Path) -> None:
    """Every signature is genuine, but the counter jumps: as if the TSE had signed something it never exported."""
    clock = FakeClock()
    with SoftwareTse(tmp_path / "tse", curve="P-256", clock=clock) as device:
        ensure_ready(device)
        _sales(device, clock, ("KASSE-1",))
    db = sqlite3.connect(tmp_path / "tse" / "tse-state.db")
    with db:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 2 WHERE key = 'signature_counter'")
    db.close()
    with SoftwareTse(tmp_path / "tse", clock=clock) as device:
        ensure_ready(device)
        start = device.start_transaction("KASSE-1", b"", PTYPE)
        data = device.export()
    assert start.signature_counter == 9
    report = verify_tar(data)
    assert not report.valid
    (bad,) = report.invalid_entries
    assert "_Sig-9_" in bad.name
    sequence = next(c for c in bad.checks if c.name == "sequence")
    assert sequence.detail.startswith("counter 9 follows 6: 7-8 missing")
    assert _entry(report, bad.name)["signature"] is True


def test_a_renamed_log_file_does_not_match_its_content(
    exported: tuple[SoftwareTse, FakeClock, bytes], tmp_path: Path
) -> None:
    _, _, data = exported
    victim = _log_names(data)[2]
    claimed = parse_log_file_name(victim)
    assert claimed is not None
    renamed = victim.replace(f"_No-{claimed.transaction_number}_", "_No-99_").replace("Client-KASSE-1", "Client-X")
    report = verify_tar(_rewrite(data, lambda ms: [(renamed if n == victim else n, c, t) for n, c, t in ms]))
    entry = next(e for e in report.entries if e.name == renamed)
    name_check = next(c for c in entry.checks if c.name == "name")
    assert name_check.ok is False
    assert "No-99 but transactionNumber" in name_check.detail
    assert "Client-X but clientId KASSE-1" in name_check.detail
    assert [e.name for e in report.invalid_entries] == [renamed]


def test_missing_certificate_and_info_csv(exported: tuple[SoftwareTse, FakeClock, bytes], tmp_path: Path) -> None:
    _, _, data = exported
    no_cert = _rewrite(data, lambda ms: [m for m in ms if not m[0].endswith("_X509.pem")])
    report = verify_tar(no_cert)
    assert {c.name: c.ok for c in report.checks}["certificate"] is False
    # no key: no entry's signature can be checked; info.csv names a serial without certificate
    assert [e.kind for e in report.invalid_entries] == ["log"] * 12 + ["info"]
    done = floorgate("tse", "verify", "--tar", str(_write(tmp_path, no_cert)))
    assert done.returncode == 1
    assert "no certificate in the export for serialNumber" in done.stdout
    no_info = verify_tar(_rewrite(data, lambda ms: [m for m in ms if m[0] != "info.csv"]))
    assert {c.name: c for c in no_info.checks}["info.csv"].detail == "missing from the export"
    assert not no_info.valid


def test_a_certificate_of_another_key_is_refused(
    tmp_path: Path, exported: tuple[SoftwareTse, FakeClock, bytes]
) -> None:
    _, _, data = exported
    with SoftwareTse(tmp_path / "other") as other:
        foreign = other.info().certificate_pem
    swapped = _rewrite(data, lambda ms: [(n, foreign if n.endswith("_X509.pem") else c, t) for n, c, t in ms])
    report = verify_tar(swapped)
    cert = next(e for e in report.entries if e.kind == "certificate")
    assert {c.name: c.ok for c in cert.checks}["serial"] is False
    assert not report.valid


def test_a_clock_going_back_is_named(tmp_path: Path) -> None:
    clock = FakeClock()
    with SoftwareTse(tmp_path / "tse", clock=clock) as device:
        ensure_ready(device)
        device.register_client("K")
        first = device.start_transaction("K")
        clock.advance(-60)  # the host clock jumps back
        second = device.start_transaction("K")
        data = device.export()
    report = verify_tar(data)
    entry = next(e for e in report.entries if "_Sig-2_" in e.name)
    time_check = next(c for c in entry.checks if c.name == "time")
    assert time_check.ok is False
    assert f"logTime {second.log_time} is before {first.log_time}" in time_check.detail


def test_filtered_exports_verify_with_partial(exported: tuple[SoftwareTse, FakeClock, bytes], tmp_path: Path) -> None:
    device, _, _ = exported
    one_client = device.export(client_id="KASSE-2")
    strict = floorgate("tse", "verify", "--tar", str(_write(tmp_path, one_client)))
    assert strict.returncode == 1
    assert "missing (a log message was removed or never exported)" in strict.stdout
    partial = floorgate("tse", "verify", "--tar", str(_write(tmp_path, one_client)), "--partial")
    assert partial.returncode == 0, partial.stdout
    assert "(partial export)" in partial.stdout
    # the second round: started at +2, updated at +3, finished at +4 (FakeClock starts at 1_700_000_000)
    without_starts = device.export(time_range=(1_700_000_003, 1_700_000_004))
    names = _log_names(without_starts)
    assert len(names) == 4
    assert not any("_Start_" in n for n in names)
    assert not verify_tar(without_starts).valid  # Update and Finish without their Start
    assert verify_tar(without_starts, partial=True).valid


def test_log_messages_in_the_wrong_order_of_a_transaction(tmp_path: Path) -> None:
    """A Finish whose Start is missing from a full export, and an Update after the Finish, are named."""
    clock = FakeClock()
    with SoftwareTse(tmp_path / "tse", clock=clock) as device:
        ensure_ready(device)
        _sales(device, clock, ("K",))
        data = device.export()
    start_of_first = _log_names(data)[0]
    report = verify_tar(_rewrite(data, lambda ms: [m for m in ms if m[0] != start_of_first]))
    broken = {e.name: {c.name: c for c in e.checks} for e in report.invalid_entries}
    assert all(check["transaction"].ok is False for check in list(broken.values())[:2])
    assert "without its StartTransaction" in next(iter(broken.values()))["transaction"].detail


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    garbage = _write(tmp_path, b"this is not a tar archive" * 40, "garbage.tar")
    done = floorgate("tse", "verify", "--tar", str(garbage))
    assert done.returncode == 2
    assert "not a readable TAR archive" in done.stdout
    assert floorgate("tse", "verify", "--tar", str(tmp_path / "missing.tar")).returncode == 2
    assert verify_tar(b"").readable is False


def test_the_command_line_round_trip_init_receipt_export_verify(tmp_path: Path) -> None:
    directory = str(tmp_path / "tse")
    made = floorgate("tse", "init", "--dir", directory, "--curve", "P-256")
    assert made.returncode == 0, made.stderr
    assert "NOT CERTIFIED" in made.stdout
    assert "NOT CERTIFIED" in made.stderr  # the warning in the log
    receipt = floorgate("tse", "receipt", "--dir", directory, "--client-id", "KASSE 7",
                        "--process-data", "Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF")  # fmt: skip
    assert receipt.returncode == 0, receipt.stderr
    qr = receipt.stdout.strip()
    assert qr.startswith("V0;KASSE 7;Kassenbeleg-V1;Beleg^75.33_")
    assert floorgate("tse", "verify", qr).returncode == 0
    assert floorgate("tse", "selftest", "--dir", directory).returncode == 0
    info = json.loads(floorgate("tse", "info", "--dir", directory, "--json").stdout)
    assert (info["signature_counter"], info["transaction_number"], info["certified"]) == (2, 1, False)
    out = tmp_path / "export.tar"
    assert floorgate("tse", "export", "--dir", directory, "--out", str(out)).returncode == 0
    verified = floorgate("tse", "verify", "--tar", str(out))
    assert verified.returncode == 0, verified.stdout
    bad = floorgate("tse", "receipt", "--dir", directory, "--client-id", "K", "--process-data", "Beleg^1.0")
    assert bad.returncode == 2
    assert "--process-data" in bad.stderr
    assert floorgate("tse", "info", "--dir", str(tmp_path / "nothing")).returncode == 2
    assert floorgate("tse", "verify", P256_QR).returncode == 0


def test_system_log_messages_count_in_the_sequence_and_are_verified(
    exported: tuple[SoftwareTse, FakeClock, bytes],
) -> None:
    """Real TSEs also export system log messages (time updates, self tests): they share the signature counter."""
    device, clock, data = exported
    key = serialization.load_pem_private_key((device.directory / "tse-key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    info = device.info()
    algorithm = crypto.ALGORITHMS[info.algorithm]
    message = LogMessage(
        OID_SYSTEM_LOG, OtherCertifiedData(((0x80, b"UpdateTime"), (0x81, b"\x30\x00"))), info.serial_number,
        algorithm.oid, 13, LogTime.unix_time(int(clock.now)),
    )  # fmt: skip
    signed = message.with_signature(crypto.sign_plain(key, algorithm, message.signed_bytes()))
    name = f"Unixt_{int(clock.now)}_Sig-13_Log-Sys_UpdateTime.log"
    report = verify_tar(_rewrite(data, lambda ms: [*ms, (name, signed.encode(), int(clock.now))]))
    assert report.valid, report.lines()
    assert _entry(report, name)["signature"] is True
    assert {c.name: c.detail for c in report.checks}["signature_counters"] == "1..13, no gaps"
    forged = replace(signed, log_time=LogTime.unix_time(int(clock.now) + 1))
    name = f"Unixt_{int(clock.now) + 1}_Sig-13_Log-Sys_UpdateTime.log"
    report = verify_tar(_rewrite(data, lambda ms: [*ms, (name, forged.encode(), int(clock.now))]))
    assert [e.name for e in report.invalid_entries] == [name]
    assert _entry(report, name)["signature"] is False
