"""``/api/v1/ingest/…``: what central holds per node stream, and the quarantine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from central.api.deps import SessionDep
from central.api.errors import ERROR_RESPONSES
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, keyset_page
from central.db.models import QuarantineEntry, StreamMark

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])


def _utc(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


class StreamOut(BaseModel):
    node_id: str
    epoch: str
    stream: str
    acked_seq: int
    records: int
    duplicates: int
    last_batch_at: datetime | None


class StreamList(BaseModel):
    items: list[StreamOut]


@router.get("/streams", response_model=StreamList, summary="Acknowledged sequence and counts per node stream")
def list_streams(session: SessionDep, node_id: str | None = None) -> StreamList:
    q = select(StreamMark).order_by(StreamMark.node_id, StreamMark.stream, StreamMark.epoch)
    if node_id:
        q = q.where(StreamMark.node_id == node_id)
    return StreamList(
        items=[
            StreamOut(
                node_id=m.node_id, epoch=m.epoch, stream=m.stream, acked_seq=m.acked_seq, records=m.records,
                duplicates=m.duplicates, last_batch_at=_utc(m.last_batch_at),
            )
            for m in session.execute(q).scalars()
        ]
    )


class QuarantineOut(BaseModel):
    id: int
    received_at: datetime
    topic: str
    node_id: str | None
    reason: str
    payload_preview: str


class QuarantinePage(BaseModel):
    items: list[QuarantineOut]
    next_cursor: str | None


@router.get("/quarantine", response_model=QuarantinePage, responses=ERROR_RESPONSES,
            summary="Messages central could not use, with the reason")
def list_quarantine(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> QuarantinePage:
    rows, next_cursor = keyset_page(session, select(QuarantineEntry), QuarantineEntry.id, limit=limit, cursor=cursor)
    return QuarantinePage(
        items=[
            QuarantineOut(
                id=r.id, received_at=_utc(r.received_at) or r.received_at, topic=r.topic, node_id=r.node_id,
                reason=r.reason, payload_preview=r.payload[:200].decode("utf-8", "replace"),
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )
