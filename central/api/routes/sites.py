"""``/api/v1/sites`` and ``/api/v1/nodes``: the plants and yards, and the edge nodes grouped under them.

Everyone who may read sees both; only admins create or change a site or move a node to another site. Nodes are
enrolled with ``floorgate central node enrol`` (their key) and fill their own heartbeat fields — the API changes
only a node's site and display name. Nothing here is deleted (tickets and nodes refer to sites).

Nodes are keyed by their text ``node_id``, so their list has its own keyset pagination (``sorted_page`` needs an
integer id); ``last_heartbeat_at`` sorts nodes never heard of as the oldest.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any
from zoneinfo import available_timezones

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, or_, select

from central.api.crud import code_name_query, code_name_sortable, get_or_404, insert_coded, update_coded
from central.api.deps import SessionDep
from central.api.errors import CONFLICT, ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT, decode_cursor, encode_cursor
from central.api.params import MAX_ID, Cursor, IdPath, Limit, WholeNumber, page, patch_field, sort_param, text_filter
from central.api.security import CanRead, IsAdmin
from central.db import audit
from central.db.models import Node, Site
from central.db.types import as_utc
from central.db.values import CODE, NO_NUL, NON_BLANK, set_if_changed

router = APIRouter()
NODE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # as sync.topics.NODE_ID_RE
NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # a node without heartbeat sorts as heard of at the epoch


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


# --- sites -------------------------------------------------------------------------------------------------------


class SiteOut(BaseModel):
    id: int = Field(examples=[1])
    code: str = Field(description="short unique key, as the ERP knows the site", examples=["HAM-1"])
    name: str = Field(examples=["Hamburg yard"])
    timezone: str = Field(description="IANA time zone of the site (for local reports)", examples=["Europe/Berlin"])
    created_at: datetime
    updated_at: datetime


class SitePage(BaseModel):
    items: list[SiteOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _check_zone(value: str) -> str:
    if value not in _zones():
        raise ValueError("not an IANA time zone, e.g. Europe/Berlin")
    return value


Zone = Annotated[str, Field(max_length=64, pattern=NO_NUL), AfterValidator(_check_zone)]


class SiteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = Field(max_length=32, pattern=CODE, examples=["HAM-1"])
    name: str = Field(max_length=128, pattern=NON_BLANK, examples=["Hamburg yard"])
    timezone: Zone = Field("Europe/Berlin", description="IANA time zone", examples=["Europe/Berlin"])


class SiteUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = patch_field(max_length=32, pattern=CODE, examples=["HAM-1"])
    name: str = patch_field(max_length=128, pattern=NON_BLANK, examples=["Hamburg north yard"])
    timezone: Zone = patch_field(description="IANA time zone", examples=["Europe/Berlin"])


def _site_out(s: Site) -> SiteOut:
    return SiteOut(id=s.id, code=s.code, name=s.name, timezone=s.timezone, created_at=s.created_at,
                   updated_at=s.updated_at)


def _get_site(session: SessionDep, site_id: int) -> Site:
    site: Site = get_or_404(session, Site, site_id, "site", "site_id")
    return site


@router.get("/api/v1/sites", response_model=SitePage, responses=ERROR_RESPONSES, tags=["sites"],
            summary="List sites")
def list_sites(
    session: SessionDep, principal: CanRead,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("code, name, created_at or id", "code")] = "code",
    code: Annotated[str | None, text_filter("exactly this code", 32)] = None,
    q: Annotated[str | None, text_filter("name contains this (case-insensitive)")] = None,
) -> SitePage:
    rows, nxt = page(session, code_name_query(Site, code=code, q=q), code_name_sortable(Site), Site.id, sort=sort,
                     limit=limit, cursor=cursor)
    return SitePage(items=[_site_out(s) for s in rows], next_cursor=nxt)


@router.post("/api/v1/sites", response_model=SiteOut, status_code=201, tags=["sites"],
             responses={**ERROR_RESPONSES, **CONFLICT}, summary="Create a site")
def create_site(body: SiteCreate, session: SessionDep, principal: IsAdmin) -> SiteOut:
    now = datetime.now(UTC)
    site = Site(code=body.code, name=body.name, timezone=body.timezone, created_at=now, updated_at=now)
    insert_coded(session, principal, site, "sites", "site")
    return _site_out(site)


@router.get("/api/v1/sites/{site_id}", response_model=SiteOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            tags=["sites"], summary="Get a site")
def get_site(site_id: IdPath, session: SessionDep, principal: CanRead) -> SiteOut:
    return _site_out(_get_site(session, site_id))


@router.patch("/api/v1/sites/{site_id}", response_model=SiteOut, tags=["sites"],
              responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT}, summary="Change a site's code, name or zone")
def update_site(site_id: IdPath, body: SiteUpdate, session: SessionDep, principal: IsAdmin) -> SiteOut:
    site = _get_site(session, site_id)
    changes = body.model_dump(exclude_unset=True)  # never None: the fields are not nullable
    update_coded(session, principal, site, changes, "sites", "site")
    return _site_out(site)


# --- nodes -------------------------------------------------------------------------------------------------------


class StreamBacklogOut(BaseModel):
    head: int | None = Field(None, description="highest seq the node produced")
    acked: int | None = Field(None, description="highest seq central acknowledged")
    pending: int | None = Field(None, description="records waiting on the node")
    oldest_age_s: float | None = Field(None, description="age of the oldest pending record, seconds")
    lost: int | None = Field(None, description="records given up to the node's disk quota, ever")


class NodeOut(BaseModel):
    node_id: str = Field(examples=["mill-1"])
    site_id: int | None = Field(None, examples=[1])
    name: str | None = Field(None, examples=["Weighbridge north"])
    enrolled: bool = Field(description="central holds the node's signing key (what it sends is accepted)")
    key_fingerprint: str | None = Field(None, description="fingerprint of its Ed25519 signing key")
    cert_fingerprint: str | None = Field(None, description="SHA-256 of its X.509 certificate (hex)")
    enrolled_at: datetime | None = None
    software_version: str | None = Field(None, examples=["0.4.0"])
    last_heartbeat_at: datetime | None = Field(None, description="when central received its last heartbeat")
    clock_skew_s: float | None = Field(None, description="central's receive time − the node's send time, seconds")
    clock_flag: str | None = Field(None, description="the last clock problem seen (a jump back, too far off)")
    clock_flag_at: datetime | None = None
    backlog: dict[str, StreamBacklogOut] = Field(
        default_factory=dict, description="per stream, as its last heartbeat reported",
        examples=[{"business": {"head": 42, "acked": 40, "pending": 2, "oldest_age_s": 1.5, "lost": 0}}])
    alarms: list[str] = Field(default_factory=list, description="alarms its last heartbeat reported")


class NodePage(BaseModel):
    items: list[NodeOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


class NodeUpdate(BaseModel):
    """Only the fields sent are changed; null clears one."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    site_id: Annotated[int | None, WholeNumber] = Field(None, ge=1, le=MAX_ID,
                                                      description="the site it stands at; null: none")
    name: str | None = Field(None, max_length=128, pattern=NON_BLANK, examples=["Weighbridge north"])


def _backlog(heartbeat: Any) -> tuple[dict[str, StreamBacklogOut], list[str]]:
    """The heartbeat JSON as the node reported it, leniently: an entry of another shape is left out."""
    backlog: dict[str, StreamBacklogOut] = {}
    alarms: list[str] = []
    if not isinstance(heartbeat, dict):
        return backlog, alarms
    streams = heartbeat.get("streams")
    if isinstance(streams, dict):
        for name, entry in streams.items():
            if isinstance(entry, dict):
                try:
                    backlog[str(name)] = StreamBacklogOut.model_validate(
                        {k: entry.get(k) for k in StreamBacklogOut.model_fields})
                except ValueError:
                    continue
    raw_alarms = heartbeat.get("alarms")
    if isinstance(raw_alarms, list):
        alarms = [str(a) for a in raw_alarms]
    return backlog, alarms


def _node_out(n: Node) -> NodeOut:
    backlog, alarms = _backlog(n.heartbeat)
    return NodeOut(
        node_id=n.node_id, site_id=n.site_id, name=n.name, enrolled=n.public_key is not None,
        key_fingerprint=n.key_fingerprint, cert_fingerprint=n.cert_fingerprint, enrolled_at=n.enrolled_at,
        software_version=n.software_version, last_heartbeat_at=n.last_heartbeat_at,
        clock_skew_s=n.clock_skew_s, clock_flag=n.clock_flag, clock_flag_at=n.clock_flag_at,
        backlog=backlog, alarms=alarms,
    )


def _bad_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "cursor is not one this API issued (or was issued for another sort)",
                    field="cursor")


def _node_page(session: SessionDep, query: Any, *, sort: str, limit: int, cursor: str | None
               ) -> tuple[list[Node], str | None]:
    """Keyset pagination of nodes by node_id, or by last heartbeat (none = the epoch) then node_id."""
    sortable: dict[str, Any] = {"node_id": Node.node_id,
                                "last_heartbeat_at": func.coalesce(Node.last_heartbeat_at, NEVER)}
    desc = sort.startswith("-")
    name = sort[1:] if desc else sort
    column = sortable.get(name)
    if column is None:
        raise ApiError(400, "invalid_sort", f"cannot sort by {name!r}; sortable: " + ", ".join(sorted(sortable))
                       + " (prefix - for descending)", field="sort")
    after = decode_cursor(cursor)
    if after is not None:
        if (not isinstance(after, dict) or after.get("sort") != sort or not isinstance(after.get("id"), str)
                or not re.fullmatch(NODE_ID, after["id"])):
            raise _bad_cursor()
        last_id = after["id"]
        if name == "node_id":
            query = query.where(Node.node_id < last_id if desc else Node.node_id > last_id)
        else:
            try:
                value = as_utc(datetime.fromisoformat(after.get("v")))  # type: ignore[arg-type]
            except (TypeError, ValueError, OverflowError):
                raise _bad_cursor() from None
            if desc:
                query = query.where(or_(column < value, and_(column == value, Node.node_id < last_id)))
            else:
                query = query.where(or_(column > value, and_(column == value, Node.node_id > last_id)))
    order = [column.desc(), Node.node_id.desc()] if desc else [column.asc(), Node.node_id.asc()]
    if name == "node_id":
        order = order[:1]
    rows = list(session.execute(query.order_by(*order).limit(limit + 1)).scalars())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    payload: dict[str, Any] = {"sort": sort, "id": last.node_id}
    if name != "node_id":
        payload["v"] = (last.last_heartbeat_at or NEVER).isoformat()
    return rows, encode_cursor(payload)


def _get_node(session: SessionDep, node_id: str) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise ApiError(404, "not_found", f"no node {node_id!r}", field="node_id")
    return node


NodeIdPath = Annotated[str, Path(max_length=64, pattern=NODE_ID, description="the node's id", examples=["mill-1"])]


@router.get("/api/v1/nodes", response_model=NodePage, responses=ERROR_RESPONSES, tags=["nodes"],
            summary="List edge nodes with their heartbeat state")
def list_nodes(
    session: SessionDep, principal: CanRead,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("node_id or last_heartbeat_at (never heard of = oldest)", "node_id")
                    ] = "node_id",
    site_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="only nodes of this site")] = None,
    enrolled: Annotated[bool | None, Query(description="true: central holds their key; false: not yet")] = None,
) -> NodePage:
    query = select(Node)
    if site_id is not None:
        query = query.where(Node.site_id == site_id)
    if enrolled is not None:
        query = query.where(Node.public_key.is_not(None) if enrolled else Node.public_key.is_(None))
    rows, nxt = _node_page(session, query, sort=sort, limit=limit, cursor=cursor)
    return NodePage(items=[_node_out(n) for n in rows], next_cursor=nxt)


@router.get("/api/v1/nodes/{node_id}", response_model=NodeOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            tags=["nodes"], summary="Get a node")
def get_node(node_id: NodeIdPath, session: SessionDep, principal: CanRead) -> NodeOut:
    return _node_out(_get_node(session, node_id))


@router.patch("/api/v1/nodes/{node_id}", response_model=NodeOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
              tags=["nodes"], summary="Move a node to a site or rename it")
def update_node(node_id: NodeIdPath, body: NodeUpdate, session: SessionDep, principal: IsAdmin) -> NodeOut:
    node = _get_node(session, node_id)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("site_id") is not None and session.get(Site, changes["site_id"]) is None:
        raise ApiError(422, "invalid_reference", f"no site with id {changes['site_id']}", field="site_id")
    before = audit.snapshot(node)
    if [name for name, value in changes.items() if set_if_changed(node, name, value)]:
        audit.record(session, principal.actor, "update", "nodes", node.node_id, before=before,
                     after=audit.snapshot(node))
        session.commit()
    return _node_out(node)
