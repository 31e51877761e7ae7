"""The business resources of /api/v1 on real Postgres over real HTTP: sites, nodes, articles, partners, lots and the
audit log — create / list / get / update, filters, sorting and cursor paging, the one error shape, and spot checks
of the permissions (the full role × route matrix is ``test_api_auth.py``'s).

Tickets, their CSV export and TSE transactions are in ``test_api_tickets.py``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from central.db.models import Node
from tests.api_support import ApiHarness
from tests.business_support import audit_entries, failed, walk

pytestmark = pytest.mark.integration


# --- sites and nodes ---------------------------------------------------------------------------------------------


def test_sites_create_list_get_update(api: ApiHarness) -> None:
    admin = api.auth("admin")
    r = api.client.post("/api/v1/sites", headers=admin, json={"code": "HAM-1", "name": "Hamburg yard"})
    assert r.status_code == 201, r.text
    site = r.json()
    assert (site["code"], site["timezone"]) == ("HAM-1", "Europe/Berlin")
    assert site["created_at"].endswith("Z")
    failed(api.client.post("/api/v1/sites", headers=admin, json={"code": "HAM-1", "name": "again"}),
           409, "conflict", "code")
    failed(api.client.post("/api/v1/sites", headers=admin, json={"code": "X", "name": "x", "timezone": "Mars/Base"}),
           422, "invalid_request", "timezone")
    brem = api.client.post("/api/v1/sites", headers=admin,
                           json={"code": "BRE", "name": "Bremen port", "timezone": "UTC"}).json()

    viewer = api.auth("viewer")
    assert api.client.get(f"/api/v1/sites/{site['id']}", headers=viewer).json() == site
    assert [s["code"] for s in walk(api, "/api/v1/sites", viewer)] == ["BRE", "HAM-1"]
    assert [s["code"] for s in walk(api, "/api/v1/sites", viewer, q="PORT")] == ["BRE"]

    r = api.client.patch(f"/api/v1/sites/{site['id']}", headers=admin, json={"name": "Hamburg north yard"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Hamburg north yard"
    failed(api.client.patch(f"/api/v1/sites/{site['id']}", headers=admin, json={"code": "BRE"}),
           409, "conflict", "code")
    failed(api.client.patch(f"/api/v1/sites/{site['id']}", headers=admin, json={"name": None}),
           422, "invalid_request", "name")
    failed(api.client.get("/api/v1/sites/999999", headers=viewer), 404, "not_found", "site_id")
    # only admins write sites
    failed(api.client.post("/api/v1/sites", headers=api.auth("operator"), json={"code": "Y", "name": "y"}),
           403, "forbidden")
    failed(api.client.patch(f"/api/v1/sites/{brem['id']}", headers=viewer, json={"name": "z"}), 403, "forbidden")

    (entry,) = audit_entries(api, resource="sites", action="update")
    assert entry["before"] == {"name": "Hamburg yard", "updated_at": entry["before"]["updated_at"]}
    assert entry["after"]["name"] == "Hamburg north yard"
    assert entry["actor"].startswith("user:admin-")


def _add_nodes(api: ApiHarness) -> datetime:
    now = datetime.now(UTC).replace(microsecond=0)
    heartbeat = {"streams": {"business": {"head": 42, "acked": 40, "pending": 2, "oldest_age_s": 1.5, "lost": 0}},
                 "alarms": ["disk 91 % full"], "epoch": "e1"}
    with api.sessions.begin() as s:
        for i in range(7):
            enrolled = i != 3
            s.add(Node(node_id=f"node-{i}", public_key="ed25519:AAAA" if enrolled else None,
                       key_fingerprint=f"fp{i}" if enrolled else None,
                       enrolled_at=now - timedelta(days=1) if enrolled else None,
                       # two never heard of; two with the same heartbeat time (ties broken by node_id)
                       last_heartbeat_at=None if i in (2, 5) else now - timedelta(seconds=10 * (i % 4)),
                       heartbeat=heartbeat if i == 0 else None, software_version="0.4.0", clock_skew_s=0.25))
    return now


def test_nodes_list_filter_sort_page_and_assign_to_a_site(api: ApiHarness) -> None:
    now = _add_nodes(api)
    viewer, admin = api.auth("viewer"), api.auth("admin")
    ids = [n["node_id"] for n in walk(api, "/api/v1/nodes", viewer, limit=3)]
    assert ids == [f"node-{i}" for i in range(7)]
    assert [n["node_id"] for n in walk(api, "/api/v1/nodes", viewer, limit=2, sort="-node_id")] == ids[::-1]
    # by heartbeat: never heard of sorts oldest; ties by node_id; no node skipped or repeated across pages
    asc = [n["node_id"] for n in walk(api, "/api/v1/nodes", viewer, limit=2, sort="last_heartbeat_at")]
    assert asc == ["node-2", "node-5", "node-3", "node-6", "node-1", "node-0", "node-4"]
    desc = [n["node_id"] for n in walk(api, "/api/v1/nodes", viewer, limit=2, sort="-last_heartbeat_at")]
    assert desc == asc[::-1]
    assert [n["node_id"] for n in walk(api, "/api/v1/nodes", viewer, enrolled="false")] == ["node-3"]

    node0 = api.client.get("/api/v1/nodes/node-0", headers=viewer).json()
    assert node0["backlog"] == {"business": {"head": 42, "acked": 40, "pending": 2, "oldest_age_s": 1.5, "lost": 0}}
    assert node0["alarms"] == ["disk 91 % full"]
    assert (node0["enrolled"], node0["key_fingerprint"], node0["clock_skew_s"]) == (True, "fp0", 0.25)
    assert datetime.fromisoformat(node0["last_heartbeat_at"]) == now
    assert api.client.get("/api/v1/nodes/node-3", headers=viewer).json()["enrolled"] is False
    failed(api.client.get("/api/v1/nodes/nope", headers=viewer), 404, "not_found", "node_id")

    # a cursor from one sort is refused by another
    first = api.client.get("/api/v1/nodes", headers=viewer, params={"limit": 2, "sort": "node_id"}).json()
    failed(api.client.get("/api/v1/nodes", headers=viewer, params={"cursor": first["next_cursor"],
                                                                   "sort": "last_heartbeat_at"}),
           400, "invalid_cursor", "cursor")
    failed(api.client.get("/api/v1/nodes", headers=viewer, params={"sort": "software_version"}),
           400, "invalid_sort", "sort")

    site = api.client.post("/api/v1/sites", headers=admin, json={"code": "HAM", "name": "Hamburg"}).json()
    r = api.client.patch("/api/v1/nodes/node-1", headers=admin, json={"site_id": site["id"], "name": "Bridge 1"})
    assert r.status_code == 200, r.text
    assert (r.json()["site_id"], r.json()["name"]) == (site["id"], "Bridge 1")
    assert [n["node_id"] for n in walk(api, "/api/v1/nodes", viewer, site_id=site["id"])] == ["node-1"]
    failed(api.client.patch("/api/v1/nodes/node-1", headers=admin, json={"site_id": 424242}),
           422, "invalid_reference", "site_id")
    failed(api.client.patch("/api/v1/nodes/ghost", headers=admin, json={"name": "x"}), 404, "not_found", "node_id")
    failed(api.client.patch("/api/v1/nodes/node-1", headers=viewer, json={"name": "x"}), 403, "forbidden")
    assert api.client.patch("/api/v1/nodes/node-1", headers=admin, json={"site_id": None}).json()["site_id"] is None
    entries = audit_entries(api, resource="nodes", resource_id="node-1", sort="at")
    assert [(e["before"], e["after"]) for e in entries] == [
        ({"site_id": None, "name": None}, {"site_id": site["id"], "name": "Bridge 1"}),
        ({"site_id": site["id"]}, {"site_id": None}),
    ]


# --- master data -------------------------------------------------------------------------------------------------


def test_articles_prices_are_exact_strings_with_their_currency(api: ApiHarness) -> None:
    op = api.auth("operator")
    body = {"code": "WHEAT-B", "name": "Wheat, bread quality", "unit": "t", "price": "212.5", "currency": "EUR",
            "vat_rate": "10.7"}
    r = api.client.post("/api/v1/articles", headers=op, json=body)
    assert r.status_code == 201, r.text
    art = r.json()
    assert (art["price"], art["currency"], art["vat_rate"], art["active"]) == ("212.50", "EUR", "10.7", True)
    fine = api.client.post("/api/v1/articles", headers=op, json={
        "code": "FEED-25", "name": "Layer feed 25 kg", "unit": "kg", "price": "0.123456", "currency": "EUR"}).json()
    assert fine["price"] == "0.123456"  # six decimals kept, not rounded
    assert fine["vat_rate"] is None

    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X1", "currency": None}),
           422, "invalid_request", "currency")
    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X2", "price": None}),
           422, "invalid_request", "price")
    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X3", "price": "-1"}),
           422, "invalid_request", "price")
    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X4", "price": 212.5}),
           422, "invalid_request", "price")  # a JSON number could be a float: strings only
    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X5", "price": "1.0000001"}),
           422, "invalid_request", "price")  # more decimals than stored would be rounded: refused instead
    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X6", "currency": "eur"}),
           422, "invalid_request", "currency")
    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X7", "vat_rate": "100.5"}),
           422, "invalid_request", "vat_rate")
    failed(api.client.post("/api/v1/articles", headers=op, json={**body, "code": "X8", "colour": "red"}),
           422, "invalid_request", "colour")
    failed(api.client.post("/api/v1/articles", headers=op, json=body), 409, "conflict", "code")

    url = f"/api/v1/articles/{art['id']}"
    failed(api.client.patch(url, headers=op, json={"price": None}), 422, "invalid_request", "price")
    r = api.client.patch(url, headers=op, json={"price": "215", "vat_rate": None})
    assert (r.json()["price"], r.json()["vat_rate"]) == ("215.00", None)
    assert api.client.patch(url, headers=op, json={"price": None, "currency": None}).json()["price"] is None
    failed(api.client.patch(url, headers=op, json={"code": "FEED-25"}), 409, "conflict", "code")
    failed(api.client.patch(url, headers=op, json={"name": None}), 422, "invalid_request", "name")
    # no delete: active false, and the list filters on it
    assert api.client.delete(url, headers=api.auth("admin")).status_code == 405
    assert api.client.patch(url, headers=op, json={"active": False}).json()["active"] is False
    viewer = api.auth("viewer")
    assert [a["code"] for a in walk(api, "/api/v1/articles", viewer, active="false")] == ["WHEAT-B"]
    assert [a["code"] for a in walk(api, "/api/v1/articles", viewer, active="true")] == ["FEED-25"]
    assert api.client.get(url, headers=viewer).json()["active"] is False
    failed(api.client.get("/api/v1/articles/77777", headers=viewer), 404, "not_found", "article_id")

    updates = audit_entries(api, resource="articles", resource_id=str(art["id"]), action="update", sort="at")
    assert updates[0]["after"] == {"price": "215", "vat_rate": None, "updated_at": updates[0]["after"]["updated_at"]}
    assert updates[0]["before"]["price"] == "212.500000"  # exactly as stored (NUMERIC(18, 6))
    (created,) = audit_entries(api, resource="articles", resource_id=str(art["id"]), action="create")
    assert created["before"] is None
    assert created["after"]["code"] == "WHEAT-B"


def test_partners_filter_sort_and_page_through_with_cursors(api: ApiHarness) -> None:
    op, viewer = api.auth("operator"), api.auth("viewer")
    # first letters differ: the order is the same under any collation
    names = ["Hof Meyer", "Agrar 100% GmbH", "Kornhof West", "Mühle Otto", "Zander KG", "Biohof_Ost", "Claas Lohn"]
    for i, name in enumerate(names):
        r = api.client.post("/api/v1/partners", headers=op, json={
            "code": f"P-{i:03d}", "name": name, "kind": ["supplier", "customer", "both"][i % 3],
            "vat_id": "DE123456789" if i == 0 else None})
        assert r.status_code == 201, r.text

    by_name = sorted(names)
    for limit in (1, 2, 3, 50):
        assert [p["name"] for p in walk(api, "/api/v1/partners", viewer, sort="name", limit=limit)] == by_name
        assert [p["name"] for p in walk(api, "/api/v1/partners", viewer, sort="-name", limit=limit)] \
            == by_name[::-1]
    by_id = walk(api, "/api/v1/partners", viewer, sort="id", limit=3)
    assert [p["code"] for p in by_id] == [f"P-{i:03d}" for i in range(7)]
    assert [p["code"] for p in walk(api, "/api/v1/partners", viewer, sort="-created_at", limit=3)] \
        == [f"P-{i:03d}" for i in reversed(range(7))]
    assert [p["code"] for p in walk(api, "/api/v1/partners", viewer, limit=2)] == [f"P-{i:03d}" for i in range(7)]

    # filters: substring case-insensitive with LIKE wildcards taken literally, kind, code
    assert sorted(p["name"] for p in walk(api, "/api/v1/partners", viewer, q="HOF")) == \
        ["Biohof_Ost", "Hof Meyer", "Kornhof West"]
    assert [p["name"] for p in walk(api, "/api/v1/partners", viewer, q="100%")] == ["Agrar 100% GmbH"]
    assert [p["name"] for p in walk(api, "/api/v1/partners", viewer, q="f_")] == ["Biohof_Ost"]
    assert {p["kind"] for p in walk(api, "/api/v1/partners", viewer, kind="both")} == {"both"}
    assert len(walk(api, "/api/v1/partners", viewer, kind="both")) == 2
    assert [p["name"] for p in walk(api, "/api/v1/partners", viewer, code="P-004")] == ["Zander KG"]

    page1 = api.client.get("/api/v1/partners", headers=viewer, params={"sort": "name", "limit": 2}).json()
    failed(api.client.get("/api/v1/partners", headers=viewer, params={"sort": "-name", "cursor": page1["next_cursor"]}),
           400, "invalid_cursor", "cursor")
    failed(api.client.get("/api/v1/partners", headers=viewer, params={"cursor": "not-a-cursor"}),
           400, "invalid_cursor", "cursor")
    forged = base64.urlsafe_b64encode(json.dumps({"after": {"sort": "name", "id": 1, "v": 5}}).encode()).decode()
    failed(api.client.get("/api/v1/partners", headers=viewer, params={"sort": "name", "cursor": forged}),
           400, "invalid_cursor", "cursor")  # a value the database cannot compare with a name
    failed(api.client.get("/api/v1/partners", headers=viewer, params={"sort": "vat_id"}), 400, "invalid_sort", "sort")
    failed(api.client.get("/api/v1/partners", headers=viewer, params={"kind": "friend"}),
           422, "invalid_request", "kind")
    failed(api.client.get("/api/v1/partners", headers=viewer, params={"limit": 0}), 422, "invalid_request", "limit")

    pid = by_id[0]["id"]
    r = api.client.patch(f"/api/v1/partners/{pid}", headers=op, json={"vat_id": None, "kind": "both",
                                                                      "address": "Deichstraße 4\n21762 Otterndorf"})
    assert r.status_code == 200, r.text
    assert (r.json()["vat_id"], r.json()["kind"], r.json()["address"]) == (
        None, "both", "Deichstraße 4\n21762 Otterndorf")
    failed(api.client.patch(f"/api/v1/partners/{pid}", headers=op, json={"kind": None}), 422, "invalid_request",
           "kind")
    failed(api.client.post("/api/v1/partners", headers=op, json={"code": "P-000", "name": "x", "kind": "both"}),
           409, "conflict", "code")
    failed(api.client.post("/api/v1/partners", headers=op, json={"code": "P-9", "name": "  ", "kind": "both"}),
           422, "invalid_request", "name")
    failed(api.client.post("/api/v1/partners", headers=op, json={"code": "P-9", "name": "a\x00b", "kind": "both"}),
           422, "invalid_request", "name")


def test_lots_refer_to_an_existing_article_and_partner(api: ApiHarness) -> None:
    op, viewer = api.auth("operator"), api.auth("viewer")
    wheat = api.client.post("/api/v1/articles", headers=op, json={"code": "W", "name": "Wheat", "unit": "t"}).json()
    barley = api.client.post("/api/v1/articles", headers=op, json={"code": "B", "name": "Barley", "unit": "t"}).json()
    farmer = api.client.post("/api/v1/partners", headers=op,
                             json={"code": "F1", "name": "Farmer", "kind": "supplier"}).json()
    failed(api.client.post("/api/v1/lots", headers=op, json={"code": "L1", "article_id": 999}),
           422, "invalid_reference", "article_id")
    failed(api.client.post("/api/v1/lots", headers=op, json={"code": "L1", "article_id": wheat["id"],
                                                             "partner_id": 999}),
           422, "invalid_reference", "partner_id")
    failed(api.client.post("/api/v1/lots", headers=op, json={"code": "L1"}), 422, "invalid_request", "article_id")
    lots = []
    for i, art in enumerate([wheat, barley, wheat, wheat]):
        r = api.client.post("/api/v1/lots", headers=op, json={
            "code": f"L-2025-{i:04d}", "article_id": art["id"], "partner_id": farmer["id"] if i % 2 else None})
        assert r.status_code == 201, r.text
        lots.append(r.json())
    failed(api.client.post("/api/v1/lots", headers=op, json={"code": "L-2025-0000", "article_id": wheat["id"]}),
           409, "conflict", "code")
    assert [lot["code"] for lot in walk(api, "/api/v1/lots", viewer, article_id=wheat["id"], limit=2)] == \
        ["L-2025-0000", "L-2025-0002", "L-2025-0003"]
    assert [lot["code"] for lot in walk(api, "/api/v1/lots", viewer, partner_id=farmer["id"], sort="-code")] == \
        ["L-2025-0003", "L-2025-0001"]
    r = api.client.patch(f"/api/v1/lots/{lots[1]['id']}", headers=op, json={"partner_id": None, "notes": "dried"})
    assert (r.json()["partner_id"], r.json()["notes"]) == (None, "dried")
    failed(api.client.patch(f"/api/v1/lots/{lots[1]['id']}", headers=op, json={"article_id": 31337}),
           422, "invalid_reference", "article_id")
    assert api.client.get(f"/api/v1/lots/{lots[0]['id']}", headers=viewer).json() == lots[0]
    failed(api.client.get("/api/v1/lots/5555", headers=viewer), 404, "not_found", "lot_id")
    failed(api.client.post("/api/v1/lots", headers=viewer, json={"code": "V", "article_id": wheat["id"]}),
           403, "forbidden")


# --- errors, audit log, permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/sites", "/api/v1/articles", "/api/v1/partners", "/api/v1/lots",
                                  "/api/v1/tickets", "/api/v1/tse-transactions"])
def test_ids_beyond_bigint_are_422_not_a_database_overflow(api: ApiHarness, path: str) -> None:
    admin = api.auth("admin")
    # ids are bounded to 2**53-1 (central.api.params.MAX_ID: what every JSON client holds exactly)
    failed(api.client.get(f"{path}/{2**53 - 1}", headers=admin), 404, "not_found")
    failed(api.client.get(f"{path}/{2**53}", headers=admin), 422, "invalid_request")
    failed(api.client.get(f"{path}/{2**63}", headers=admin), 422, "invalid_request")
    failed(api.client.get(f"{path}/{10**30}", headers=admin), 422, "invalid_request")
    failed(api.client.get(f"{path}/0", headers=admin), 422, "invalid_request")
    failed(api.client.get(f"{path}/abc", headers=admin), 422, "invalid_request")


def test_audit_log_filters_sorts_and_is_for_auditors_and_admins(api: ApiHarness) -> None:
    op = api.auth("operator")
    art = api.client.post("/api/v1/articles", headers=op, json={"code": "A", "name": "Oats", "unit": "t"}).json()
    for name in ("Oats, rolled", "Oats, whole"):
        api.client.patch(f"/api/v1/articles/{art['id']}", headers=op, json={"name": name})
    api.client.post("/api/v1/partners", headers=op, json={"code": "P", "name": "P", "kind": "both"})
    newest_first = audit_entries(api)
    assert [(e["resource"], e["action"]) for e in newest_first] == [
        ("partners", "create"), ("articles", "update"), ("articles", "update"), ("articles", "create")]
    assert [e["id"] for e in audit_entries(api, sort="at")] == [e["id"] for e in reversed(newest_first)]
    updates = audit_entries(api, resource="articles", action="update", sort="id")
    assert [(e["before"]["name"], e["after"]["name"]) for e in updates] == [
        ("Oats", "Oats, rolled"), ("Oats, rolled", "Oats, whole")]
    assert {e["actor"] for e in newest_first} == {updates[0]["actor"]}
    assert audit_entries(api, actor="user:nobody") == []
    t0 = datetime.fromisoformat(newest_first[-1]["at"])
    assert len(audit_entries(api, since=(t0 + timedelta(microseconds=1)).isoformat())) == 3
    assert len(audit_entries(api, until=(t0 + timedelta(microseconds=1)).isoformat())) == 1
    pages = walk(api, "/api/v1/audit-log", api.auth("admin"), limit=1)
    assert [e["id"] for e in pages] == [e["id"] for e in newest_first]
    for role in ("viewer", "operator"):
        failed(api.client.get("/api/v1/audit-log", headers=api.auth(role)), 403, "forbidden")


def test_a_viewer_reads_but_may_not_write_export_or_see_fiscal_and_audit_data(api: ApiHarness) -> None:
    viewer = api.auth("viewer")
    for path in ("/api/v1/sites", "/api/v1/nodes", "/api/v1/articles", "/api/v1/partners", "/api/v1/lots",
                 "/api/v1/tickets"):
        assert api.client.get(path, headers=viewer).status_code == 200, path
    for method, path in (("POST", "/api/v1/articles"), ("PATCH", "/api/v1/articles/1"),
                         ("POST", "/api/v1/partners"), ("POST", "/api/v1/tickets"),
                         ("PATCH", "/api/v1/tickets/1"), ("POST", "/api/v1/tickets/1/cancel"),
                         ("POST", "/api/v1/sites"), ("PATCH", "/api/v1/nodes/n1"),
                         ("GET", "/api/v1/tse-transactions"), ("GET", "/api/v1/tse-transactions/1"),
                         ("GET", "/api/v1/tse-transactions.csv"), ("GET", "/api/v1/tickets.csv"),
                         ("GET", "/api/v1/weighings.csv"),
                         ("GET", "/api/v1/audit-log")):
        kwargs: dict[str, Any] = {"json": {}} if method != "GET" else {}
        failed(api.client.request(method, path, headers=viewer, **kwargs), 403, "forbidden")
    failed(api.client.get("/api/v1/articles"), 401, "not_authenticated")
