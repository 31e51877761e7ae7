"""The sweep (``floorgate central verify-tse``, run it from cron): every row of one or every TSE re-checked from
scratch against the TSE registry's pinned key (``central.fiscal.verify``, ``central.fiscal.registry``), the gap
marks rebuilt, and per TSE what is wrong or missing::

    invalid        a transaction that fails a check (its verify_error; ``untrusted_key: …`` among them)
    untrusted_key  the TSE itself is not trusted: unknown to the registry, its pin not signed by central or changed,
                   pinned but unconfirmed, rejected
    gap            transaction numbers missing between two held
    regression     a start counter that goes back along the numbers;   duplicate   a counter used twice
    truncated      numbers the node's signed head (``tse_heads``, from its heartbeat) says exist above the highest
                   central holds — the newest transactions deleted at central, or never delivered
    removed        a TSE central pinned when it saw its transactions, of which it now holds none (and no head says
                   how many there were): every row of it is gone

The TSEs swept: those with transactions, those pinned, those with a head. A TSE whose rows were all re-signed with a
fresh key shows twice: the new serial (unknown: every row ``untrusted_key``) and the pinned one (``removed``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import TseHead, TsePin, TseTransaction
from central.fiscal import registry
from central.fiscal.registry import Anchor
from central.fiscal.verify import (
    INVALID,
    SEQ_COLUMNS,
    SeqRow,
    node_clock_ahead_s,
    row_checks,
    seq_row,
    sequence_checks,
    verdict,
)
from protocols.tse.report import Check

SWEEP_BATCH: Final = 500
MAX_LISTED: Final = 50  # problems of one kind listed per TSE in a sweep report


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Finding:
    """One problem of a TSE: ``kind`` invalid / gap / regression / duplicate / untrusted_key / truncated / removed,
    the transaction numbers concerned."""

    kind: str
    numbers: tuple[int, ...]
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "numbers": list(self.numbers), "message": self.message}


@dataclass
class TseReport:
    """One TSE after a sweep."""

    serial: str
    nodes: list[str] = field(default_factory=list)
    transactions: int = 0
    first: int | None = None
    last: int | None = None
    counts: dict[str, int] = field(default_factory=dict)  # verified → rows
    changed: int = 0  # rows whose verdict or gap mark the sweep changed
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first missing, last missing)
    truncated: tuple[int, int] | None = None  # (first, last) missing at the end by the node's signed head
    registry: dict[str, Any] = field(default_factory=dict)  # status, source, trusted, problem
    head: dict[str, Any] | None = None  # the node's signed head: tx, counter, node, at
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def missing(self) -> int:
        tail = self.truncated[1] - self.truncated[0] + 1 if self.truncated else 0
        return sum(b - a + 1 for a, b in self.gaps) + tail

    def summary(self) -> str:
        span = f"{self.first}…{self.last}" if self.first is not None else "none"
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "none"
        head = f"TSE {self.serial} (node {', '.join(self.nodes) or '?'}): {self.transactions} transactions {span} " \
               f"({counts})"  # fmt: skip
        if self.first is not None and self.first > 1:
            head += f"; numbers below {self.first} never arrived here"
        if self.ok:
            return head + ": verified, no gaps"
        return head + f": {len(self.findings)} problem(s), {self.missing} number(s) missing"

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "ok": self.ok, "nodes": self.nodes, "transactions": self.transactions,
                "first": self.first, "last": self.last, "counts": self.counts, "changed": self.changed,
                "gaps": [list(g) for g in self.gaps], "truncated": list(self.truncated) if self.truncated else None,
                "registry": self.registry, "head": self.head,
                "findings": [f.to_json() for f in self.findings]}  # fmt: skip


class UnknownTse(Exception):
    def __init__(self, serial: str) -> None:
        self.serial = serial
        super().__init__(f"no transactions, pin or head of TSE {serial!r} are held")


def sweep(sessions: sessionmaker[Session], serial: str | None = None, *, now: datetime | None = None
          ) -> list[TseReport]:  # fmt: skip
    """Re-verify every row of TSE ``serial`` (None: of every TSE) from scratch, rebuild the gap marks, and report.
    The registry is the one handed to ``sessions`` (``registry.use_registry``). Raises UnknownTse when central holds
    nothing of ``serial``."""
    now = now or datetime.now(UTC)
    with sessions() as session:
        q = select(TseTransaction.tse_serial).where(TseTransaction.tse_serial.is_not(None)).distinct()
        serials = {s for s in session.execute(q).scalars() if s is not None}
        serials |= set(session.execute(select(TsePin.tse_serial)).scalars())
        serials |= set(session.execute(select(TseHead.tse_serial)).scalars())
    if serial is not None:
        serial = serial.lower()
        if serial not in serials:
            raise UnknownTse(serial)
        serials = {serial}
    return [_sweep_one(sessions, s, now) for s in sorted(serials)]


def _sweep_one(sessions: sessionmaker[Session], serial: str, now: datetime) -> TseReport:
    report = TseReport(serial)
    t = TseTransaction
    with sessions() as session:
        numbered = [seq_row(r) for r in session.execute(
            select(*SEQ_COLUMNS).where(t.tse_serial == serial, t.tx_number.is_not(None)).order_by(t.tx_number))]
        report.nodes = sorted(n for n in session.execute(select(t.node_id).where(t.tse_serial == serial).distinct())
                              .scalars())  # fmt: skip
        pin = session.get(TsePin, serial)
        anchor = registry.resolve(serial, pin, registry.registry_of(session))
        head = session.get(TseHead, serial)
        if head is not None:
            report.head = {"tx": head.tx_number, "counter": head.signature_counter, "node": head.node_id,
                           "at": _iso(head.reported_at)}
    report.registry = {"status": anchor.status, "source": anchor.source, "trusted": anchor.trusted,
                       "problem": anchor.problem, "pin_problem": anchor.pin_problem}
    sequence = _sequence_of(numbered)
    marks = _gap_marks(numbered, report)
    report.findings += _regressions(numbered) + _duplicates(numbered)
    invalid = _verify_rows(sessions, serial, anchor, sequence, marks, report, now)
    report.findings += _registry_findings(anchor) + _tail_findings(report, pin, head)
    report.findings = sorted(invalid + report.findings, key=lambda f: (f.numbers[0] if f.numbers else 0, f.kind))
    return report


def _verify_rows(sessions: sessionmaker[Session], serial: str, anchor: Anchor, sequence: dict[int, list[Check]],
                 marks: dict[int, int], report: TseReport, now: datetime) -> list[Finding]:  # fmt: skip
    t = TseTransaction
    invalid: list[Finding] = []
    for batch in _batches(sessions, serial):
        with sessions.begin() as session:
            for row in session.execute(select(t).where(t.id.in_(batch))).scalars():
                before = (row.verified, row.verify_error, row.gap_before, row.gap_since)
                if not row.tse_failed and row.tx_number is not None:
                    checks = row_checks(row, anchor, node_ahead_s=node_clock_ahead_s(session, row.node_id))
                    row.verified, row.verify_error = verdict(checks + sequence.get(row.id, []))
                elif not row.tse_failed:  # a signed row without a number cannot be placed or verified
                    row.verified, row.verify_error = INVALID, "tx_number: missing"
                gap = marks.get(row.id)
                if gap is None:
                    row.gap_before, row.gap_since = None, None
                else:
                    kept = row.gap_since if row.gap_before is not None else None  # the gap was seen before
                    row.gap_before, row.gap_since = gap, kept or now
                if (row.verified, row.verify_error, row.gap_before, row.gap_since) != before:
                    report.changed += 1
                report.counts[row.verified] = report.counts.get(row.verified, 0) + 1
                report.transactions += 1
                if row.verified == INVALID and len(invalid) < MAX_LISTED:
                    number = row.tx_number if row.tx_number is not None else -1
                    invalid.append(Finding("invalid", (number,), f"transaction {number} (id {row.id}, client "
                                                                 f"{row.client_id}): {row.verify_error}"))
    return invalid


def _registry_findings(anchor: Anchor) -> list[Finding]:
    out = []
    if anchor.problem is not None:
        out.append(Finding("untrusted_key", (), anchor.problem))
    elif anchor.pin_problem is not None:  # trusted through fiscal.tse, but its pin is not central's
        out.append(Finding("untrusted_key", (), anchor.pin_problem))
    return out


def _tail_findings(report: TseReport, pin: TsePin | None, head: TseHead | None) -> list[Finding]:
    """What the node's signed head says exists above the highest number held; a pinned TSE with nothing held."""
    highest = report.last
    if head is not None and (highest is None or head.tx_number > highest):
        first = (highest or 0) + 1
        report.truncated = (first, head.tx_number)
        span = str(first) if first == head.tx_number else f"{first}-{head.tx_number}"
        return [Finding("truncated", (first, head.tx_number), (
            f"transaction number(s) {span} missing at the end: node {head.node_id}'s signed head "
            f"({_iso(head.reported_at)}) says transaction {head.tx_number} (signature counter "
            f"{head.signature_counter}) exists, central holds {'up to ' + str(highest) if highest else 'none'}"))]
    if report.transactions == 0 and pin is not None and pin.node_id is not None:
        return [Finding("removed", (), f"TSE {report.serial} was pinned when central saw its transactions (node "
                                       f"{pin.node_id}, device {pin.device_id or '?'}, {_iso(pin.first_seen_at)}), "
                                       "and central holds none of them now: they were deleted or re-keyed")]
    return []


def _batches(sessions: sessionmaker[Session], serial: str) -> Iterator[list[int]]:
    last = 0
    while True:
        with sessions() as session:
            ids = list(session.execute(select(TseTransaction.id).where(
                TseTransaction.tse_serial == serial, TseTransaction.id > last)
                .order_by(TseTransaction.id).limit(SWEEP_BATCH)).scalars())  # fmt: skip
        if not ids:
            return
        yield ids
        last = ids[-1]


def _sequence_of(numbered: list[SeqRow]) -> dict[int, list[Check]]:
    """The sequence checks of every row, the same as at apply time, from the rows in memory."""
    counted = [r for r in numbered if r.start_counter is not None]
    position = {r.id: i for i, r in enumerate(counted)}
    by_counter: dict[int, list[SeqRow]] = defaultdict(list)
    for r in numbered:
        for c in set(r.counters):
            by_counter[c].append(r)
    out: dict[int, list[Check]] = {}
    for r in numbered:
        i = position.get(r.id)
        previous = counted[i - 1] if i is not None and i > 0 else None  # (only rows with a start counter compare)
        following = counted[i + 1] if i is not None and i + 1 < len(counted) else None
        twins = {t.id: t for c in r.counters for t in by_counter[c] if t.id != r.id}
        out[r.id] = sequence_checks(r, previous, following, twins.values())
    return out


def _gap_marks(numbered: list[SeqRow], report: TseReport) -> dict[int, int]:
    """row id → numbers missing right below it; fills ``report`` with the span and the gaps."""
    marks: dict[int, int] = {}
    if numbered:
        report.first, report.last = numbered[0].tx_number, numbered[-1].tx_number
    for below, above in pairwise(numbered):
        if above.tx_number - below.tx_number > 1:
            marks[above.id] = above.tx_number - below.tx_number - 1
            report.gaps.append((below.tx_number + 1, above.tx_number - 1))
    for first, last in report.gaps[:MAX_LISTED]:
        span = str(first) if first == last else f"{first}-{last}"
        report.findings.append(Finding("gap", (first, last), f"transaction number(s) {span} missing"))
    return marks


def _regressions(numbered: list[SeqRow]) -> list[Finding]:
    counted = [r for r in numbered if r.start_counter is not None]
    out: list[Finding] = []
    for a, b in pairwise(counted):
        assert a.start_counter is not None
        assert b.start_counter is not None
        if b.start_counter <= a.start_counter and len(out) < MAX_LISTED:
            out.append(Finding("regression", (a.tx_number, b.tx_number),
                               f"start counter goes back: {a.start_counter} at transaction {a.tx_number}, "
                               f"{b.start_counter} at transaction {b.tx_number}"))
    return out


def _duplicates(numbered: list[SeqRow]) -> list[Finding]:
    users: dict[int, list[int]] = defaultdict(list)
    for r in numbered:
        for c in set(r.counters):
            users[c].append(r.tx_number)
    out: list[Finding] = []
    for counter, numbers in sorted(users.items()):
        if len(numbers) > 1 and len(out) < MAX_LISTED:
            out.append(Finding("duplicate", tuple(sorted(numbers)), f"signature counter {counter} used by "
                                                                    f"transactions {', '.join(map(str, numbers))}"))
    return out


__all__ = ["MAX_LISTED", "Finding", "TseReport", "UnknownTse", "sweep"]
