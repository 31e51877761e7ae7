"""Weighing tickets and TSE transactions at /api/v1 on real Postgres over real HTTP: net by difference in exact
decimals, numbering, references, cancel with a reason, the audit trail, filters and paging, and the CSV exports
(parsed back with the csv module). Weighings and TSE transactions are inserted directly (they arrive by sync).
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from central.db.models import Ticket, TseTransaction, Weighing
from tests.api_support import ApiHarness
from tests.business_support import audit_entries, failed, walk

pytestmark = pytest.mark.integration


def _weighing(api: ApiHarness, gross: str, unit: str = "kg") -> int:
    now = datetime.now(UTC)
    with api.sessions.begin() as s:
        w = Weighing(node_id="bridge-1", record_id=uuid.uuid4().hex, epoch="e1", seq=1, device_id="scale-1",
                     gross=Decimal(gross), unit=unit, weighed_at=now, received_at=now)
        s.add(w)
        s.flush()
        return w.id


def _master(api: ApiHarness) -> dict[str, Any]:
    op = api.auth("operator")
    partner = api.client.post("/api/v1/partners", headers=op, json={
        "code": "P-1042", "name": 'Hof Meyer "Am Deich", GbR', "kind": "supplier"}).json()
    wheat = api.client.post("/api/v1/articles", headers=op, json={
        "code": "WHEAT-B", "name": "Wheat, bread quality", "unit": "t"}).json()
    barley = api.client.post("/api/v1/articles", headers=op, json={"code": "BARLEY", "name": "Barley",
                                                                   "unit": "t"}).json()
    lot = api.client.post("/api/v1/lots", headers=op, json={"code": "L-1", "article_id": wheat["id"]}).json()
    return {"partner": partner, "wheat": wheat, "barley": barley, "lot": lot}


def _create(api: ApiHarness, **body: Any) -> dict[str, Any]:
    r = api.client.post("/api/v1/tickets", headers=api.auth("operator"), json={"direction": "in", **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_net_is_the_exact_difference_of_the_two_weighings(api: ApiHarness) -> None:
    m = _master(api)
    loaded, empty = _weighing(api, "24560"), _weighing(api, "8420.5")
    t = _create(api, partner_id=m["partner"]["id"], article_id=m["wheat"]["id"], vehicle="STD-AB 123",
                first_weighing_id=loaded, second_weighing_id=empty)
    assert (t["gross"], t["tare"], t["net"], t["unit"], t["status"]) == ("24560", "8420.5", "16139.5", "kg",
                                                                          "complete")
    assert api.client.get(f"/api/v1/tickets/{t['id']}", headers=api.auth("viewer")).json() == t
    with api.sessions() as s:
        row = s.get(Ticket, t["id"])
        assert row is not None
        assert row.net == Decimal("16139.5")
        assert row.gross is not None
        assert row.tare is not None
        assert row.gross - row.tare == row.net

    # outgoing: empty first, loaded second — gross is still the larger; and no float drift (0.3 − 0.1 = 0.2)
    out = _create(api, direction="out", first_weighing_id=_weighing(api, "0.1", "t"),
                  second_weighing_id=_weighing(api, "0.3", "t"))
    assert (out["gross"], out["tare"], out["net"], out["unit"]) == ("0.3", "0.1", "0.2", "t")
    fine = _create(api, first_weighing_id=_weighing(api, "100.005", "g"),
                   second_weighing_id=_weighing(api, "99.999999", "g"))
    assert fine["net"] == "0.005001"

    failed(api.client.post("/api/v1/tickets", headers=api.auth("operator"), json={
        "direction": "in", "first_weighing_id": _weighing(api, "24560", "kg"),
        "second_weighing_id": _weighing(api, "8.4", "t")}), 422, "unit_mismatch", "second_weighing_id")
    failed(api.client.post("/api/v1/tickets", headers=api.auth("operator"), json={
        "direction": "in", "first_weighing_id": loaded + 0, "second_weighing_id": loaded}),
        422, "invalid_request", "second_weighing_id")


def test_ticket_numbers_references_and_weighings_used_once(api: ApiHarness) -> None:
    m = _master(api)
    op = api.auth("operator")
    year = datetime.now(UTC).year
    first, second = _create(api), _create(api, direction="out")
    assert (first["number"], second["number"]) == (f"T-{year}-000001", f"T-{year}-000002")
    assert (first["status"], first["gross"], first["net"]) == ("open", None, None)
    assert _create(api, number="WB-4711")["number"] == "WB-4711"
    assert _create(api)["number"] == f"T-{year}-000003"
    failed(api.client.post("/api/v1/tickets", headers=op, json={"direction": "in", "number": "WB-4711"}),
           409, "conflict", "number")
    failed(api.client.post("/api/v1/tickets", headers=op, json={"direction": "in", "number": "T-x"}),
           422, "invalid_request", "number")  # the automatic numbers' prefix is reserved
    failed(api.client.post("/api/v1/tickets", headers=op, json={"direction": "sideways"}),
           422, "invalid_request", "direction")
    failed(api.client.post("/api/v1/tickets", headers=op, json={}), 422, "invalid_request", "direction")

    for field in ("partner_id", "article_id", "lot_id", "site_id", "first_weighing_id"):
        failed(api.client.post("/api/v1/tickets", headers=op, json={"direction": "in", field: 987654}),
               422, "invalid_reference", field)
    failed(api.client.post("/api/v1/tickets", headers=op, json={"direction": "in", "article_id": m["barley"]["id"],
                                                                "lot_id": m["lot"]["id"]}),
           422, "invalid_reference", "lot_id")
    assert _create(api, lot_id=m["lot"]["id"])["article_id"] == m["wheat"]["id"]  # taken from the lot

    w1, w2 = _weighing(api, "30000"), _weighing(api, "12000")
    taken = _create(api, first_weighing_id=w1)
    assert (taken["status"], taken["unit"]) == ("open", "kg")
    failed(api.client.post("/api/v1/tickets", headers=op, json={"direction": "in", "second_weighing_id": w1}),
           409, "conflict", "second_weighing_id")
    done = api.client.patch(f"/api/v1/tickets/{taken['id']}", headers=op, json={"second_weighing_id": w2}).json()
    assert (done["status"], done["net"]) == ("complete", "18000")
    cancel = api.client.post(f"/api/v1/tickets/{taken['id']}/cancel", headers=op, json={"reason": "wrong truck"})
    assert cancel.status_code == 200, cancel.text
    again = _create(api, first_weighing_id=w1, second_weighing_id=w2)  # a cancelled ticket frees its weighings
    assert again["net"] == "18000"
    failed(api.client.get("/api/v1/tickets/424242", headers=op), 404, "not_found", "ticket_id")


def test_update_cancel_and_their_audit_trail(api: ApiHarness) -> None:
    m = _master(api)
    op = api.auth("operator")
    t = _create(api, partner_id=m["partner"]["id"], first_weighing_id=_weighing(api, "24560"))
    url = f"/api/v1/tickets/{t['id']}"
    second = _weighing(api, "8420.5")
    r = api.client.patch(url, headers=op, json={"second_weighing_id": second, "vehicle": "STD-XY 9",
                                                "delivery_note": "LS-1"})
    assert r.status_code == 200, r.text
    assert (r.json()["net"], r.json()["status"], r.json()["vehicle"]) == ("16139.5", "complete", "STD-XY 9")
    assert api.client.patch(url, headers=op, json={"partner_id": None}).json()["partner_id"] is None
    failed(api.client.patch(url, headers=op, json={"direction": None}), 422, "invalid_request", "direction")
    failed(api.client.patch(url, headers=op, json={"status": "complete"}), 422, "invalid_request", "status")

    failed(api.client.post(f"{url}/cancel", headers=op, json={}), 422, "invalid_request", "reason")
    failed(api.client.post(f"{url}/cancel", headers=op, json={"reason": "  \t"}), 422, "invalid_request", "reason")
    failed(api.client.post(f"{url}/cancel", headers=op), 422, "invalid_request")
    r = api.client.post(f"{url}/cancel", headers=op, json={"reason": "driver weighed twice"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["cancel_reason"], r.json()["net"]) == (
        "cancelled", "driver weighed twice", "16139.5")
    failed(api.client.post(f"{url}/cancel", headers=op, json={"reason": "again"}), 409, "ticket_cancelled")
    failed(api.client.patch(url, headers=op, json={"notes": "late"}), 409, "ticket_cancelled")
    assert api.client.delete(url, headers=api.auth("admin")).status_code == 405  # never deleted
    failed(api.client.post("/api/v1/tickets/424242/cancel", headers=op, json={"reason": "x"}), 404, "not_found")

    trail = audit_entries(api, resource="tickets", resource_id=str(t["id"]), sort="at")
    assert [e["action"] for e in trail] == ["create", "update", "update", "cancel"]
    create, weigh, unlink, cancel = trail
    assert create["before"] is None
    assert (create["after"]["number"], create["after"]["status"]) == (t["number"], "open")
    assert weigh["before"]["net"] is None
    assert Decimal(weigh["after"]["net"]) == Decimal("16139.5")
    assert (weigh["before"]["status"], weigh["after"]["status"]) == ("open", "complete")
    assert (weigh["before"]["vehicle"], weigh["after"]["vehicle"]) == (None, "STD-XY 9")
    assert (unlink["before"]["partner_id"], unlink["after"]["partner_id"]) == (m["partner"]["id"], None)
    assert cancel["before"]["status"] == "complete"
    assert cancel["after"]["status"] == "cancelled"
    assert cancel["after"]["cancel_reason"] == "driver weighed twice"
    assert "number" not in cancel["after"]  # an update keeps only what changed
    assert {e["actor"] for e in trail} == {create["actor"]}
    assert create["actor"].startswith("user:operator-")


def test_ticket_list_filters_sorting_and_cursor_paging(api: ApiHarness) -> None:
    m = _master(api)
    made = []
    for i in range(7):
        made.append(_create(api, direction="in" if i % 2 else "out", vehicle=f"STD-AB {i}",
                            partner_id=m["partner"]["id"] if i < 3 else None, delivery_note=f"LS-{i}",
                            article_id=m["wheat"]["id"] if i % 3 == 0 else m["barley"]["id"]))
    viewer = api.auth("viewer")
    newest = [t["id"] for t in reversed(made)]
    assert [t["id"] for t in walk(api, "/api/v1/tickets", viewer, limit=3)] == newest
    assert [t["id"] for t in walk(api, "/api/v1/tickets", viewer, limit=2, sort="created_at")] == newest[::-1]
    assert [t["number"] for t in walk(api, "/api/v1/tickets", viewer, limit=3, sort="-number")] == \
        sorted((t["number"] for t in made), reverse=True)
    assert [t["id"] for t in walk(api, "/api/v1/tickets", viewer, limit=4, sort="id")] == newest[::-1]

    def ids(**params: Any) -> list[int]:
        return sorted(t["id"] for t in walk(api, "/api/v1/tickets", viewer, **params))

    all_ids = sorted(newest)
    assert ids(direction="in") == [all_ids[i] for i in (1, 3, 5)]
    assert ids(partner_id=m["partner"]["id"]) == all_ids[:3]
    assert ids(article_id=m["wheat"]["id"]) == [all_ids[i] for i in (0, 3, 6)]
    assert ids(vehicle="ab 4") == [all_ids[4]]
    assert ids(delivery_note="LS-5") == [all_ids[5]]
    assert ids(number=made[2]["number"]) == [all_ids[2]]
    assert ids(status="cancelled") == []
    api.client.post(f"/api/v1/tickets/{all_ids[6]}/cancel", headers=api.auth("operator"), json={"reason": "test"})
    assert ids(status="cancelled") == [all_ids[6]]
    assert ids(status="open", direction="out") == [all_ids[i] for i in (0, 2, 4)]
    t3 = datetime.fromisoformat(made[3]["created_at"])
    assert ids(since=t3.isoformat()) == all_ids[3:]
    assert ids(until=t3.isoformat()) == all_ids[:3]
    assert ids(since=t3.replace(tzinfo=None).isoformat()) == all_ids[3:]  # no zone: UTC
    assert ids(since=t3.astimezone(timezone(timedelta(hours=5))).isoformat()) == all_ids[3:]  # any zone, same instant

    first = api.client.get("/api/v1/tickets", headers=viewer, params={"limit": 2}).json()
    failed(api.client.get("/api/v1/tickets", headers=viewer, params={"cursor": first["next_cursor"],
                                                                     "sort": "number"}),
           400, "invalid_cursor", "cursor")
    failed(api.client.get("/api/v1/tickets", headers=viewer, params={"sort": "net"}), 400, "invalid_sort", "sort")
    failed(api.client.get("/api/v1/tickets", headers=viewer, params={"status": "lost"}),
           422, "invalid_request", "status")
    failed(api.client.get("/api/v1/tickets", headers=viewer, params={"partner_id": 2**64}),
           422, "invalid_request", "partner_id")


def _csv(r: Any) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.content.count(b"\r\n") >= 1
    return list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))


def test_ticket_csv_export_is_exact_and_survives_commas_and_quotes(api: ApiHarness) -> None:
    m = _master(api)
    t = _create(api, partner_id=m["partner"]["id"], lot_id=m["lot"]["id"], vehicle="STD-AB 123",
                notes="line one\nline two, with comma", first_weighing_id=_weighing(api, "24560"),
                second_weighing_id=_weighing(api, "8420.5"))
    other = _create(api, direction="out")
    auditor = api.auth("auditor")
    r = api.client.get("/api/v1/tickets.csv", headers=auditor)
    text = r.content.decode()
    assert text.splitlines()[0] == (
        "id,number,status,direction,created_at,updated_at,site_id,site_code,partner_id,partner_code,partner_name,"
        "article_id,article_code,article_name,lot_id,lot_code,vehicle,delivery_note,first_weighing_id,"
        "second_weighing_id,gross,tare,net,unit,cancel_reason,notes,cancelled_by,cancelled_at,timezone,"
        + ",".join(f"{n}_{c}" for n in ("first", "second") for c in (
            "weighed_at_local", "weighed_at_utc", "gross", "tare", "tare_preset", "net", "scale", "scale_serial",
            "instrument_alibi", "alibi_no", "alibi_hash")))
    rows = _csv(r)
    assert [row["id"] for row in rows] == [str(t["id"]), str(other["id"])]  # oldest first
    row = rows[0]
    assert row["partner_name"] == 'Hof Meyer "Am Deich", GbR'
    assert row["article_name"] == "Wheat, bread quality"
    assert (row["gross"], row["tare"], row["net"], row["unit"]) == ("24560", "8420.5", "16139.5", "kg")
    assert (row["lot_code"], row["partner_code"], row["status"]) == ("L-1", "P-1042", "complete")
    assert row["notes"] == "line one\nline two, with comma"
    assert row["created_at"].endswith("Z")
    assert datetime.fromisoformat(row["created_at"]) == datetime.fromisoformat(t["created_at"])
    assert rows[1]["partner_name"] == ""
    assert rows[1]["net"] == ""
    # the list's filters and sort apply
    assert [r["id"] for r in _csv(api.client.get("/api/v1/tickets.csv", headers=auditor,
                                                 params={"direction": "out"}))] == [str(other["id"])]
    assert [r["id"] for r in _csv(api.client.get("/api/v1/tickets.csv", headers=auditor,
                                                 params={"sort": "-id"}))] == [str(other["id"]), str(t["id"])]
    assert _csv(api.client.get("/api/v1/tickets.csv", headers=auditor, params={"status": "cancelled"})) == []
    failed(api.client.get("/api/v1/tickets.csv", headers=auditor, params={"sort": "net"}), 400, "invalid_sort")
    failed(api.client.get("/api/v1/tickets.csv", headers=api.auth("viewer")), 403, "forbidden")


def test_ticket_csv_export_streams_many_batches(api: ApiHarness) -> None:
    now = datetime.now(UTC)
    count = 1234  # more than two batches of 500
    with api.sessions.begin() as s:
        s.add_all(Ticket(number=f"N-{i:05d}", direction="in", status="open", unit="kg", created_at=now,
                         updated_at=now, vehicle=f"V {i}") for i in range(count))
    r = api.client.get("/api/v1/tickets.csv", headers=api.auth("operator"), params={"sort": "number"})
    rows = _csv(r)
    assert [row["number"] for row in rows] == [f"N-{i:05d}" for i in range(count)]
    assert len({row["id"] for row in rows}) == count


def _tse(api: ApiHarness) -> list[int]:
    base = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
    ids = []
    with api.sessions.begin() as s:
        for i in range(6):
            tx = TseTransaction(
                node_id="shop-1" if i < 4 else "shop-2", record_id=f"r{i}", tse_serial="3c1f" * 16,
                client_id="KASSE-01" if i % 2 == 0 else "KASSE-02", tx_number=100 + i, signature_counter=200 + 2 * i,
                process_type="Kassenbeleg-V1", process_data=f"Beleg^{i}.00_0.00_0.00_0.00_0.00^{i}.00:Bar",
                started_at=base + timedelta(minutes=i), finished_at=base + timedelta(minutes=i, seconds=5),
                signature=f"c2lnbmF0dXJl{i}==", algorithm="ecdsa-plain-SHA256", time_format="unixTime",
                total=Decimal(f"{i}.10"), currency="EUR", tse_failed=i == 5,
                verified=["pending", "valid", "invalid"][i % 3], received_at=base + timedelta(hours=1))
            s.add(tx)
            s.flush()
            ids.append(tx.id)
    return ids


def test_tse_transactions_list_get_and_filters(api: ApiHarness) -> None:
    ids = _tse(api)
    auditor = api.auth("auditor")
    newest = walk(api, "/api/v1/tse-transactions", auditor, limit=4)
    assert [t["id"] for t in newest] == ids[::-1]
    assert [t["tx_number"] for t in walk(api, "/api/v1/tse-transactions", auditor, limit=2, sort="tx_number")] == \
        list(range(100, 106))
    one = api.client.get(f"/api/v1/tse-transactions/{ids[1]}", headers=auditor).json()
    assert (one["total"], one["currency"], one["verified"], one["client_id"]) == ("1.1", "EUR", "valid", "KASSE-02")
    assert one["finished_at"] == "2025-03-04T08:01:05Z"
    assert one == newest[-2]

    def txs(**params: Any) -> list[int]:
        return [t["tx_number"] for t in walk(api, "/api/v1/tse-transactions", auditor, sort="id", **params)]

    assert txs(node_id="shop-2") == [104, 105]
    assert txs(client_id="KASSE-02") == [101, 103, 105]
    assert txs(verified="invalid") == [102, 105]
    assert txs(tse_serial="3c1f" * 16) == list(range(100, 106))
    assert txs(since="2025-03-04T08:02:05Z", until="2025-03-04T08:04:05Z") == [102, 103]
    assert txs(since="2025-03-04T09:02:05+01:00") == [102, 103, 104, 105]
    failed(api.client.get("/api/v1/tse-transactions/999", headers=auditor), 404, "not_found", "transaction_id")
    failed(api.client.get("/api/v1/tse-transactions", headers=auditor, params={"sort": "total"}),
           400, "invalid_sort", "sort")
    failed(api.client.get("/api/v1/tse-transactions", headers=auditor, params={"verified": "maybe"}),
           422, "invalid_request", "verified")
    assert api.client.post("/api/v1/tse-transactions", headers=api.auth("admin"), json={}).status_code == 405
    for path in ("/api/v1/tse-transactions", f"/api/v1/tse-transactions/{ids[0]}"):
        failed(api.client.get(path, headers=api.auth("viewer")), 403, "forbidden")
        assert api.client.get(path, headers=api.auth("operator")).status_code == 200


def test_tse_csv_has_the_dsfinvk_tse_transaktionen_columns(api: ApiHarness) -> None:
    _tse(api)
    r = api.client.get("/api/v1/tse-transactions.csv", headers=api.auth("auditor"), params={"client_id": "KASSE-02"})
    assert r.content.decode().splitlines()[0] == (
        "Z_KASSE_ID,Z_ERSTELLUNG,Z_NR,BON_ID,TSE_ID,TSE_TANR,TSE_TA_START,TSE_TA_ENDE,TSE_TA_VORGANGSART,"
        "TSE_TA_SIGZ,TSE_TA_SIG,TSE_TA_FEHLER,TSE_TA_VORGANGSDATEN")
    rows = _csv(r)
    assert [row["TSE_TANR"] for row in rows] == ["101", "103", "105"]
    first = rows[0]
    assert first == {
        "Z_KASSE_ID": "KASSE-02", "Z_ERSTELLUNG": "", "Z_NR": "", "BON_ID": "", "TSE_ID": "3c1f" * 16,
        "TSE_TANR": "101", "TSE_TA_START": "2025-03-04T08:01:00Z", "TSE_TA_ENDE": "2025-03-04T08:01:05Z",
        "TSE_TA_VORGANGSART": "Kassenbeleg-V1", "TSE_TA_SIGZ": "202", "TSE_TA_SIG": "c2lnbmF0dXJl1==",
        "TSE_TA_FEHLER": "", "TSE_TA_VORGANGSDATEN": "Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Bar"}
    assert rows[2]["TSE_TA_FEHLER"] == "TSE ausgefallen"
    assert [row["TSE_TANR"] for row in _csv(api.client.get(
        "/api/v1/tse-transactions.csv", headers=api.auth("operator"), params={"sort": "-tx_number"}))] == \
        [str(n) for n in range(105, 99, -1)]
    failed(api.client.get("/api/v1/tse-transactions.csv", headers=api.auth("viewer")), 403, "forbidden")


def test_openapi_documents_the_csv_exports_and_every_error(api: ApiHarness) -> None:
    doc = api.app.openapi()
    for path in ("/api/v1/tickets.csv", "/api/v1/tse-transactions.csv", "/api/v1/weighings.csv"):
        responses = doc["paths"][path]["get"]["responses"]
        assert list(responses["200"]["content"]) == ["text/csv"]
        assert responses["200"]["content"]["text/csv"]["example"].count("\r\n") == 2
        for status in ("400", "401", "403", "422"):
            assert list(responses[status]["content"]) == ["application/json"], (path, status)
    for path, ops in doc["paths"].items():
        if not path.startswith(("/api/v1/tickets", "/api/v1/tse-transactions")):
            continue
        for method, op in ops.items():
            assert op["summary"], (method, path)
            assert {"401", "403", "422"} <= set(op["responses"]), (method, path)
            if "{" in path:
                assert "404" in op["responses"], (method, path)
            if method in ("patch", "post"):
                assert "409" in op["responses"], (method, path)
