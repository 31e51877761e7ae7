"""Create, read and change rows keyed by a unique ``code`` (sites, articles, partners, lots), audited.

The routes stay in ``routes/<resource>.py`` and keep their own parameters, models and documentation; these helpers
are what they do alike:

- ``get_or_404``: the row with an id, or 404 ``not_found`` naming the path parameter.
- ``insert_coded``: the code checked (409 ``conflict`` on ``code`` when taken, also when taken meanwhile and only the
  database noticed), the row added, an audit entry ``create``, commit.
- ``update_coded``: the changes applied (the code checked the same way), an optional check of the result, then —
  only if anything changed — ``updated_at`` set, an audit entry ``update`` with before and after, commit.
- ``code_name_query`` / ``code_name_sortable``: a list's ``code`` (exact) and ``q`` (name contains) filters and its
  sort columns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central.api.errors import ApiError
from central.api.security import Principal
from central.db import audit
from central.db.values import set_if_changed


def _taken(noun: str, code: object) -> ApiError:
    return ApiError(409, "conflict", f"{noun} code {code!r} is taken", field="code")


def code_free(session: Session, model: Any, code: str, noun: str, own_id: int | None = None) -> None:
    """409 if another row of ``model`` than ``own_id`` has ``code``."""
    q = select(model.id).where(model.code == code)
    if own_id is not None:
        q = q.where(model.id != own_id)
    if session.execute(q).first() is not None:
        raise _taken(noun, code)


def get_or_404(session: Session, model: Any, row_id: int, noun: str, field: str) -> Any:
    row = session.get(model, row_id)
    if row is None:
        raise ApiError(404, "not_found", f"no {noun} with id {row_id}", field=field)
    return row


def insert_coded(session: Session, principal: Principal, row: Any, resource: str, noun: str) -> None:
    """Add ``row`` (code checked), audit it, commit; 409 if its code was taken meanwhile."""
    code_free(session, type(row), row.code, noun)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise _taken(noun, row.code) from None
    audit.record(session, principal.actor, "create", resource, row.id, after=audit.snapshot(row))
    session.commit()


def update_coded(session: Session, principal: Principal, row: Any, changes: dict[str, Any], resource: str,
                 noun: str, check: Callable[[Any], None] | None = None) -> None:
    """Apply ``changes`` to ``row``; ``check`` validates the result; audit and commit if anything changed."""
    if "code" in changes:
        code_free(session, type(row), changes["code"], noun, row.id)
    before = audit.snapshot(row)
    changed = [name for name, value in changes.items() if set_if_changed(row, name, value)]
    if check is not None:
        check(row)
    if not changed:
        return
    row.updated_at = datetime.now(UTC)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise _taken(noun, changes.get("code")) from None
    audit.record(session, principal.actor, "update", resource, row.id, before=before, after=audit.snapshot(row))
    session.commit()


def code_name_query(model: Any, *, code: str | None, q: str | None) -> Select[Any]:
    """``select(model)``, narrowed to exactly ``code`` and to names containing ``q`` (case-insensitive) if given."""
    query = select(model)
    if code is not None:
        query = query.where(model.code == code)
    if q:
        query = query.where(model.name.icontains(q, autoescape=True))
    return query


def code_name_sortable(model: Any) -> dict[str, Any]:
    """The sort columns of a list of coded, named rows: code, name, created_at, id."""
    return {"code": model.code, "name": model.name, "created_at": model.created_at, "id": model.id}
