"""Ticket pairing at central (central.tickets.pairing), driven through the real ``apply_batch`` with weighing records
as a node sends them (alibi entries included): by reference, by plate within and outside the window, preset tare,
direction and the exact net, codes attached or noted, lots created, idempotence, and a pairing fault that costs the
weighing nothing. Postgres (production) and SQLite (the demo)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import AuditEntry, Lot, Ticket, Weighing
from central.db.values import plain
from central.tickets import pairing
from central.tickets.config import TicketSettings
from tests.ticket_support import T0, Bridge, later, master_data, tickets, weighing_ids

pytestmark = pytest.mark.integration
NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["postgres", "sqlite"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def test_reference_pairs_two_weighings_into_a_complete_ticket_with_the_exact_net(
        sessions: sessionmaker[Session]) -> None:
    ids = master_data(sessions)
    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("24560", at=T0, reference="R-4711", vehicle="STD-AB 123", partner="P-1042",
                             article="WHEAT-B", lot="L-1", delivery_note="LS-88812"), now=NOW)
    [opened] = tickets(sessions)
    assert (opened.status, opened.reference, opened.paired_by, opened.net) == ("open", "R-4711", "reference", None)
    assert opened.number == "T-2025-000001"  # numbers count in the year of central's clock, the reference stays apart
    bridge.send(bridge.weigh("8420.5", at=later(0.5), reference="R-4711"), now=NOW)

    [t] = tickets(sessions)
    w = weighing_ids(sessions)
    assert (t.status, t.direction, t.paired_by, t.unit) == ("complete", "in", "reference", "kg")
    assert (t.first_weighing_id, t.second_weighing_id) == (w["mill-01-w1"], w["mill-01-w2"])
    assert (plain(t.gross), plain(t.tare), plain(t.net)) == ("24560", "8420.5", "16139.5")
    assert t.net == Decimal("16139.5")
    assert (t.partner_id, t.article_id, t.lot_id) == (ids["P-1042"], ids["WHEAT-B"], ids["L-1"])
    assert (t.vehicle, t.delivery_note, t.notes) == ("STD-AB 123", "LS-88812", None)
    with sessions() as s:
        trail = s.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.resource)
                          .where(AuditEntry.resource_id == str(t.id)).order_by(AuditEntry.id)).all()
        assert trail == [("system:pairing", "create", "tickets"), ("system:pairing", "update", "tickets")]
        assert s.get(Weighing, t.first_weighing_id).alibi_no == 1  # type: ignore[union-attr]


def test_direction_follows_the_weighing_times_not_the_arrival(sessions: sessionmaker[Session]) -> None:
    entry, exit_ = Bridge(sessions, node="gate-in"), Bridge(sessions, node="gate-out")
    # outgoing goods: empty in, loaded out; the exit bridge's node happens to send first
    exit_.send(exit_.weigh("24560", at=later(1), reference="R-OUT"))
    entry.send(entry.weigh("8420.5", at=T0, reference="R-OUT"))
    [t] = tickets(sessions)
    w = weighing_ids(sessions)
    assert (t.direction, plain(t.net)) == ("out", "16139.5")
    assert (t.first_weighing_id, t.second_weighing_id) == (w["gate-in-w1"], w["gate-out-w1"])


def test_plate_pairs_within_the_window_and_opens_a_new_ticket_outside_it(sessions: sessionmaker[Session]) -> None:
    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("8420.5", at=T0, vehicle="STD-AB 123"),  # empty first: outgoing goods
                bridge.weigh("24560", at=later(2), vehicle="std ab  123"))  # the same plate, written differently
    [t] = tickets(sessions)
    assert (t.status, t.direction, t.paired_by, plain(t.net), t.vehicle) == (
        "complete", "out", "plate", "16139.5", "STD-AB 123")

    bridge.send(bridge.weigh("30000", at=later(3), vehicle="HH-X 1"))
    bridge.send(bridge.weigh("12000", at=later(3 + 24.5), vehicle="HH-X 1"))  # 24.5 h later: beyond the 24 h window
    assert [(x.vehicle, x.status, x.first_weighing_id is not None, x.second_weighing_id) for x in tickets(sessions)
            ][1:] == [("HH-X 1", "open", True, None), ("HH-X 1", "open", True, None)]

    # a reference is matched only by the reference: the plate alone does not complete it
    bridge.send(bridge.weigh("30000", at=later(40), vehicle="OL-Y 7", reference="R-9"),
                bridge.weigh("11000", at=later(41), vehicle="OL-Y 7"))
    assert [(x.reference, x.status) for x in tickets(sessions)[3:]] == [("R-9", "open"), (None, "open")]


def test_the_window_is_a_setting(sessions: sessionmaker[Session]) -> None:
    pairing.use_settings(sessions, TicketSettings(pairing_window_h=1))
    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("30000", at=T0, vehicle="HH-X 1"), bridge.weigh("12000", at=later(2), vehicle="HH-X 1"))
    assert [x.status for x in tickets(sessions)] == ["open", "open"]
    bridge.send(bridge.weigh("11990", at=later(2.5), vehicle="HH-X 1"))
    assert [(x.status, plain(x.net)) for x in tickets(sessions)] == [("open", None), ("complete", "10")]


def test_a_preset_tare_weighing_is_a_complete_ticket_by_itself(sessions: sessionmaker[Session]) -> None:
    ids = master_data(sessions)
    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("31250.0", at=T0, tare="12400.0", tare_preset=True, net="18850.0",
                             vehicle="STD-AB 123", article="BARLEY"))
    [t] = tickets(sessions)
    assert (t.status, t.paired_by, t.direction, t.second_weighing_id) == ("complete", "preset_tare", "in", None)
    assert (plain(t.gross), plain(t.tare), plain(t.net), t.article_id) == ("31250", "12400", "18850", ids["BARLEY"])
    # the next weighing of that truck opens a ticket of its own: a complete ticket takes no more weighings
    bridge.send(bridge.weigh("12400", at=later(1), vehicle="STD-AB 123"))
    assert [x.status for x in tickets(sessions)] == ["complete", "open"]


def test_codes_attach_unknown_ones_are_notes_and_a_new_lot_is_made_for_a_known_article(
        sessions: sessionmaker[Session]) -> None:
    ids = master_data(sessions)
    bridge = Bridge(sessions)
    result = bridge.send(
        bridge.weigh("24560", at=T0, vehicle="A-B 1", partner="P-9999", article="WHEAT-B", lot="L-2025-NEW"),
        bridge.weigh("8420.5", at=later(1), vehicle="A-B 1", partner="P-1042", delivery_note="LS-1"),
        bridge.weigh("20000", at=later(2), vehicle="C-D 2", lot="L-NOWHERE"),  # no article: the lot is not made
        bridge.weigh("7000", at=later(3), vehicle="C-D 2", article="NOPE", lot="L-1"),  # the article from the lot
    )
    assert (result.applied, result.rejected) == (4, [])  # a weighing is a legal record: never refused for its codes
    first, second = tickets(sessions)
    with sessions() as s:
        lot = s.execute(select(Lot).where(Lot.code == "L-2025-NEW")).scalar_one()
        assert (lot.article_id, lot.partner_id) == (ids["WHEAT-B"], None)
        assert s.execute(select(AuditEntry.actor).where(AuditEntry.resource == "lots")).scalars().all() == [
            "system:pairing"]
        assert s.execute(select(func.count()).select_from(Lot).where(Lot.code == "L-NOWHERE")).scalar_one() == 0
    assert (first.partner_id, first.article_id, first.lot_id, first.delivery_note, plain(first.net)) == (
        ids["P-1042"], ids["WHEAT-B"], lot.id, "LS-1", "16139.5")  # the partner from the second weighing
    assert first.notes is not None
    assert "unknown partner code 'P-9999'" in first.notes
    assert "lot 'L-2025-NEW' created" in first.notes
    assert (second.article_id, second.lot_id, plain(second.net)) == (ids["WHEAT-B"], ids["L-1"], "13000")
    assert second.notes is not None
    assert "unknown lot code 'L-NOWHERE' (no article to create it for)" in second.notes
    assert "unknown article code 'NOPE'" in second.notes


def test_a_different_code_on_the_second_weighing_is_noted_and_units_must_match(
        sessions: sessionmaker[Session]) -> None:
    ids = master_data(sessions)
    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("24560", at=T0, reference="R-1", article="WHEAT-B"),
                bridge.weigh("8420.5", at=later(1), reference="R-1", article="BARLEY", lot="L-1"))
    [t] = tickets(sessions)
    assert (t.status, t.article_id, t.lot_id) == ("complete", ids["WHEAT-B"], ids["L-1"])
    assert t.notes is not None
    assert "names article 'BARLEY', the ticket keeps its own" in t.notes

    bridge.send(bridge.weigh("24560", at=later(2), reference="R-2"), bridge.weigh("8.4", at=later(3), unit="t",
                                                                                 reference="R-2"))
    mixed = tickets(sessions)[1]
    assert (mixed.status, mixed.net, mixed.second_weighing_id is not None) == ("open", None, True)
    assert mixed.notes is not None
    assert "the weighings are in kg and t: a net weight needs one unit" in mixed.notes


def test_a_resent_weighing_never_pairs_twice(sessions: sessionmaker[Session]) -> None:
    bridge = Bridge(sessions)
    first, second = (bridge.weigh("24560", at=T0, reference="R-1"),
                     bridge.weigh("8420.5", at=later(1), reference="R-1"))
    bridge.send(first)
    bridge.send(first, second)  # the first again with the second: only the second is new
    again = bridge.send(first, second)
    assert (again.applied, again.duplicates) == (0, 2)
    [t] = tickets(sessions)
    assert (t.status, plain(t.net)) == ("complete", "16139.5")
    with sessions.begin() as s:  # called once more for a weighing already on a ticket: that ticket, unchanged
        w = s.get(Weighing, t.second_weighing_id)
        assert w is not None
        held = pairing.on_weighing(s, w, dict(second.data), NOW)
        assert held is not None
        assert held.id == t.id
        assert s.execute(select(func.count()).select_from(Ticket)).scalar_one() == 1


def test_without_reference_and_plate_or_unstable_the_weighing_stays_unpaired(
        sessions: sessionmaker[Session]) -> None:
    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("24560", at=T0), bridge.weigh("8420.5", at=later(1), vehicle="X-Y 1", stable=False))
    assert tickets(sessions) == []
    assert len(weighing_ids(sessions)) == 2


def test_a_fault_in_pairing_keeps_the_weighing_unpaired(sessions: sessionmaker[Session],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def broken(session: Session, now: datetime) -> str:
        raise RuntimeError("numbering is broken")

    bridge = Bridge(sessions)
    monkeypatch.setattr(pairing.rules, "next_number", broken)
    result = bridge.send(bridge.weigh("24560", at=T0, reference="R-1", article="WHEAT-B"))
    assert (result.applied, result.acked_seq) == (1, 1)
    assert tickets(sessions) == []
    assert len(weighing_ids(sessions)) == 1
    assert "stays unpaired: pairing failed" in caplog.text
    monkeypatch.undo()
    bridge.send(bridge.weigh("8420.5", at=later(1), reference="R-1"))  # the second opens a ticket of its own
    [t] = tickets(sessions)
    assert (t.status, t.reference) == ("open", "R-1")


def test_two_ingest_workers_pair_one_truck_into_one_ticket(pg_url: str) -> None:
    """The entry and the exit bridge on two nodes, applied by two workers at the same moment: the advisory lock
    lets one open the ticket and the other complete it (without it, each would open a ticket of its own)."""
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    entry, exit_ = Bridge(sessions, node="gate-in"), Bridge(sessions, node="gate-out")
    loaded, empty = entry.weigh("24560", at=T0, reference="R-1"), exit_.weigh("8420.5", at=later(1), reference="R-1")
    waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    with engine.connect() as holder, ThreadPoolExecutor(2) as pool:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": pairing.LOCK_KEY})
        holder.commit()
        done = [pool.submit(entry.send, loaded), pool.submit(exit_.send, empty)]
        deadline = time.monotonic() + 20
        while holder.execute(waiting).scalar_one() < 2:  # both weighings stored, both workers at the lock
            assert time.monotonic() < deadline, "the two applies did not both reach the pairing lock"
            holder.commit()
            time.sleep(0.02)
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": pairing.LOCK_KEY})
        holder.commit()
        for f in done:
            f.result(timeout=30)
    [t] = tickets(sessions)
    assert (t.status, t.direction, plain(t.net)) == ("complete", "in", "16139.5")
    engine.dispose()


def test_a_number_taken_meanwhile_is_retried_with_the_next(sessions: sessionmaker[Session],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with sessions.begin() as s:  # a clerk's ticket took the number the pairing is about to give
        s.add(Ticket(number="T-2025-000001", direction="in", status="open", unit="kg", created_at=NOW,
                     updated_at=NOW))
    real, handed = pairing.rules.next_number, []

    def stale_first(session: Session, now: datetime) -> str:
        handed.append("T-2025-000001" if not handed else real(session, now))
        return handed[-1]

    monkeypatch.setattr(pairing.rules, "next_number", stale_first)
    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("24560", at=T0, reference="R-1"), now=NOW)
    assert handed == ["T-2025-000001", "T-2025-000002"]
    assert [(t.number, t.reference) for t in tickets(sessions)] == [("T-2025-000001", None), ("T-2025-000002", "R-1")]
