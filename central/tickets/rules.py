"""What every way of making a ticket shares (the API by hand, ``pairing`` from the weighings).

**Net by difference** (devices.md §4.4): gross = the heavier of the two weighings, tare = the lighter, net = gross −
tare, in exact decimal arithmetic, never rounded: 24560 kg − 8420.5 kg = 16139.5 kg. Both must be in one unit.

**Direction**: in chronological order of the weighings, a heavier first weighing means the vehicle came loaded and
left empty — incoming goods (``in``, Wareneingang); a lighter first weighing is outgoing goods (``out``,
Warenausgang). Two equal weighings count as ``in`` (net 0).

**Numbers** are ``T-<UTC year>-<6 digits>``, counting up; ``next_number`` gives the next free one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import Ticket, Weighing
from central.tickets.errors import NumberingBlocked, UnitMismatch

Direction = Literal["in", "out"]
AUTO_NUMBER_DIGITS = 6


@dataclass(frozen=True)
class Weights:
    gross: Decimal
    tare: Decimal
    net: Decimal
    unit: str


def difference(first: Weighing, second: Weighing) -> Weights:
    """gross, tare and net of two weighings (exact; raises ``UnitMismatch``)."""
    if first.unit != second.unit:
        raise UnitMismatch(first.unit, second.unit)
    a, b = measured(first), measured(second)
    gross, tare = (a, b) if a >= b else (b, a)  # not max/min: two equal values keep their own digits (24560, 24560.0)
    return Weights(gross=gross, tare=tare, net=gross - tare, unit=first.unit)  # exact: the decimals of both


def measured(w: Weighing) -> Decimal:
    """The value a weighing measured: its gross, or — an instrument that delivered net and tare only, with a tare
    active — its net (never gross computed from them)."""
    value = w.gross if w.gross is not None else w.net
    if value is None:
        raise ValueError(f"weighing {w.id} has neither gross nor net")
    return value


def chronological(a: Weighing, b: Weighing) -> tuple[Weighing, Weighing]:
    """The two weighings in the order they were weighed (ties: the one central stored first)."""
    return (a, b) if (_key(a) <= _key(b)) else (b, a)


def _key(w: Weighing) -> tuple[datetime, int]:
    return (w.weighed_at, w.id)


def direction(first: Weighing, second: Weighing) -> Direction:
    """``in`` if the earlier weighing is at least as heavy as the later one (came loaded), else ``out``."""
    first, second = chronological(first, second)
    return "in" if measured(first) >= measured(second) else "out"


def next_number(session: Session, now: datetime) -> str:
    """The next automatic ticket number of ``now``'s UTC year (raises ``NumberingBlocked``)."""
    prefix = f"T-{now.year:04d}-"
    last = session.execute(select(func.max(Ticket.number)).where(
        Ticket.number.like(prefix + "%"), func.length(Ticket.number) == len(prefix) + AUTO_NUMBER_DIGITS)).scalar()
    digits = last[len(prefix):] if last else "0"
    if not (digits.isascii() and digits.isdigit()):  # written around the API (the shape is reserved): do not guess
        raise NumberingBlocked(f"ticket {last!r} blocks the automatic numbers: give a number")
    n = int(digits) + 1
    if n >= 10**AUTO_NUMBER_DIGITS:
        raise NumberingBlocked(f"the ticket numbers {prefix}NNNNNN of this year are used up: give a number")
    return f"{prefix}{n:0{AUTO_NUMBER_DIGITS}d}"
