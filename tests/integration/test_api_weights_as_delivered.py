"""Issue 16, values exactly as delivered, on real Postgres over real HTTP: weighings applied through central's real
``apply_batch`` with mixed decimals (``"24560.0"``, ``"8420.5"``, ``"8.425"`` t, ``"100.00"`` g, a preset tare) come
back from ``/api/v1/weighings``, the tickets JSON and the ticket / delivery-note views digit for digit; a net by
difference keeps the decimals of its operands; the database holds the instrument's digit strings; a ticket made
and changed by hand through the API does the same."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text

from central.db.models import Ticket
from central.tickets.views import delivery_note_view, ticket_view
from sync.alibi import make_entry
from sync.envelope import Record
from tests.api_support import ApiHarness
from tests.business_support import walk
from tests.ticket_support import T0, Bridge, later, ns

pytestmark = pytest.mark.integration

# (reference, unit, first weighing, second weighing, delivery note) → the ticket's gross, tare, net
PAIRS = [
    ("R-1", "kg", "24560.0", "8420.5", "LS-1", ("24560.0", "8420.5", "16139.5")),
    ("R-2", "kg", "32980", "8420.0", "LS-1", ("32980", "8420.0", "24560.0")),
    ("R-3", "t", "24.56", "8.425", None, ("24.56", "8.425", "16.135")),
    ("R-4", "g", "2.486", "100.00", None, ("100.00", "2.486", "97.514")),
]


def _net_and_tare(bridge: Bridge, *, net: str, tare: str, at: datetime, **codes: str) -> Record:
    """The next record of ``bridge``: a preset-tare weighing that delivered net and tare only (no gross)."""
    bridge.seq += 1
    record_id = f"{bridge.node}-w{bridge.seq}"
    body = {"net": net, "tare": tare, "tare_preset": True, "unit": "kg", "stable": True, "scale_serial": "B123456",
            "trigger": "command", "raw": f"S S {net} kg | TA A {tare} kg", **codes}
    part = make_entry(bridge.key, node=bridge.node, alibi_no=bridge.seq, record_id=record_id, device=bridge.device,
                      weighed_at_ns=ns(at), data=body, prev_hash=bridge.prev_hash)
    bridge.prev_hash = part.hash
    return Record(seq=bridge.seq, record_id=record_id, kind="weighing", ts_ns=ns(at), device=bridge.device,
                  data={**body, "alibi": part.to_json()})


def _weights(item: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    return item["gross"], item["tare"], item["net"]


def test_mixed_decimals_come_back_digit_for_digit(api: ApiHarness) -> None:
    bridge = Bridge(api.sessions)
    sent: dict[str, tuple[str | None, str | None, str | None]] = {}
    for i, (reference, unit, first, second, note, _) in enumerate(PAIRS):
        codes: dict[str, Any] = {"reference": reference, **({"delivery_note": note} if note else {})}
        for n, value in enumerate((first, second)):
            record = bridge.weigh(value, at=later(i + n / 2), unit=unit, **codes)
            bridge.send(record)
            sent[record.record_id] = (value, None, None)
    # a preset tare: the instrument's net and tare, no gross (MT-SICS shows a tared truck's net only)
    preset = _net_and_tare(bridge, net="31580", tare="8420.5", at=later(9), vehicle="PT-1", reference="R-PT")
    bridge.send(preset)
    sent[preset.record_id] = (None, "8420.5", "31580")

    viewer = api.auth("viewer")
    weighings = walk(api, "/api/v1/weighings", viewer)
    assert {w["record_id"]: _weights(w) for w in weighings} == sent
    for w in weighings:
        one = api.client.get(f"/api/v1/weighings/{w['id']}", headers=viewer)
        assert (one.status_code, _weights(one.json())) == (200, sent[w["record_id"]]), one.text

    with api.engine.connect() as conn:  # the text the database holds: the instrument's digits
        rows = conn.execute(text("SELECT record_id, gross, tare, net FROM weighings")).all()
        held = {row[0]: tuple(row[1:]) for row in rows}
        ticket_rows = set(conn.execute(text("SELECT gross, tare, net FROM tickets")).all())
    assert held == sent
    assert ticket_rows == {weights for *_, weights in PAIRS} | {(None, "8420.5", "31580")}

    tickets = {t["reference"]: t for t in walk(api, "/api/v1/tickets", viewer)}
    for reference, unit, _, _, _, weights in PAIRS:
        t = tickets[reference]
        assert (t["status"], t["unit"], _weights(t)) == ("complete", unit, weights), t
        one = api.client.get(f"/api/v1/tickets/{t['id']}", headers=viewer).json()
        assert _weights(one) == weights
    assert (tickets["R-PT"]["paired_by"], _weights(tickets["R-PT"])) == ("preset_tare", (None, "8420.5", "31580"))

    # what the ticket PDF and the delivery note print come from these views
    with api.sessions() as s:
        view = ticket_view(s, s.get(Ticket, tickets["R-1"]["id"]), "Europe/Berlin")
        assert [(w.gross, w.tare, w.net) for w in view.weighings] == [("24560.0", None, None), ("8420.5", None, None)]
        assert (view.gross, view.tare, view.net) == ("24560.0", "8420.5", "16139.5")
        grams = ticket_view(s, s.get(Ticket, tickets["R-4"]["id"]), "UTC")
        assert [w.gross for w in grams.weighings] == ["2.486", "100.00"]
        tared = ticket_view(s, s.get(Ticket, tickets["R-PT"]["id"]), "UTC")
        assert [(w.gross, w.tare, w.tare_preset, w.net) for w in tared.weighings] == [(None, "8420.5", True, "31580")]
        assert (tared.gross, tared.tare, tared.net) == (None, "8420.5", "31580")
        note = delivery_note_view(s, "LS-1", "Europe/Berlin")
        assert note is not None
        assert note.totals == (("kg", "40699.5"),)  # 16139.5 + 24560.0, nothing cut or padded


def test_a_ticket_made_and_changed_by_hand_keeps_the_digits_of_its_weighings(api: ApiHarness) -> None:
    bridge = Bridge(api.sessions)
    for n, value in enumerate(("18000.0", "6000.25", "6000.250")):  # no reference, no plate: unpaired
        bridge.send(bridge.weigh(value, at=T0.replace(minute=n)))
    viewer, operator = api.auth("viewer"), api.auth("operator")
    ids = {w["gross"]: w["id"] for w in walk(api, "/api/v1/weighings", viewer, unpaired="true")}
    assert set(ids) == {"18000.0", "6000.25", "6000.250"}
    made = api.client.post("/api/v1/tickets", headers=operator, json={
        "direction": "in", "first_weighing_id": ids["18000.0"], "second_weighing_id": ids["6000.25"]})
    assert made.status_code == 201, made.text
    assert _weights(made.json()) == ("18000.0", "6000.25", "11999.75")
    # the same weight with other digits is another weighing: the ticket takes its digits (a change, audited)
    changed = api.client.patch(f"/api/v1/tickets/{made.json()['id']}", headers=operator,
                               json={"second_weighing_id": ids["6000.250"]})
    assert changed.status_code == 200, changed.text
    assert _weights(changed.json()) == ("18000.0", "6000.250", "11999.750")
