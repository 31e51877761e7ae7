"""The heads nodes sign in their heartbeats (``sync.heads``) as central keeps them, and what central lacks of them.

After a heartbeat authenticated (``central.ingest.service``), ``store_heads`` keeps its heads:

- ``nodes.heads`` — the heads as the node signed them (``Heads.to_json()``), with ``heads_at`` (central's clock),
  ``heads_body`` (the heartbeat's canonical signed body, the text its signature covers) and ``heads_sig`` — so an
  auditor can check them with the node's key. An alibi head never goes back within one outbox epoch: a heartbeat
  whose head is lower than the one kept is logged and its heads are not kept (the stored ones, with their body and
  signature, stay).
- ``tse_heads`` — per TSE serial the highest transaction number and signature counter any heartbeat reported,
  only ever upwards (a lower report is logged and changes nothing).

What central lacks (the truncation the node's own signature proves):

- **alibi** (``alibi_shortfall``): the head's record (``epoch``, ``stream``, ``seq``) is at or below central's
  contiguous mark for that stream, so central acknowledged it and must hold every entry up to the head's ``no`` —
  the highest entry number central holds below it names the missing tail. A head beyond the mark is in transit.
- **TSE** (``tse_shortfalls``): a TSE head names the highest transaction and signature counter of the sales whose
  records central acknowledged (the node raises it when an ack releases them, ``edge.store.heads``): central must
  hold that transaction number and counter of the TSE — below them nothing can be in transit.

Both are cheap (an index lookup per node and per TSE) and run with every heartbeat and alert evaluation
(``central.alerts.integrity``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from central.db.models import AlibiEntry, Node, StreamMark, TseHead, TseTransaction
from sync.envelope import Heartbeat
from sync.errors import DecodeError
from sync.heads import AlibiHead, decode_heads

log = logging.getLogger(__name__)


MAX_RANGES = 20  # missing runs named per node


@dataclass(frozen=True)
class AlibiShortfall:
    """Entries the node's signed head says exist and central acknowledged, but central does not hold."""

    node: str
    head_no: int
    head_hash: str
    held_no: int  # the highest entry number ≤ the head central holds (0: none)
    missing_count: int  # entries 1 … head_no central lacks
    missing_ranges: tuple[tuple[int, int], ...]  # the first MAX_RANGES runs of them (first, last)
    epoch: str
    stream: str
    seq: int
    acked_seq: int
    reported_at: datetime | None

    @property
    def truncated(self) -> bool:
        """The end of the chain is missing (not only entries below it)."""
        return self.held_no < self.head_no

    def describe(self) -> str:
        runs = ", ".join(str(a) if a == b else f"{a}…{b}" for a, b in self.missing_ranges)
        if self.missing_count > sum(b - a + 1 for a, b in self.missing_ranges):
            runs += ", …"
        n = self.missing_count
        what = "truncated" if self.truncated else "removed below the head"
        return (f"node {self.node}: alibi entr{'y' if n == 1 else 'ies'} {runs} missing at central ({what}): the "
                f"node signed its head {self.head_no} (hash {self.head_hash[:16]}…), central acknowledged its record "
                f"({self.stream} seq {self.seq} ≤ mark {self.acked_seq}) but holds {self.head_no - n} of its "
                f"{self.head_no} entries, up to {self.held_no}")


@dataclass(frozen=True)
class TseShortfall:
    """Transactions of a TSE the node's signed head says it stored, central acknowledged, and central lacks."""

    node: str
    serial: str
    head_tx: int
    head_counter: int
    held_tx: int  # the highest transaction number central holds of the TSE (0: none)
    held_counter: int
    reported_at: datetime | None

    @property
    def missing_tx(self) -> range:
        return range(self.held_tx + 1, self.head_tx + 1)

    def describe(self) -> str:
        return (f"node {self.node}: TSE {self.serial} transactions missing at central (truncated): the node signed "
                f"that central acknowledged its sales up to transaction {self.head_tx} / signature counter "
                f"{self.head_counter}, central holds up to transaction {self.held_tx} / counter {self.held_counter}")


# -- storing ----------------------------------------------------------------------------------------------------------


def stored_alibi(node: Node) -> AlibiHead | None:
    """The alibi head kept for ``node`` (None: none, or a stored value that is not a head)."""
    try:
        heads = decode_heads(node.heads)
    except DecodeError:
        return None
    return heads.alibi if heads is not None else None


def store_heads(session: Session, node: Node, hb: Heartbeat, now: datetime) -> None:
    """Keep the heads of ``hb`` (authenticated, newer than the last heartbeat of ``node``) in the caller's
    transaction: ``node.heads*`` unless its alibi head would go back within the epoch, and the TSE heads upwards."""
    heads = hb.heads
    if heads is None:
        return  # a node from before the heads: what was kept stays
    old = stored_alibi(node)
    new = heads.alibi
    backwards = old is not None and (new is None or (new.epoch == old.epoch and new.no < old.no))
    if backwards:
        assert old is not None
        log.warning("ingest: node %s signed alibi head %s in epoch %s, below the head %s central kept from %s; "
                    "the kept heads stay", node.node_id, new.no if new is not None else "none", hb.epoch, old.no,
                    node.heads_at.isoformat() if node.heads_at else "?")
    else:
        node.heads = heads.to_json()
        node.heads_at = now
        node.heads_body = hb.signed_body.decode()
        node.heads_sig = hb.sig
    for mark in heads.tse:
        row = session.get(TseHead, mark.serial, with_for_update=True)
        if row is None:
            session.add(TseHead(tse_serial=mark.serial, node_id=node.node_id, tx_number=mark.tx,
                                signature_counter=mark.counter, reported_at=now))
            continue
        lower = mark.tx < row.tx_number or mark.counter < row.signature_counter
        if lower:
            log.warning("ingest: node %s signed TSE %s head transaction %d / counter %d, below the head %d / %d "
                        "central kept (node %s, %s); the kept head stays", node.node_id, mark.serial, mark.tx,
                        mark.counter, row.tx_number, row.signature_counter, row.node_id, row.reported_at.isoformat())
        row.tx_number = max(row.tx_number, mark.tx)
        row.signature_counter = max(row.signature_counter, mark.counter)
        if not lower:
            row.node_id = node.node_id
            row.reported_at = now


# -- what central lacks -----------------------------------------------------------------------------------------------


def _acked(session: Session, node: str, epoch: str, stream: str) -> int:
    mark = session.get(StreamMark, (node, epoch, stream))
    return int(mark.acked_seq) if mark is not None else 0


def alibi_shortfall(session: Session, node_id: str, *, node: Node | None = None) -> AlibiShortfall | None:
    """The tail of the node's alibi chain central acknowledged but lacks (None: nothing lacks, no head, or the
    head's record is still in transit)."""
    node = node if node is not None else session.get(Node, node_id)
    if node is None:
        return None
    head = stored_alibi(node)
    if head is None:
        return None
    acked = _acked(session, node_id, head.epoch, head.stream)
    if head.seq > acked:
        return None  # in transit
    e = AlibiEntry
    held, held_no = session.execute(select(func.count(), func.max(e.alibi_no)).where(
        e.node_id == node_id, e.alibi_no >= 1, e.alibi_no <= head.no)).one()
    if int(held) >= head.no:
        return None
    return AlibiShortfall(node=node_id, head_no=head.no, head_hash=head.hash, held_no=int(held_no or 0),
                          missing_count=head.no - int(held), missing_ranges=_missing_runs(session, node_id, head.no),
                          epoch=head.epoch, stream=head.stream, seq=head.seq, acked_seq=acked,
                          reported_at=node.heads_at)


def _missing_runs(session: Session, node_id: str, head_no: int) -> tuple[tuple[int, int], ...]:
    """The first ``MAX_RANGES`` runs of entry numbers 1 … ``head_no`` central does not hold (index lookups)."""
    e = AlibiEntry
    runs: list[tuple[int, int]] = []
    at = 1
    while at <= head_no and len(runs) < MAX_RANGES:
        held = session.execute(select(e.alibi_no).where(e.node_id == node_id, e.alibi_no == at)).first()
        if held is None:  # a run starts here: it ends below the next number held
            nxt = session.execute(select(func.min(e.alibi_no)).where(e.node_id == node_id, e.alibi_no > at)).scalar()
            last = min(int(nxt) - 1, head_no) if nxt is not None else head_no
            runs.append((at, last))
            at = last + 1
            continue
        # held: skip to the next hole — the first held number whose successor is not held
        b = aliased(AlibiEntry)
        gap = session.execute(select(func.min(e.alibi_no)).where(
            e.node_id == node_id, e.alibi_no >= at, e.alibi_no < head_no,
            ~select(b.alibi_no).where(b.node_id == node_id, b.alibi_no == e.alibi_no + 1).exists())).scalar()
        if gap is None:
            break
        at = int(gap) + 1
    return tuple(runs)


def tse_shortfalls(session: Session, node_id: str | None = None) -> list[TseShortfall]:
    """Per TSE head (of ``node_id``, or of every node): the transactions central acknowledged but lacks."""
    q = select(TseHead).order_by(TseHead.node_id, TseHead.tse_serial)
    if node_id is not None:
        q = q.where(TseHead.node_id == node_id)
    out: list[TseShortfall] = []
    t = TseTransaction
    for head in session.execute(q).scalars():
        held_tx, held_counter = session.execute(select(func.max(t.tx_number), func.max(t.signature_counter)).where(
            t.tse_serial == head.tse_serial)).one()
        held_tx, held_counter = int(held_tx or 0), int(held_counter or 0)
        if held_tx >= head.tx_number and held_counter >= head.signature_counter:
            continue
        out.append(TseShortfall(node=head.node_id, serial=head.tse_serial, head_tx=head.tx_number,
                                head_counter=head.signature_counter, held_tx=held_tx, held_counter=held_counter,
                                reported_at=head.reported_at))
    return out


def shortfalls(session: Session, node: Node) -> list[str]:
    """What central lacks of ``node``'s heads, each said in a sentence (empty: nothing)."""
    found = [s.describe() for s in tse_shortfalls(session, node.node_id)]
    alibi = alibi_shortfall(session, node.node_id, node=node)
    return ([alibi.describe()] if alibi is not None else []) + found


__all__ = ["AlibiShortfall", "TseShortfall", "alibi_shortfall", "shortfalls", "store_heads",
           "stored_alibi", "tse_shortfalls"]
