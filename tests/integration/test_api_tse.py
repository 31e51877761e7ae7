"""TSE transactions and TSE exports through central's API (real HTTP, real Postgres): sales made by the real software
TSE and applied with the real ``apply_batch`` are listed with central's verification and exported in the DSFinV-K
shape; TAR exports are uploaded, verified, listed and downloaded byte for byte, a tampered one is refused."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from central.db.models import TseExport
from protocols.tse.processdata import PROCESS_TYPE
from protocols.tse.tarexport import build_tar
from protocols.tse.verify_tar import verify_tar
from tests.api_support import ApiHarness
from tests.business_support import failed, walk
from tests.fiscal_support import Register, beleg
from tests.procs import wait_until

pytestmark = pytest.mark.integration
TAR = {"Content-Type": "application/x-tar"}


@pytest.fixture
def register(api: ApiHarness, tmp_path: Path) -> Iterator[Register]:
    r = Register(api.sessions, tmp_path / "tse")
    yield r
    r.close()


def test_the_list_shows_central_s_verification_and_the_csv_the_receipt_ids_and_failures(
        api: ApiHarness, register: Register) -> None:
    honest = register.sale("12.50")
    forged = register.sale("3.20", process_data=beleg("0.20"), total="0.20")
    lost = register.failed_sale("4.00", error="TSE not reachable")
    register.send(honest, forged, lost)
    auditor = api.auth("auditor")
    items = walk(api, "/api/v1/tse-transactions", auditor, sort="id")
    assert [(t["tx_number"], t["verified"], t["tse_failed"]) for t in items] == [
        (1, "valid", False), (2, "invalid", False), (None, "tse_failed", True)]
    one, two, three = items
    assert (one["verify_error"], one["start_counter"], one["signature_counter"], one["receipt_id"]) == (
        None, 1, 2, "B-1")
    assert (one["device_id"], one["tse_serial"], one["gap_before"]) == ("tse-1", register.serial, None)
    assert two["verify_error"].startswith("signature: does not verify over the FinishTransaction of transaction 2")
    assert (three["signature"], three["signature_counter"], three["tse_error"]) == (None, None, "TSE not reachable")
    only = walk(api, "/api/v1/tse-transactions", auditor, verified="tse_failed")
    assert [t["id"] for t in only] == [three["id"]]
    assert [t["tx_number"] for t in walk(api, "/api/v1/tse-transactions", auditor, sort="tx_number", limit=1)] == \
        [None, 1, 2]  # a sale without a number sorts first and pages like any other

    r = api.client.get("/api/v1/tse-transactions.csv", headers=auditor, params={"sort": "id"})
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert [(row["BON_ID"], row["TSE_TANR"], row["TSE_TA_SIGZ"], row["TSE_TA_FEHLER"]) for row in rows] == [
        ("B-1", "1", "2", ""), ("B-2", "2", "4", ""), ("", "", "", "TSE ausgefallen: TSE not reachable")]
    assert rows[0]["TSE_TA_SIG"] == honest.data["signature"]


# -- TAR exports ---------------------------------------------------------------------------------------------------


def _tampered(export: bytes) -> bytes:
    """The export with one bit of the first Finish log message's signature changed (a valid TAR still)."""
    members = []
    done = False
    with tarfile.open(fileobj=io.BytesIO(export)) as tar:
        for m in tar.getmembers():
            content = tar.extractfile(m).read()  # type: ignore[union-attr]
            if not done and "_Finish_" in m.name:
                content = content[:-1] + bytes([content[-1] ^ 0x01])
                done = True
            members.append((m.name, content, int(m.mtime)))
    return build_tar(members)


def test_tar_exports_are_kept_byte_for_byte_verified_and_listed(api: ApiHarness, register: Register) -> None:
    register.send(*[register.sale(f"{i}.00") for i in range(1, 4)])
    export = register.tse.export()
    operator, auditor = api.auth("operator"), api.auth("auditor")
    r = api.client.post("/api/v1/tse-exports", headers={**operator, **TAR}, content=export,
                        params={"filename": "TSE export 2025/12.tar"})
    assert r.status_code == 201, r.text
    stored = r.json()
    assert (stored["tse_serial"], stored["size"], stored["sha256"]) == (register.serial, len(export),
                                                                        hashlib.sha256(export).hexdigest())
    assert (stored["log_messages"], stored["first_counter"], stored["last_counter"]) == (6, 1, 6)
    assert (stored["first_tx"], stored["last_tx"], stored["partial"]) == (1, 3, False)
    assert stored["report"]["valid"] is True
    assert stored["report"]["serials"] == [register.serial]
    assert {c["name"]: c["ok"] for c in stored["report"]["checks"]}["signature_counters"] is True
    assert stored["uploaded_by"] == f"user:{api.auth_names['operator']}"

    again = api.client.post("/api/v1/tse-exports", headers={**operator, **TAR}, content=export)
    assert (again.status_code, again.json()["id"]) == (200, stored["id"])  # the same bytes: the export held

    download = api.client.get(f"/api/v1/tse-exports/{stored['id']}", headers=auditor)
    assert download.status_code == 200
    assert download.content == export
    assert download.headers["content-type"] == "application/x-tar"
    assert download.headers["content-disposition"] == 'attachment; filename="TSE_export_2025_12.tar"'
    assert download.headers["x-content-sha256"] == stored["sha256"]

    assert [e["id"] for e in walk(api, "/api/v1/tse-exports", auditor)] == [stored["id"]]
    assert walk(api, "/api/v1/tse-exports", auditor, tse_serial=register.serial.upper())[0]["id"] == stored["id"]
    assert walk(api, "/api/v1/tse-exports", auditor, tse_serial="ab" * 32) == []
    audit = walk(api, "/api/v1/audit-log", api.auth("admin"), resource="tse_exports")
    assert [(e["action"], e["resource_id"], e["after"]["sha256"]) for e in audit] == [
        ("create", str(stored["id"]), stored["sha256"])]
    failed(api.client.get("/api/v1/tse-exports/999", headers=auditor), 404, "not_found", "export_id")


def test_a_tampered_or_foreign_upload_is_refused_and_nothing_is_kept(api: ApiHarness, register: Register) -> None:
    register.send(register.sale("1.00"), register.sale("2.00"))
    export = register.tse.export()
    operator = api.auth("operator")

    body = failed(api.client.post("/api/v1/tse-exports", headers={**operator, **TAR}, content=_tampered(export)),
                  422, "invalid_tse_export", "body")
    message = body["message"]
    assert message.startswith("the export does not verify: ")
    assert "_Finish_Client-KASSE-01.log: signature: does not verify" in message

    body = failed(api.client.post("/api/v1/tse-exports", headers={**operator, **TAR}, content=gzip.compress(export)),
                  422, "invalid_tse_export", "body")
    assert body["message"].startswith("not an uncompressed TAR archive")
    failed(api.client.post("/api/v1/tse-exports", headers={**operator, **TAR}, content=b"x" * 1000),
           422, "invalid_tse_export", "body")
    body = failed(api.client.post("/api/v1/tse-exports", headers={**operator, "Content-Type": "application/json"},
                                  content=b"{}"), 415, "unsupported_media_type", "body")
    assert "application/x-tar or application/octet-stream" in body["message"]
    failed(api.client.post("/api/v1/tse-exports", headers={**api.auth("auditor"), **TAR}, content=export),
           403, "forbidden")
    with api.sessions() as s:
        assert s.query(TseExport).count() == 0


def _without(export: bytes, drop: Any) -> bytes:
    """The export rebuilt without the log messages whose signature counter ``drop`` picks (a valid TAR still)."""
    counters = {e.name: e.signature_counter for e in verify_tar(export).entries if e.kind == "log"}
    members = []
    with tarfile.open(fileobj=io.BytesIO(export)) as tar:
        for m in tar.getmembers():
            if m.name in counters and drop(counters[m.name]):
                continue
            members.append((m.name, tar.extractfile(m).read(), int(m.mtime)))  # type: ignore[union-attr]
    return build_tar(members)


def _upload(api: ApiHarness, export: bytes, **params: Any) -> Any:
    return api.client.post("/api/v1/tse-exports", headers={**api.auth("operator"), **TAR}, content=export,
                           params=params)


def test_partial_is_no_switch_it_follows_from_the_stated_range(api: ApiHarness, register: Register) -> None:
    register.tse.register_client("KASSE-02")
    for client in ("KASSE-01", "KASSE-02", "KASSE-01"):
        start = register.tse.start_transaction(client, b"", PROCESS_TYPE)
        register.tse.finish_transaction(client, start.transaction_number, beleg("1.00"), PROCESS_TYPE)
    only_one = register.tse.export(client_id="KASSE-01")  # counters 1, 2, 5, 6: a gap, legitimately
    body = failed(_upload(api, only_one), 422, "invalid_tse_export", "body")  # said to be the whole TSE
    assert "signature_counters: 1..6 with gaps: 3-4 missing" in body["message"]
    body = failed(_upload(api, only_one, partial="true"), 422, "invalid_request", "partial")
    assert body["message"].startswith("partial is not a switch any more: state what the export covers")
    body = failed(_upload(api, only_one, client_id="KASSE-02"), 422, "invalid_tse_export", "body")
    assert "transactions of client(s) KASSE-01, not only of KASSE-02" in body["message"]
    r = _upload(api, only_one, client_id="KASSE-01")
    assert r.status_code == 201, r.text
    stored = r.json()
    assert (stored["partial"], stored["log_messages"], stored["first_tx"], stored["last_tx"]) == (True, 4, 1, 3)
    assert (stored["stated_range"], stored["findings"]) == ({"client_id": "KASSE-01"}, [])
    with api.sessions() as s:
        assert s.get(TseExport, stored["id"]).stated_range == {"client_id": "KASSE-01"}  # type: ignore[union-attr]


def test_an_export_with_a_range_must_cover_it_gap_detection_stays_on_inside(api: ApiHarness,
                                                                            register: Register) -> None:
    register.send(*[register.sale(f"{i}.00") for i in range(1, 6)])  # transactions 1..5, counters 1..10
    two_to_four = register.tse.export(tx_range=(2, 4))
    r = _upload(api, two_to_four, first_tx=2, last_tx=4)
    assert r.status_code == 201, r.text
    assert (r.json()["partial"], r.json()["stated_range"], r.json()["findings"]) == (
        True, {"first_tx": 2, "last_tx": 4}, [])
    body = failed(_upload(api, register.tse.export(tx_range=(2, 3)), first_tx=2, last_tx=4), 422,
                  "invalid_tse_export", "body")
    assert "transaction(s) 4 of the stated range 2-4 are missing" in body["message"]
    body = failed(_upload(api, register.tse.export(tx_range=(1, 2)), first_tx=2, last_tx=2), 422,
                  "invalid_tse_export", "body")
    assert "transaction(s) 1 lie outside the stated range" in body["message"]
    failed(_upload(api, two_to_four, first_tx=4, last_tx=2), 422, "invalid_request", "last_tx")

    everything = register.tse.export()
    times = sorted({e.message.log_time.unix for e in verify_tar(everything).entries if e.message is not None})
    since, until = (datetime.fromtimestamp(t, UTC).isoformat() for t in (times[0], times[-1]))
    body = failed(_upload(api, _without(everything, lambda c: c == 5), since=since, until=until), 422,
                  "invalid_tse_export", "body")  # a time range alone: its counters must not have gaps
    assert "signature counter(s) 5 are missing inside the stated time range" in body["message"]


def test_a_tar_missing_its_last_log_message_or_transaction_is_flagged(api: ApiHarness, register: Register) -> None:
    register.send(*[register.sale(f"{i}.00") for i in range(1, 4)])  # transactions 1..3, counters 1..6
    export = register.tse.export()
    whole = _upload(api, export)
    assert whole.status_code == 201, whole.text
    assert (whole.json()["findings"], whole.json()["report"]["coverage"]["complete"]) == ([], True)

    no_last_message = _upload(api, _without(export, lambda c: c == 6))  # the Finish of transaction 3
    assert no_last_message.status_code == 201, no_last_message.text  # it verifies: kept, and flagged
    stored = no_last_message.json()
    assert stored["findings"] == [
        "truncated: ends at transaction 3 (signature counter 5), central knows 3 (signature counter 6)",
        "central holds transaction(s) 3 of the stated range (the whole TSE) that the export lacks"]
    assert stored["report"]["coverage"]["complete"] is False
    assert {c["name"]: c["ok"] for c in stored["report"]["checks"]}["coverage"] is False

    no_last_sale = _upload(api, _without(export, lambda c: c >= 5)).json()
    assert no_last_sale["findings"] == [
        "truncated: ends at transaction 2 (signature counter 4), central knows 3 (signature counter 6)"]
    late_start = _upload(api, register.tse.export(tx_range=(2, 3))).json()  # said to be the whole TSE
    assert late_start["findings"] == [
        "starts at signature counter 3, not at the TSE's first (1): log messages 1-2 are not in it (if the TSE's "
        "older data were deleted after an earlier export, state the range: first_tx or since)",
        "central holds transaction(s) 1 of the stated range (the whole TSE) that the export lacks"]


def test_the_registry_lists_the_tses_and_an_admin_confirms_one_audited(api: ApiHarness, tmp_path: Path) -> None:
    unknown = Register(api.sessions, tmp_path / "unknown", listed=False)
    try:
        unknown.send(unknown.sale("1.00"), unknown.sale("2.00"))
    finally:
        unknown.close()
    serial, auditor, admin = unknown.serial, api.auth("auditor"), api.auth("admin")
    r = api.client.get("/api/v1/tse-registry", headers=auditor)
    assert r.status_code == 200, r.text
    [pin] = r.json()["items"]
    assert (pin["serial"], pin["status"], pin["source"], pin["trusted"], pin["transactions"]) == (
        serial, "unconfirmed", "seen", False, 2)
    assert "is not confirmed" in pin["problem"]
    assert api.client.get("/api/v1/tse-registry", headers=auditor, params={"status": "confirmed"}).json() == {
        "items": []}
    failed(api.client.post(f"/api/v1/tse-registry/{serial}/confirm", headers=auditor, json={}), 403, "forbidden")
    failed(api.client.post(f"/api/v1/tse-registry/{'ab' * 32}/confirm", headers=admin, json={}), 404,
           "not_found", "serial")
    failed(api.client.post(f"/api/v1/tse-registry/{serial}/confirm", headers=admin, json={"public_key": "QUJD"}),
           422, "invalid_request", "public_key")

    r = api.client.post(f"/api/v1/tse-registry/{serial}/confirm", headers=admin, json={"reason": "ours"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["trusted"], r.json()["decided_by"]) == (
        "confirmed", True, f"user:{api.auth_names['admin']}")
    wait_until("the TSE's transactions re-verified", lambda: {t["verified"] for t in walk(
        api, "/api/v1/tse-transactions", auditor, tse_serial=serial)} == {"valid"}, timeout_s=30)
    audit = walk(api, "/api/v1/audit-log", admin, resource="tse_pin")
    assert [(e["action"], e["actor"], e["after"].get("reason")) for e in audit] == [  # newest first
        ("confirm", f"user:{api.auth_names['admin']}", "ours"), ("create", "system:ingest", None)]
