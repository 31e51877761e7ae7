"""``/api/v1/auth``: people log in with the OAuth2 password flow and get a short-lived access token (JWT).

    curl -d 'username=anna&password=…' http://127.0.0.1:8000/api/v1/auth/token
    → {"access_token": "eyJ…", "token_type": "bearer", "expires_in": 900}

Logins are throttled (``central.api.throttle``, shared by every API worker): after ``auth.login_max_failures``
failures of a user from one address, that user name from that address must wait (``Retry-After``, growing with each
failure); the user's own known-good addresses keep working whatever others try. A refused try gets 429 without its
password being checked. The address is the peer's, or what a proxy in ``api.trusted_proxies`` forwarded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import select

from central.api import throttle
from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from central.api.security import _DUMMY_HASH, CurrentPrincipal, issue_token, verify_secret
from central.db.models import User

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class Token(BaseModel):
    access_token: str = Field(description="send as `Authorization: Bearer <access_token>`")
    token_type: str = Field("bearer", examples=["bearer"])
    expires_in: int = Field(description="lifetime in seconds", examples=[900])


class Me(BaseModel):
    kind: str = Field(description="user, apikey or anonymous (the demo's read-only access)", examples=["user"])
    name: str = Field(examples=["anna"])
    role: str = Field(examples=["operator"])
    permissions: list[str] = Field(examples=[["read", "tickets:write"]])


@router.post(
    "/token", response_model=Token, summary="Log in (OAuth2 password flow)",
    responses={**ERROR_RESPONSES,
               401: {"model": ErrorResponse, "description": "wrong user name or password"},
               429: {"model": ErrorResponse, "description": "too many failed logins: wait `Retry-After` seconds"}},
)
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, state: StateDep,
          session: SessionDep) -> Token:
    client = request.client.host if request.client else None  # the peer, or what a trusted proxy forwarded
    counters = throttle.counters_of(request.app)
    now = datetime.now(UTC)
    taken = throttle.reserve(session, state.settings.auth, username=form.username, client=client, now=now)
    if isinstance(taken, throttle.Refused):
        counters.refused.labels(kind=taken.kind).inc()
        log.warning("login for %r from %s refused by the %s throttle for %d s", form.username[:64], client,
                    taken.kind, taken.retry_after)
        raise ApiError(429, "too_many_attempts", f"too many failed logins; try again in {taken.retry_after} s",
                       headers={"Retry-After": str(taken.retry_after)})
    usable = "\x00" not in form.username and "\x00" not in form.password
    user = (session.execute(select(User).where(User.username == form.username)).scalar_one_or_none()
            if usable else None)
    ok = verify_secret(user.password_hash if user else _DUMMY_HASH, form.password)
    counters.checks.labels(outcome="ok" if ok and user is not None else "failed").inc()
    if user is None or not ok or not user.active:
        throttle.record_failure(session, username=form.username, client=client, now=now)
        log.warning("failed login for %r from %s", form.username[:64], client)
        raise ApiError(401, "invalid_credentials", "wrong user name or password (or the user is disabled)",
                       headers={"WWW-Authenticate": "Bearer"})
    throttle.succeeded(session, taken)
    token, ttl = issue_token(state, user)
    user.last_login_at = datetime.now(UTC)
    session.commit()
    return Token(access_token=token, expires_in=ttl)


@router.get("/me", response_model=Me, responses=ERROR_RESPONSES, summary="Who am I (and what may I do)")
def me(principal: CurrentPrincipal) -> Me:
    from central.api.security import PERMISSIONS

    return Me(kind=principal.kind, name=principal.name, role=principal.role,
              permissions=sorted(PERMISSIONS.get(principal.role, frozenset())))
