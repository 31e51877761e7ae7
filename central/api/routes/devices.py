"""``/api/v1/devices``: every device central has heard of, when it was last seen and whether it is online."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES
from central.db.models import Device

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


class DeviceOut(BaseModel):
    node_id: str
    device_id: str
    kind: str | None
    online: bool = Field(description="the node reports it online and it was heard of within device_stale_after_s")
    status: str | None = Field(description="last status the node reported: online / offline")
    status_reason: str | None
    last_seen: datetime | None
    counters: dict[str, Any] | None = Field(description="poll counters from the node: polls, ok, frames_bad, …")


class DeviceList(BaseModel):
    items: list[DeviceOut]


@router.get("", response_model=DeviceList, responses=ERROR_RESPONSES, summary="List devices with their state")
def list_devices(
    session: SessionDep,
    state: StateDep,
    node_id: Annotated[str | None, Query()] = None,
) -> DeviceList:
    q = select(Device).order_by(Device.node_id, Device.device_id)
    if node_id:
        q = q.where(Device.node_id == node_id)
    now = time.time()
    stale = state.settings.device_stale_after_s
    items = []
    for d in session.execute(q).scalars():
        last = d.last_seen.replace(tzinfo=UTC) if d.last_seen and not d.last_seen.tzinfo else d.last_seen
        fresh = last is not None and now - last.timestamp() <= stale
        items.append(
            DeviceOut(
                node_id=d.node_id, device_id=d.device_id, kind=d.kind, online=bool(fresh and d.status != "offline"),
                status=d.status, status_reason=d.status_reason, last_seen=last, counters=d.counters,
            )
        )
    return DeviceList(items=items)


__all__ = ["datetime", "router"]
