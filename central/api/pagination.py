"""Opaque cursors for keyset pagination: the cursor encodes the last id of a page."""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from central.api.errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


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


def keyset_page(session: Session, query: Select[Any], id_column: Any, *, limit: int, cursor: str | None
                ) -> tuple[list[Any], str | None]:
    """Newest first by ``id_column``; returns the page and the cursor of the next one (None at the end)."""
    after = decode_cursor(cursor)
    if after is not None:
        if not isinstance(after, int) or isinstance(after, bool):
            raise ApiError(400, "invalid_cursor", "cursor is not one this API issued", field="cursor")
        query = query.where(id_column < after)
    rows = list(session.execute(query.order_by(id_column.desc()).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1].id) if more else None)
