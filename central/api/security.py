"""Who is calling, and may they? People log in (OAuth2 password flow → short-lived JWT); machines use API keys.

Roles and what they may do (the permission matrix, tested route by route in ``tests/integration/test_api_auth.py``):

=============  =====  ========  =======  ======
permission     admin  operator  auditor  viewer
=============  =====  ========  =======  ======
read           ✓      ✓         ✓        ✓       weighings, tickets, devices, nodes, sites, master data, readings,
                                                 alerts, commands
fiscal:read    ✓      ✓         ✓                TSE transactions
export         ✓      ✓         ✓                CSV exports
tickets:write  ✓      ✓                          create / update / cancel tickets
master:write   ✓      ✓                          articles, partners, lots
commands:send  ✓      ✓                          tare, zero, weigh, poll, reload on a device
audit:read     ✓                ✓                audit log, ingest quarantine
admin          ✓                                 users, API keys, sites, nodes
=============  =====  ========  =======  ======

Credentials: ``Authorization: Bearer <JWT>`` from ``POST /api/v1/auth/token``, or ``Authorization: Bearer fgk_…`` /
``X-API-Key: fgk_…`` for an API key. Both are checked against the database on every request (one indexed lookup):
a token carries the user's ``token_version``, raised when the password changes or the user is disabled, so older
tokens are refused at once; a key belongs to the person who made it (``owner_user_id``) and stops working the
moment that person is disabled (the API also revokes it then). Login throttling: ``central.api.throttle``.

API keys are ``fgk_<prefix>_<secret>``: the prefix finds the row, the secret is checked against its SHA-256.
Passwords are hashed with argon2id (slow on purpose: people choose guessable ones); a key's secret is 192 random
bits, where a slow hash adds nothing but ~0.1 s of CPU to every machine request, so it is kept as SHA-256 and
compared in constant time. Neither is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from central.api.deps import AppState, SessionDep, StateDep
from central.api.errors import ApiError
from central.db.models import ApiKey, User

ROLES = ("admin", "operator", "auditor", "viewer")
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "fiscal:read", "export", "tickets:write", "master:write", "commands:send",
                        "audit:read", "admin"}),
    "operator": frozenset({"read", "fiscal:read", "export", "tickets:write", "master:write", "commands:send"}),
    "auditor": frozenset({"read", "fiscal:read", "export", "audit:read"}),
    "viewer": frozenset({"read"}),
}
ALL_PERMISSIONS = frozenset().union(*PERMISSIONS.values())
API_KEY_PREFIX = "fgk_"
JWT_ALGORITHM = "HS256"
JWT_ISSUER = "floorgate-central"

_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key `fgk_…`")


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))  # verify against it for unknown users: same time either way


def check_password_strength(password: str) -> str | None:
    """None if acceptable, else why not (length is what counts; NIST SP 800-63B)."""
    if len(password) < 10:
        return "a password needs at least 10 characters"
    if len(password) > 256:
        return "a password may have at most 256 characters"
    return None


@dataclass(frozen=True)
class Principal:
    """The caller: a person (``user:<name>``) or a machine (``apikey:<prefix>``), with a role; or the demo's
    anonymous read-only access."""

    kind: str  # user / apikey / anonymous
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def issue_token(state: AppState, user: User) -> tuple[str, int]:
    """A signed JWT for ``user`` and its lifetime in seconds."""
    auth = state.settings.auth
    now = datetime.now(UTC)
    ttl = int(auth.token_ttl_s)
    claims = {"sub": user.username, "role": user.role, "iat": now, "nbf": now, "exp": now + timedelta(seconds=ttl),
              "iss": JWT_ISSUER, "jti": secrets.token_hex(8), "ver": user.token_version}
    return jwt.encode(claims, auth.secret(), algorithm=JWT_ALGORITHM), ttl


def new_api_key() -> tuple[str, str, str]:
    """(full key shown once, prefix kept in clear, hash of the secret)."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    return f"{API_KEY_PREFIX}{prefix}_{secret}", prefix, key_digest(secret)


def key_digest(secret: str) -> str:
    """What is stored of an API key's secret (high-entropy, so a fast hash is enough)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "not_authenticated", message, headers={"WWW-Authenticate": "Bearer"})


def _from_jwt(state: AppState, session: Session, token: str) -> Principal:
    try:
        claims = jwt.decode(token, state.settings.auth.secret(), algorithms=[JWT_ALGORITHM], issuer=JWT_ISSUER,
                            options={"require": ["exp", "sub", "iss"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("the access token has expired: log in again") from None
    except jwt.InvalidTokenError:
        raise _unauthorized("the access token is not valid") from None
    user = session.execute(select(User).where(User.username == claims["sub"])).scalar_one_or_none()
    if user is None or not user.active:
        raise _unauthorized("the user of this token no longer exists or is disabled")
    if claims.get("ver", 0) != user.token_version:  # the password changed (or the user was disabled) since
        raise _unauthorized("the access token was ended by a change of the user's password or access: log in again")
    return Principal("user", user.username, user.role)  # the role as it is now, not as it was at login


def _from_api_key(session: Session, key: str) -> Principal:
    body = key[len(API_KEY_PREFIX):]
    prefix, _, secret = body.partition("_")
    found = session.execute(
        select(ApiKey, User.active).outerjoin(User, User.id == ApiKey.owner_user_id).where(ApiKey.prefix == prefix)
    ).one_or_none() if secret else None
    row, owner_active = found if found is not None else (None, None)
    if row is None or not hmac.compare_digest(row.secret_hash, key_digest(secret)):
        raise _unauthorized("unknown API key")
    if owner_active is False:  # checked on every request: disabling the owner ends the key at once
        raise _unauthorized(f"API key {prefix} belongs to a disabled user")
    now = datetime.now(UTC)
    if row.revoked_at is not None:
        raise _unauthorized(f"API key {prefix} was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise _unauthorized(f"API key {prefix} has expired")
    last = row.last_used_at
    if last is None or (now - last).total_seconds() > 60:  # at most one write a minute per key
        row.last_used_at = now
        session.commit()
    return Principal("apikey", prefix, row.role)


def authenticate(
    request: Request,
    state: StateDep,
    session: SessionDep,
    bearer: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """The calling principal; 401 without valid credentials (except the demo's anonymous read-only access)."""
    if api_key:
        principal = _from_api_key(session, api_key)
    elif bearer and bearer.startswith(API_KEY_PREFIX):
        principal = _from_api_key(session, bearer)
    elif bearer:
        principal = _from_jwt(state, session, bearer)
    elif state.settings.api.open_read_only:
        principal = Principal("anonymous", "demo", "viewer")
    else:
        raise _unauthorized("authentication required: a bearer token from /api/v1/auth/token or an API key")
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def require(permission: str) -> Callable[..., Principal]:
    """A dependency: the caller, who must hold ``permission`` (403 otherwise)."""
    if permission not in ALL_PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.may(permission):
            raise ApiError(403, "forbidden", f"role {principal.role!r} may not do this (needs {permission!r})")
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


# route parameters: `principal: CanRead` — the caller, checked for the permission
CanRead = Annotated[Principal, Depends(require("read"))]
CanReadFiscal = Annotated[Principal, Depends(require("fiscal:read"))]
CanExport = Annotated[Principal, Depends(require("export"))]
CanWriteTickets = Annotated[Principal, Depends(require("tickets:write"))]
CanWriteMaster = Annotated[Principal, Depends(require("master:write"))]
CanSendCommands = Annotated[Principal, Depends(require("commands:send"))]
CanReadAudit = Annotated[Principal, Depends(require("audit:read"))]
IsAdmin = Annotated[Principal, Depends(require("admin"))]


def owner_of(session: Session, principal: Principal) -> int | None:
    """The person behind ``principal``: a user's id, or the owner of the API key it is (None for the demo's
    anonymous access or a key nobody owns)."""
    if principal.kind == "user":
        return session.execute(select(User.id).where(User.username == principal.name)).scalar_one_or_none()
    if principal.kind == "apikey":
        return session.execute(select(ApiKey.owner_user_id).where(ApiKey.prefix == principal.name)
                               ).scalar_one_or_none()
    return None
