"""A ticket or a delivery note with everything that is printed on it, read from the database (``pdf`` renders it).

Values are shown **as delivered** (``central.db.values.as_delivered``), never rounded: every weight with exactly its
own digits — a weighing's gross, tare and net as its scale wrote them (``24560``, ``24560.0``, ``8.425``, ``100.00``),
never with another value's decimals, nothing padded, nothing cut; a ticket's net by difference and a delivery note's
total are exact sums and keep the decimals of their operands (24560 − 8420.5 → ``16139.5``; 16139.5 + 100 →
``16239.5``).
Times are local to the ticket's site (its time zone), else ``tickets.timezone``, with the zone shown:
``04.03.2025 08:12:09 CET (UTC+01:00)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Article, Lot, Partner, Site, Ticket, Weighing
from central.db.values import as_delivered


@dataclass(frozen=True)
class WeighingView:
    weighing_id: int
    weighed_at: str  # local, with zone
    scale: str  # node/device, and the scale's serial number when known
    gross: str  # as delivered
    tare: str | None  # only for a weighing with tare (preset or weighed) from the instrument
    tare_preset: bool
    net: str | None
    unit: str
    instrument_alibi: str | None  # the scale's own alibi id / checksum
    alibi_no: int | None  # floorgate's alibi mirror number on the node


@dataclass(frozen=True)
class TicketView:
    id: int
    number: str
    status: str  # open / complete / cancelled
    direction: str  # in / out
    direction_provisional: bool  # an open ticket paired automatically: the second weighing decides
    vehicle: str | None
    partner: str | None  # "P-1042 · Hof Meyer"
    article: str | None
    lot: str | None
    delivery_note: str | None
    reference: str | None
    site: str | None
    paired_by: str | None
    weighings: tuple[WeighingView, ...]  # in the order first, second
    gross: str | None
    tare: str | None
    net: str | None
    net_value: Decimal | None
    unit: str
    cancel_reason: str | None
    notes: str | None
    created_at: str


@dataclass(frozen=True)
class DeliveryNoteView:
    number: str
    tickets: tuple[TicketView, ...]
    totals: tuple[tuple[str, str], ...]  # (unit, total net as shown) over the complete tickets, one per unit
    partners: tuple[str, ...]  # the distinct partners of its tickets


def local_time(dt: datetime, zone: ZoneInfo) -> str:
    local = dt.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%d.%m.%Y %H:%M:%S} {local.tzname()} (UTC{offset[:3]}:{offset[3:]})"


def zone_of(site: Site | None, default: str) -> ZoneInfo:
    for name in (site.timezone if site is not None else None, default):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
                continue
    return ZoneInfo("UTC")


def _weighing_view(w: Weighing, zone: ZoneInfo) -> WeighingView:
    scale = f"{w.node_id}/{w.device_id}" + (f" (S/N {w.scale_serial})" if w.scale_serial else "")
    return WeighingView(
        weighing_id=w.id, weighed_at=local_time(w.weighed_at, zone), scale=scale, gross=as_delivered(w.gross),
        tare=as_delivered(w.tare), tare_preset=bool(w.tare_preset), net=as_delivered(w.net), unit=w.unit,
        instrument_alibi=w.instrument_alibi, alibi_no=w.alibi_no)


def _label(code: str, name: str | None) -> str:
    return f"{code} · {name}" if name and name != code else code


M = TypeVar("M", Weighing, Partner, Article, Lot, Site)


def _by_id(session: Session, model: type[M], ids: Iterable[int | None]) -> dict[int, M]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {r.id: r for r in session.execute(select(model).where(model.id.in_(wanted))).scalars()}


def ticket_views(session: Session, tickets: Sequence[Ticket], default_zone: str) -> list[TicketView]:
    """The views of ``tickets`` (one query per kind of row, not per ticket)."""
    weighings = _by_id(session, Weighing, (i for t in tickets for i in (t.first_weighing_id, t.second_weighing_id)))
    partners = _by_id(session, Partner, (t.partner_id for t in tickets))
    articles = _by_id(session, Article, (t.article_id for t in tickets))
    lots = _by_id(session, Lot, (t.lot_id for t in tickets))
    sites = _by_id(session, Site, (t.site_id for t in tickets))
    out = []
    for t in tickets:
        site = sites.get(t.site_id) if t.site_id is not None else None
        zone = zone_of(site, default_zone)
        ws = [weighings[i] for i in (t.first_weighing_id, t.second_weighing_id) if i is not None and i in weighings]
        partner = partners.get(t.partner_id) if t.partner_id is not None else None
        article = articles.get(t.article_id) if t.article_id is not None else None
        lot = lots.get(t.lot_id) if t.lot_id is not None else None
        out.append(TicketView(
            id=t.id, number=t.number, status=t.status, direction=t.direction,
            direction_provisional=t.status == "open" and t.paired_by in ("reference", "plate"),
            vehicle=t.vehicle, partner=_label(partner.code, partner.name) if partner else None,
            article=_label(article.code, article.name) if article else None, lot=lot.code if lot else None,
            delivery_note=t.delivery_note, reference=t.reference,
            site=_label(site.code, site.name) if site else None, paired_by=t.paired_by,
            weighings=tuple(_weighing_view(w, zone) for w in ws),
            gross=as_delivered(t.gross), tare=as_delivered(t.tare), net=as_delivered(t.net),
            net_value=t.net, unit=t.unit, cancel_reason=t.cancel_reason, notes=t.notes,
            created_at=local_time(t.created_at, zone)))
    return out


def ticket_view(session: Session, ticket: Ticket, default_zone: str) -> TicketView:
    return ticket_views(session, [ticket], default_zone)[0]


def delivery_note_view(session: Session, number: str, default_zone: str) -> DeliveryNoteView | None:
    """Every ticket with delivery note ``number`` (oldest first), and the total net of the complete ones per unit;
    None if no ticket has it."""
    tickets = session.execute(select(Ticket).where(Ticket.delivery_note == number)
                              .order_by(Ticket.created_at, Ticket.id)).scalars().all()
    if not tickets:
        return None
    views = ticket_views(session, tickets, default_zone)
    totals: dict[str, Decimal] = {}
    for v in views:
        if v.status == "complete" and v.net_value is not None:
            # exact sum: it keeps the decimals of its finest net (16139.5 + 100 = 16239.5), nothing padded or cut
            totals[v.unit] = totals[v.unit] + v.net_value if v.unit in totals else v.net_value
    shown_totals = tuple((unit, as_delivered(total) or "0") for unit, total in totals.items())
    partners = tuple(dict.fromkeys(v.partner for v in views if v.partner))
    return DeliveryNoteView(number=number, tickets=tuple(views), totals=shown_totals, partners=partners)
