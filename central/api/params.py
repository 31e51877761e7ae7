"""Request values shared by the business routes (sites, nodes, master data, tickets, TSE transactions, audit log).

- **ids** are BIGINT in the database; path, query and body ids are bounded to 1 … 2**53-1 (``MAX_ID``), so a larger
  one is a 422 and never a database overflow. 2**53-1 rather than 2**63-1: it is the largest integer every JSON
  client holds exactly (a double, JavaScript's ``Number.MAX_SAFE_INTEGER``) — with 2**63-1 as the schema's
  ``maximum``, 2**63+191 rounds to the same double and a client (schemathesis did) takes it for a valid id.
- **times** are ISO 8601 text (``IsoTime``); one without a zone is UTC (``time_param``). Stored times come back as
  aware UTC on their own (``central.db.types.UtcDateTime``).
- **lists**: ``page`` is ``sorted_page`` that answers a forged cursor whose value the database cannot compare with
  400 ``invalid_cursor`` instead of a 500.

What a stored value may hold (no NUL, codes, exact decimals) and how it is written out is the data layer's:
``central.db.values``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator, Field
from sqlalchemy import Select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from central.api.errors import ApiError
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_values, sorted_page
from central.db.types import as_utc
from central.db.values import NO_NUL

MAX_ID = 2**53 - 1  # see ids above; far beyond any BIGSERIAL value we will reach

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="the record's id", examples=[1])]
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="only records referring to this id")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many items")]
Cursor = Annotated[str | None, Query(max_length=2048, description="`next_cursor` of the previous page")]
_ISO_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")


def iso_only(value: object) -> object:
    """A time (query parameter or body field) is ISO 8601 text: pydantic would also take a number (Unix seconds,
    ``0.5``) or a bare date, which the schema (``format: date-time``) forbids."""
    if isinstance(value, int | float) or (isinstance(value, str) and not (_ISO_START.match(value)
                                                                         and len(value) > 10)):
        raise ValueError("expected an ISO 8601 time such as 2025-01-07T09:30:00Z")
    return value


IsoTime = BeforeValidator(iso_only)


def whole_number(value: object) -> object:
    """``213.0`` → ``213``: JSON Schema counts a number without fraction as an integer, so a body id may come as
    one; the body models are otherwise strict (no ``"5"`` for 5, no ``0`` for false)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = BeforeValidator(whole_number)
Since = Annotated[datetime | None, IsoTime, Query(description="at or after this time (ISO 8601; without zone: UTC)")]
Until = Annotated[datetime | None, IsoTime, Query(description="before this time (ISO 8601; without zone: UTC)")]


def patch_field(**constraints: Any) -> Any:
    """A PATCH field that may be left out but is never null (``name: str = patch_field(max_length=128)``): its JSON
    schema is the plain type, so an explicit null is a 422; left out, it reads None and is not in
    ``model_dump(exclude_unset=True)``."""
    return Field(None, **constraints)


def text_filter(description: str, max_length: int = 200) -> Any:
    """A query parameter for text: no NUL, bounded length."""
    return Query(max_length=max_length, pattern=NO_NUL, description=description)


def sort_param(fields: str, default: str, names: Iterable[str] | None = None) -> Any:
    """A ``sort`` query parameter whose schema lists its values (``enum``), so clients and schemathesis know them;
    the route still answers any other value with 400 ``invalid_sort`` (its documented error). ``names`` default to
    the field names in ``fields`` ("code, name, created_at or id")."""
    if names is None:
        names = [w for w in re.findall(r"[a-z_]+", fields.split("(")[0]) if w != "or"]
    return Query(max_length=64, description=f"{fields}; - in front for descending (default {default})",
                 json_schema_extra={"enum": sort_values(names)})


def time_param(dt: datetime | None, field: str) -> datetime | None:
    """A time from a query parameter as UTC (naive = UTC); 422 if it leaves the calendar when moved to UTC."""
    if dt is None:
        return None
    try:
        return as_utc(dt)
    except OverflowError:
        raise ApiError(422, "invalid_request", f"{field}: the time is out of range in UTC", field=field) from None


def where_equal(query: Select[Any], pairs: Iterable[tuple[Any, object]]) -> Select[Any]:
    """``query`` narrowed to ``column == value`` for each pair whose value was given (not None)."""
    for column, value in pairs:
        if value is not None:
            query = query.where(column == value)
    return query


def where_time(query: Select[Any], column: Any, since: datetime | None, until: datetime | None) -> Select[Any]:
    """``query`` narrowed to ``since <= column < until`` (either bound optional); 422 on a bound out of range."""
    if since is not None:
        query = query.where(column >= time_param(since, "since"))
    if until is not None:
        query = query.where(column < time_param(until, "until"))
    return query


def page(session: Session, query: Select[Any], sortable: Mapping[str, Any], id_column: Any, *, sort: str,
         limit: int = DEFAULT_LIMIT, cursor: str | None) -> tuple[list[Any], str | None]:
    """``sorted_page``; a cursor the database cannot compare (hand-made) is 400 ``invalid_cursor``."""
    try:
        return sorted_page(session, query, sortable, id_column, sort=sort, limit=limit, cursor=cursor)
    except StatementError:
        session.rollback()
        if cursor:
            raise ApiError(400, "invalid_cursor", "cursor is not one this API issued", field="cursor") from None
        raise
