"""``/api/v1/users`` and ``/api/v1/api-keys`` (admin only): people and machine credentials.

Users are never deleted (their name stays in the audit log): set ``active`` false. An API key is shown once, when
it is created; afterwards only its prefix is known. Revoking is immediate for every API worker.

A new password or disabling a user ends the user's access tokens at once (``token_version``); disabling a user also
revokes every API key they own (made by them, or by a key of theirs) — each revocation in the audit log — and a key
whose owner is disabled by any other way is refused as well (``central.api.security``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from central.api.deps import SessionDep
from central.api.errors import CONFLICT, ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_values, sorted_page
from central.api.params import IsoTime
from central.api.security import IsAdmin, check_password_strength, hash_secret, new_api_key, owner_of
from central.db import audit
from central.db.models import ApiKey, User
from central.db.types import as_utc
from central.db.values import NO_NUL

router = APIRouter(tags=["users"])
Role = Literal["admin", "operator", "auditor", "viewer"]
USERNAME = r"^[A-Za-z0-9_.@-]{1,64}$"
MAX_ID = 2**63 - 1  # BIGINT: a larger id is a 422, not a database error


class UserOut(BaseModel):
    id: int
    username: str = Field(examples=["anna"])
    role: Role
    full_name: str | None = Field(None, examples=["Anna Berger"])
    active: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None = None


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None = None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME, examples=["anna"])
    password: str = Field(min_length=10, max_length=256, description="at least 10 characters")
    role: Role = Field(examples=["operator"])
    full_name: str | None = Field(None, max_length=128, pattern=NO_NUL)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    full_name: str | None = Field(None, max_length=128, pattern=NO_NUL)
    active: StrictBool | None = None  # JSON true/false only, as the schema says (not 0/1)
    password: str | None = Field(None, min_length=10, max_length=256)


def _user_out(u: User) -> UserOut:
    return UserOut(id=u.id, username=u.username, role=u.role, full_name=u.full_name, active=u.active,  # type: ignore[arg-type]
                   created_at=u.created_at, updated_at=u.updated_at,
                   last_login_at=u.last_login_at)


def _get_user(session: SessionDep, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise ApiError(404, "not_found", f"no user with id {user_id}", field="user_id")
    return user


@router.get("/api/v1/users", response_model=UserPage, responses=ERROR_RESPONSES, summary="List users")
def list_users(
    session: SessionDep, principal: IsAdmin,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    sort: Annotated[str, Query(description="username, created_at or id; - for descending",
                               json_schema_extra={"enum": sort_values(["username", "created_at", "id"])})] = "username",
    role: Role | None = None,
    active: bool | None = None,
) -> UserPage:
    q = select(User)
    if role:
        q = q.where(User.role == role)
    if active is not None:
        q = q.where(User.active == active)
    rows, nxt = sorted_page(session, q, {"username": User.username, "created_at": User.created_at, "id": User.id},
                            User.id, sort=sort, limit=limit, cursor=cursor)
    return UserPage(items=[_user_out(u) for u in rows], next_cursor=nxt)


@router.post("/api/v1/users", response_model=UserOut, status_code=201, responses={**ERROR_RESPONSES, **CONFLICT},
             summary="Create a user")
def create_user(body: UserCreate, session: SessionDep, principal: IsAdmin) -> UserOut:
    problem = check_password_strength(body.password)
    if problem:
        raise ApiError(422, "weak_password", problem, field="password")
    now = datetime.now(UTC)
    user = User(username=body.username, password_hash=hash_secret(body.password), role=body.role,
                full_name=body.full_name, active=True, created_at=now, updated_at=now)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "conflict", f"user {body.username!r} exists already", field="username") from None
    audit.record(session, principal.actor, "create", "users", user.id, after=audit.snapshot(user))
    session.commit()
    return _user_out(user)


@router.get("/api/v1/users/{user_id}", response_model=UserOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="Get a user")
def get_user(user_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep, principal: IsAdmin) -> UserOut:
    return _user_out(_get_user(session, user_id))


@router.patch("/api/v1/users/{user_id}", response_model=UserOut,
              responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
              summary="Change a user's role, name, password or disable them")
def update_user(user_id: Annotated[int, Path(ge=1, le=MAX_ID)], body: UserUpdate, session: SessionDep,
                principal: IsAdmin) -> UserOut:
    user = _get_user(session, user_id)
    before = audit.snapshot(user)
    was_active = user.active
    if body.password is not None:
        problem = check_password_strength(body.password)
        if problem:
            raise ApiError(422, "weak_password", problem, field="password")
        user.password_hash = hash_secret(body.password)
    for name in ("role", "full_name", "active"):
        value = getattr(body, name)
        if value is not None:
            setattr(user, name, value)
    if user.username == principal.name and principal.kind == "user" and (not user.active or user.role != "admin"):
        raise ApiError(409, "conflict", "an admin cannot demote or disable themselves (ask another admin)",
                       field="role" if body.role else "active")
    user.updated_at = datetime.now(UTC)
    disabled = was_active and not user.active
    if body.password is not None or disabled:  # every access token issued so far is refused from now on
        user.token_version = (user.token_version or 0) + 1
    after = audit.snapshot(user)
    if body.password is not None:
        after = {**(after or {}), "password": "changed"}
        before = {**(before or {}), "password": ""}
    audit.record(session, principal.actor, "update", "users", user.id, before=before, after=after)
    if disabled:
        _revoke_keys_of(session, principal, user)
    session.commit()
    return _user_out(user)


def _revoke_keys_of(session: SessionDep, principal: IsAdmin, user: User) -> None:
    """Disabling a person ends the machine credentials they hold."""
    now = datetime.now(UTC)
    for key in session.execute(select(ApiKey).where(ApiKey.owner_user_id == user.id, ApiKey.revoked_at.is_(None))
                               ).scalars():
        key_before = audit.snapshot(key)
        key.revoked_at = now
        audit.record(session, principal.actor, "revoke", "api_keys", key.id, before=key_before,
                     after=audit.snapshot(key))


# --- API keys ----------------------------------------------------------------------------------------------------


class ApiKeyOut(BaseModel):
    id: int
    name: str = Field(examples=["ERP integration"])
    prefix: str = Field(description="the key's public part: `fgk_<prefix>_…`", examples=["3f9a1c2b"])
    role: Role
    created_by: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the whole key — shown this once, store it now", examples=["fgk_3f9a1c2b_…"])


class ApiKeyPage(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None = None


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=NO_NUL, examples=["ERP integration"])
    role: Role = Field(examples=["viewer"])
    expires_at: Annotated[datetime | None, IsoTime] = Field(None, description="ISO 8601 with time zone; none = until "
                                                                        "revoked")

    @field_validator("expires_at")
    @classmethod
    def _aware_future(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            raise ValueError("expected a time with time zone, e.g. 2027-01-01T00:00:00Z")
        try:
            return as_utc(v)
        except OverflowError:
            raise ValueError("the time is out of range in UTC") from None


def _key_out(k: ApiKey) -> dict[str, object]:
    return dict(id=k.id, name=k.name, prefix=k.prefix, role=k.role, created_by=k.created_by,
                created_at=k.created_at, expires_at=k.expires_at, revoked_at=k.revoked_at,
                last_used_at=k.last_used_at)


@router.get("/api/v1/api-keys", response_model=ApiKeyPage, responses=ERROR_RESPONSES, summary="List API keys")
def list_api_keys(
    session: SessionDep, principal: IsAdmin,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    sort: Annotated[str, Query(description="created_at, name or id; - for descending",
                               json_schema_extra={"enum": sort_values(["created_at", "name", "id"])})] = "-created_at",
    revoked: bool | None = Query(None, description="true: only revoked keys, false: only usable ones"),
) -> ApiKeyPage:
    q = select(ApiKey)
    if revoked is not None:
        q = q.where(ApiKey.revoked_at.is_not(None) if revoked else ApiKey.revoked_at.is_(None))
    rows, nxt = sorted_page(session, q, {"created_at": ApiKey.created_at, "name": ApiKey.name, "id": ApiKey.id},
                            ApiKey.id, sort=sort, limit=limit, cursor=cursor)
    return ApiKeyPage(items=[ApiKeyOut(**_key_out(k)) for k in rows], next_cursor=nxt)  # type: ignore[arg-type]


@router.post("/api/v1/api-keys", response_model=ApiKeyCreated, status_code=201, responses=ERROR_RESPONSES,
             summary="Create an API key (the key is shown once)")
def create_api_key(body: ApiKeyCreate, session: SessionDep, principal: IsAdmin) -> ApiKeyCreated:
    key, prefix, secret_hash = new_api_key()
    row = ApiKey(name=body.name, prefix=prefix, secret_hash=secret_hash, role=body.role, created_by=principal.actor,
                 created_at=datetime.now(UTC), expires_at=body.expires_at, owner_user_id=owner_of(session, principal))
    session.add(row)
    session.flush()
    audit.record(session, principal.actor, "create", "api_keys", row.id, after=audit.snapshot(row))
    session.commit()
    return ApiKeyCreated(key=key, **_key_out(row))  # type: ignore[arg-type]


@router.get("/api/v1/api-keys/{key_id}", response_model=ApiKeyOut, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="Get an API key (without its secret)")
def get_api_key(key_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep, principal: IsAdmin) -> ApiKeyOut:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise ApiError(404, "not_found", f"no API key with id {key_id}", field="key_id")
    return ApiKeyOut(**_key_out(row))  # type: ignore[arg-type]


@router.post("/api/v1/api-keys/{key_id}/revoke", response_model=ApiKeyOut,
             responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="Revoke an API key (immediately, for good)")
def revoke_api_key(key_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep, principal: IsAdmin) -> ApiKeyOut:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise ApiError(404, "not_found", f"no API key with id {key_id}", field="key_id")
    if row.revoked_at is None:
        before = audit.snapshot(row)
        row.revoked_at = datetime.now(UTC)
        audit.record(session, principal.actor, "revoke", "api_keys", row.id, before=before, after=audit.snapshot(row))
        session.commit()
    return ApiKeyOut(**_key_out(row))  # type: ignore[arg-type]
