"""``/api/v1/nodes/{node_id}/alibi``: central's copy of a node's alibi mirror, and its re-check.

Every weighing a node takes is an entry of a hash-chained log signed with the node's key (``sync.alibi``); central
stores the entries as they arrive (``central.tickets.alibi``). The list shows them by number (``sort=alibi_no``, cursor
pages); ``…/verify`` walks the whole chain — signatures with the keys the fleet CA vouches for, hashes, links,
numbering, each entry against its weighing, the chain against the head the node signed — and names every problem by
entry number and kind. Permission ``fiscal:read`` (admin, operator, auditor).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError, ErrorResponse
from central.api.pagination import DEFAULT_LIMIT
from central.api.params import Cursor, Limit, page, sort_param
from central.api.routes.sites import NodeIdPath
from central.api.security import CanReadFiscal
from central.db.models import AlibiEntry, Node
from central.fleet.keys import CaCertError, load_ca_cert
from central.tickets.alibi import AlibiVerifyError, verify_chain

router = APIRouter(tags=["alibi mirror"])

_BODY_EXAMPLE = ('{"alibi_no":17,"device":"bridge-1","gross":"24560","instrument_alibi":"004711","net":"16140",'
                 '"node":"mill-01","prev_hash":"5f1c…","record_id":"0b6f…","scale_serial":"B123456","tare":"8420",'
                 '"tare_preset":false,"unit":"kg","v":1,"weighed_at_ns":1732400000000000000}')


class AlibiEntryOut(BaseModel):
    alibi_no: int = Field(description="the node's consecutive number (1, 2, 3 … without gaps)", examples=[17])
    record_id: str = Field(description="the weighing record it mirrors", examples=["0b6f6d3e-…"])
    weighed_at: datetime = Field(description="when the weighing was taken (the node's clock, UTC)")
    received_at: datetime = Field(description="when central stored the entry (UTC)")
    body: str = Field(description="the canonical JSON exactly as the node hashed and signed it (legal values as "
                      "the instrument delivered them)", examples=[_BODY_EXAMPLE])
    prev_hash: str = Field(description="hash of the entry before (64 zeros for entry 1)", examples=["5f1c" + "0" * 60])
    hash: str = Field(description="SHA-256 (hex) of the body", examples=["9a3e" + "0" * 60])
    sig: str = Field(description="Ed25519 signature of the body by the node's key (base64)")


class AlibiPage(BaseModel):
    items: list[AlibiEntryOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


class AlibiProblemOut(BaseModel):
    kind: str = Field(description="altered, removed, inserted, reordered, chain_break, invalid, untrusted_key (a key "
                      "the fleet CA did not bind, or entries verifying only with it), truncated (entries the node's "
                      "signed head says central acknowledged, missing here), head_invalid (central's copy of the "
                      "signed head does not verify), weighing_altered or weighing_missing", examples=["altered"])
    entries: list[int] = Field(description="the entry numbers it names (none: a problem of the node's keys or head)",
                               examples=[[3]])
    message: str = Field(examples=["entry 3: body does not match its hash and the signature is invalid: changed "
                                   "after the node signed it"])


class AlibiHeadOut(BaseModel):
    no: int = Field(description="the entry number of the node's head", examples=[20])
    hash: str = Field(description="its hash as the node signed it", examples=["9a3e" + "0" * 60])
    epoch: str = Field(description="the outbox epoch of the head's record")
    stream: str = Field(examples=["business"])
    seq: int = Field(description="the head's record in its stream")
    acked_seq: int = Field(description="central's contiguous mark of that stream: the head is acknowledged when seq ≤ "
                           "acked_seq")
    pruned_through: int = Field(description="the node has given up its entries up to this number (retention)")
    at: datetime | None = Field(description="when central stored the head (UTC)")
    state: str = Field(description="held (central holds it), in_transit (not acknowledged yet: not a problem), "
                       "truncated, mismatch (another hash at its number) or invalid (its signature fails)",
                       examples=["held"])


class UntrustedKeyOut(BaseModel):
    fingerprint: str = Field(examples=["3f9a0c1d2e3f4a5b"])
    why: str = Field(examples=["not bound by the fleet CA: node mill-01: no statement of the fleet CA"])


class AlibiReportOut(BaseModel):
    node: str = Field(examples=["mill-01"])
    ok: bool = Field(description="true when the chain and every weighing are intact")
    entries: int = Field(description="entries central holds for the node", examples=[20])
    first: int | None = Field(description="lowest entry number held", examples=[1])
    last: int | None = Field(description="highest entry number held", examples=[20])
    head_hash: str | None = Field(description="hash of the highest signed entry", examples=["9a3e" + "0" * 60])
    weighings_checked: int = Field(description="intact entries compared with their weighing", examples=[20])
    problems: list[AlibiProblemOut] = Field(description="every problem found, by entry number")
    head: AlibiHeadOut | None = Field(description="the newest head the node signed in a heartbeat, as checked "
                                      "(null: the node has not reported one)")
    untrusted_keys: list[UntrustedKeyOut] = Field(description="keys of the node the fleet CA does not vouch for")


NO_KEY: dict[int | str, dict[str, object]] = {
    409: {"model": ErrorResponse, "description": "The node has no registered public key: signatures cannot be "
                                                 "checked (`floorgate central node register`)."},
    503: {"model": ErrorResponse, "description": "The fleet CA certificate (pki.dir/ca.crt) cannot be read."},
}


@router.get("/api/v1/nodes/{node_id}/alibi", response_model=AlibiPage,
            responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="List a node's alibi mirror entries")
def list_alibi(
    node_id: NodeIdPath, session: SessionDep, principal: CanReadFiscal,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("alibi_no or weighed_at", "alibi_no")] = "alibi_no",
) -> AlibiPage:
    if session.get(Node, node_id) is None:
        raise ApiError(404, "not_found", f"no node {node_id!r}", field="node_id")
    q = select(AlibiEntry).where(AlibiEntry.node_id == node_id)
    rows, nxt = page(session, q, {"alibi_no": AlibiEntry.alibi_no, "weighed_at": AlibiEntry.weighed_at},
                     AlibiEntry.id, sort=sort, limit=limit, cursor=cursor)
    return AlibiPage(items=[AlibiEntryOut(alibi_no=e.alibi_no, record_id=e.record_id, weighed_at=e.weighed_at,
                                          received_at=e.received_at, body=e.body, prev_hash=e.prev_hash,
                                          hash=e.hash, sig=e.sig) for e in rows], next_cursor=nxt)


@router.get("/api/v1/nodes/{node_id}/alibi/verify", response_model=AlibiReportOut,
            responses={**ERROR_RESPONSES, **NOT_FOUND, **NO_KEY},
            summary="Re-check a node's alibi chain and name every altered, removed, inserted or reordered entry")
def verify_alibi(node_id: NodeIdPath, state: StateDep, principal: CanReadFiscal) -> AlibiReportOut:
    pki = state.settings.pki
    try:
        ca_cert = load_ca_cert(pki.dir if pki is not None else None)
    except CaCertError as exc:
        raise ApiError(503, "ca_unavailable", f"fleet CA: {exc}") from None
    try:
        report = verify_chain(state.sessions, node_id, ca_cert=ca_cert)
    except AlibiVerifyError as exc:
        raise ApiError(exc.status, exc.code, exc.message, field="node_id" if exc.status == 404 else None) from None
    return AlibiReportOut.model_validate(report.to_json())
