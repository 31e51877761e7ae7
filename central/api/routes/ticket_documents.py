"""Printable documents: ``GET /api/v1/tickets/{ticket_id}/pdf`` (Wägeschein) and
``GET /api/v1/delivery-notes/{number}/pdf`` (Lieferschein, every ticket with that delivery note number).

A4 PDFs made on each request from what is stored (``central.tickets.views`` and ``central.tickets.documents`` →
``central.tickets.pdf``): the issuer and the site (``tickets.issuer``, ``tickets.sites`` of central.yaml), both
weighings with their local times, the scale's name and verification mark (``tickets.scales``), the instrument's alibi
ids and floorgate's alibi numbers with their hash prefixes, every weight as delivered, the net marked calculated,
partner, article, lot, who cancelled it when and why, and the legal notice for values from the free-programmable
part. Everyone who may read tickets may print them. A delivery note number may
hold ``/`` (``LS/2025/001``): the path takes it as it is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response
from sqlalchemy import select

from central.api.csvexport import csv_openapi
from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.params import IdPath
from central.api.security import CanRead
from central.db.models import Ticket
from central.db.values import NO_NUL
from central.tickets import documents, pdf
from central.tickets.views import delivery_note_view, ticket_view

router = APIRouter(tags=["tickets"])
NoteNumber = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL,
                                 description="the delivery note (Lieferschein) number", examples=["LS-88812"])]


class PdfResponse(Response):
    media_type = "application/pdf"


def pdf_openapi(description: str, errors: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A PDF route's ``responses``: 200 as application/pdf, the errors as application/json (as for the CSVs)."""
    out = csv_openapi(description, "", errors)
    out[200] = {"description": description,
                "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}
    return out


def _filename(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem) + ".pdf"


def _pdf(body: bytes, stem: str) -> PdfResponse:
    return PdfResponse(body, headers={"Content-Disposition": f'inline; filename="{_filename(stem)}"'})


@router.get("/api/v1/tickets/{ticket_id}/pdf", response_class=PdfResponse,
            responses=pdf_openapi("The ticket (Wägeschein) as an A4 PDF", {**ERROR_RESPONSES, **NOT_FOUND}),
            summary="Print a weighing ticket (PDF)")
def ticket_pdf(ticket_id: IdPath, session: SessionDep, state: StateDep, principal: CanRead) -> PdfResponse:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise ApiError(404, "not_found", f"no ticket with id {ticket_id}", field="ticket_id")
    settings = state.settings.tickets
    zone = settings.timezone
    body = pdf.ticket_pdf(ticket_view(session, ticket, zone), documents.paper(session, [ticket], settings),
                          printed_at=pdf.printed_now(zone, datetime.now(UTC)))
    return _pdf(body, ticket.number)


@router.get("/api/v1/delivery-notes/{number:path}/pdf", response_class=PdfResponse,
            responses=pdf_openapi("The delivery note (Lieferschein) with all its tickets and the total net, as an "
                                  "A4 PDF", {**ERROR_RESPONSES, **NOT_FOUND}),
            summary="Print a delivery note with its tickets (PDF)")
def delivery_note_pdf(number: NoteNumber, session: SessionDep, state: StateDep, principal: CanRead) -> PdfResponse:
    settings = state.settings.tickets
    zone = settings.timezone
    view = delivery_note_view(session, number, zone)
    if view is None:
        raise ApiError(404, "not_found", f"no ticket has delivery note {number!r}", field="number")
    tickets = session.execute(select(Ticket).where(Ticket.id.in_([t.id for t in view.tickets]))).scalars().all()
    body = pdf.delivery_note_pdf(view, documents.paper(session, tickets, settings),
                                 printed_at=pdf.printed_now(zone, datetime.now(UTC)))
    return _pdf(body, f"Lieferschein-{number}")
