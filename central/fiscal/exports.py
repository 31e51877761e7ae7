"""TAR exports of a TSE, kept byte for byte as uploaded (``POST /api/v1/tse-exports``) and verified on upload.

An export is what the TSE's ``exportData`` gave the node or the operator: log messages, certificate(s), ``info.csv``
(``protocols.tse.tarexport``). Central stores the bytes unchanged in ``tse_exports.content`` with their SHA-256, so
the download is the upload, bit for bit — the form a tax audit (Kassen-Nachschau, DSFinV-K) asks for.

**What the upload covers** is stated by the uploader (:class:`StatedRange`, kept in ``stated_range``): nothing — the
whole TSE from its first log message to the moment of the export — or the filters the export was made with, as
TR-03151's exportData has them: transaction numbers ``first_tx``…``last_tx``, a time range ``since``…``until``
(logTime), a register ``client_id``; an open end means "from the start" / "up to the export". ``partial`` is derived
from it (a stated range → partial), never set by the uploader.

On upload :func:`store_export`:

* refuses what is not an uncompressed TAR (``ustar`` at offset 257; an export is not compressed) and what
  ``protocols.tse.verify_tar`` does not accept — a signature that does not verify, a log message whose name lies,
  a missing certificate or ``info.csv``, a counter gap (tolerated only in an export with a stated range, whose
  filter legitimately leaves gaps and transactions whose Start lies outside) — and what contradicts its stated range
  (:func:`range_problems`): log messages outside it; inside it, gap detection stays on — transaction numbers
  ``first_tx``…``last_tx`` all there (with no client filter), signature counters without gaps (a time range alone).
  Nothing of a refused export is kept; :class:`ExportRejected` carries the failed checks, which the API returns. An
  archive that does not verify is not evidence of anything, and keeping it would suggest that it is;
* compares it with what central holds of the TSE (:func:`coverage`) and flags — keeps it, with ``report.coverage``
  and a failed ``coverage`` check — an export that starts after the TSE's first signature counter without saying so,
  one that ends before central's known head (the highest transaction and signature counter central holds or the
  node's signed heartbeat names: ``truncated: ends at transaction 40, central knows 41``), transactions central holds
  within the stated range that the export lacks, and a TSE the registry does not trust. An export may be older than
  central's newest transactions, so this is a finding for a person to judge, not a refusal;
* gives the same bytes uploaded again the row already held (SHA-256), so an upload can be repeated safely;
* sums the verification up in ``report`` (the checks across the export, the counts, the first invalid entries) and
  keeps the TSE serial, the counter and transaction number ranges for the listing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import TseExport, TseHead, TseTransaction
from central.db.types import as_utc
from central.fiscal import registry
from protocols.tse.logmsg import FINISH, LogMessage
from protocols.tse.report import Check
from protocols.tse.verify_tar import TarVerification, verify_tar

MAX_EXPORT_BYTES: Final = 64 * 1024 * 1024
MAX_FILENAME: Final = 255
MAX_LISTED: Final = 20  # invalid entries named in a report or an error
FIRST_COUNTER: Final = 1  # a TSE's first log message (TR-03151: the signature counter starts at 1)
_USTAR: Final = slice(257, 262)


class ExportRejected(Exception):
    """An upload that is not a TAR export that verifies; ``reason`` says why, ``report`` is the verification."""

    def __init__(self, reason: str, report: dict[str, Any] | None = None) -> None:
        self.reason = reason
        self.report = report
        super().__init__(reason)


@dataclass(frozen=True)
class StatedRange:
    """What the uploader says the export covers; every field None: the whole TSE (a complete export)."""

    first_tx: int | None = None
    last_tx: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    client_id: str | None = None

    @property
    def stated(self) -> bool:
        return any(v is not None for v in (self.first_tx, self.last_tx, self.since, self.until, self.client_id))

    @property
    def open_start(self) -> bool:
        return self.first_tx is None and self.since is None and self.client_id is None

    @property
    def open_end(self) -> bool:
        return self.last_tx is None and self.until is None and self.client_id is None

    def problem(self) -> tuple[str, str] | None:
        """(field, why) when the range itself is impossible."""
        if self.first_tx is not None and self.last_tx is not None and self.first_tx > self.last_tx:
            return "last_tx", f"{self.last_tx} is below first_tx {self.first_tx}"
        if self.since is not None and self.until is not None and self.since > self.until:
            return "until", "before since"
        return None

    def to_json(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {k: v for k, v in (("first_tx", self.first_tx), ("last_tx", self.last_tx),
                                                 ("client_id", self.client_id)) if v is not None}  # fmt: skip
        for name, at in (("since", self.since), ("until", self.until)):
            if at is not None:
                out[name] = as_utc(at).isoformat().replace("+00:00", "Z")
        return out or None

    def text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in (self.to_json() or {}).items()) or "the whole TSE"


@dataclass(frozen=True)
class Stored:
    export: TseExport
    created: bool  # False: the same bytes were held already


def summarize(verification: TarVerification) -> dict[str, Any]:
    """The report kept with an export: every check across it, the counts, the first invalid entries."""
    logs = [e for e in verification.entries if e.kind == "log"]
    invalid = verification.invalid_entries
    return {
        "valid": verification.valid,
        "checks": [c.as_dict() for c in verification.checks],
        "files": len(verification.entries), "log_messages": len(logs), "invalid_entries": len(invalid),
        "invalid": [{"name": e.name, "failed": [c.as_dict() for c in e.checks if c.ok is False]}
                    for e in invalid[:MAX_LISTED]],
    }  # fmt: skip


def _why(verification: TarVerification) -> str:
    failed = [f"{c.name}: {c.detail}" for c in verification.checks if c.ok is False]
    failed += [f"{e.name}: " + "; ".join(f"{c.name}: {c.detail}" for c in e.checks if c.ok is False)
               for e in verification.invalid_entries[:MAX_LISTED]]  # fmt: skip
    more = len(verification.invalid_entries) - MAX_LISTED
    return "; ".join(failed) + (f"; and {more} more invalid file(s)" if more > 0 else "")


def _spans(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` → ``3-5, 9`` (at most MAX_LISTED spans)."""
    spans: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], n)
        else:
            spans.append((n, n))
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in spans[:MAX_LISTED]]
    return ", ".join(shown) + (f" and {len(spans) - MAX_LISTED} more" if len(spans) > MAX_LISTED else "")


def range_problems(messages: list[LogMessage], stated: StatedRange) -> list[str]:
    """What in the export contradicts its stated range: log messages outside it, and — gap detection inside it —
    transaction numbers of ``first_tx``…``last_tx`` missing (no client filter), signature counter gaps (a time range
    alone). A complete export's gaps are ``verify_tar``'s."""
    if not stated.stated:
        return []
    problems: list[str] = []
    low = int(stated.since.timestamp()) if stated.since is not None else None
    high = int(stated.until.timestamp()) if stated.until is not None else None
    outside_time = [m.signature_counter for m in messages if (low is not None and m.log_time.unix < low)
                    or (high is not None and m.log_time.unix > high)]  # fmt: skip
    if outside_time:
        problems.append(f"log message(s) with signature counter {_spans(outside_time)} lie outside the stated time "
                        "range")
    txs = [m for m in messages if m.kind == "transaction"]
    outside = sorted({m.transaction.transaction_number for m in txs
                      if (stated.first_tx is not None and m.transaction.transaction_number < stated.first_tx)
                      or (stated.last_tx is not None and m.transaction.transaction_number > stated.last_tx)})
    if outside:
        problems.append(f"transaction(s) {_spans(outside)} lie outside the stated range")
    if stated.client_id is not None:
        others = sorted({m.transaction.client_id for m in txs if m.transaction.client_id != stated.client_id})
        if others:
            problems.append(f"transactions of client(s) {', '.join(others[:MAX_LISTED])}, not only of "
                            f"{stated.client_id}")
    numbers = {m.transaction.transaction_number for m in txs}
    if stated.client_id is None and (stated.first_tx is not None or stated.last_tx is not None) and numbers:
        first = stated.first_tx if stated.first_tx is not None else min(numbers)
        last = stated.last_tx if stated.last_tx is not None else max(numbers)
        missing = [n for n in range(first, last + 1) if n not in numbers][: MAX_LISTED * 50]
        if missing:
            problems.append(f"transaction(s) {_spans(missing)} of the stated range {first}-{last} are missing")
    elif stated.client_id is None and stated.first_tx is None and stated.last_tx is None:  # a time range alone
        counters = sorted(m.signature_counter for m in messages)
        missing = [c for a, b in pairwise(counters) for c in range(a + 1, b)][: MAX_LISTED * 50]
        if missing:
            problems.append(f"signature counter(s) {_spans(missing)} are missing inside the stated time range")
    return problems


def coverage(session: Session, messages: list[LogMessage], serial: str | None, stated: StatedRange) -> list[str]:
    """What central knows of the TSE that the export should hold and does not (see the module); [] when nothing."""
    if serial is None:
        return ["the export holds log messages of several TSEs: not compared with central's transactions"]
    findings: list[str] = []
    anchor = registry.anchor_for(session, serial)
    if anchor.problem is not None:
        findings.append(f"untrusted_key: {anchor.problem}")
    counters = [m.signature_counter for m in messages]
    txs = [m for m in messages if m.kind == "transaction"]
    numbers = [m.transaction.transaction_number for m in txs]
    first_counter, last_counter = min(counters, default=0), max(counters, default=0)
    last_tx = max(numbers, default=0)
    if stated.open_start and first_counter > FIRST_COUNTER:
        findings.append(f"starts at signature counter {first_counter}, not at the TSE's first ({FIRST_COUNTER}): log "
                        f"messages {_spans(list(range(FIRST_COUNTER, first_counter)))} are not in it (if the TSE's "
                        "older data were deleted after an earlier export, state the range: first_tx or since)")
    t = TseTransaction
    signed = (t.tse_serial == serial, t.tx_number.is_not(None), t.tse_failed.is_(False))
    held_tx, held_counter = session.execute(select(func.max(t.tx_number), func.max(t.signature_counter))
                                            .where(*signed)).one()  # fmt: skip
    head = session.get(TseHead, serial)
    known_tx = max(held_tx or 0, head.tx_number if head is not None else 0)
    known_counter = max(held_counter or 0, head.signature_counter if head is not None else 0)
    truncated = stated.open_end and (last_tx < known_tx or last_counter < known_counter)
    if truncated:
        findings.append(f"truncated: ends at transaction {last_tx} (signature counter {last_counter}), central knows "
                        f"{known_tx} (signature counter {known_counter})")
    q = select(t.tx_number, t.signature_counter).where(*signed)
    if stated.first_tx is not None:
        q = q.where(t.tx_number >= stated.first_tx)
    if stated.last_tx is not None:
        q = q.where(t.tx_number <= stated.last_tx)
    if stated.since is not None:
        q = q.where(t.finished_at >= stated.since)
    if stated.until is not None:
        q = q.where(t.finished_at <= stated.until)
    if stated.client_id is not None:
        q = q.where(t.client_id == stated.client_id)
    finishes = {(m.transaction.transaction_number, m.signature_counter) for m in txs
                if m.transaction.operation_type == FINISH}
    held = [(int(n), c) for n, c in session.execute(q.order_by(t.tx_number)) if n is not None]
    # (beyond the export's end "truncated" says it)
    lacking = [n for n, c in held if (n, c) not in finishes and not (truncated and n > last_tx)]
    if lacking:
        findings.append(f"central holds transaction(s) {_spans(lacking)} of the stated range ({stated.text()}) "
                        "that the export lacks")
    return findings


def store_export(session: Session, data: bytes, *, filename: str | None, stated: StatedRange | None = None,
                 actor: str, now: datetime) -> Stored:  # fmt: skip
    """Verify ``data`` and add it (not committed); the row held already for the same bytes; ExportRejected."""
    stated = stated or StatedRange()
    digest = hashlib.sha256(data).hexdigest()
    held = session.execute(select(TseExport).where(TseExport.sha256 == digest)).scalar_one_or_none()
    if held is not None:
        return Stored(held, created=False)
    if len(data) < 512 or data[_USTAR] != b"ustar":
        raise ExportRejected("not an uncompressed TAR archive (no ustar header): upload the export as the TSE "
                             "produced it")  # fmt: skip
    partial = stated.stated
    verification = verify_tar(data, partial=partial)
    report = summarize(verification)
    if not verification.valid:
        raise ExportRejected(f"the export does not verify{' (with its stated range)' if partial else ''}: "
                             f"{_why(verification)}", report)  # fmt: skip
    messages = [e.message for e in verification.entries if e.message is not None]
    contradictions = range_problems(messages, stated)
    if contradictions:
        raise ExportRejected(f"the export does not match its stated range ({stated.text()}): "
                             f"{'; '.join(contradictions)}", report)  # fmt: skip
    serials = sorted({m.serial_number.hex() for m in messages})
    counters = [m.signature_counter for m in messages]
    numbers = [m.transaction.transaction_number for m in messages if m.kind == "transaction"]
    report["serials"] = serials
    serial = serials[0] if len(serials) == 1 else None
    findings = coverage(session, messages, serial, stated)
    report["stated_range"] = stated.to_json()
    report["coverage"] = {"complete": not findings, "findings": findings}
    report["checks"].append(Check("coverage", not findings, "; ".join(findings) or (
        "holds everything central knows of " + ("the TSE" if not stated.stated else "the stated range"))).as_dict())
    export = TseExport(
        tse_serial=serial, filename=filename, size=len(data), sha256=digest,
        content=data, partial=partial, log_messages=len(messages),
        first_counter=min(counters, default=None), last_counter=max(counters, default=None),
        first_tx=min(numbers, default=None), last_tx=max(numbers, default=None), report=report,
        uploaded_at=now, uploaded_by=actor, stated_range=stated.to_json(),
    )  # fmt: skip
    session.add(export)
    session.flush()
    return Stored(export, created=True)


__all__ = ["MAX_EXPORT_BYTES", "MAX_FILENAME", "ExportRejected", "StatedRange", "Stored", "coverage",
           "range_problems", "store_export", "summarize"]  # fmt: skip
