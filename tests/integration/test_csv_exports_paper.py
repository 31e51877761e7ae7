"""``tickets.csv`` and ``weighings.csv`` on real Postgres over real HTTP, as an auditor's spreadsheet reads them: every
weight as delivered (mixed decimals, trailing zeros kept), both weighings' times local and UTC, floorgate's alibi
numbers with the hash prefixes printed on the ticket, the instruments' alibi ids, the scales; who cancelled a ticket
and when; the CSV rules (filters, sort, batches, formula cells, permission)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from central.db.models import Weighing
from tests.api_support import ApiHarness, build_api
from tests.business_support import failed
from tests.paper_support import ENTRY, EXIT, GROSS, NET, SITE_CODE, TARE, TICKETS, site_and_node, weigh_mixed
from tests.ticket_support import Bridge, later

pytestmark = pytest.mark.integration


@pytest.fixture
def api(pg_url: str, tmp_path: Path) -> Iterator[ApiHarness]:
    yield from build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")}, tickets=TICKETS)


def _csv(r: Any) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))


def test_tickets_csv_has_alibi_anchors_times_and_every_value_as_delivered(api: ApiHarness) -> None:
    site_and_node(api)
    t = weigh_mixed(api)
    (first_no, first_hash), (second_no, second_hash) = t["anchors"]
    auditor = api.auth("auditor")
    [row] = _csv(api.client.get("/api/v1/tickets.csv", headers=auditor))
    assert (row["number"], row["site_code"], row["gross"], row["tare"], row["net"], row["unit"]) == (
        t["number"], SITE_CODE, GROSS, TARE, NET, "kg")
    assert row["timezone"] == "Europe/Berlin"
    assert {k: row[k] for k in row if k.startswith("first_") and k != "first_weighing_id"} == {
        "first_weighed_at_local": "2025-03-04T08:12:09+01:00", "first_weighed_at_utc": "2025-03-04T07:12:09Z",
        "first_gross": GROSS, "first_tare": "", "first_tare_preset": "", "first_net": "",
        "first_scale": f"mill-01/{ENTRY[0]}", "first_scale_serial": "B123456",
        "first_instrument_alibi": "A-mill-01-1001", "first_alibi_no": str(first_no), "first_alibi_hash": first_hash}
    assert {k: row[k] for k in row if k.startswith("second_") and k != "second_weighing_id"} == {
        "second_weighed_at_local": "2025-03-04T08:42:09+01:00", "second_weighed_at_utc": "2025-03-04T07:42:09Z",
        "second_gross": TARE, "second_tare": "", "second_tare_preset": "", "second_net": "",
        "second_scale": f"mill-01/{EXIT[0]}", "second_scale_serial": "B123456",
        "second_instrument_alibi": "",  # MT-SICS: none; floorgate's number and hash are there
        "second_alibi_no": str(second_no), "second_alibi_hash": second_hash}
    assert (row["cancelled_by"], row["cancelled_at"]) == ("", "")

    r = api.client.post(f"/api/v1/tickets/{t['id']}/cancel", headers=api.auth("operator"),
                        json={"reason": "doppelt erfasst"})
    assert r.status_code == 200, r.text
    [row] = _csv(api.client.get("/api/v1/tickets.csv", headers=auditor, params={"status": "cancelled"}))
    assert (row["status"], row["cancel_reason"], row["cancelled_by"]) == (
        "cancelled", "doppelt erfasst", f"user:{api.auth_names['operator']}")
    assert row["cancelled_at"].endswith("Z")
    assert datetime.fromisoformat(row["cancelled_at"]) == datetime.fromisoformat(r.json()["cancelled_at"])
    assert row["first_alibi_hash"] == first_hash  # a cancelled ticket keeps its anchors
    # the cancellation is in the audit log with who and when, as the ticket says
    r = api.client.get("/api/v1/audit-log", headers=auditor, params={"resource": "tickets", "action": "cancel"})
    [entry] = r.json()["items"]
    assert entry["actor"] == row["cancelled_by"]
    assert entry["after"]["cancelled_by"] == row["cancelled_by"]
    failed(api.client.post(f"/api/v1/tickets/{t['id']}/cancel", headers=api.auth("operator"),
                           json={"reason": "noch mal"}), 409, "ticket_cancelled", "ticket_id")


def test_weighings_csv_lists_every_weighing_as_delivered_with_its_anchors(api: ApiHarness) -> None:
    site_and_node(api)
    bridge = Bridge(api.sessions)
    t = weigh_mixed(api, bridge)
    (first_no, first_hash), (_, second_hash) = t["anchors"]
    bridge.device = ENTRY[0]
    bridge.send(bridge.weigh("8.425", at=later(1), unit="t", vehicle="=HYPERLINK(\"x\")"),  # an open ticket
                bridge.weigh("24560", at=later(2), tare="14960", tare_preset=True, net="9600", direction="out"))
    auditor = api.auth("auditor")
    rows = _csv(api.client.get("/api/v1/weighings.csv", headers=auditor))
    assert [r["alibi_no"] for r in rows] == ["1", "2", "3", "4"]  # oldest first (weighing time)
    first, second, opened, preset = rows
    assert first == {
        "id": first["id"], "node_id": "mill-01", "device_id": ENTRY[0], "scale_name": ENTRY[1],
        "verification_mark": ENTRY[2], "scale_serial": "B123456", "record_id": "mill-01-w1", "seq": "1",
        "alibi_no": str(first_no), "alibi_hash": first_hash, "instrument_alibi": "A-mill-01-1001",
        "timezone": "Europe/Berlin", "weighed_at_local": "2025-03-04T08:12:09+01:00",
        "weighed_at_utc": "2025-03-04T07:12:09Z", "received_at_utc": first["received_at_utc"], "gross": GROSS,
        "tare": "", "tare_preset": "", "net": "", "unit": "kg", "reference": "WB-4711", "vehicle": "STD-AB 123",
        "trigger": "command", "ticket_id": str(t["id"]), "ticket_number": t["number"]}
    assert first["received_at_utc"].endswith("Z")
    assert (second["device_id"], second["scale_name"], second["verification_mark"], second["instrument_alibi"],
            second["alibi_hash"], second["gross"], second["ticket_number"]) == (
        EXIT[0], EXIT[1], "", "", second_hash, TARE, t["number"])
    assert (opened["gross"], opened["unit"], opened["tare"]) == ("8.425", "t", "")  # three decimals, as delivered
    assert opened["ticket_number"] != t["number"]  # its own open ticket (by plate)
    assert opened["vehicle"] == "'=HYPERLINK(\"x\")"  # a formula cell neutralised
    assert (preset["gross"], preset["tare"], preset["tare_preset"], preset["net"]) == ("24560", "14960", "true",
                                                                                      "9600")
    assert preset["ticket_number"]  # a preset-tare ticket of its own

    raw = _csv(api.client.get("/api/v1/weighings.csv", headers=auditor, params={"raw": "true"}))
    assert raw[2]["vehicle"] == "=HYPERLINK(\"x\")"
    # the list's filters and sort apply
    only = _csv(api.client.get("/api/v1/weighings.csv", headers=auditor, params={"device_id": EXIT[0]}))
    assert [r["id"] for r in only] == [second["id"]]
    assert [r["id"] for r in _csv(api.client.get("/api/v1/weighings.csv", headers=auditor,
                                                 params={"unpaired": "true"}))] == [opened["id"]]
    assert [r["id"] for r in _csv(api.client.get("/api/v1/weighings.csv", headers=auditor,
                                                 params={"sort": "-id"}))] == [r["id"] for r in reversed(rows)]
    since = _csv(api.client.get("/api/v1/weighings.csv", headers=auditor,
                                params={"since": "2025-03-04T08:30:00+01:00", "unit": "kg"}))
    assert [r["id"] for r in since] == [second["id"], preset["id"]]
    failed(api.client.get("/api/v1/weighings.csv", headers=auditor, params={"sort": "gross"}), 400, "invalid_sort")
    failed(api.client.get("/api/v1/weighings.csv", headers=api.auth("viewer")), 403, "forbidden")
    assert api.client.get("/api/v1/weighings.csv").status_code == 401


def test_weighings_csv_streams_many_batches_in_local_time(api: ApiHarness) -> None:
    count = 1111  # more than two batches of 500
    base = datetime(2025, 7, 1, 10, 0, tzinfo=UTC)  # summer: CEST (+02:00) for a node without site
    with api.sessions.begin() as s:
        s.add_all(Weighing(node_id="n-1", record_id=uuid.uuid4().hex, epoch="e1", seq=i, device_id="d1",
                           gross=Decimal(f"{i}.{i % 10}0"), unit="kg", weighed_at=base + timedelta(seconds=i),
                           received_at=base) for i in range(count))
    rows = _csv(api.client.get("/api/v1/weighings.csv", headers=api.auth("operator")))
    assert [r["seq"] for r in rows] == [str(i) for i in range(count)]
    assert [r["gross"] for r in rows[:3]] == ["0.00", "1.10", "2.20"]  # trailing zeros as delivered
    assert rows[5]["weighed_at_local"] == "2025-07-01T12:00:05+02:00"
    assert rows[5]["weighed_at_utc"] == "2025-07-01T10:00:05Z"
    assert {r["timezone"] for r in rows} == {"Europe/Berlin"}  # tickets.timezone: the node has no site
    assert {r["alibi_hash"] for r in rows} == {""}  # no alibi entries
