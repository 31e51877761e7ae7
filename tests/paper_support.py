"""The ticket an office hands out, for the document and CSV tests: central configured with an issuer, a site address
and two named scales, and one vehicle weighed on two weighbridges with mixed decimals.

    for api in build_api(pg_url, metrics, tickets=TICKETS): …
    t = weigh_mixed(api)   # gross 24560.0 (entry bridge, instrument alibi A-mill-01-1001), tare 8420.5 (exit
                           # bridge, MT-SICS: no instrument alibi), net 16139.5 — ticket JSON with "anchors"
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from central.db.models import AlibiEntry, Node
from tests.api_support import ApiHarness
from tests.business_support import walk
from tests.ticket_support import T0, Bridge, later

ISSUER = "Mühle Hansen GmbH & Co. KG"
ISSUER_ADDRESS = ("Deichstraße 4", "21680 Stade")
VAT_ID = "DE123456789"
SITE_CODE, SITE_NAME, SITE_ADDRESS = "HAM-1", "Hafen Stade", ("Hafenweg 2", "21680 Stade")
ENTRY = ("bridge-1", "Brückenwaage Einfahrt", "DE-M 25 0117")  # device, name, verification mark
EXIT = ("bridge-2", "Brückenwaage Ausfahrt")  # no verification mark configured
TICKETS: dict[str, Any] = {
    "issuer": {"name": ISSUER, "address": list(ISSUER_ADDRESS), "vat_id": VAT_ID},
    "sites": {SITE_CODE: {"address": list(SITE_ADDRESS)}},
    "scales": {f"mill-01/{ENTRY[0]}": {"name": ENTRY[1], "verification_mark": ENTRY[2]},
               f"mill-01/{EXIT[0]}": {"name": EXIT[1]}},
}
GROSS, TARE, NET = "24560.0", "8420.5", "16139.5"
FIRST_LOCAL, SECOND_LOCAL = "04.03.2025 08:12:09 CET (UTC+01:00)", "04.03.2025 08:42:09 CET (UTC+01:00)"


def site_and_node(api: ApiHarness) -> int:
    """Site HAM-1 (Europe/Berlin) and node mill-01 under it; the site's id."""
    r = api.client.post("/api/v1/sites", headers=api.auth("admin"), json={"code": SITE_CODE, "name": SITE_NAME})
    assert r.status_code == 201, r.text
    site_id: int = r.json()["id"]
    with api.sessions.begin() as s:
        s.add(Node(node_id="mill-01", site_id=site_id, first_seen=datetime.now(UTC)))
    return site_id


def weigh_mixed(api: ApiHarness, bridge: Bridge | None = None) -> dict[str, Any]:
    """The vehicle STD-AB 123 in on the entry bridge (24560.0 kg, the instrument's alibi id A-mill-01-1001) and out
    on the exit bridge (8420.5 kg, MT-SICS: no alibi id of the instrument); its ticket as the API gives it, with
    ``anchors``: the alibi number and the first 16 hex digits of its entry's hash, per weighing."""
    bridge = bridge or Bridge(api.sessions)
    bridge.device = ENTRY[0]
    loaded = bridge.weigh(GROSS, at=T0, reference="WB-4711", vehicle="STD-AB 123")
    bridge.device = EXIT[0]
    empty = bridge.weigh(TARE, at=later(0.5), reference="WB-4711", instrument_alibi=None)
    bridge.send(loaded, empty)
    [ticket] = walk(api, "/api/v1/tickets", api.auth("viewer"), reference="WB-4711")
    with api.sessions() as s:  # central holds the entries the node made
        stored = dict(s.execute(select(AlibiEntry.alibi_no, AlibiEntry.hash)
                                .where(AlibiEntry.node_id == bridge.node)).all())
    ticket["anchors"] = [(r.data["alibi"]["no"], r.data["alibi"]["hash"][:16]) for r in (loaded, empty)]
    assert [(no, stored[no][:16]) for no, _ in ticket["anchors"]] == ticket["anchors"]
    return ticket  # type: ignore[no-any-return]


__all__ = ["ENTRY", "EXIT", "FIRST_LOCAL", "GROSS", "ISSUER", "ISSUER_ADDRESS", "NET", "SECOND_LOCAL", "SITE_ADDRESS",
           "SITE_CODE", "SITE_NAME", "TARE", "TICKETS", "VAT_ID", "site_and_node", "weigh_mixed"]
