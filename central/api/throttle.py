"""The login throttle: slows password guessing down without letting anyone lock a user out (OWASP Authentication
Cheat Sheet, "Login Throttling"; the device-cookie idea with the client's address as the device).

Three counters, each a row of ``login_throttle`` shared by every API worker and process:

``pair``     (user name, address)   ``auth.login_max_failures`` (5) free failures, then every further try must wait
                                    ``auth.login_delay_s``, doubling with each failure up to ``login_max_delay_s``.
                                    A success from the address resets it and marks the address *known-good* for
                                    that user.
``user``     (user name)            the same after ``login_max_failures_per_user`` (10) failures from addresses the
                                    user never logged in from — all of them together (guessing from many places).
                                    Known-good addresses do not count here and are not slowed by it: whoever
                                    hammers a user name from elsewhere cannot keep the user out.
``address``  (address)              the same after ``login_max_failures_per_address`` (20) failures from it, whatever
                                    the user names (one place trying many names).

A try that any of its counters holds back gets 429 and counts nowhere. Otherwise it *reserves* its place in each
counter before the password is checked, by an atomic compare-and-set (``UPDATE … WHERE failures = <what was
read>``; one row per key, created with ``INSERT … ON CONFLICT DO NOTHING``): of N parallel tries, exactly as many
get their password checked as the counters allow, on PostgreSQL and SQLite, in one process or many. The
reservation counts as a failure until the password turns out right. Counters are
forgotten after ``login_window_s`` without a failure; rows nobody needs any more are pruned when new ones are made.
The address is the TCP peer's, or what a trusted proxy forwarded (``central.api.boundary``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from fastapi import FastAPI
from prometheus_client import Counter
from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central.config import AuthSettings
from central.db.models import LoginAttempt, LoginThrottle

log = logging.getLogger(__name__)

__all__ = ["LoginCounters", "Refused", "Reservation", "counters_of", "install", "reserve", "succeeded"]

PAIR: Final = "pair"
USER: Final = "user"
ADDRESS: Final = "address"
KNOWN_GOOD_DAYS: Final = 180  # a known-good address not used for a login this long is forgotten
ATTEMPTS_KEPT_DAYS: Final = 90  # login_attempts rows (the failed password checks) are kept this long
_CAS_TRIES: Final = 50

Key = tuple[str, str, str]  # (kind, username, client)


@dataclass(frozen=True)
class Reservation:
    """The places taken by a try whose password may now be checked."""

    keys: tuple[Key, ...]
    known_good: bool


@dataclass(frozen=True)
class Refused:
    """The try must wait ``wait_s`` (counter ``kind``); no password is checked."""

    kind: str
    wait_s: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait_s))


def normal_name(username: str) -> str:
    return username.replace("\x00", "\ufffd")[:64]  # NUL cannot be stored in Postgres text


def normal_client(client: str | None) -> str:
    return (client or "")[:64]


def _free(settings: AuthSettings, kind: str) -> int:
    return {PAIR: settings.login_max_failures, USER: settings.login_max_failures_per_user,
            ADDRESS: settings.login_max_failures_per_address}[kind]


def delay_after(settings: AuthSettings, kind: str, failures: int) -> float:
    """Seconds the next try must wait after ``failures`` (counting this one): 0 while free, then doubling."""
    free = _free(settings, kind)
    if failures < free:
        return 0.0
    return min(settings.login_max_delay_s, settings.login_delay_s * 2.0 ** min(failures - free, 40))


def _where(key: Key):  # type: ignore[no-untyped-def]
    kind, username, client = key
    return and_(LoginThrottle.kind == kind, LoginThrottle.username == username, LoginThrottle.client == client)


def _create(session: Session, key: Key, now: datetime, window_s: float) -> None:
    """Make the row of ``key`` unless another try just did; prune what nobody needs any more."""
    kind, username, client = key
    values = dict(kind=kind, username=username, client=client, failures=0, next_at=None, last_at=now)
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(insert(LoginThrottle).values(**values).on_conflict_do_nothing(
            index_elements=["kind", "username", "client"]))
    else:  # pragma: no cover - central runs on PostgreSQL or SQLite
        try:
            with session.begin_nested():
                session.add(LoginThrottle(**values))
        except IntegrityError:
            pass
    stale = now - timedelta(seconds=window_s)
    session.execute(delete(LoginThrottle).where(
        LoginThrottle.last_at < stale, or_(LoginThrottle.next_at.is_(None), LoginThrottle.next_at < now),
        or_(LoginThrottle.last_success_at.is_(None),
            LoginThrottle.last_success_at < now - timedelta(days=KNOWN_GOOD_DAYS))))
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=ATTEMPTS_KEPT_DAYS)))
    session.commit()


def _take(session: Session, settings: AuthSettings, key: Key, now: datetime) -> Refused | None:
    """Reserve a try in the counter of ``key`` (compare-and-set, committed at once), or say how long to wait."""
    for _ in range(_CAS_TRIES):
        row = session.execute(select(LoginThrottle.id, LoginThrottle.failures, LoginThrottle.next_at,
                                     LoginThrottle.last_at).where(_where(key))).one_or_none()
        if row is None:
            _create(session, key, now, settings.login_window_s)
            continue
        next_at, last_at = row.next_at, row.last_at
        if next_at is not None and next_at > now:
            session.rollback()
            return Refused(key[0], (next_at - now).total_seconds())
        forgotten = last_at is not None and (now - last_at).total_seconds() > settings.login_window_s
        failures = 1 if forgotten else row.failures + 1
        wait = delay_after(settings, key[0], failures)
        done = session.execute(
            update(LoginThrottle).where(LoginThrottle.id == row.id, LoginThrottle.failures == row.failures)
            .values(failures=failures, next_at=now + timedelta(seconds=wait) if wait else None, last_at=now)
            .execution_options(synchronize_session=False))
        session.commit()
        if done.rowcount == 1:  # type: ignore[attr-defined]
            return None
        # another try changed the row between our read and our write: read it again
    raise RuntimeError(f"login throttle: could not update the {key[0]} counter after {_CAS_TRIES} tries")


def reserve(session: Session, settings: AuthSettings, *, username: str, client: str | None,
            now: datetime | None = None) -> Reservation | Refused:
    """Take a place for one try of ``username`` from ``client`` in every counter that applies, or say which
    counter refuses and for how long. A try refused up front counts nowhere (a client retrying on 429 does not
    slow its neighbours); the places are then taken narrowest first (pair, user, address), so that a burst against
    one user stops at its pair. Only when another try takes the last place between the look and the take does a
    refused try keep the places it took before (a race: counted, never a password check too many)."""
    now = now or datetime.now(UTC)
    name, address = normal_name(username), normal_client(client)
    pair: Key = (PAIR, name, address)
    rows = {(r.kind, r.username, r.client): r for r in session.execute(
        select(LoginThrottle.kind, LoginThrottle.username, LoginThrottle.client, LoginThrottle.next_at,
               LoginThrottle.last_success_at).where(or_(_where(pair), _where((USER, name, "")),
                                                        _where((ADDRESS, "", address)))))}
    session.rollback()
    known_good = pair in rows and rows[pair].last_success_at is not None
    keys: list[Key] = [pair] if known_good else [pair, (USER, name, "")]
    keys.append((ADDRESS, "", address))
    blocked = [Refused(key[0], (next_at - now).total_seconds()) for key in keys
               if key in rows and (next_at := rows[key].next_at) is not None and next_at > now]
    if blocked:
        return max(blocked, key=lambda r: r.wait_s)
    for key in keys:
        refused = _take(session, settings, key, now)
        if refused is not None:
            return refused
    return Reservation(tuple(keys), known_good)


def succeeded(session: Session, reservation: Reservation, now: datetime | None = None) -> None:
    """The password was right: the pair starts again from zero and its address is known-good for the user; the
    user's and the address's counters give the place back."""
    now = now or datetime.now(UTC)
    for key in reservation.keys:
        values: dict[str, object]
        if key[0] == PAIR:
            values = dict(failures=0, next_at=None, last_at=now, last_success_at=now)
        else:
            values = dict(failures=case((LoginThrottle.failures > 0, LoginThrottle.failures - 1), else_=0))
        session.execute(update(LoginThrottle).where(_where(key)).values(**values)
                        .execution_options(synchronize_session=False))
    session.commit()


def record_failure(session: Session, *, username: str, client: str | None, now: datetime | None = None) -> None:
    """A password check that failed, kept ``ATTEMPTS_KEPT_DAYS`` (the reservation counted it already)."""
    session.add(LoginAttempt(username=normal_name(username), client=normal_client(client) or None,
                             at=now or datetime.now(UTC)))
    session.commit()


@dataclass(frozen=True)
class LoginCounters:
    checks: Counter  # password checks by outcome (ok / failed)
    refused: Counter  # tries refused by the throttle, by counter kind


def install(app: FastAPI) -> LoginCounters:
    """The throttle's counters in the app's registry (``observability.install`` made it): what
    ``/metrics`` shows as ``floorgate_login_password_checks_total{outcome}`` and
    ``floorgate_login_throttled_total{kind}``."""
    registry = app.state.prometheus_registry
    counters = LoginCounters(
        checks=Counter("floorgate_login_password_checks", "passwords checked at the login, by outcome (ok, failed)",
                       labelnames=("outcome",), registry=registry),
        refused=Counter("floorgate_login_throttled", "logins refused by the throttle without a password check, by "
                        "the counter that refused (pair, user, address)", labelnames=("kind",), registry=registry),
    )
    for outcome in ("ok", "failed"):
        counters.checks.labels(outcome=outcome)
    for kind in (PAIR, USER, ADDRESS):
        counters.refused.labels(kind=kind)
    app.state.login_counters = counters
    return counters


def counters_of(app: FastAPI) -> LoginCounters:
    counters: LoginCounters = app.state.login_counters
    return counters
