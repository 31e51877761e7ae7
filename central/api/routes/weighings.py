"""``/api/v1/weighings``: completed weighings as the scales delivered them (newest first, cursor-paginated)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from central.api.deps import SessionDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, sorted_page
from central.api.security import CanRead
from central.db.models import Weighing

router = APIRouter(prefix="/api/v1/weighings", tags=["weighings"])


class WeighingOut(BaseModel):
    id: int
    node_id: str
    device_id: str
    record_id: str = Field(description="stable id given by the edge node")
    seq: int = Field(description="sequence number in the node's business stream")
    gross: str = Field(description="gross weight exactly as the scale delivered it", examples=["24560"])
    unit: str = Field(examples=["kg"])
    scale_serial: str | None = None
    weighed_at: datetime
    received_at: datetime


class WeighingPage(BaseModel):
    items: list[WeighingOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _out(w: Weighing) -> WeighingOut:
    return WeighingOut(
        id=w.id, node_id=w.node_id, device_id=w.device_id, record_id=w.record_id, seq=w.seq,
        gross=w.gross_as_delivered,
        unit=w.unit, scale_serial=w.scale_serial, weighed_at=_utc(w.weighed_at), received_at=_utc(w.received_at),
    )


@router.get("", response_model=WeighingPage, responses=ERROR_RESPONSES, summary="List weighings, newest first")
def list_weighings(
    session: SessionDep,
    principal: CanRead,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="from `next_cursor` of the previous page")] = None,
    sort: Annotated[str, Query(description="weighed_at, received_at or id; - for descending")] = "-id",
    node_id: str | None = None,
    device_id: str | None = None,
    unit: str | None = None,
    since: Annotated[datetime | None, Query(description="weighed at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="weighed before (ISO 8601)")] = None,
) -> WeighingPage:
    q = select(Weighing)
    if node_id:
        q = q.where(Weighing.node_id == node_id)
    if device_id:
        q = q.where(Weighing.device_id == device_id)
    if unit:
        q = q.where(Weighing.unit == unit)
    if since:
        q = q.where(Weighing.weighed_at >= _utc(since))
    if until:
        q = q.where(Weighing.weighed_at < _utc(until))
    rows, next_cursor = sorted_page(
        session, q, {"weighed_at": Weighing.weighed_at, "received_at": Weighing.received_at, "id": Weighing.id},
        Weighing.id, sort=sort, limit=limit, cursor=cursor)
    return WeighingPage(items=[_out(w) for w in rows], next_cursor=next_cursor)


@router.get("/{weighing_id}", response_model=WeighingOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="One weighing")
def get_weighing(weighing_id: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep,
                 principal: CanRead) -> WeighingOut:
    w = session.get(Weighing, weighing_id)
    if w is None:
        raise ApiError(404, "not_found", f"no weighing with id {weighing_id}", field="weighing_id")
    return _out(w)
