"""``/api/v1/tse-exports``: the TAR exports of the TSEs, kept byte for byte as they came (``central.fiscal.exports``).

    POST /api/v1/tse-exports?filename=…[&first_tx=…&last_tx=…][&since=…&until=…][&client_id=…]
                                                         body: the TAR (Content-Type application/x-tar or
                                                         application/octet-stream) → 201, or 200 when the same bytes
                                                         are held already; 422 when it does not verify or contradicts
                                                         its stated range (nothing kept)
    GET  /api/v1/tse-exports                             the exports held, newest first, with their verification
    GET  /api/v1/tse-exports/{export_id}                 the TAR, byte-identical to the upload (application/x-tar)

The upload states what the export covers: nothing for the whole TSE, or the filters it was made with (transaction
numbers, a time range, a register); ``partial`` follows from that (``central.fiscal.exports``). The former
``partial=true`` switch is refused (422 naming ``partial``): it let the uploader turn gap detection off. The export
is compared with what central holds of the TSE; what it lacks is in ``findings`` (e.g. ``truncated: ends at
transaction 40 (signature counter 80), central knows 41 (signature counter 82)``).

Uploading is the day's work of the people who run the registers (``tickets:write``: admin, operator); reading and
downloading need ``fiscal:read`` (admin, operator, auditor). Every upload is in the audit log.

    curl -H 'X-API-Key: fgk_…' -H 'Content-Type: application/x-tar' --data-binary @export.tar \\
         '127.0.0.1:8000/api/v1/tse-exports?filename=export.tar'
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from central.api.csvexport import csv_openapi
from central.api.deps import SessionDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError, ErrorResponse
from central.api.pagination import DEFAULT_LIMIT
from central.api.params import MAX_ID, Cursor, IdPath, IsoTime, Limit, page, sort_param, text_filter, time_param
from central.api.security import CanExport, CanReadFiscal, CanWriteTickets
from central.db import audit
from central.db.models import TseExport
from central.db.values import NO_NUL
from central.fiscal.exports import MAX_EXPORT_BYTES, MAX_FILENAME, ExportRejected, StatedRange, store_export

router = APIRouter(tags=["TSE exports"])
TAR: Final = "application/x-tar"
ACCEPTED: Final = (TAR, "application/octet-stream")
SORTABLE = {"uploaded_at": TseExport.uploaded_at, "id": TseExport.id}
BINARY: Final = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "The body is larger than `api.max_upload_bytes` (default "
                                                 f"{MAX_EXPORT_BYTES} bytes)."},
    415: {"model": ErrorResponse, "description": f"The body is not sent as {' or '.join(ACCEPTED)}."},
}


class TseExportOut(BaseModel):
    id: int = Field(examples=[1])
    tse_serial: str | None = Field(description="the TSE of its log messages (hex SHA-256 of the public key); null "
                                               "when it holds several")
    filename: str | None = Field(description="as given at upload", examples=["export.tar"])
    size: int = Field(description="bytes", examples=[40960])
    sha256: str = Field(description="of the bytes as uploaded (and downloaded)")
    partial: bool = Field(description="the upload stated a range (filtered by transaction numbers, time or client): "
                                      "counter gaps its filter leaves are tolerated, none inside the range")
    stated_range: dict[str, Any] | None = Field(description="what the uploader said the export covers (first_tx, "
                                                            "last_tx, since, until, client_id); null: the whole TSE")
    findings: list[str] = Field(description="what central holds of the TSE that the export lacks — it starts late, "
                                            "ends before central's known head (truncated), misses transactions of "
                                            "its range — or an untrusted TSE; empty: none")
    log_messages: int
    first_counter: int | None = Field(description="lowest signature counter in it")
    last_counter: int | None
    first_tx: int | None = Field(description="lowest transaction number in it")
    last_tx: int | None
    report: dict[str, Any] = Field(description="the verification on upload: valid, checks across the export "
                                               "(archive, certificate, info.csv, signature_counters, times, "
                                               "transactions), counts, serials")
    uploaded_at: datetime
    uploaded_by: str = Field(examples=["user:anna"])


class TseExportPage(BaseModel):
    items: list[TseExportOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _out(e: TseExport) -> TseExportOut:
    return TseExportOut(
        id=e.id, tse_serial=e.tse_serial, filename=e.filename, size=e.size, sha256=e.sha256, partial=e.partial,
        stated_range=e.stated_range, findings=list((e.report.get("coverage") or {}).get("findings") or []),
        log_messages=e.log_messages, first_counter=e.first_counter, last_counter=e.last_counter, first_tx=e.first_tx,
        last_tx=e.last_tx, report=e.report, uploaded_at=e.uploaded_at, uploaded_by=e.uploaded_by,
    )  # fmt: skip


async def tar_body(request: Request, principal: CanWriteTickets) -> bytes:
    """The request body, after the caller is known to be allowed (401/403 come before 415; a body over the limit is
    a 413 before anything else, from central.api.boundary)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED:
        raise ApiError(415, "unsupported_media_type", f"send the TAR as {' or '.join(ACCEPTED)}, not "
                                                      f"{media_type or 'without a Content-Type'}", field="body")
    limit = request.app.state.floorgate.settings.api.max_upload_bytes  # central.api.boundary enforces it too
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"{declared} bytes; at most {limit}", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"more than {limit} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


TarBody = Annotated[bytes, Depends(tar_body)]


@router.post(
    "/api/v1/tse-exports", response_model=TseExportOut, status_code=201,
    responses={**ERROR_RESPONSES, **UPLOAD_ERRORS,
               200: {"model": TseExportOut, "description": "These bytes were uploaded before: the export held"},
               422: {"model": ErrorResponse, "description": "Not a TAR export that verifies (the reason names the "
                                                            "failed checks; nothing is kept), or a bad parameter"}},
    openapi_extra={"requestBody": {"required": True, "description": "the TAR export exactly as the TSE produced it",
                                   "content": {t: BINARY for t in ACCEPTED}}},
    summary="Upload a TSE's TAR export (kept byte for byte, verified)",
)  # fmt: skip
def upload_tse_export(
    session: SessionDep, principal: CanWriteTickets, body: TarBody, response: Response, request: Request,
    filename: Annotated[str | None, Query(max_length=MAX_FILENAME, pattern=NO_NUL,
                                          description="the export's file name, kept for the download")] = None,
    first_tx: Annotated[int | None, Query(ge=1, le=MAX_ID, description="the export holds transaction numbers from "
                                                                        "this one (a stated range)")] = None,
    last_tx: Annotated[int | None, Query(ge=1, le=MAX_ID, description="… up to this one")] = None,
    since: Annotated[datetime | None, IsoTime, Query(description="the export holds the log messages from this time "
                                                                 "on (logTime; ISO 8601, without zone: UTC)")] = None,
    until: Annotated[datetime | None, IsoTime, Query(description="… up to this time (inclusive)")] = None,
    client_id: Annotated[str | None, text_filter("the export holds the transactions of this register only", 64)]
    = None,
) -> TseExportOut:  # fmt: skip
    if "partial" in request.query_params:
        raise ApiError(422, "invalid_request", "partial is not a switch any more: state what the export covers "
                                               "(first_tx / last_tx, since / until, client_id) and partial follows "
                                               "from it; no range: the whole TSE", field="partial")
    stated = StatedRange(first_tx, last_tx, time_param(since, "since"), time_param(until, "until"), client_id)
    impossible = stated.problem()
    if impossible is not None:
        raise ApiError(422, "invalid_request", f"{impossible[0]}: {impossible[1]}", field=impossible[0])
    try:
        stored = store_export(session, body, filename=filename, stated=stated, actor=principal.actor,
                              now=datetime.now(UTC))
        if stored.created:
            snapshot = {k: v for k, v in (audit.snapshot(stored.export) or {}).items() if k != "report"}
            audit.record(session, principal.actor, "create", "tse_exports", stored.export.id, after=snapshot)
            session.commit()
    except ExportRejected as exc:
        session.rollback()
        raise ApiError(422, "invalid_tse_export", exc.reason, field="body") from None
    except IntegrityError:  # the same bytes uploaded at the same moment by someone else
        session.rollback()
        digest = hashlib.sha256(body).hexdigest()
        held = session.execute(select(TseExport).where(TseExport.sha256 == digest)).scalar_one()
        response.status_code = 200
        return _out(held)
    if not stored.created:
        response.status_code = 200
    return _out(stored.export)


@router.get("/api/v1/tse-exports", response_model=TseExportPage, responses=ERROR_RESPONSES,
            summary="List the TSE exports held (newest first)")
def list_tse_exports(
    session: SessionDep, principal: CanReadFiscal,
    tse_serial: Annotated[str | None, text_filter("only exports of this TSE", 128)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("uploaded_at or id", "-uploaded_at")] = "-uploaded_at",
) -> TseExportPage:
    q = select(TseExport)
    if tse_serial is not None:
        q = q.where(TseExport.tse_serial == tse_serial.lower())
    rows, nxt = page(session, q, SORTABLE, TseExport.id, sort=sort, limit=limit, cursor=cursor)
    return TseExportPage(items=[_out(e) for e in rows], next_cursor=nxt)


class TarResponse(Response):
    media_type = TAR


def _download_name(e: TseExport) -> str:
    stem = e.filename or f"tse-export-{e.id}.tar"
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


@router.get("/api/v1/tse-exports/{export_id}", response_class=TarResponse,
            responses={**csv_openapi("The TAR export, byte for byte as uploaded", "",
                                     {**ERROR_RESPONSES, **NOT_FOUND}),
                       200: {"description": "The TAR export, byte for byte as uploaded", "content": {TAR: BINARY}}},
            summary="Download a TSE export (application/x-tar)")  # fmt: skip
def download_tse_export(export_id: IdPath, session: SessionDep, principal: CanExport) -> TarResponse:
    export = session.get(TseExport, export_id)
    if export is None:
        raise ApiError(404, "not_found", f"no TSE export with id {export_id}", field="export_id")
    return TarResponse(export.content, headers={
        "Content-Disposition": f'attachment; filename="{_download_name(export)}"', "X-Content-SHA256": export.sha256})
