"""Cancelling a ticket: for good, with a reason, and with who did it and when (``Ticket.cancelled_by`` /
``cancelled_at``, printed on the ticket) — in the audit log with before and after, in the same transaction.

A cancelled ticket is never changed again and never deleted; its weighings become free for another ticket (they
are not re-paired automatically).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from central.db import audit
from central.db.models import Ticket
from central.tickets.errors import AlreadyCancelled

ACTION = "cancel"
RESOURCE = "tickets"  # the audit resource of tickets (as create and update)


def cancel(session: Session, ticket: Ticket, *, actor: str, reason: str, now: datetime) -> None:
    """Cancel ``ticket`` (``AlreadyCancelled`` if it is); the caller commits."""
    if ticket.status == "cancelled":
        raise AlreadyCancelled(ticket.number)
    before = audit.snapshot(ticket)
    ticket.status = "cancelled"
    ticket.cancel_reason = reason
    ticket.cancelled_by = actor
    ticket.cancelled_at = now
    ticket.updated_at = now
    audit.record(session, actor, ACTION, RESOURCE, ticket.id, before=before, after=audit.snapshot(ticket))
