"""Sorting and opaque cursors for keyset pagination on every list.

``sort`` names one of the list's sortable fields, ``-`` in front for descending (``-weighed_at``); ties are broken by
``id`` in the same direction. The cursor carries the sort and the last row's (value, id), so a page never skips or
repeats a row while rows are being added.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from central.api.errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def _enc_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return {"dt": v.isoformat()}
    if isinstance(v, Decimal):
        return {"dec": str(v)}
    return v


def _dec_value(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"dt"}:
        return datetime.fromisoformat(v["dt"])
    if isinstance(v, dict) and set(v) == {"dec"}:
        return Decimal(v["dec"])
    return v


def encode_cursor(last: object) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> object | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)["after"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API issued", field="cursor") from None


def _bad_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "cursor is not one this API issued (or was issued for another sort)",
                    field="cursor")


def keyset_page(session: Session, query: Select[Any], id_column: Any, *, limit: int, cursor: str | None
                ) -> tuple[list[Any], str | None]:
    """Newest first by ``id_column``; returns the page and the cursor of the next one (None at the end)."""
    return sorted_page(session, query, {"id": id_column}, id_column, sort="-id", limit=limit, cursor=cursor)


def sorted_page(
    session: Session,
    query: Select[Any],
    sortable: Mapping[str, InstrumentedAttribute[Any] | Any],
    id_column: Any,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of ``query`` ordered by ``sort`` (a key of ``sortable``, ``-`` for descending) then id.

    The sortable columns must not be NULL (keyset comparison)."""
    desc = sort.startswith("-")
    name = sort[1:] if desc else sort
    column = sortable.get(name)
    if column is None:
        raise ApiError(400, "invalid_sort", f"cannot sort by {name!r}; sortable: "
                       + ", ".join(sorted(sortable)) + " (prefix - for descending)", field="sort")
    after = decode_cursor(cursor)
    if after is not None:
        if not isinstance(after, dict) or after.get("sort") != sort or "id" not in after:
            raise _bad_cursor()
        last_id = after["id"]
        if not isinstance(last_id, int) or isinstance(last_id, bool):
            raise _bad_cursor()
        if name == "id":
            query = query.where(id_column < last_id if desc else id_column > last_id)
        else:
            try:
                value = _dec_value(after.get("v"))
            except (ValueError, TypeError, ArithmeticError):
                raise _bad_cursor() from None
            if desc:
                query = query.where(or_(column < value, and_(column == value, id_column < last_id)))
            else:
                query = query.where(or_(column > value, and_(column == value, id_column > last_id)))
    order = [column.desc(), id_column.desc()] if desc else [column.asc(), id_column.asc()]
    if name == "id":
        order = order[:1]
    rows = list(session.execute(query.order_by(*order).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    if not more:
        return rows, None
    last = rows[-1]
    payload: dict[str, Any] = {"sort": sort, "id": getattr(last, id_column.key)}
    if name != "id":
        payload["v"] = _enc_value(getattr(last, column.key))
    return rows, encode_cursor(payload)
