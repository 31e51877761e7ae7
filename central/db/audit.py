"""The audit log: every change made through the API or by central itself (ticket pairing, the CLI) — who, when,
what, before and after — in the same transaction as the change itself (a change without its audit entry cannot be
committed, and the other way round)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from central.db.models import AuditEntry
from central.db.types import as_utc

SECRET_COLUMNS = frozenset({"password_hash", "secret_hash"})


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def snapshot(obj: object | None) -> dict[str, Any] | None:
    """The row's columns as JSON values (secrets left out): what an auditor sees as before / after."""
    if obj is None:
        return None
    mapper = inspect(obj).mapper
    return {c.key: _plain(getattr(obj, c.key)) for c in mapper.column_attrs if c.key not in SECRET_COLUMNS}


def record(session: Session, actor: str, action: str, resource: str, resource_id: object,
           *, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> AuditEntry:
    """Add an audit entry to ``session`` (committed with the change); ``actor`` names who made it: a caller of the
    API (``Principal.actor``: ``user:anna``, ``apikey:1a2b3c4d``) or a part of central (``system:pairing``,
    ``cli:create-admin``). Only the fields that changed are kept in before / after for an update."""
    if before is not None and after is not None:
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        before = {k: before.get(k) for k in sorted(changed)}
        after = {k: after.get(k) for k in sorted(changed)}
    entry = AuditEntry(at=datetime.now(UTC), actor=actor, action=action, resource=resource,
                       resource_id=str(resource_id), before=before, after=after)
    session.add(entry)
    return entry
