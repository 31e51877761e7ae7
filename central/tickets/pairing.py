"""Pairing: every new weighing central stores is placed on a weighbridge ticket, in the same transaction.

``ingest.handlers.weighing`` calls ``on_weighing`` right after it adds a ``Weighing`` row; a resent record never gets
here (apply skips it), and a weighing already on a ticket that is not cancelled is never placed again. The rules,
checked in this order:

1. **Not stable** (``stable: false``): never paired — only stable values count (devices.md §4.4).
2. **Preset tare** (``tare_preset: true`` with ``tare`` and ``net`` from the instrument): a complete ticket of this
   one weighing, gross / tare / net exactly as delivered, ``paired_by = "preset_tare"``; direction ``in`` unless the
   record says ``direction: out``. Without tare and net it is paired like any other weighing (with a note).
3. **Reference** R (``reference`` of the weigh command): the open ticket with reference R gets this weighing and
   completes; without one, a new open ticket with reference R. No time window: a reference is explicit.
4. **Plate** P, no reference: the open ticket of plate P without a reference (opened by plate, or by hand) whose
   weighing is at most ``tickets.pairing_window_h`` (default 24 h) away from this one in weighing time — the nearest
   one if several — completes; without one, a new open ticket of plate P. Plates compare without case, hyphens
   and repeated spaces: "STD-AB 123" = "std ab  123".
5. **Neither**: the weighing stays unpaired (``GET /api/v1/weighings?unpaired=true``); a ticket is made by hand.

A reference is matched only by the same reference and a plate only by plate: a first weighing with reference R is
never completed by a weighing that has only the plate. Weighings are placed in the order central applies them (per
node, the order they were weighed).

**Completing** orders the two weighings by the time they were weighed, not by arrival (an exit bridge's node may
send first): ``rules.direction`` (heavier first → ``in``, lighter first → ``out``) and ``rules.difference`` (net =
heavier − lighter, exact Decimal: gross and tare keep the digits their weighings delivered, the net the decimals of
both — 24560 − 8420.5 = 16139.5, 32980 − 8420.0 = 24560.0; nothing is rounded or padded). Weighings in two units:
the ticket keeps both but stays ``open`` without weights, with a note; an operator corrects (PATCH) or cancels it.
Until its second weighing, an open ticket's direction is ``in``, provisionally (the column cannot be empty).

**Codes** of the weigh command in either weighing's data — ``partner``, ``article``, ``lot``, ``delivery_note`` —
go on the ticket; the first one given wins, a different one later becomes a note. Partners, articles and lots are
looked up by ``code``. An unknown code never fails the apply (the weighing is a legal record): it is a note on the
ticket and a warning in the log. A lot code that does not exist yet is **created** for the ticket's article when
that is known (the lot's partner: the ticket's), else noted; a lot of another article is noted, not attached; a
ticket without article takes the lot's.

**Numbers** are the automatic ``T-<UTC year>-<6 digits>`` (``rules.next_number``), never the reference: the
reference stays in its own column (references repeat, numbers stay one gap-free sequence); a number race with the
API is retried in a savepoint. On Postgres a transaction-level advisory lock serialises pairing between ingest
workers (the entry and the exit bridge may be two nodes, applied by two workers at once).

**Never fails the apply**: the pairing runs in a savepoint; an unexpected error is logged and rolled back, and the
weighing stays, unpaired. Tickets created or completed here, and lots created here, are in the audit log with actor
``system:pairing``. Cancelled tickets are never touched: their weighings are not taken back automatically.

Settings (``TicketSettings``) come with the session: ``use_settings(sessions, settings.tickets)`` once where the
session factory is made; without it the defaults apply.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from central.db import audit
from central.db.models import Article, Lot, Node, Partner, Ticket, Weighing
from central.db.values import CODE, as_delivered
from central.tickets import rules
from central.tickets.config import TicketSettings
from central.tickets.errors import UnitMismatch

log = logging.getLogger(__name__)

ACTOR = "system:pairing"
SETTINGS_KEY = "floorgate.tickets"
LOCK_KEY = 0x666C_6774_6B74  # pg_advisory_xact_lock key of ticket pairing ("flgtkt")
NUMBER_ATTEMPTS = 5
MAX_REFERENCE = 64  # Ticket.reference
MAX_PLATE = 32  # Ticket.vehicle
MAX_DELIVERY_NOTE = 64  # Ticket.delivery_note
MAX_LOT_CODE = 64  # Lot.code
DEFAULT_SETTINGS = TicketSettings()


def use_settings(sessions: sessionmaker[Session], settings: TicketSettings) -> None:
    """Hand ``settings`` to every session of ``sessions`` (``session.info``), where ``on_weighing`` finds them."""
    info = dict(sessions.kw.get("info") or {})
    info[SETTINGS_KEY] = settings
    sessions.configure(info=info)


def settings_of(session: Session) -> TicketSettings:
    found = session.info.get(SETTINGS_KEY)
    return found if isinstance(found, TicketSettings) else DEFAULT_SETTINGS


def plate_key(plate: str) -> str:
    """A plate as compared: upper case, hyphens as spaces, runs of spaces as one."""
    return " ".join(plate.upper().replace("-", " ").split())


def on_weighing(session: Session, weighing: Weighing, data: dict[str, Any], now: datetime) -> Ticket | None:
    """Place ``weighing`` (just added to ``session``) on a ticket by the rules above; the ticket, or None if it
    stays unpaired. Never raises for the weighing's content."""
    if not (weighing.reference or weighing.vehicle or weighing.tare_preset):
        log.debug("weighing %s/%s has neither reference nor plate: unpaired", weighing.node_id, weighing.record_id)
        return None  # nothing to pair it by: no query, no savepoint (most weighings of a platform scale)
    session.flush()  # the weighing's id, outside the savepoint: it is kept whatever happens below
    try:
        with session.begin_nested():
            return _place(session, weighing, data, now, settings_of(session))
    except Exception:  # a bug or an unexpected fault: the legal record goes in all the same, unpaired
        log.exception("weighing %s/%s (id %s) stays unpaired: pairing failed — make its ticket by hand",
                      weighing.node_id, weighing.record_id, weighing.id)
        return None


# --- the rules -----------------------------------------------------------------------------------------------------


def _place(session: Session, w: Weighing, data: dict[str, Any], now: datetime,
           settings: TicketSettings) -> Ticket | None:
    if data.get("stable") is False:
        log.warning("weighing %s/%s is not stable: not paired", w.node_id, w.record_id)
        return None
    held = session.execute(select(Ticket).where(
        or_(Ticket.first_weighing_id == w.id, Ticket.second_weighing_id == w.id),
        Ticket.status != "cancelled").limit(1)).scalar_one_or_none()
    if held is not None:
        return held
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    notes: list[str] = []
    reference = _text(w.reference, MAX_REFERENCE, "reference", notes)  # as stored: the legal record's values
    plate = _text(w.vehicle, MAX_PLATE, "vehicle", notes)

    if w.tare_preset:
        if w.tare is not None and w.net is not None:
            return _single(session, w, data, now, tare=w.tare, net=w.net, reference=reference, plate=plate,
                           notes=notes)
        notes.append(f"weighing {_name(w)} has a preset tare but no tare and net from the instrument: paired by its "
                     "gross weight")

    if reference is not None:
        ticket, paired_by = _open_by_reference(session, reference), "reference"
    elif plate is not None:
        ticket, paired_by = _open_by_plate(session, plate, w, timedelta(hours=settings.pairing_window_h)), "plate"
    else:
        log.debug("weighing %s/%s has neither reference nor plate: unpaired", w.node_id, w.record_id)
        return None
    if ticket is None:
        return _open(session, w, data, now, reference=reference, plate=plate, paired_by=paired_by, notes=notes)
    return _complete(session, ticket, w, data, now, plate=plate, notes=notes)


def _open_by_reference(session: Session, reference: str) -> Ticket | None:
    return session.execute(
        select(Ticket).where(Ticket.reference == reference, Ticket.status == "open",
                             or_(Ticket.first_weighing_id.is_(None), Ticket.second_weighing_id.is_(None)))
        .order_by(Ticket.id).limit(1).with_for_update()
    ).scalar_one_or_none()


def _open_by_plate(session: Session, plate: str, w: Weighing, window: timedelta) -> Ticket | None:
    at = w.weighed_at
    rows = session.execute(
        select(Ticket, Weighing)
        .join(Weighing, Weighing.id == func.coalesce(Ticket.first_weighing_id, Ticket.second_weighing_id))
        .where(Ticket.status == "open", Ticket.reference.is_(None), Ticket.vehicle.is_not(None),
               or_(Ticket.first_weighing_id.is_(None), Ticket.second_weighing_id.is_(None)),
               Weighing.weighed_at >= at - window, Weighing.weighed_at <= at + window)
    ).all()
    key = plate_key(plate)
    found = [(abs(other.weighed_at - at), ticket.id, ticket) for ticket, other in rows
             if ticket.vehicle is not None and plate_key(ticket.vehicle) == key]
    if not found:
        return None
    ticket = min(found, key=lambda f: (f[0], f[1]))[2]
    session.refresh(ticket, with_for_update=True)
    return ticket


def _single(session: Session, w: Weighing, data: dict[str, Any], now: datetime, *, tare: Decimal, net: Decimal,
            reference: str | None, plate: str | None, notes: list[str]) -> Ticket:
    if w.gross is not None and w.gross - tare != net:  # only checked, never recomputed: the instrument's net counts
        notes.append(f"the instrument's net {as_delivered(net)} is not gross {as_delivered(w.gross)} − preset tare "
                     f"{as_delivered(tare)}")
    direction = "out" if data.get("direction") == "out" else "in"
    ticket = Ticket(direction=direction, status="complete", vehicle=plate, site_id=_site(session, w),
                    reference=reference, paired_by="preset_tare", first_weighing_id=w.id, gross=w.gross, tare=tare,
                    net=net, unit=w.unit, created_at=now, updated_at=now)
    _attach_codes(session, ticket, w, data, now, notes)
    return _insert(session, ticket, now, notes)


def _open(session: Session, w: Weighing, data: dict[str, Any], now: datetime, *, reference: str | None,
          plate: str | None, paired_by: str, notes: list[str]) -> Ticket:
    ticket = Ticket(direction="in", status="open", vehicle=plate, site_id=_site(session, w), reference=reference,
                    paired_by=paired_by, first_weighing_id=w.id, unit=w.unit, created_at=now, updated_at=now)
    _attach_codes(session, ticket, w, data, now, notes)
    return _insert(session, ticket, now, notes)


def _complete(session: Session, ticket: Ticket, w: Weighing, data: dict[str, Any], now: datetime, *,
              plate: str | None, notes: list[str]) -> Ticket:
    before = audit.snapshot(ticket)
    held_id = ticket.first_weighing_id or ticket.second_weighing_id
    held = session.get(Weighing, held_id) if held_id is not None else None
    if held is None:  # an open ticket made by hand without weighings: this one is its first
        ticket.first_weighing_id = w.id
        ticket.unit = w.unit
    else:
        first, second = rules.chronological(held, w)
        ticket.first_weighing_id, ticket.second_weighing_id = first.id, second.id
        try:
            weights = rules.difference(first, second)
        except UnitMismatch as exc:
            log.warning("ticket %s: %s — left open", ticket.number, exc)
            notes.append(f"{exc}: left open until corrected by hand")
        else:
            ticket.gross, ticket.tare, ticket.net, ticket.unit = (weights.gross, weights.tare, weights.net,
                                                                  weights.unit)
            ticket.direction = rules.direction(first, second)
            ticket.status = "complete"
            if weights.net == 0:
                notes.append("both weighings are equal: net 0")
    ticket.paired_by = ticket.paired_by or ("reference" if ticket.reference else "plate")
    if plate is not None:
        if ticket.vehicle is None:
            ticket.vehicle = plate
        elif plate_key(ticket.vehicle) != plate_key(plate):
            notes.append(f"weighing {_name(w)} names vehicle {plate!r}, the ticket keeps {ticket.vehicle!r}")
    _attach_codes(session, ticket, w, data, now, notes)
    _add_notes(ticket, notes)
    ticket.updated_at = now
    session.flush()
    audit.record(session, ACTOR, "update", "tickets", ticket.id, before=before, after=audit.snapshot(ticket))
    log.info("ticket %s %s by %s (weighing %s)", ticket.number, ticket.status, ticket.paired_by, _name(w))
    return ticket


def _insert(session: Session, ticket: Ticket, now: datetime, notes: list[str]) -> Ticket:
    """Give ``ticket`` the next number and insert it; a number the API took meanwhile is retried."""
    _add_notes(ticket, notes)
    session.flush()  # everything else first: an IntegrityError below can only be the number
    for attempt in range(NUMBER_ATTEMPTS):
        ticket.number = rules.next_number(session, now)
        try:
            with session.begin_nested():
                session.add(ticket)
        except IntegrityError:
            if attempt == NUMBER_ATTEMPTS - 1:
                raise
            continue
        break
    audit.record(session, ACTOR, "create", "tickets", ticket.id, after=audit.snapshot(ticket))
    log.info("ticket %s %s by %s", ticket.number, ticket.status, ticket.paired_by)
    return ticket


# --- codes: partner, article, lot, delivery note -------------------------------------------------------------------


def _attach_codes(session: Session, ticket: Ticket, w: Weighing, data: dict[str, Any], now: datetime,
                  notes: list[str]) -> None:
    for key, model, column in (("partner", Partner, "partner_id"), ("article", Article, "article_id")):
        code = _code(data.get(key))
        if code is None:
            continue
        row_id = session.execute(select(model.id).where(model.code == code)).scalar_one_or_none()
        if row_id is None:
            _unknown(w, notes, f"unknown {key} code {code!r}")
        else:
            _set(ticket, column, row_id, notes, f"{key} {code!r}", w)
    lot_code = _code(data.get("lot"))
    if lot_code is not None:
        lot = session.execute(select(Lot).where(Lot.code == lot_code)).scalar_one_or_none()
        if lot is None:
            lot = _new_lot(session, ticket, w, lot_code, now, notes)
        if lot is not None:
            if ticket.article_id is None:
                ticket.article_id = lot.article_id
            if lot.article_id != ticket.article_id:
                _unknown(w, notes, f"lot {lot_code!r} is of another article than the ticket's: not attached")
            else:
                _set(ticket, "lot_id", lot.id, notes, f"lot {lot_code!r}", w)
    delivery_note = _text(data.get("delivery_note"), MAX_DELIVERY_NOTE, "delivery_note", notes)
    if delivery_note is not None:
        _set(ticket, "delivery_note", delivery_note, notes, f"delivery note {delivery_note!r}", w)


def _new_lot(session: Session, ticket: Ticket, w: Weighing, code: str, now: datetime,
             notes: list[str]) -> Lot | None:
    if ticket.article_id is None:
        _unknown(w, notes, f"unknown lot code {code!r} (no article to create it for)")
        return None
    if len(code) > MAX_LOT_CODE or not re.fullmatch(CODE, code):
        _unknown(w, notes, f"lot code {code!r} is not a valid code: no lot created")
        return None
    lot = Lot(code=code, article_id=ticket.article_id, partner_id=ticket.partner_id,
              notes=f"created by ticket pairing from weighing {_name(w)}", created_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(lot)
    except IntegrityError:  # made through the API this very moment: take that one
        return session.execute(select(Lot).where(Lot.code == code)).scalar_one_or_none()
    audit.record(session, ACTOR, "create", "lots", lot.id, after=audit.snapshot(lot))
    notes.append(f"lot {code!r} created for this ticket")
    log.info("lot %s created from weighing %s", code, _name(w))
    return lot


def _set(ticket: Ticket, column: str, value: object, notes: list[str], what: str, w: Weighing) -> None:
    current = getattr(ticket, column)
    if current is None:
        setattr(ticket, column, value)
    elif current != value:
        notes.append(f"weighing {_name(w)} names {what}, the ticket keeps its own")


def _unknown(w: Weighing, notes: list[str], message: str) -> None:
    log.warning("weighing %s: %s", _name(w), message)
    notes.append(f"weighing {_name(w)}: {message}")


# --- small helpers -------------------------------------------------------------------------------------------------


def _name(w: Weighing) -> str:
    return f"{w.node_id}/{w.record_id}"


def _site(session: Session, w: Weighing) -> int | None:
    node = session.get(Node, w.node_id)
    return node.site_id if node is not None else None


def _add_notes(ticket: Ticket, notes: list[str]) -> None:
    if notes:
        ticket.notes = "\n".join([*([ticket.notes] if ticket.notes else []), *notes])
        notes.clear()


def _text(value: object, max_len: int, field: str, notes: list[str]) -> str | None:
    """A text field of the record: stripped, None when empty; too long for its column → None and a note."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    out = str(value).strip()
    if not out or "\x00" in out:
        return None
    if len(out) > max_len:
        notes.append(f"{field} {out[:max_len]!r}… is longer than {max_len} characters: ignored")
        return None
    return out


def _code(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    out = str(value).strip()
    return out if out and "\x00" not in out else None
