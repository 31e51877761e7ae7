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
from pathlib import Path

import pytest

from central.db.models import TseExport
from protocols.tse.processdata import PROCESS_TYPE
from protocols.tse.tarexport import build_tar
from tests.api_support import ApiHarness
from tests.business_support import failed, walk
from tests.fiscal_support import Register, beleg

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


def test_a_filtered_export_needs_partial(api: ApiHarness, register: Register) -> None:
    register.tse.register_client("KASSE-02")
    for client in ("KASSE-01", "KASSE-02", "KASSE-01"):
        start = register.tse.start_transaction(client, b"", PROCESS_TYPE)
        register.tse.finish_transaction(client, start.transaction_number, beleg("1.00"), PROCESS_TYPE)
    only_one = register.tse.export(client_id="KASSE-01")  # counters 1, 2, 5, 6: a gap, legitimately
    operator = api.auth("operator")
    body = failed(api.client.post("/api/v1/tse-exports", headers={**operator, **TAR}, content=only_one),
                  422, "invalid_tse_export", "body")
    assert "signature_counters: 1..6 with gaps: 3-4 missing" in body["message"]
    r = api.client.post("/api/v1/tse-exports", headers={**operator, "Content-Type": "application/octet-stream"},
                        content=only_one, params={"partial": "true"})
    assert r.status_code == 201, r.text
    assert (r.json()["partial"], r.json()["log_messages"], r.json()["first_tx"], r.json()["last_tx"]) == (
        True, 4, 1, 3)
