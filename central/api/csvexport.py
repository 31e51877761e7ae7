"""CSV exports, streamed: ``text/csv; charset=utf-8``, RFC 4180 (comma, CRLF, quotes doubled), one header row.

The rows are read in keyset batches of ``BATCH`` (the list's own sort and filters) and written as they come, so an
export of a year of tickets needs no more memory than one batch. The first batch is read before the response
starts, in the request's session: a bad ``sort`` is still a 400 with the error shape, not a broken download.
Later batches use a session of their own (the request's may be closed once the response has started).

Cells are exact: decimals as written by ``values.plain`` (never a float), times ISO 8601 in UTC, empty for none.

Formula cells are neutralised by default (OWASP "CSV injection"): a spreadsheet opening the file would run a cell
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula, and cells hold what nodes, POS
registers and users sent (a ``receipt_id`` of ``=HYPERLINK(…)``). Such a cell gets a ``'`` in front, which
spreadsheets show as text. The exception: a cell that is exactly a number (``-12.50``, ``+3``, ``-1e5``) is left as
it is — it is no formula, and a ``'`` would turn our own negative decimals into text. ``?raw=true`` gives every cell
as stored, for machine consumers (an ERP import, the DSFinV-K tools) that do not evaluate formulas.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import StreamingResponse
from sqlalchemy import Select
from sqlalchemy.orm import Session, sessionmaker

from central.api.pagination import sorted_page

BATCH = 500
FLUSH_BYTES = 64 * 1024

Renderer = Callable[[Session, list[Any]], Iterable[Sequence[object]]]


def iso(dt: datetime | None) -> str:
    """A stored time (aware UTC) as an ISO 8601 cell with ``Z``; empty for none."""
    return "" if dt is None else dt.isoformat().replace("+00:00", "Z")

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
FORMULA_NOTE = ("\n\nCells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a "
                "carriage return) get a `'` in front (OWASP CSV injection), except a cell that is exactly a number "
                "such as `-12.50`. `raw=true` gives every cell as stored, for programs that do not evaluate formulas.")
RawCsv = Annotated[bool, Query(description="true: cells exactly as stored, formula-like ones not neutralised with "
                                           "`'` (for programs, not spreadsheets)")]


def neutralise(cell: object) -> object:
    """``'`` in front of a text cell a spreadsheet would take for a formula (not of an exact number)."""
    if isinstance(cell, str) and cell.startswith(FORMULA_START) and not _NUMBER.match(cell):
        return "'" + cell
    return cell


class CsvResponse(StreamingResponse):
    media_type = "text/csv"  # Starlette appends "; charset=utf-8" to text/ types


def csv_openapi(description: str, example: str, errors: Mapping[int | str, dict[str, Any]]
                ) -> dict[int | str, dict[str, Any]]:
    """A CSV route's ``responses``: 200 as text/csv with an example, and ``errors`` (``ERROR_RESPONSES`` …) as
    application/json — FastAPI would document a ``model`` under the route's own media type, text/csv."""
    out: dict[int | str, dict[str, Any]] = {
        200: {"description": description + FORMULA_NOTE,
              "content": {"text/csv": {"schema": {"type": "string"}, "example": example}}}}
    for status, entry in errors.items():
        model = entry["model"]
        out[status] = {"description": entry["description"],
                       "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    return out


def _encode(header: Sequence[str], batches: Iterable[Iterable[Sequence[object]]], *, raw: bool = False
            ) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for rows in batches:
        for row in rows:
            writer.writerow(row if raw else [neutralise(cell) for cell in row])
            if buf.tell() >= FLUSH_BYTES:
                yield buf.getvalue().encode("utf-8")
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue().encode("utf-8")


def stream_csv(
    session: Session,
    sessions: sessionmaker[Session],
    query: Select[Any],
    sortable: Mapping[str, Any],
    id_column: Any,
    *,
    sort: str,
    header: Sequence[str],
    render: Renderer,
    filename: str,
    raw: bool = False,
) -> CsvResponse:
    """A streamed CSV of every row of ``query`` in ``sort`` order; ``render`` turns a batch into CSV rows; formula
    cells neutralised unless ``raw``."""
    first, cursor = sorted_page(session, query, sortable, id_column, sort=sort, limit=BATCH, cursor=None)
    first_rows = list(render(session, first))

    def batches() -> Iterator[Iterable[Sequence[object]]]:
        yield first_rows
        nxt = cursor
        if nxt is None:
            return
        with sessions() as own:
            while nxt is not None:
                rows, nxt = sorted_page(own, query, sortable, id_column, sort=sort, limit=BATCH, cursor=nxt)
                yield list(render(own, rows))
                own.expunge_all()

    return CsvResponse(_encode(header, batches(), raw=raw),
                       headers={"Content-Disposition": f'attachment; filename="{filename}"'})
