"""``/api/v1/devices``: every device central has heard of, when it was last seen and whether it is online."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, select

from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from central.api.security import CanRead
from central.db.models import Device
from central.db.values import NO_NUL

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


class DeviceOut(BaseModel):
    node_id: str = Field(examples=["mill-01"])
    device_id: str = Field(examples=["bridge-1"])
    kind: str | None = Field(examples=["scale"])
    profile: str | None = Field(None, description="device profile (firmware-config/)")
    bus: str | None = Field(None, description="the serial port or TCP endpoint it is polled on")
    online: bool = Field(description="the node reports it online and it was heard of within device_stale_after_s")
    status: str | None = Field(description="last status the node reported: online / offline")
    status_reason: str | None
    last_seen: datetime | None
    counters: dict[str, Any] | None = Field(description="poll counters from the node: polls, ok, frames_bad, …")


class DeviceList(BaseModel):
    items: list[DeviceOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _out(d: Device, stale_s: float, now: float) -> DeviceOut:
    last = d.last_seen
    fresh = last is not None and now - last.timestamp() <= stale_s
    return DeviceOut(
        node_id=d.node_id, device_id=d.device_id, kind=d.kind, profile=d.profile, bus=d.bus,
        online=bool(fresh and d.status != "offline"), status=d.status, status_reason=d.status_reason,
        last_seen=last, counters=d.counters,
    )


@router.get("", response_model=DeviceList, responses=ERROR_RESPONSES,
            summary="List devices with their state (by node, then device id)")
def list_devices(
    session: SessionDep,
    state: StateDep,
    principal: CanRead,
    node_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    kind: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, examples=["scale"])] = None,
    status: Annotated[str | None, Query(max_length=200, pattern=NO_NUL,
                                        description="as reported: online / offline")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="from `next_cursor` of the previous page")] = None,
    sort: Annotated[str, Query(description="node_id (then device_id) or -node_id",
                                           json_schema_extra={"enum": ["node_id", "-node_id"]})] = "node_id",
) -> DeviceList:
    if sort not in ("node_id", "-node_id"):
        raise ApiError(400, "invalid_sort", f"cannot sort by {sort!r}; sortable: node_id (prefix - for descending)",
                       field="sort")
    desc = sort.startswith("-")
    q = select(Device)
    if node_id:
        q = q.where(Device.node_id == node_id)
    if kind:
        q = q.where(Device.kind == kind)
    if status:
        q = q.where(Device.status == status)
    after = decode_cursor(cursor)
    if after is not None:
        if not (isinstance(after, dict) and after.get("sort") == sort and isinstance(after.get("k"), list)
                and len(after["k"]) == 2
                and all(isinstance(x, str) and "\x00" not in x and len(x) <= 256 for x in after["k"])):
            raise ApiError(400, "invalid_cursor", "cursor is not one this API issued (or was issued for another sort)",
                           field="cursor")
        n, dv = after["k"]
        if desc:
            q = q.where(or_(Device.node_id < n, and_(Device.node_id == n, Device.device_id < dv)))
        else:
            q = q.where(or_(Device.node_id > n, and_(Device.node_id == n, Device.device_id > dv)))
    order = (Device.node_id.desc(), Device.device_id.desc()) if desc else (Device.node_id, Device.device_id)
    rows = list(session.execute(q.order_by(*order).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    now = time.time()
    stale = state.settings.device_stale_after_s
    nxt = encode_cursor({"sort": sort, "k": [rows[-1].node_id, rows[-1].device_id]}) if more else None
    return DeviceList(items=[_out(d, stale, now) for d in rows], next_cursor=nxt)


@router.get("/{node_id}/{device_id}", response_model=DeviceOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="One device")
def get_device(node_id: Annotated[str, PathParam(max_length=200, pattern=NO_NUL)],
               device_id: Annotated[str, PathParam(max_length=200, pattern=NO_NUL)],
               session: SessionDep, state: StateDep, principal: CanRead) -> DeviceOut:
    d = session.get(Device, (node_id, device_id))
    if d is None:
        raise ApiError(404, "not_found", f"node {node_id!r} has no device {device_id!r} central knows of",
                       field="device_id")
    return _out(d, state.settings.device_stale_after_s, time.time())


__all__ = ["datetime", "router"]
