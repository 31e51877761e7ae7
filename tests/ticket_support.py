"""Weighing records as a node sends them, for the ticket tests: ``Bridge`` numbers records and alibi entries, signs the
entries (``sync.alibi.make_entry``) and applies batches through central's real ``apply_batch``.

    bridge = Bridge(sessions)
    bridge.send(bridge.weigh("24560", at=T0, reference="R-1", vehicle="STD-AB 123", partner="P-1042"))
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import Article, Lot, Partner, Ticket, Weighing
from central.ingest.apply import ApplyResult, apply_batch
from sync.alibi import ZERO_HASH, make_entry
from sync.envelope import Batch, Record
from sync.signing import generate_key

T0 = datetime(2025, 3, 4, 7, 12, 9, tzinfo=UTC)  # 08:12:09 CET in Berlin
LEGAL_NOTICE = ("Messwerte aus frei programmierbarer Zusatzeinrichtung. "
                "Die geeichten Messwerte können eingesehen werden.")


def ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


class Bridge:
    """One node's business stream with its alibi chain (``device`` is the weighbridge)."""

    def __init__(self, sessions: sessionmaker[Session], node: str = "mill-01", device: str = "bridge-1") -> None:
        self.sessions = sessions
        self.node = node
        self.device = device
        self.key = generate_key()
        self.seq = 0
        self.prev_hash = ZERO_HASH

    def weigh(self, gross: str, *, at: datetime, unit: str = "kg", **data: Any) -> Record:
        """The next weighing record; ``data`` adds to / overrides the contract's fields (reference, vehicle,
        partner, article, lot, delivery_note, tare, tare_preset, net …)."""
        self.seq += 1
        record_id = f"{self.node}-w{self.seq}"
        body = {"gross": gross, "unit": unit, "stable": True, "scale_serial": "B123456",
                "instrument_alibi": f"A-{self.node}-{1000 + self.seq}", "trigger": "command",
                "raw": f"S S {gross} {unit}", **data}
        part = make_entry(self.key, node=self.node, alibi_no=self.seq, record_id=record_id, device=self.device,
                          weighed_at_ns=ns(at), data=body, prev_hash=self.prev_hash)
        self.prev_hash = part.hash
        return Record(seq=self.seq, record_id=record_id, kind="weighing", ts_ns=ns(at), device=self.device,
                      data={**body, "alibi": part.to_json()})

    def send(self, *records: Record, now: datetime | None = None) -> ApplyResult:
        batch = Batch(node=self.node, epoch="e1", stream="business", records=records)
        result = apply_batch(self.sessions, batch, now=now)
        assert result.rejected == [], result
        assert result.alibi_rejected == [], result
        return result


def master_data(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Partner P-1042, articles WHEAT-B and BARLEY, lot L-1 (of WHEAT-B): their ids by code."""
    now = datetime.now(UTC)
    with sessions.begin() as s:
        partner = Partner(code="P-1042", name="Hof Meyer GbR", kind="supplier", created_at=now, updated_at=now)
        wheat = Article(code="WHEAT-B", name="Weizen, Backqualität", unit="t", created_at=now, updated_at=now)
        barley = Article(code="BARLEY", name="Gerste", unit="t", created_at=now, updated_at=now)
        s.add_all([partner, wheat, barley])
        s.flush()
        lot = Lot(code="L-1", article_id=wheat.id, created_at=now, updated_at=now)
        s.add(lot)
        s.flush()
        return {"P-1042": partner.id, "WHEAT-B": wheat.id, "BARLEY": barley.id, "L-1": lot.id}


def tickets(sessions: sessionmaker[Session]) -> list[Ticket]:
    with sessions() as s:
        return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars())


def weighing_ids(sessions: sessionmaker[Session]) -> dict[str, int]:
    """record id → weighing id."""
    with sessions() as s:
        return dict(s.execute(select(Weighing.record_id, Weighing.id)).all())


def later(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


__all__ = ["LEGAL_NOTICE", "T0", "Bridge", "later", "master_data", "tickets", "weighing_ids"]
