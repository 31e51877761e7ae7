"""``/api/v1/tickets``: weighing tickets — a vehicle's first and second weighing, net by difference.

    open ──(both weighings set)──> complete
      └──────────┬───────────────────┘
                 └──POST …/cancel {reason}──> cancelled   (for good: no update, no second cancel)

Tickets are never deleted; every create, update and cancel is in the audit log with before and after, in the same
transaction. Admins and operators (``tickets:write``) write them; everyone who may read sees them; exporting the
CSV (``GET /api/v1/tickets.csv``) needs ``export``.

**Weights** are never typed in: they come from two weighings (``first_weighing_id``, ``second_weighing_id``) as the
scale delivered them. gross = the larger, tare = the smaller, net = gross − tare, in exact decimal arithmetic, never
rounded: 24560 kg − 8420.5 kg = 16139.5 kg. Both must be in the same unit. A weighing belongs to at most one ticket
that is not cancelled (409 otherwise), so nothing is counted twice.

Most tickets are made by central itself: ingest pairs a vehicle's weighings into them (``central.tickets.pairing``;
``paired_by`` says how, ``reference`` holds the weigh command's reference) and they are changed or cancelled here
like any other. Their PDFs: ``central.api.routes.ticket_documents``.

**Numbers** are ``T-<UTC year>-<6 digits>``, counting up, unless the client gives its own; an own number must not
start with ``T-`` unless it has exactly that shape (the automatic ones stay a gap-free sequence of one shape).

The CSV route is ``/api/v1/tickets.csv`` (not ``/api/v1/tickets/export.csv``): a path of its own, beside — not
under — ``/api/v1/tickets/{ticket_id}``, so neither can shadow the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central.api.csvexport import CsvResponse, RawCsv, csv_openapi, iso, stream_csv
from central.api.deps import SessionDep, StateDep
from central.api.errors import CONFLICT, ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT
from central.api.params import (
    MAX_ID,
    Cursor,
    IdFilter,
    IdPath,
    Limit,
    Since,
    Until,
    WholeNumber,
    page,
    patch_field,
    sort_param,
    text_filter,
    where_equal,
    where_time,
)
from central.api.routes.weighings_csv import WEIGHING_COLUMNS, WeighingCells
from central.api.security import CanExport, CanRead, CanWriteTickets
from central.db import audit
from central.db.models import Article, Lot, Partner, Site, Ticket, Weighing
from central.db.values import NO_NUL, NON_BLANK, as_delivered, set_if_changed
from central.tickets import cancellation, rules
from central.tickets.errors import NumberingBlocked, UnitMismatch
from central.tickets.views import zone_of

router = APIRouter(tags=["tickets"])
Direction = Literal["in", "out"]
Status = Literal["open", "complete", "cancelled"]
# own numbers: not "T-…" unless exactly the automatic shape (a regular expression without look-ahead, for OpenAPI)
NUMBER = r"^([A-SU-Za-z0-9][A-Za-z0-9/_.-]{0,31}|T([A-Za-z0-9/_.][A-Za-z0-9/_.-]{0,30})?|T-[0-9]{4}-[0-9]{6})$"
SORTABLE = {"created_at": Ticket.created_at, "number": Ticket.number, "id": Ticket.id}
REFERENCES: dict[str, tuple[Any, str]] = {
    "site_id": (Site, "site"), "partner_id": (Partner, "partner"), "article_id": (Article, "article"),
    "lot_id": (Lot, "lot"), "first_weighing_id": (Weighing, "weighing"), "second_weighing_id": (Weighing, "weighing"),
}
WEIGHINGS = ("first_weighing_id", "second_weighing_id")
NUMBER_ATTEMPTS = 5  # two clerks taking the same next number at once: the loser takes the one after


class TicketOut(BaseModel):
    id: int = Field(examples=[101])
    number: str = Field(description="unique ticket number", examples=["T-2025-000101"])
    direction: Direction = Field(description="in: goods received; out: goods shipped")
    status: Status = Field(description="open, complete (both weighings) or cancelled")
    vehicle: str | None = Field(None, description="licence plate", examples=["STD-AB 123"])
    site_id: int | None = Field(None, examples=[1])
    partner_id: int | None = Field(None, examples=[7])
    article_id: int | None = Field(None, examples=[3])
    lot_id: int | None = Field(None, examples=[12])
    delivery_note: str | None = Field(None, description="the delivery note (Lieferschein) number",
                                      examples=["LS-88812"])
    reference: str | None = Field(None, description="ticket reference given with the weigh command (paired by it)",
                                  examples=["WB-4711"])
    paired_by: str | None = Field(None, description="how the weighings came together: reference, plate, preset_tare "
                                  "(one weighing, tare preset); null: made by hand", examples=["reference"])
    first_weighing_id: int | None = Field(None, examples=[5001])
    second_weighing_id: int | None = Field(None, examples=[5007])
    gross: str | None = Field(None, description="exact decimal string, in `unit` (both weighings set)",
                              examples=["24560"])
    tare: str | None = Field(None, description="exact decimal string, in `unit`", examples=["8420.5"])
    net: str | None = Field(None, description="gross − tare, exact, never rounded", examples=["16139.5"])
    unit: str = Field(description="unit of gross, tare and net, as the scale delivered them", examples=["kg"])
    cancel_reason: str | None = None
    cancelled_by: str | None = Field(None, description="who cancelled it: user:<name> or apikey:<prefix>",
                                     examples=["user:anna"])
    cancelled_at: datetime | None = Field(None, description="when it was cancelled")
    notes: str | None = None
    created_at: datetime
    updated_at: datetime


class TicketPage(BaseModel):
    items: list[TicketOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


Id = Annotated[int | None, WholeNumber]


class _TicketFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    vehicle: str | None = Field(None, max_length=32, pattern=NO_NUL, examples=["STD-AB 123"])
    site_id: Id = Field(None, ge=1, le=MAX_ID, examples=[1])
    partner_id: Id = Field(None, ge=1, le=MAX_ID, examples=[7])
    article_id: Id = Field(None, ge=1, le=MAX_ID, description="taken from the lot when not given", examples=[3])
    lot_id: Id = Field(None, ge=1, le=MAX_ID, description="its article must be the ticket's", examples=[12])
    delivery_note: str | None = Field(None, max_length=64, pattern=NO_NUL, examples=["LS-88812"])
    first_weighing_id: Id = Field(None, ge=1, le=MAX_ID, description="a weighing (GET /api/v1/weighings)",
                                  examples=[5001])
    second_weighing_id: Id = Field(None, ge=1, le=MAX_ID, description="with the first: gross, tare and net are "
                                   "computed", examples=[5007])
    notes: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class TicketCreate(_TicketFields):
    number: str | None = Field(None, pattern=NUMBER, description="own number; none: the next T-YYYY-NNNNNN",
                               examples=["WB-4711"])
    direction: Direction = Field(description="in: goods received; out: goods shipped", examples=["in"])


class TicketUpdate(_TicketFields):
    """Only the fields sent are changed; null clears one. Changing a weighing recomputes gross, tare and net."""

    direction: Direction = patch_field(examples=["out"])


class TicketCancel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    reason: str = Field(max_length=2000, pattern=NON_BLANK, description="why (mandatory, kept in the audit log)",
                        examples=["wrong vehicle weighed"])


def _out(t: Ticket) -> TicketOut:
    return TicketOut(
        id=t.id, number=t.number, direction=t.direction, status=t.status, vehicle=t.vehicle,  # type: ignore[arg-type]
        site_id=t.site_id, partner_id=t.partner_id, article_id=t.article_id, lot_id=t.lot_id,
        delivery_note=t.delivery_note, reference=t.reference, paired_by=t.paired_by,
        first_weighing_id=t.first_weighing_id, second_weighing_id=t.second_weighing_id,
        gross=as_delivered(t.gross), tare=as_delivered(t.tare), net=as_delivered(t.net), unit=t.unit,
        cancel_reason=t.cancel_reason,
        cancelled_by=t.cancelled_by, cancelled_at=t.cancelled_at, notes=t.notes, created_at=t.created_at,
        updated_at=t.updated_at,
    )


def _get(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise ApiError(404, "not_found", f"no ticket with id {ticket_id}", field="ticket_id")
    return ticket


def _weights(first: Weighing | None, second: Weighing | None, unit: str) -> dict[str, Any]:
    """gross, tare, net, unit and status from the ticket's weighings (exact: ``central.tickets.rules``)."""
    if first is not None and second is not None:
        try:
            w = rules.difference(first, second)
        except UnitMismatch as exc:
            raise ApiError(422, "unit_mismatch", str(exc), field="second_weighing_id") from None
        return {"gross": w.gross, "tare": w.tare, "net": w.net, "unit": w.unit, "status": "complete"}
    one = first or second
    return {"gross": None, "tare": None, "net": None, "unit": one.unit if one else unit, "status": "open"}


def _resolve(session: Session, ticket: Ticket | None, changes: dict[str, Any]) -> dict[str, Any]:
    """Check ``changes`` against what is stored and return every column to set (weights recomputed).

    Nothing is set on the ticket here: a reference to a row that does not exist is a 422 naming the field before any
    UPDATE could fail on a foreign key."""
    for name, (model, noun) in REFERENCES.items():
        value = changes.get(name)
        if value is not None and session.get(model, value) is None:
            raise ApiError(422, "invalid_reference", f"no {noun} with id {value}", field=name)
    merged = {name: changes[name] if name in changes else (getattr(ticket, name) if ticket else None)
              for name in REFERENCES}
    values = dict(changes)
    if merged["lot_id"] is not None:
        lot = session.get(Lot, merged["lot_id"])
        assert lot is not None
        if merged["article_id"] is None:
            values["article_id"] = merged["article_id"] = lot.article_id
        elif merged["article_id"] != lot.article_id:
            field = "lot_id" if "lot_id" in changes else "article_id"
            raise ApiError(422, "invalid_reference", f"lot {lot.code!r} is of article {lot.article_id}, the ticket "
                           f"of article {merged['article_id']}", field=field)
    first_id, second_id = merged["first_weighing_id"], merged["second_weighing_id"]
    if first_id is not None and first_id == second_id:
        raise ApiError(422, "invalid_request", "the first and second weighing must be two weighings",
                       field="second_weighing_id")
    for name in WEIGHINGS:
        wid = changes.get(name)
        if wid is None:
            continue
        q = select(Ticket.number).where(or_(Ticket.first_weighing_id == wid, Ticket.second_weighing_id == wid),
                                        Ticket.status != "cancelled")
        if ticket is not None:
            q = q.where(Ticket.id != ticket.id)
        other = session.execute(q.limit(1)).scalar_one_or_none()
        if other is not None:
            raise ApiError(409, "conflict", f"weighing {wid} is on ticket {other} already", field=name)
    if ticket is None or any(name in changes for name in WEIGHINGS):
        first = session.get(Weighing, first_id) if first_id is not None else None
        second = session.get(Weighing, second_id) if second_id is not None else None
        values.update(_weights(first, second, ticket.unit if ticket else "kg"))
    return values


def _next_number(session: Session, now: datetime) -> str:
    try:
        return rules.next_number(session, now)
    except NumberingBlocked as exc:
        raise ApiError(409, "conflict", exc.reason, field="number") from None


# --- filters (the list and the CSV export share them) ------------------------------------------------------------


def ticket_filters(
    status: Status | None = None,
    direction: Direction | None = None,
    number: Annotated[str | None, text_filter("exactly this number", 32)] = None,
    site_id: IdFilter = None,
    partner_id: IdFilter = None,
    article_id: IdFilter = None,
    lot_id: IdFilter = None,
    vehicle: Annotated[str | None, text_filter("licence plate contains this (case-insensitive)", 32)] = None,
    delivery_note: Annotated[str | None, text_filter("exactly this delivery note number", 64)] = None,
    reference: Annotated[str | None, text_filter("exactly this ticket reference (of the weigh command)", 64)] = None,
    since: Since = None,
    until: Until = None,
) -> Select[Any]:
    q = where_equal(select(Ticket), ((Ticket.status, status), (Ticket.direction, direction), (Ticket.number, number),
                                     (Ticket.site_id, site_id), (Ticket.partner_id, partner_id),
                                     (Ticket.article_id, article_id), (Ticket.lot_id, lot_id),
                                     (Ticket.delivery_note, delivery_note), (Ticket.reference, reference)))
    if vehicle:
        q = q.where(Ticket.vehicle.icontains(vehicle, autoescape=True))
    return where_time(q, Ticket.created_at, since, until)


TicketQuery = Annotated[Select[Any], Depends(ticket_filters)]


# --- routes ------------------------------------------------------------------------------------------------------


@router.get("/api/v1/tickets", response_model=TicketPage, responses=ERROR_RESPONSES,
            summary="List weighing tickets (newest first)")
def list_tickets(
    session: SessionDep, principal: CanRead, query: TicketQuery,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("created_at, number or id", "-created_at")] = "-created_at",
) -> TicketPage:
    rows, nxt = page(session, query, SORTABLE, Ticket.id, sort=sort, limit=limit, cursor=cursor)
    return TicketPage(items=[_out(t) for t in rows], next_cursor=nxt)


CSV_HEADER = ("id", "number", "status", "direction", "created_at", "updated_at", "site_id", "site_code",
              "partner_id", "partner_code", "partner_name", "article_id", "article_code", "article_name", "lot_id",
              "lot_code", "vehicle", "delivery_note", "first_weighing_id", "second_weighing_id", "gross", "tare",
              "net", "unit", "cancel_reason", "notes", "cancelled_by", "cancelled_at", "timezone",
              *(f"{n}_{c}" for n in ("first", "second") for c in WEIGHING_COLUMNS))
CSV_EXAMPLE = (",".join(CSV_HEADER) + "\r\n101,T-2025-000101,complete,in,2025-03-04T07:12:09.512000Z,"
               "2025-03-04T07:40:31.007000Z,1,HAM-1,7,P-1042,\"Hof Meyer \"\"Am Deich\"\", GbR\",3,WHEAT-B,"
               "\"Wheat, bread quality\",12,L-2025-0042,STD-AB 123,LS-88812,5001,5007,24560.0,8420.5,16139.5,kg,,,"
               ",,Europe/Berlin,2025-03-04T08:12:09+01:00,2025-03-04T07:12:09Z,24560.0,,,,mill-01/bridge-1,B123456,"
               "A-1017,17,3fa2b1c4d5e6f708,2025-03-04T08:40:12+01:00,2025-03-04T07:40:12Z,8420.5,,,,"
               "mill-01/bridge-1,B123456,A-1018,18,9c0d2e4f6a8b1c3d\r\n")

CSV_DESCRIPTION = ("Every ticket the filters select, one row each, after a header row; every weight exactly as the "
                   "scale delivered it (its own digits: gross, tare and net of the ticket — the net calculated — and "
                   "of each weighing), times ISO 8601 in UTC, empty cells for none. Cancelled tickets name who "
                   "cancelled them and when. For the first and the second weighing: the weighing time local to the "
                   "ticket's site (ISO 8601 with offset, `timezone` names the zone) and in UTC, the scale "
                   "(node/device) and its serial number, the instrument's alibi id, floorgate's alibi number and the "
                   "first 16 hex digits of its alibi entry's hash (as printed on the ticket).")


def _names(session: Session, model: Any, ids: set[int], *columns: Any) -> dict[int, tuple[Any, ...]]:
    if not ids:
        return {}
    rows = session.execute(select(model.id, *columns).where(model.id.in_(ids))).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def _csv_rows(default_zone: str) -> Callable[[Session, list[Ticket]], Iterable[Sequence[object]]]:
    def render(session: Session, tickets: list[Ticket]) -> Iterable[Sequence[object]]:
        weighing_ids = {i for t in tickets for i in (t.first_weighing_id, t.second_weighing_id) if i is not None}
        weighings = {w.id: w for w in session.execute(select(Weighing).where(Weighing.id.in_(weighing_ids)))
                     .scalars()} if weighing_ids else {}
        site_rows = {s.id: s for s in session.execute(select(Site).where(
            Site.id.in_({t.site_id for t in tickets if t.site_id}))).scalars()}
        cells = WeighingCells(session, weighings.values())
        for row, t in zip(_ticket_cells(session, tickets), tickets, strict=True):
            zone = zone_of(site_rows.get(t.site_id) if t.site_id else None, default_zone)
            first = weighings.get(t.first_weighing_id) if t.first_weighing_id else None
            second = weighings.get(t.second_weighing_id) if t.second_weighing_id else None
            yield (*row, t.cancelled_by or "", iso(t.cancelled_at), zone.key, *cells.cells(first, zone),
                   *cells.cells(second, zone))

    return render


def _ticket_cells(session: Session, tickets: list[Ticket]) -> Iterable[Sequence[object]]:
    sites = _names(session, Site, {t.site_id for t in tickets if t.site_id}, Site.code)
    partners = _names(session, Partner, {t.partner_id for t in tickets if t.partner_id}, Partner.code, Partner.name)
    articles = _names(session, Article, {t.article_id for t in tickets if t.article_id}, Article.code, Article.name)
    lots = _names(session, Lot, {t.lot_id for t in tickets if t.lot_id}, Lot.code)
    blank2 = ("", "")
    for t in tickets:
        yield (t.id, t.number, t.status, t.direction, iso(t.created_at), iso(t.updated_at),
               t.site_id or "", *sites.get(t.site_id or 0, ("",)),
               t.partner_id or "", *partners.get(t.partner_id or 0, blank2),
               t.article_id or "", *articles.get(t.article_id or 0, blank2),
               t.lot_id or "", *lots.get(t.lot_id or 0, ("",)),
               t.vehicle or "", t.delivery_note or "", t.first_weighing_id or "", t.second_weighing_id or "",
               as_delivered(t.gross) or "", as_delivered(t.tare) or "", as_delivered(t.net) or "", t.unit,
               t.cancel_reason or "",
               t.notes or "")


@router.get("/api/v1/tickets.csv", response_class=CsvResponse,
            responses=csv_openapi(CSV_DESCRIPTION, CSV_EXAMPLE, ERROR_RESPONSES),
            summary="Export weighing tickets as CSV (streamed)")
def export_tickets(
    session: SessionDep, state: StateDep, principal: CanExport, query: TicketQuery,
    sort: Annotated[str, sort_param("created_at, number or id", "created_at: oldest first")] = "created_at",
    raw: RawCsv = False,
) -> CsvResponse:
    return stream_csv(session, state.sessions, query, SORTABLE, Ticket.id, sort=sort, header=CSV_HEADER,
                      render=_csv_rows(state.settings.tickets.timezone), filename="tickets.csv", raw=raw)


@router.post("/api/v1/tickets", response_model=TicketOut, status_code=201,
             responses={**ERROR_RESPONSES, **CONFLICT}, summary="Create a weighing ticket")
def create_ticket(body: TicketCreate, session: SessionDep, principal: CanWriteTickets) -> TicketOut:
    fields = body.model_dump(exclude={"number"})
    if body.number is not None and session.execute(
            select(Ticket.id).where(Ticket.number == body.number)).first() is not None:
        raise ApiError(409, "conflict", f"ticket number {body.number!r} is taken", field="number")
    for attempt in range(NUMBER_ATTEMPTS):
        values = _resolve(session, None, fields)
        now = datetime.now(UTC)
        number = body.number or _next_number(session, now)
        ticket = Ticket(number=number, cancel_reason=None, created_at=now, updated_at=now, **values)
        session.add(ticket)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            if body.number is not None or attempt == NUMBER_ATTEMPTS - 1:
                raise ApiError(409, "conflict", f"ticket number {number!r} is taken", field="number") from None
            continue
        audit.record(session, principal.actor, "create", "tickets", ticket.id, after=audit.snapshot(ticket))
        session.commit()
        return _out(ticket)
    raise AssertionError("unreachable")  # pragma: no cover


@router.get("/api/v1/tickets/{ticket_id}", response_model=TicketOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="Get a weighing ticket")
def get_ticket(ticket_id: IdPath, session: SessionDep, principal: CanRead) -> TicketOut:
    return _out(_get(session, ticket_id))


def _refuse_cancelled(ticket: Ticket, doing: str) -> None:
    if ticket.status == "cancelled":
        raise ApiError(409, "ticket_cancelled", f"ticket {ticket.number} is cancelled: it cannot be {doing}",
                       field="ticket_id")


@router.patch("/api/v1/tickets/{ticket_id}", response_model=TicketOut,
              responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
              summary="Change a weighing ticket (not when cancelled)")
def update_ticket(ticket_id: IdPath, body: TicketUpdate, session: SessionDep,
                  principal: CanWriteTickets) -> TicketOut:
    ticket = _get(session, ticket_id)
    _refuse_cancelled(ticket, "changed")
    changes = body.model_dump(exclude_unset=True)
    with session.no_autoflush:
        values = _resolve(session, ticket, changes)
    before = audit.snapshot(ticket)
    changed = [name for name, value in values.items() if set_if_changed(ticket, name, value)]
    if changed:
        ticket.updated_at = datetime.now(UTC)
        audit.record(session, principal.actor, "update", "tickets", ticket.id, before=before,
                     after=audit.snapshot(ticket))
        session.commit()
    return _out(ticket)


@router.post("/api/v1/tickets/{ticket_id}/cancel", response_model=TicketOut,
             responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
             summary="Cancel a weighing ticket, with a reason (for good; its weighings become free)")
def cancel_ticket(ticket_id: IdPath, body: TicketCancel, session: SessionDep,
                  principal: CanWriteTickets) -> TicketOut:
    ticket = _get(session, ticket_id)
    session.refresh(ticket, with_for_update=True)  # two cancels at once: the second sees the first's
    _refuse_cancelled(ticket, "cancelled again")
    cancellation.cancel(session, ticket, actor=principal.actor, reason=body.reason, now=datetime.now(UTC))
    session.commit()
    return _out(ticket)
