"""``/api/v1/commands``: tare, zero, weigh now, poll now and reload sent to a node, tracked until it answers.

``POST`` only writes a ``queued`` row (API workers stay stateless); the dispatcher in the ingest process sends it and
records the node's signed answer (``central.fleet.commands``). ``GET /api/v1/commands/{command_id}?wait_s=10`` waits
until the command is answered or timed out (at most ``MAX_WAIT_S``), so a caller can act on the weight at once.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.params import MAX_ID, Cursor, Limit, page
from central.api.security import CanRead, CanSendCommands
from central.db import audit
from central.db.models import Command, Device, Node
from central.fleet.commands import OPEN
from sync.commands import MAX_REFERENCE_CHARS, check_args, check_device
from sync.errors import DecodeError

router = APIRouter(prefix="/api/v1/commands", tags=["commands"])

CommandName = Literal["tare", "zero", "weigh", "poll", "reload"]
CommandStatus = Literal["queued", "sent", "succeeded", "failed", "rejected", "timeout"]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # node and device ids (sync.topics.NODE_ID_RE)
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 3600.0
MAX_WAIT_S = 30.0
WAIT_POLL_S = 0.2


class CommandIn(BaseModel):
    """What to do on which device; ``device_id`` is left out (or null) for ``reload``."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"node_id": "mill-01", "device_id": "bridge-1", "command": "weigh", "args": {"reference": "DN-4711"},
         "timeout_s": 20},
        {"node_id": "mill-01", "command": "reload"},
    ]})

    node_id: str = Field(pattern=ID_PATTERN, max_length=64, description="the node the device is on",
                         examples=["mill-01"])
    device_id: str | None = Field(None, pattern=ID_PATTERN, max_length=64, examples=["bridge-1"],
                                  description="the device (tare, zero, weigh, poll); null for reload")
    command: CommandName = Field(description="tare / zero (the scale's T / Z), weigh (a stable weight now, also "
                                 "recorded as a weighing), poll (read the device now), reload (the node re-reads "
                                 "its config file)", examples=["tare"])
    args: dict[str, str] = Field(default_factory=dict, description="weigh: `reference` (the ticket), `vehicle` "
                                 "(number plate), `partner`, `article`, `lot` (codes of the master data), "
                                 f"`delivery_note` - each optional, 1 to {MAX_REFERENCE_CHARS} printable characters, "
                                 "kept with the weighing; tare: `preset_tare` (a decimal such as \"14960\": the "
                                 "scale's tare memory is set to it instead of taring); others: none. A bad one is a "
                                 "422 naming it (`args.vehicle`)",
                                 examples=[{"reference": "T-000123", "vehicle": "B-AB 1234", "article": "WHEAT"}])
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, ge=0.5, le=MAX_TIMEOUT_S, examples=[30],
                             description="seconds from now until the command counts as timed out without an answer "
                             "(the node does not execute it after that either)")


class CommandOut(BaseModel):
    id: int = Field(examples=[17])
    command_id: str = Field(description="UUID sent to the node; the node executes it at most once",
                            examples=["1f0c7a52-8d4e-4f8e-9a0b-3c2d1e0f9a8b"])
    node_id: str = Field(examples=["mill-01"])
    device_id: str | None = Field(examples=["bridge-1"])
    command: CommandName
    args: dict[str, Any]
    status: CommandStatus = Field(description="queued (not sent yet) → sent → succeeded / failed (the device refused "
                                  "or did not answer) / rejected (not attempted) / timeout (no answer in time)")
    result: dict[str, Any] | None = Field(description="what the node reported, e.g. gross and unit of a weighing, "
                                          "the tare, polled values, the scale's raw answer",
                                          examples=[{"gross": "24560", "unit": "kg", "stable": True,
                                                     "answer": "S S      24560 kg"}])
    error: str | None = Field(description="why it failed, was rejected or timed out",
                              examples=["scale refused zero: Z I (not executable now)"])
    late: bool = Field(description="the node answered after the timeout: result and answered_at are its late "
                       "answer, the status stays timeout")
    requested_by: str = Field(examples=["user:anna"])
    created_at: datetime
    sent_at: datetime | None
    answered_at: datetime | None
    timeout_s: float


class CommandPage(BaseModel):
    items: list[CommandOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _out(c: Command) -> CommandOut:
    fields: dict[str, Any] = {
        "id": c.id, "command_id": c.command_id, "node_id": c.node_id, "device_id": c.device_id,
        "command": c.command, "args": c.args or {}, "status": c.status, "result": c.result, "error": c.error,
        "late": c.status == "timeout" and c.answered_at is not None, "requested_by": c.requested_by,
        "created_at": c.created_at, "sent_at": c.sent_at,
        "answered_at": c.answered_at, "timeout_s": c.timeout_s,
    }
    return CommandOut(**fields)


@router.post("", response_model=CommandOut, status_code=202, responses={**ERROR_RESPONSES, **NOT_FOUND},
             summary="Send a command to a device (or reload a node's config)")
def send_command(body: CommandIn, session: SessionDep, principal: CanSendCommands) -> CommandOut:
    """Queues the command and answers at once (202) with its row; follow it with
    `GET /api/v1/commands/{command_id}?wait_s=…`. 404 if central does not know the node (not enrolled) or the
    device (never heard of on that node)."""
    try:
        device = check_device(body.command, body.device_id, field_name="device_id")
        args = check_args(body.command, body.args)
    except DecodeError as exc:
        raise ApiError(422, "invalid_request", str(exc), field=exc.field) from None
    node = session.get(Node, body.node_id)
    if node is None or not node.public_key:
        raise ApiError(404, "not_found", f"node {body.node_id!r} is not enrolled at central", field="node_id")
    if device is not None and session.get(Device, (body.node_id, device)) is None:
        raise ApiError(404, "not_found", f"central has not heard of device {device!r} on node {body.node_id!r}",
                       field="device_id")
    row = Command(command_id=str(uuid.uuid4()), node_id=body.node_id, device_id=device, command=body.command,
                  args=args, status="queued", requested_by=principal.actor, created_at=datetime.now(UTC),
                  timeout_s=body.timeout_s)
    session.add(row)
    session.flush()
    audit.record(session, principal.actor, "command", "commands", row.id, after=audit.snapshot(row))
    session.commit()
    return _out(row)


@router.get("", response_model=CommandPage, responses=ERROR_RESPONSES, summary="List commands, newest first")
def list_commands(
    session: SessionDep,
    principal: CanRead,
    limit: Limit = 50,
    cursor: Cursor = None,
    sort: Annotated[Literal["created_at", "-created_at", "id", "-id"],
                    Query(description="created_at or id; - in front for descending")] = "-id",
    node_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    status: CommandStatus | None = None,
    command: CommandName | None = None,
) -> CommandPage:
    q = select(Command)
    if node_id:
        q = q.where(Command.node_id == node_id)
    if device_id:
        q = q.where(Command.device_id == device_id)
    if status:
        q = q.where(Command.status == status)
    if command:
        q = q.where(Command.command == command)
    rows, nxt = page(session, q, {"created_at": Command.created_at, "id": Command.id}, Command.id, sort=sort,
                     limit=limit, cursor=cursor)
    return CommandPage(items=[_out(c) for c in rows], next_cursor=nxt)


def _load(sessions: sessionmaker[Session], ref: str) -> Command | None:
    """By numeric id or by command_id (UUID); None for anything else."""
    with sessions() as session:
        if ref.isascii() and ref.isdigit():
            number = int(ref)
            return session.get(Command, number) if 1 <= number <= MAX_ID else None
        try:
            canonical = str(uuid.UUID(ref))
        except ValueError:
            return None
        return session.execute(select(Command).where(Command.command_id == canonical)).scalar_one_or_none()


@router.get("/{command_id}", response_model=CommandOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="One command; optionally wait until it is answered")
async def get_command(
    command_id: Annotated[str, Path(max_length=64, description="the numeric id or the command_id (UUID)",
                                    examples=["17"])],
    state: StateDep,
    principal: CanRead,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="wait up to this long while the command is "
                                   "queued or sent (long poll); 0: answer at once")] = 0,
) -> CommandOut:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        row = await asyncio.to_thread(_load, state.sessions, command_id)
        if row is None:
            raise ApiError(404, "not_found", f"no command {command_id!r}", field="command_id")
        if row.status not in OPEN or asyncio.get_running_loop().time() >= deadline:
            return _out(row)
        await asyncio.sleep(min(WAIT_POLL_S, max(0.0, deadline - asyncio.get_running_loop().time())))
