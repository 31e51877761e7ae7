"""Tickets made by pairing, seen through the API on real Postgres over real HTTP: the ticket PDF (rendered to PNG
with pdfium and read back as text), the delivery note PDF, cancelling with the audit trail, the unpaired weighings
and the reference filter."""

from __future__ import annotations

from typing import Any

import pypdfium2 as pdfium
import pytest

from tests.api_support import ApiHarness
from tests.business_support import audit_entries, failed, walk
from tests.ticket_support import LEGAL_NOTICE, T0, Bridge, later

pytestmark = pytest.mark.integration


def _master(api: ApiHarness) -> None:
    op = api.auth("operator")
    for path, body in (("/api/v1/partners", {"code": "P-1042", "name": "Hof Meyer & Söhne GbR", "kind": "supplier"}),
                       ("/api/v1/articles", {"code": "WHEAT-B", "name": "Weizen, Backqualität", "unit": "t"})):
        assert api.client.post(path, headers=op, json=body).status_code == 201
    wheat = walk(api, "/api/v1/articles", op)[0]["id"]
    assert api.client.post("/api/v1/lots", headers=op, json={"code": "L-2025-0042", "article_id": wheat}).status_code \
        == 201


def _by_reference(api: ApiHarness, reference: str) -> dict[str, Any]:
    [ticket] = walk(api, "/api/v1/tickets", api.auth("viewer"), reference=reference)
    return ticket


def _pdf(api: ApiHarness, path: str) -> tuple[str, bytes]:
    r = api.client.get(path, headers=api.auth("viewer"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"].startswith("inline; filename=")
    assert r.content.startswith(b"%PDF-")
    doc = pdfium.PdfDocument(r.content)
    try:
        text = "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
        return " ".join(text.split()), r.content
    finally:
        doc.close()


def _dark_pixels(pdf: bytes) -> int:
    doc = pdfium.PdfDocument(pdf)
    try:
        image = doc[0].render(scale=1).to_pil().convert("L")
        return sum(image.histogram()[:96])  # pixels darker than 96 of 255
    finally:
        doc.close()


def test_the_ticket_pdf_shows_both_weighings_their_alibi_ids_the_net_and_the_legal_notice(api: ApiHarness,
                                                                                         tmp_path: Any) -> None:
    _master(api)
    bridge = Bridge(api.sessions)
    bridge.send(bridge.weigh("24560", at=T0, reference="WB-4711", vehicle="STD-AB 123", partner="P-1042",
                             article="WHEAT-B", lot="L-2025-0042", delivery_note="LS-88812"),
                bridge.weigh("8420.5", at=later(0.5), reference="WB-4711", vehicle="STD-AB 123"))
    t = _by_reference(api, "WB-4711")
    assert (t["status"], t["direction"], t["net"], t["paired_by"], t["delivery_note"]) == (
        "complete", "in", "16139.5", "reference", "LS-88812")

    text, pdf = _pdf(api, f"/api/v1/tickets/{t['id']}/pdf")
    for expected in (f"Wägeschein {t['number']}", "Wareneingang", "STD-AB 123", "P-1042", "Hof Meyer & Söhne GbR",
                     "WHEAT-B", "L-2025-0042", "LS-88812", "WB-4711",
                     "A-mill-01-1001", "A-mill-01-1002",  # the instrument's alibi ids
                     "Alibi floorgate (Nr. · Hash) 1 · ",  # the alibi mirror numbers with their hash prefixes
                     "24560 kg", "8420.5 kg", "Netto (berechnet) 16139.5 kg",
                     "04.03.2025 08:12:09 CET (UTC+01:00)", "04.03.2025 08:42:09 CET (UTC+01:00)",  # Berlin time
                     LEGAL_NOTICE):
        assert expected in text, (expected, text)
    assert "STORNIERT" not in text
    assert "Aussteller nicht eingerichtet (central.yaml: tickets.issuer)" in text  # no issuer configured: it shows
    assert "Eichkennzeichen nicht hinterlegt nicht hinterlegt" in text  # no scale configured either
    png = tmp_path / "ticket.png"
    doc = pdfium.PdfDocument(pdf)
    doc[0].render(scale=2).to_pil().save(png)
    doc.close()
    assert png.stat().st_size > 10_000
    assert _dark_pixels(pdf) > 2_000  # text and rules on a white page, not a blank one

    failed(api.client.get("/api/v1/tickets/987654/pdf", headers=api.auth("viewer")), 404, "not_found", "ticket_id")
    assert api.client.get(f"/api/v1/tickets/{t['id']}/pdf").status_code == 401


def test_a_cancelled_ticket_is_stamped_keeps_its_weighings_and_is_not_paired_again(api: ApiHarness) -> None:
    bridge = Bridge(api.sessions)
    bridge.send(bridge.weigh("30000", at=T0, vehicle="HH-X 1"))
    t = walk(api, "/api/v1/tickets", api.auth("viewer"), vehicle="HH-X 1")[0]
    assert (t["status"], t["paired_by"], t["reference"]) == ("open", "plate", None)
    op = api.auth("operator")
    failed(api.client.post(f"/api/v1/tickets/{t['id']}/cancel", headers=op, json={}), 422, "invalid_request",
           "reason")
    r = api.client.post(f"/api/v1/tickets/{t['id']}/cancel", headers=op, json={"reason": "falscher LKW gewogen"})
    assert r.status_code == 200, r.text
    assert [(e["action"], e["actor"]) for e in audit_entries(api, resource="tickets")] == [
        ("cancel", f"user:{api.auth_names['operator']}"), ("create", "system:pairing")]

    text, _ = _pdf(api, f"/api/v1/tickets/{t['id']}/pdf")
    assert "STORNIERT" in text
    assert f"von user:{api.auth_names['operator']} — Grund: falscher LKW gewogen" in text
    assert LEGAL_NOTICE in text

    bridge.send(bridge.weigh("12000", at=later(1), vehicle="HH-X 1"))  # not paired with the cancelled ticket
    rows = walk(api, "/api/v1/tickets", api.auth("viewer"), vehicle="HH-X 1", sort="id")
    assert [(x["status"], x["first_weighing_id"] == t["first_weighing_id"]) for x in rows] == [
        ("cancelled", True), ("open", False)]


def test_the_delivery_note_pdf_lists_its_tickets_and_the_total_net(api: ApiHarness) -> None:
    bridge = Bridge(api.sessions)
    note = "LS/2025/001"  # a slash in the number: the path takes it as it is
    bridge.send(bridge.weigh("24560", at=T0, reference="R-1", delivery_note=note),
                bridge.weigh("8420.5", at=later(0.5), reference="R-1"),
                bridge.weigh("12000.0", at=later(1), reference="R-2", delivery_note=note),
                bridge.weigh("30000.0", at=later(1.5), reference="R-2"),
                bridge.weigh("25000", at=later(2), reference="R-3", delivery_note=note),
                bridge.weigh("9000", at=later(2.5), reference="R-3"))
    first, second, third = (_by_reference(api, r) for r in ("R-1", "R-2", "R-3"))
    assert (first["net"], second["net"], second["direction"]) == ("16139.5", "18000.0", "out")  # 30000.0 − 12000.0
    r = api.client.post(f"/api/v1/tickets/{third['id']}/cancel", headers=api.auth("operator"),
                        json={"reason": "doppelt"})
    assert r.status_code == 200, r.text

    text, pdf = _pdf(api, "/api/v1/delivery-notes/LS/2025/001/pdf")
    for expected in (f"Lieferschein {note}", first["number"], second["number"], third["number"],
                     "Netto (berechnet) 16139.5 kg",
                     "Netto (berechnet) 18000.0 kg",  # as delivered: the second pair has one decimal
                     "Summe Netto (abgeschlossene Wägescheine): 34139.5 kg",  # the cancelled one is not counted
                     "Grund: doppelt", "A-mill-01-1001", "A-mill-01-1004", LEGAL_NOTICE):
        assert expected in text, (expected, text)
    assert _dark_pixels(pdf) > 2_000
    failed(api.client.get("/api/v1/delivery-notes/LS-0000/pdf", headers=api.auth("viewer")), 404, "not_found",
           "number")


def test_unpaired_weighings_and_the_reference_filter(api: ApiHarness) -> None:
    bridge = Bridge(api.sessions)
    bridge.send(bridge.weigh("24560", at=T0),  # neither reference nor plate: loose
                bridge.weigh("30000", at=later(1), reference="R-1"),  # first of an open ticket
                bridge.weigh("25000", at=later(2), vehicle="A-B 1"),
                bridge.weigh("9000", at=later(3), vehicle="A-B 1"))  # these two: a complete ticket
    viewer = api.auth("viewer")
    ids = {w["record_id"]: w["id"] for w in walk(api, "/api/v1/weighings", viewer)}
    unpaired = {w["id"] for w in walk(api, "/api/v1/weighings", viewer, unpaired="true")}
    paired = {w["id"] for w in walk(api, "/api/v1/weighings", viewer, unpaired="false")}
    assert unpaired == {ids["mill-01-w1"], ids["mill-01-w2"]}
    assert paired == {ids["mill-01-w3"], ids["mill-01-w4"]}
    assert [t["status"] for t in walk(api, "/api/v1/tickets", viewer, reference="R-1")] == ["open"]
    assert walk(api, "/api/v1/tickets", viewer, reference="R-2") == []
