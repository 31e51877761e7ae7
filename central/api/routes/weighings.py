"""``/api/v1/weighings``: completed weighings as the scales delivered them (newest first, cursor-paginated);
``unpaired=true`` lists those still waiting for their pair on a ticket (``central.tickets.pairing``).

Every weight (gross, tare — weighed or preset —, net) is the instrument's own digit string
(``central.db.values.as_delivered``): ``"24560.0"`` stays ``"24560.0"``, a tare ``"8420.5"`` beside a gross ``"24560"``
keeps its decimal, ``"8.425"`` t is never ``"8.42"``; nothing is computed, padded or cut."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import exists, or_, select

from central.api.deps import SessionDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_values, sorted_page
from central.api.params import MAX_ID, IsoTime, where_time
from central.api.security import CanRead
from central.db.models import Ticket, Weighing
from central.db.values import NO_NUL, as_delivered

router = APIRouter(prefix="/api/v1/weighings", tags=["weighings"])


class WeighingOut(BaseModel):
    id: int
    node_id: str
    device_id: str
    record_id: str = Field(description="stable id given by the edge node")
    seq: int = Field(description="sequence number in the node's business stream")
    gross: str | None = Field(description="gross weight exactly as the scale delivered it, its own digits (trailing "
                              "zeros kept; null when the instrument delivered net and tare only — never computed)",
                              examples=["24560.0"])
    tare: str | None = Field(None, description="tare as delivered, its own digits (not the gross's decimals)",
                             examples=["8420.5"])
    tare_preset: bool | None = Field(None, description="the tare was preset (entered), not weighed")
    net: str | None = Field(None, description="net as delivered, its own digits (never computed)",
                            examples=["16139.5"])
    unit: str = Field(examples=["kg"])
    scale_serial: str | None = None
    instrument_alibi: str | None = Field(None, description="the instrument's own alibi id / checksum, as delivered")
    alibi_no: int | None = Field(None, description="number of its entry in the node's alibi mirror")
    reference: str | None = Field(None, description="ticket reference given with the weigh command")
    vehicle: str | None = Field(None, description="number plate given with the weigh command", examples=["OS-AB 123"])
    trigger: str | None = Field(None, description="auto (stable after motion) or command", examples=["command"])
    weighed_at: datetime
    received_at: datetime


class WeighingPage(BaseModel):
    items: list[WeighingOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _out(w: Weighing) -> WeighingOut:
    return WeighingOut(
        id=w.id, node_id=w.node_id, device_id=w.device_id, record_id=w.record_id, seq=w.seq,
        gross=as_delivered(w.gross), tare=as_delivered(w.tare), tare_preset=w.tare_preset, net=as_delivered(w.net),
        unit=w.unit, scale_serial=w.scale_serial, instrument_alibi=w.instrument_alibi, alibi_no=w.alibi_no,
        reference=w.reference, vehicle=w.vehicle, trigger=w.trigger, weighed_at=w.weighed_at,
        received_at=w.received_at,
    )


@router.get("", response_model=WeighingPage, responses=ERROR_RESPONSES, summary="List weighings, newest first")
def list_weighings(
    session: SessionDep,
    principal: CanRead,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="from `next_cursor` of the previous page")] = None,
    sort: Annotated[str, Query(
        description="weighed_at, received_at or id; - for descending",
        json_schema_extra={"enum": sort_values(["weighed_at", "received_at", "id"])})] = "-id",
    node_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    device_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    unit: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    since: Annotated[datetime | None, IsoTime, Query(description="weighed at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, IsoTime, Query(description="weighed before (ISO 8601)")] = None,
    unpaired: Annotated[bool | None, Query(
        description="true: weighings waiting for their pair — on no complete ticket (loose ones without reference "
                    "and plate, the first weighing of an open ticket, those of cancelled tickets only); false: those "
                    "on a complete ticket")] = None,
) -> WeighingPage:
    q = select(Weighing)
    if unpaired is not None:
        on_complete = exists().where(Ticket.status == "complete", or_(Ticket.first_weighing_id == Weighing.id,
                                                                      Ticket.second_weighing_id == Weighing.id))
        q = q.where(~on_complete if unpaired else on_complete)
    if node_id:
        q = q.where(Weighing.node_id == node_id)
    if device_id:
        q = q.where(Weighing.device_id == device_id)
    if unit:
        q = q.where(Weighing.unit == unit)
    q = where_time(q, Weighing.weighed_at, since, until)
    rows, next_cursor = sorted_page(
        session, q, {"weighed_at": Weighing.weighed_at, "received_at": Weighing.received_at, "id": Weighing.id},
        Weighing.id, sort=sort, limit=limit, cursor=cursor)
    return WeighingPage(items=[_out(w) for w in rows], next_cursor=next_cursor)


@router.get("/{weighing_id}", response_model=WeighingOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="One weighing")
def get_weighing(weighing_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep,
                 principal: CanRead) -> WeighingOut:
    w = session.get(Weighing, weighing_id)
    if w is None:
        raise ApiError(404, "not_found", f"no weighing with id {weighing_id}", field="weighing_id")
    return _out(w)
