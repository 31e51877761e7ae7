"""Sorting and opaque cursors for keyset pagination on every list.

``sort`` names one of the list's sortable fields, ``-`` in front for descending (``-weighed_at``); ties are broken by
``id`` in the same direction. The cursor carries the sort and the last row's (value, id), so a page never skips or
repeats a row while rows are being added.

A cursor comes back from the client, so it is untrusted input: ``decode_cursor`` bounds its size and nesting, and
``sorted_page`` checks that its value has the sort column's type (a time, an exact decimal, an integer in BIGINT
range, text without NUL) and its id is an integer in BIGINT range *before* any SQL is built. A forged, truncated or
re-typed cursor is therefore always the documented 400 ``invalid_cursor``, never a database error or a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from central.api.errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CURSOR = 4096  # characters; ours are < 300
_BIGINT = (-(2**63), 2**63 - 1)


def sort_values(names: Iterable[str]) -> list[str]:
    """Every value of a ``sort`` parameter (its schema's ``enum``): each name ascending and with ``-``."""
    return [v for n in names for v in (n, f"-{n}")]


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
        if not isinstance(v["dec"], str):
            raise TypeError("dec must be a string")
        return Decimal(v["dec"])
    return v


def encode_cursor(last: object) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> object | None:
    """The ``after`` value of a cursor we issued; 400 ``invalid_cursor`` for anything else (garbage, too long, too
    deeply nested for ``json``, not an object)."""
    if not cursor:
        return None
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)["after"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError, binascii.Error):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API issued", field="cursor") from None


def _bad_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "cursor is not one this API issued (or was issued for another sort)",
                    field="cursor")


def _bigint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _BIGINT[0] <= value <= _BIGINT[1]


def cursor_value(column: Any, raw: object) -> Any:
    """The cursor's sort value ``raw`` as the Python type of ``column``; ``_bad_cursor()`` if it is not one.

    Sortable columns are NOT NULL, so null is never a value we issued; the type comes from the column (SQLAlchemy's
    ``python_type``), so a string where a time belongs never reaches the database."""
    try:
        expected: type | None = column.type.python_type
    except (AttributeError, NotImplementedError):
        expected = None
    try:
        value = _dec_value(raw)
    except (ValueError, TypeError, ArithmeticError, KeyError):
        raise _bad_cursor() from None
    if expected is not None and issubclass(expected, datetime):
        ok = isinstance(value, datetime)
    elif expected is not None and issubclass(expected, Decimal):
        ok = isinstance(value, Decimal) and value.is_finite() and abs(value) < Decimal(10) ** 30
    elif expected is bool:
        ok = isinstance(value, bool)
    elif expected is not None and issubclass(expected, int):
        ok = _bigint(value)
    elif expected is not None and issubclass(expected, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif expected is not None and issubclass(expected, str):
        ok = isinstance(value, str) and "\x00" not in value and len(value) <= MAX_CURSOR
    else:  # an expression without a known type: only plain scalars
        ok = (isinstance(value, str) and "\x00" not in value) or _bigint(value) or isinstance(value, datetime)
    if not ok:
        raise _bad_cursor()
    return value


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
        if not _bigint(last_id):
            raise _bad_cursor()
        if name == "id":
            query = query.where(id_column < last_id if desc else id_column > last_id)
        else:
            value = cursor_value(column, after.get("v"))
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
