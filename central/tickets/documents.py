"""What a ticket printed for an office to hand out carries beyond its values (``views``): the issuer, the site, the
scale by name with its verification mark, the anchors into floorgate's alibi chain, and who cancelled it when.

- **Issuer**: ``tickets.issuer`` of central.yaml (company, address lines, VAT id); the **site** is the ticket's site
  (code · name) with the address lines of ``tickets.sites.<code>``.
- **Scale**: ``tickets.scales.<node>/<device>`` gives its name and its verification mark (Eichkennzeichen).
- **Alibi anchors**: each weighing's floorgate alibi number with the first ``HASH_PREFIX`` hex digits of its alibi
  entry's hash (``alibi_entries`` by node and number, the entry of that very record; printed in groups of four,
  ``17 · 3fa2 b1c4 d5e6 f708``, the CSVs give them in one piece): the paper in the customer's hands names a link of
  the hash chain that ``floorgate central verify-alibi`` proves — also on the MT-SICS path,
  where the instrument gives no alibi id of its own.
- **Cancellation**: the actor (``user:<name>``, ``apikey:<prefix>``) and the time, local like every time on the
  ticket; the reason is in the view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from central.db.models import AlibiEntry, Site, Ticket, Weighing
from central.tickets.config import Issuer, TicketSettings
from central.tickets.views import local_time, zone_of

HASH_PREFIX = 16  # hex digits of an alibi entry's hash printed on paper and in the CSVs


@dataclass(frozen=True)
class WeighingPaper:
    scale_name: str | None  # tickets.scales.<node>/<device>.name
    verification_mark: str | None
    alibi_no: int | None  # floorgate's alibi number on the node
    alibi_hash: str | None  # the first HASH_PREFIX hex digits of that entry's hash; None: central holds no such entry

    @property
    def anchor(self) -> str | None:
        """``"17 · 3fa2 b1c4 d5e6 f708"``: the alibi number and its hash prefix in groups of four (as people read
        and compare a fingerprint); the number alone when central holds no entry for it."""
        if self.alibi_no is None:
            return None
        if not self.alibi_hash:
            return str(self.alibi_no)
        groups = " ".join(self.alibi_hash[i:i + 4] for i in range(0, len(self.alibi_hash), 4))
        return f"{self.alibi_no} · {groups}"


@dataclass(frozen=True)
class Cancellation:
    by: str | None  # the actor; None for a ticket cancelled before floorgate recorded who
    at: str | None  # local time, with zone


@dataclass(frozen=True)
class Paper:
    """Everything ``pdf`` prints beyond the views, for a set of tickets."""

    issuer: Issuer | None
    site_address: dict[int, tuple[str, ...]] = field(default_factory=dict)  # ticket id → its site's address lines
    weighings: dict[int, WeighingPaper] = field(default_factory=dict)  # weighing id → …
    cancellations: dict[int, Cancellation] = field(default_factory=dict)  # ticket id → …

    def weighing(self, weighing_id: int) -> WeighingPaper:
        return self.weighings.get(weighing_id, WeighingPaper(None, None, None, None))


def alibi_hashes(session: Session, weighings: Iterable[Weighing]) -> dict[int, str]:
    """weighing id → the first ``HASH_PREFIX`` hex digits of its alibi entry's hash (the entry with its node and
    alibi number that mirrors this very record; none if central holds no such entry)."""
    wanted = {(w.node_id, w.alibi_no): w for w in weighings if w.alibi_no is not None}
    if not wanted:
        return {}
    rows = session.execute(select(AlibiEntry.node_id, AlibiEntry.alibi_no, AlibiEntry.record_id, AlibiEntry.hash)
                           .where(tuple_(AlibiEntry.node_id, AlibiEntry.alibi_no).in_(list(wanted)))).all()
    out = {}
    for node_id, alibi_no, record_id, digest in rows:
        w = wanted.get((node_id, alibi_no))
        if w is not None and w.record_id == record_id:
            out[w.id] = digest[:HASH_PREFIX]
    return out


def weighing_papers(session: Session, weighings: Sequence[Weighing], settings: TicketSettings
                    ) -> dict[int, WeighingPaper]:
    hashes = alibi_hashes(session, weighings)
    out = {}
    for w in weighings:
        scale = settings.scale(w.node_id, w.device_id)
        out[w.id] = WeighingPaper(scale_name=scale.name if scale else None,
                                  verification_mark=scale.verification_mark if scale else None,
                                  alibi_no=w.alibi_no, alibi_hash=hashes.get(w.id))
    return out


def paper(session: Session, tickets: Sequence[Ticket], settings: TicketSettings) -> Paper:
    """The paper-only facts of ``tickets`` (a few queries for all of them)."""
    ids = {i for t in tickets for i in (t.first_weighing_id, t.second_weighing_id) if i is not None}
    weighings = list(session.execute(select(Weighing).where(Weighing.id.in_(ids))).scalars()) if ids else []
    site_ids = {t.site_id for t in tickets if t.site_id is not None}
    sites = {s.id: s for s in session.execute(select(Site).where(Site.id.in_(site_ids))).scalars()} if site_ids \
        else {}
    site_address = {}
    cancellations = {}
    for t in tickets:
        site = sites.get(t.site_id) if t.site_id is not None else None
        info = settings.sites.get(site.code) if site is not None else None
        if info is not None:
            site_address[t.id] = info.address
        if t.status == "cancelled":
            zone: ZoneInfo = zone_of(site, settings.timezone)
            at: datetime | None = t.cancelled_at
            cancellations[t.id] = Cancellation(by=t.cancelled_by, at=local_time(at, zone) if at else None)
    return Paper(issuer=settings.issuer, site_address=site_address,
                 weighings=weighing_papers(session, weighings, settings), cancellations=cancellations)
