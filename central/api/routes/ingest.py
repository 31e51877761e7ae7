"""``/api/v1/ingest/…``: what central holds per node stream, and the quarantine."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from central.api.deps import SessionDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_values, sorted_page
from central.api.params import MAX_ID, IsoTime, where_time
from central.api.security import CanRead, CanReadAudit
from central.db.models import QuarantineEntry, StreamMark
from central.db.values import NO_NUL

TextFilter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]
router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])


class StreamOut(BaseModel):
    node_id: str
    epoch: str = Field(description="the node's outbox epoch (a new one after the node's database was replaced)")
    stream: str = Field(examples=["business"])
    acked_seq: int = Field(description="every record up to this seq is held")
    records: int
    duplicates: int = Field(description="resent records that changed nothing")
    lost: int = Field(description="seqs the node gave up to its disk quota (counted loss, readings only)")
    last_batch_at: datetime | None


class StreamList(BaseModel):
    items: list[StreamOut]


@router.get("/streams", response_model=StreamList, responses=ERROR_RESPONSES,
            summary="Acknowledged sequence and counts per node stream")
def list_streams(session: SessionDep, principal: CanRead, node_id: TextFilter = None, stream: TextFilter = None
                 ) -> StreamList:
    q = select(StreamMark).order_by(StreamMark.node_id, StreamMark.stream, StreamMark.epoch)
    if node_id:
        q = q.where(StreamMark.node_id == node_id)
    if stream:
        q = q.where(StreamMark.stream == stream)
    return StreamList(
        items=[
            StreamOut(
                node_id=m.node_id, epoch=m.epoch, stream=m.stream, acked_seq=m.acked_seq, records=m.records,
                duplicates=m.duplicates, lost=m.lost or 0, last_batch_at=m.last_batch_at,
            )
            for m in session.execute(q).scalars()
        ]
    )


class QuarantineOut(BaseModel):
    id: int
    received_at: datetime
    topic: str = Field(examples=["floorgate/v1/mill-01/up/business"])
    node_id: str | None
    reason: str = Field(examples=["node 'mill-01': signature does not match the node's registered key (forged "
                                  "or altered)"])
    payload_preview: str = Field(description="the first 200 bytes of the message, as text")
    payload_bytes: int = Field(description="bytes of the message kept (at most ingest.quarantine_keep_bytes)")
    payload_size: int = Field(description="bytes of the whole message as received")
    payload_sha256: str = Field(description="SHA-256 (hex) of the whole message as received")
    payload_truncated: bool = Field(description="only the first payload_bytes of the message were kept")
    source: str | None = Field(description="whose budget it was stored on: node:<id> (authenticated as that "
                               "enrolled node) or unauthenticated; null for records of an applied batch")


class QuarantinePage(BaseModel):
    items: list[QuarantineOut]
    next_cursor: str | None


def _q_out(r: QuarantineEntry) -> QuarantineOut:
    return QuarantineOut(
        id=r.id, received_at=r.received_at, topic=r.topic, node_id=r.node_id,
        reason=r.reason, payload_preview=r.payload[:200].decode("utf-8", "replace"), payload_bytes=len(r.payload),
        payload_size=r.payload_size, payload_sha256=r.payload_sha256, payload_truncated=bool(r.payload_truncated),
        source=r.source,
    )


@router.get("/quarantine", response_model=QuarantinePage, responses=ERROR_RESPONSES,
            summary="Messages central could not use, with the reason (auditors and admins)")
def list_quarantine(
    session: SessionDep,
    principal: CanReadAudit,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
    sort: Annotated[str, Query(description="received_at or id; - for descending",
                                        json_schema_extra={"enum": sort_values(["received_at", "id"])})] = "-id",
    node_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    reason: Annotated[str | None, Query(max_length=200, pattern=NO_NUL,
                                        description="the reason contains this text")] = None,
    since: Annotated[datetime | None, IsoTime, Query(description="received at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, IsoTime, Query(description="received before (ISO 8601)")] = None,
) -> QuarantinePage:
    q = select(QuarantineEntry)
    if node_id:
        q = q.where(QuarantineEntry.node_id == node_id)
    if reason:
        q = q.where(QuarantineEntry.reason.contains(reason, autoescape=True))
    q = where_time(q, QuarantineEntry.received_at, since, until)
    rows, next_cursor = sorted_page(
        session, q, {"received_at": QuarantineEntry.received_at, "id": QuarantineEntry.id}, QuarantineEntry.id,
        sort=sort, limit=limit, cursor=cursor)
    return QuarantinePage(items=[_q_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/quarantine/{entry_id}", response_model=QuarantineOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="One quarantined message")
def get_quarantine(entry_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep,
                   principal: CanReadAudit) -> QuarantineOut:
    row = session.get(QuarantineEntry, entry_id)
    if row is None:
        raise ApiError(404, "not_found", f"no quarantine entry with id {entry_id}", field="entry_id")
    return _q_out(row)
