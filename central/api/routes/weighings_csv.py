"""``GET /api/v1/weighings.csv``: every weighing the filters select, as the scales delivered them — for an auditor
(Eichamt) or an ERP import; and the weighing cells ``tickets.csv`` shares (``WEIGHING_COLUMNS``, ``WeighingCells``).

The same CSV rules as ``tickets.csv`` (``central.api.csvexport``: streamed, RFC 4180, formula cells neutralised
unless ``raw=true``), the same filters as ``GET /api/v1/weighings`` and the ``export`` permission. A path of its
own beside — not under — ``/api/v1/weighings/{weighing_id}``.

Every weight is written **as delivered**, with the instrument's digits (``24560.0`` stays ``24560.0``); the
weighing time twice: local to the site of the weighing's node (else ``tickets.timezone``) as ISO 8601 with its
offset, and in UTC; the instrument's alibi id, floorgate's alibi number and the first 16 hex digits of that alibi
entry's hash (as printed on the ticket), the scale's serial number, name and verification mark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session

from central.api.csvexport import CsvResponse, RawCsv, csv_openapi, iso, stream_csv
from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES
from central.api.params import Since, Until, sort_param, text_filter, where_equal, where_time
from central.api.security import CanExport
from central.db.models import Node, Site, Ticket, Weighing
from central.db.values import as_delivered
from central.tickets.config import TicketSettings
from central.tickets.documents import alibi_hashes
from central.tickets.views import zone_of

router = APIRouter(tags=["weighings"])
SORTABLE = {"weighed_at": Weighing.weighed_at, "received_at": Weighing.received_at, "id": Weighing.id}

# the cells of one weighing, in tickets.csv prefixed first_ / second_
WEIGHING_COLUMNS = ("weighed_at_local", "weighed_at_utc", "gross", "tare", "tare_preset", "net", "scale",
                    "scale_serial", "instrument_alibi", "alibi_no", "alibi_hash")


def local_iso(dt: datetime | None, zone: ZoneInfo) -> str:
    """A stored time as ISO 8601 in ``zone``, with its offset (``2025-03-04T08:12:09+01:00``); empty for none."""
    return "" if dt is None else dt.astimezone(zone).isoformat()


def _flag(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


class WeighingCells:
    """The cells of ``WEIGHING_COLUMNS`` for a batch of weighings (their alibi hashes read in one query)."""

    def __init__(self, session: Session, weighings: Iterable[Weighing]) -> None:
        self.hashes = alibi_hashes(session, weighings)

    def cells(self, w: Weighing | None, zone: ZoneInfo) -> tuple[object, ...]:
        if w is None:
            return ("",) * len(WEIGHING_COLUMNS)
        return (local_iso(w.weighed_at, zone), iso(w.weighed_at), as_delivered(w.gross) or "",
                as_delivered(w.tare) or "", _flag(w.tare_preset), as_delivered(w.net) or "",
                f"{w.node_id}/{w.device_id}", w.scale_serial or "", w.instrument_alibi or "",
                "" if w.alibi_no is None else w.alibi_no, self.hashes.get(w.id, ""))


def weighing_filters(
    node_id: Annotated[str | None, text_filter("only this node's weighings")] = None,
    device_id: Annotated[str | None, text_filter("only this device's weighings")] = None,
    unit: Annotated[str | None, text_filter("only weighings in this unit")] = None,
    since: Since = None,
    until: Until = None,
    unpaired: Annotated[bool | None, Query(
        description="true: weighings on no complete ticket; false: those on a complete ticket")] = None,
) -> Select[Any]:
    """The filters of ``GET /api/v1/weighings`` (weighing time for since / until)."""
    q = where_equal(select(Weighing), ((Weighing.node_id, node_id), (Weighing.device_id, device_id),
                                       (Weighing.unit, unit)))
    if unpaired is not None:
        on_complete = exists().where(Ticket.status == "complete", or_(Ticket.first_weighing_id == Weighing.id,
                                                                      Ticket.second_weighing_id == Weighing.id))
        q = q.where(~on_complete if unpaired else on_complete)
    return where_time(q, Weighing.weighed_at, since, until)


WeighingQuery = Annotated[Select[Any], Depends(weighing_filters)]

CSV_HEADER = ("id", "node_id", "device_id", "scale_name", "verification_mark", "scale_serial", "record_id", "seq",
              "alibi_no", "alibi_hash", "instrument_alibi", "timezone", "weighed_at_local", "weighed_at_utc",
              "received_at_utc", "gross", "tare", "tare_preset", "net", "unit", "reference", "vehicle", "trigger",
              "ticket_id", "ticket_number")
CSV_EXAMPLE = (",".join(CSV_HEADER) + "\r\n5001,mill-01,bridge-1,Brückenwaage Einfahrt,M 24 DE-M 17 0001,B123456,"
               "mill-01-w17,17,17,3fa2b1c4d5e6f708,A-1017,Europe/Berlin,2025-03-04T08:12:09+01:00,"
               "2025-03-04T07:12:09Z,2025-03-04T07:12:10.204000Z,24560.0,,,,kg,WB-4711,STD-AB 123,command,101,"
               "T-2025-000101\r\n")
CSV_DESCRIPTION = ("Every weighing the filters select, one row each, after a header row: every weight exactly as "
                   "the instrument delivered it (its own digits), the weighing time local to the site (ISO 8601 "
                   "with offset, `timezone` names the zone) and in UTC, floorgate's alibi number with the first 16 "
                   "hex digits of its alibi entry's hash, the instrument's alibi id, the scale's serial number, "
                   "name and verification mark (central.yaml `tickets.scales`), and the ticket that is not "
                   "cancelled holding it. Streamed in batches; needs the `export` permission.")


def _zones(session: Session, node_ids: set[str], default: str) -> dict[str, ZoneInfo]:
    """node id → the zone of its site (else ``default``)."""
    rows = session.execute(select(Node.node_id, Site).join(Site, Site.id == Node.site_id)
                           .where(Node.node_id.in_(node_ids))).all() if node_ids else []
    sites = {node_id: site for node_id, site in rows}
    return {n: zone_of(sites.get(n), default) for n in node_ids}


def _tickets(session: Session, ids: set[int]) -> dict[int, tuple[int, str]]:
    """weighing id → (id, number) of the ticket that is not cancelled holding it."""
    if not ids:
        return {}
    rows = session.execute(select(Ticket.id, Ticket.number, Ticket.first_weighing_id, Ticket.second_weighing_id)
                           .where(Ticket.status != "cancelled",
                                  or_(Ticket.first_weighing_id.in_(ids), Ticket.second_weighing_id.in_(ids)))).all()
    out: dict[int, tuple[int, str]] = {}
    for tid, number, first, second in rows:
        for wid in (first, second):
            if wid in ids:
                out[wid] = (tid, number)
    return out


def csv_rows(settings: TicketSettings) -> Callable[[Session, list[Weighing]], Iterable[Sequence[object]]]:
    def render(session: Session, weighings: list[Weighing]) -> Iterable[Sequence[object]]:
        zones = _zones(session, {w.node_id for w in weighings}, settings.timezone)
        hashes = alibi_hashes(session, weighings)
        tickets = _tickets(session, {w.id for w in weighings})
        for w in weighings:
            zone = zones[w.node_id]
            scale = settings.scale(w.node_id, w.device_id)
            ticket_id, number = tickets.get(w.id, ("", ""))
            yield (w.id, w.node_id, w.device_id, scale.name if scale else "",
                   (scale.verification_mark or "") if scale else "", w.scale_serial or "", w.record_id, w.seq,
                   "" if w.alibi_no is None else w.alibi_no, hashes.get(w.id, ""), w.instrument_alibi or "",
                   zone.key, local_iso(w.weighed_at, zone), iso(w.weighed_at), iso(w.received_at),
                   as_delivered(w.gross) or "", as_delivered(w.tare) or "", _flag(w.tare_preset),
                   as_delivered(w.net) or "", w.unit, w.reference or "", w.vehicle or "", w.trigger or "",
                   ticket_id, number)

    return render


@router.get("/api/v1/weighings.csv", response_class=CsvResponse,
            responses=csv_openapi(CSV_DESCRIPTION, CSV_EXAMPLE, ERROR_RESPONSES),
            summary="Export weighings as CSV (streamed)")
def export_weighings(
    session: SessionDep, state: StateDep, principal: CanExport, query: WeighingQuery,
    sort: Annotated[str, sort_param("weighed_at, received_at or id", "weighed_at: oldest first")] = "weighed_at",
    raw: RawCsv = False,
) -> CsvResponse:
    return stream_csv(session, state.sessions, query, SORTABLE, Weighing.id, sort=sort, header=CSV_HEADER,
                      render=csv_rows(state.settings.tickets), filename="weighings.csv", raw=raw)
