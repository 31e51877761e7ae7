"""``GET /api/v1/audit-log``: every change made through the API — who, when, what, before and after. Read-only.

Written by ``central.db.audit.record`` in the transaction of each change; this route only reads it (``audit:read``:
admins and auditors). Newest first by default. For an update, ``before`` and ``after`` hold only the fields that
changed; secrets (password and key hashes) are never in it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from central.api.deps import SessionDep
from central.api.errors import ERROR_RESPONSES
from central.api.pagination import DEFAULT_LIMIT
from central.api.params import Cursor, Limit, Since, Until, page, sort_param, text_filter, where_equal, where_time
from central.api.security import CanReadAudit
from central.db.models import AuditEntry

router = APIRouter(tags=["audit log"])


class AuditEntryOut(BaseModel):
    id: int = Field(examples=[812])
    at: datetime = Field(description="when the change was committed (UTC)")
    actor: str = Field(description="user:<name>, apikey:<prefix> or system", examples=["user:anna"])
    action: str = Field(description="create, update, cancel, revoke, …", examples=["cancel"])
    resource: str = Field(description="the kind of record: tickets, articles, users, …", examples=["tickets"])
    resource_id: str = Field(description="its id (text: nodes have text ids)", examples=["101"])
    before: dict[str, Any] | None = Field(None, description="the changed fields before (none for a create)",
                                          examples=[{"status": "complete", "cancel_reason": None}])
    after: dict[str, Any] | None = Field(None, description="the changed fields after",
                                         examples=[{"status": "cancelled", "cancel_reason": "wrong vehicle"}])


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


@router.get("/api/v1/audit-log", response_model=AuditPage, responses=ERROR_RESPONSES,
            summary="Read the audit log (newest first)")
def list_audit_log(
    session: SessionDep, principal: CanReadAudit,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("at or id", "-at")] = "-at",
    actor: Annotated[str | None, text_filter("exactly this actor, e.g. user:anna", 80)] = None,
    resource: Annotated[str | None, text_filter("exactly this kind of record, e.g. tickets", 32)] = None,
    resource_id: Annotated[str | None, text_filter("exactly this record id (with resource)", 128)] = None,
    action: Annotated[str | None, text_filter("exactly this action, e.g. cancel", 16)] = None,
    since: Since = None,
    until: Until = None,
) -> AuditPage:
    q = where_equal(select(AuditEntry), ((AuditEntry.actor, actor), (AuditEntry.resource, resource),
                                         (AuditEntry.resource_id, resource_id), (AuditEntry.action, action)))
    q = where_time(q, AuditEntry.at, since, until)
    rows, nxt = page(session, q, {"at": AuditEntry.at, "id": AuditEntry.id}, AuditEntry.id, sort=sort, limit=limit,
                     cursor=cursor)
    return AuditPage(items=[AuditEntryOut(id=e.id, at=e.at, actor=e.actor, action=e.action,
                                          resource=e.resource, resource_id=e.resource_id, before=e.before,
                                          after=e.after) for e in rows], next_cursor=nxt)
