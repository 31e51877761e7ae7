"""Verification of TSE transactions at central: each row on its own, and each TSE's sequence.

**Per row** (:func:`row_checks`, pure; ``anchor``: what the TSE registry vouches for, ``central.fiscal.registry``)::

    public_key     base64 of a point on a TSE curve (brainpoolP384r1, P-256, …)
    serial         tse_serial = SHA-256 of that key
    untrusted_key  the TSE is pinned and confirmed (or listed in the config) and the row's key is the pinned key —
                   an unknown TSE, a pin not signed by central, an unconfirmed or rejected TSE, another key: each
                   says so
    algorithm      ecdsa-plain-SHA256 | ecdsa-plain-SHA384 (and the pinned one, when the pin names it)
    time_format    unixTime | utcTime | generalizedTime
    signature      verifies **with the pinned key** (never the row's own) over the FinishTransaction log message
                   rebuilt from the row (clientId, processData, processType, transactionNumber, serialNumber,
                   algorithm, signatureCounter, logTime) — the bytes ``protocols.tse.qr.rebuild_log_message`` builds
                   for a receipt; not checked when the registry has no key for the TSE
    times          started_at ≤ finished_at; both from 2017 on; finished_at not after central received the record
                   (plus TIME_TOLERANCE_S and what the node's clock was ahead); log_time is finished_at's second
    qr             the QR code verifies on its own and says what the row says (not checked when there is none)
    total          ``total`` is the signed processData's total (Kassenbeleg-V1 receipts)

**Per TSE** (:func:`sequence_checks`, on the row and the nearest rows by transaction number that have a start
counter; the StartTransaction's counter is the one that follows the numbers — finishes may interleave)::

    counters     start_counter < signature_counter
    sequence     start counters strictly increase along transaction numbers (a regression names both rows and
                 marks both: one of the two is wrong)
    start_time   start times do not go back along transaction numbers by more than TIME_TOLERANCE_S
    duplicate    no other transaction of the TSE has one of this row's signature counters

A row is ``valid`` when no check failed and its signature verified, ``invalid`` otherwise, with every failed check in
``verify_error`` (``signature: does not verify …; untrusted_key: …``). Gaps are not a row's fault: ``gap_before`` on
the row above a gap counts the missing numbers (``gap_since``: since when central knows), the lowest number held
starts the sequence. ``tse_failed`` rows have nothing to verify, but their numbers close gaps.

**When**: :func:`store_transaction` (``apply``, in the batch's transaction) pins a TSE seen for the first time
(``registry.see``), verifies the new row, re-verifies its neighbours and the rows sharing a counter with it where
their verdict can change, and moves the gap marks — so a gap closes, and a regression shows, when a delayed record
arrives. ``central.fiscal.sweep`` (``floorgate central verify-tse``, run it from cron) re-checks every row of one or
every TSE from scratch and reports what is missing too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from central.db.models import Node, TseTransaction
from central.fiscal import registry
from central.fiscal.records import BadTseRecord
from central.fiscal.registry import Anchor
from protocols.tse import crypto
from protocols.tse.errors import ProcessDataError, ReceiptQrError
from protocols.tse.logmsg import FINISH, OID_TRANSACTION_LOG, TIME_FORMATS, LogMessage, LogTime, TransactionData
from protocols.tse.processdata import PROCESS_TYPE, parse_kassenbeleg_v1
from protocols.tse.qr import parse_iso_time, verify_receipt_qr
from protocols.tse.report import Check, all_valid

TIME_TOLERANCE_S: Final = 300.0  # clocks of TSE, node and central may differ this much without it being a finding
EARLIEST: Final = datetime(2017, 1, 1, tzinfo=UTC)  # no TR-03151 TSE signed before

VALID: Final = "valid"
INVALID: Final = "invalid"
TSE_FAILED: Final = "tse_failed"


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _b64(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# --- one row -----------------------------------------------------------------------------------------------------


def finish_message(row: TseTransaction, serial: bytes) -> LogMessage:
    """The FinishTransaction log message the row's signature is over (``ValueError`` if it cannot be built)."""
    algorithm = crypto.ALGORITHMS.get(row.algorithm or "")
    if algorithm is None or row.time_format not in TIME_FORMATS:
        raise ValueError("unknown algorithm or time format")
    if row.tx_number is None or row.signature_counter is None:
        raise ValueError("no transaction number or signature counter")
    finished = row.finished_at
    log_time = row.log_time if row.log_time is not None else int(finished.timestamp())
    time_format = next(f for f in TIME_FORMATS if f == row.time_format)
    data = TransactionData(operation_type=FINISH, client_id=row.client_id, process_data=row.process_data.encode(),
                           process_type=row.process_type, transaction_number=row.tx_number)  # fmt: skip
    return LogMessage(
        certified_data_type=OID_TRANSACTION_LOG, certified_data=data, serial_number=serial,
        signature_algorithm=algorithm.oid, signature_counter=row.signature_counter,
        log_time=LogTime.of(time_format, log_time, millis=finished.microsecond // 1000),
    )  # fmt: skip


def row_checks(row: TseTransaction, anchor: Anchor, *, node_ahead_s: float = 0.0) -> list[Check]:
    """The checks of one signed row on its own, its signature with the key ``anchor`` (the registry's word on the
    row's TSE) trusts; ``node_ahead_s``: how far the node's clock is known to be ahead."""
    checks: list[Check] = []
    point = _b64(row.public_key)
    if not point:
        checks.append(Check("public_key", False, "missing or not base64"))
    else:
        try:
            _, curve = crypto.load_public_key(point)
            checks.append(Check("public_key", True, f"{curve} point"))
        except ValueError as exc:
            checks.append(Check("public_key", False, str(exc)))
        own = crypto.serial_number(point).hex()
        checks.append(Check("serial", True, "SHA-256 of the public key") if own == row.tse_serial else
                      Check("serial", False, f"{row.tse_serial} is not the SHA-256 of the public key ({own})"))
    untrusted = registry.key_problem(anchor, row.public_key)
    checks.append(Check("untrusted_key", False, untrusted) if untrusted else
                  Check("untrusted_key", True, f"the key pinned for TSE {anchor.serial} ({anchor.source})"))
    key = _key(registry.trusted_key(anchor, row.public_key))
    algorithm = crypto.ALGORITHMS.get(row.algorithm or "")
    if algorithm is None:
        checks.append(Check("algorithm", False, f"{row.algorithm!r} is not one of {', '.join(crypto.ALGORITHMS)}"))
    elif anchor.algorithm is not None and anchor.algorithm != row.algorithm:
        checks.append(Check("algorithm", False, f"{row.algorithm} is not {anchor.algorithm}, the algorithm pinned for "
                                                f"TSE {anchor.serial}"))  # fmt: skip
    else:
        checks.append(Check("algorithm", True, algorithm.name))
    format_ok = row.time_format in TIME_FORMATS
    checks.append(Check("time_format", True, row.time_format) if format_ok else
                  Check("time_format", False, f"{row.time_format!r} is not one of {', '.join(TIME_FORMATS)}"))
    checks.append(_signature_check(row, key, algorithm, format_ok))
    checks.append(_times_check(row, node_ahead_s))
    checks += _qr_checks(row)
    total = _total_check(row)
    if total is not None:
        checks.append(total)
    return checks


def _key(public_key: str | None) -> Any:
    """The EC key of a trusted base64 point; None when there is none, or it does not load."""
    point = _b64(public_key)
    if not point:
        return None
    try:
        return crypto.load_public_key(point)[0]
    except ValueError:
        return None


def _signature_check(row: TseTransaction, key: Any, algorithm: crypto.SignatureAlgorithm | None,
                     format_ok: bool) -> Check:  # fmt: skip
    signature = _b64(row.signature)
    if key is None or algorithm is None or not format_ok or not signature or row.tse_serial is None:
        return Check("signature", None, "not checked: no trusted key, or no usable algorithm, time format, serial "
                                        "or signature")
    try:
        message = finish_message(row, bytes.fromhex(row.tse_serial))
    except ValueError as exc:
        return Check("signature", False, f"the FinishTransaction log message cannot be rebuilt: {exc}")
    problem = crypto.verify_plain(key, algorithm, signature, message.signed_bytes())
    where = (f"the FinishTransaction of transaction {row.tx_number} (signature counter {row.signature_counter}, "
             f"logTime {message.log_time.text or message.log_time.unix})")  # fmt: skip
    if problem:
        return Check("signature", False, f"{problem} over {where}: a signed field or the signature was changed")
    return Check("signature", True, f"verifies over {where}")


def _times_check(row: TseTransaction, node_ahead_s: float) -> Check:
    started, finished, received = row.started_at, row.finished_at, row.received_at
    latest = received + timedelta(seconds=TIME_TOLERANCE_S + max(0.0, node_ahead_s))
    problems = []
    if started > finished:
        problems.append(f"start {_iso(started)} is after the finish {_iso(finished)}")
    if started < EARLIEST or finished < EARLIEST:
        problems.append(f"a time before {EARLIEST.year} (start {_iso(started)}, finish {_iso(finished)})")
    if finished > latest:
        problems.append(f"the finish {_iso(finished)} is after central received it ({_iso(received)}, "
                        f"tolerance {TIME_TOLERANCE_S:g} s + the node's clock ahead {max(0.0, node_ahead_s):g} s)")
    if row.log_time is not None and row.log_time != int(finished.timestamp()):
        problems.append(f"log_time {row.log_time} is not the finish {_iso(finished)}")
    if problems:
        return Check("times", False, "; ".join(problems))
    return Check("times", True, f"{_iso(started)} … {_iso(finished)}")


def _qr_checks(row: TseTransaction) -> list[Check]:
    if not row.qr:
        return [Check("qr", None, "no QR code in the record")]
    verification = verify_receipt_qr(row.qr)
    qr = verification.qr
    if qr is None or not verification.valid:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in verification.checks if c.ok is False) or "not verified"
        return [Check("qr", False, f"does not verify on its own: {failed}")]
    try:
        qr_start, qr_end = parse_iso_time(qr.start, field="start"), parse_iso_time(qr.end, field="end")
    except ReceiptQrError as exc:  # parse_receipt_qr checked them already
        return [Check("qr", False, str(exc))]
    started, finished = row.started_at, row.finished_at
    pairs = (
        ("clientId", qr.client_id, row.client_id), ("processType", qr.process_type, row.process_type),
        ("processData", qr.process_data, row.process_data), ("transactionNumber", qr.transaction_number, row.tx_number),
        ("signatureCounter", qr.signature_counter, row.signature_counter),
        ("start", qr_start, (int(started.timestamp()), started.microsecond // 1000)),
        ("end", qr_end, (int(finished.timestamp()), finished.microsecond // 1000)),
        ("algorithm", qr.algorithm, row.algorithm), ("logTimeFormat", qr.log_time_format, row.time_format),
        ("signature", qr.signature, _b64(row.signature)), ("publicKey", qr.public_key, _b64(row.public_key)),
    )  # fmt: skip
    differ = [name for name, in_qr, in_row in pairs if in_qr != in_row]
    if differ:
        return [Check("qr", False, f"verifies, but its {', '.join(differ)} differ from the record's")]
    return [Check("qr", True, "verifies and matches the record")]


def _total_check(row: TseTransaction) -> Check | None:
    if row.total is None or row.process_type.lower() != PROCESS_TYPE.lower():
        return None
    try:
        signed = parse_kassenbeleg_v1(row.process_data).total
    except ProcessDataError as exc:
        return Check("total", False, f"the processData is not a valid {PROCESS_TYPE}: {exc}")
    if Decimal(row.total) != signed:
        return Check("total", False, f"{row.total.normalize():f} is not the signed processData's total {signed}")
    return Check("total", True, f"{signed}")


# --- a TSE's sequence --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeqRow:
    """What the sequence checks look at."""

    id: int
    tx_number: int
    start_counter: int | None
    signature_counter: int | None
    started_at: datetime

    @property
    def counters(self) -> tuple[int, ...]:
        return tuple(c for c in (self.start_counter, self.signature_counter) if c is not None)


SEQ_COLUMNS = (TseTransaction.id, TseTransaction.tx_number, TseTransaction.start_counter,
                TseTransaction.signature_counter, TseTransaction.started_at)  # fmt: skip


def seq_row(row: Any) -> SeqRow:
    return SeqRow(row.id, row.tx_number, row.start_counter, row.signature_counter, row.started_at)


def sequence_checks(row: SeqRow, previous: SeqRow | None, following: SeqRow | None,
                    twins: Iterable[SeqRow] = ()) -> list[Check]:  # fmt: skip
    """``previous`` / ``following``: the nearest rows of the TSE by transaction number that have a start counter;
    ``twins``: other rows of the TSE with one of this row's counters."""
    checks: list[Check] = []
    if row.start_counter is not None and row.signature_counter is not None:
        if row.start_counter < row.signature_counter:
            checks.append(Check("counters", True, f"start {row.start_counter} < finish {row.signature_counter}"))
        else:
            checks.append(Check("counters", False, f"the start's signature counter {row.start_counter} is not below "
                                                   f"the finish's {row.signature_counter}"))  # fmt: skip
    if row.start_counter is None:
        checks.append(Check("sequence", None, "not checked: no start counter"))
    else:
        problems = []
        if previous is not None and previous.start_counter is not None and previous.start_counter >= row.start_counter:
            problems.append(f"start counter {row.start_counter} of transaction {row.tx_number} is not above "
                            f"{previous.start_counter} of transaction {previous.tx_number}")
        if following is not None and following.start_counter is not None and \
                following.start_counter <= row.start_counter:  # fmt: skip
            problems.append(f"start counter {row.start_counter} of transaction {row.tx_number} is not below "
                            f"{following.start_counter} of transaction {following.tx_number}")
        checks.append(Check("sequence", False, "counter regression: " + "; ".join(problems)) if problems else
                      Check("sequence", True, "start counters increase with the transaction numbers"))
        tolerance = timedelta(seconds=TIME_TOLERANCE_S)
        late = [f"transaction {p.tx_number} started at {_iso(p.started_at)}" for p in (previous,)
                if p is not None and p.started_at > row.started_at + tolerance]
        late += [f"transaction {f.tx_number} started at {_iso(f.started_at)}" for f in (following,)
                 if f is not None and row.started_at > f.started_at + tolerance]
        if late:
            checks.append(Check("start_time", False, f"transaction {row.tx_number} started at "
                                                     f"{_iso(row.started_at)}, out of order with {'; '.join(late)}"))
    shared = [f"{c} also in transaction {t.tx_number}" for t in sorted(twins, key=lambda t: t.tx_number)
              for c in row.counters if c in t.counters]
    if shared:
        checks.append(Check("duplicate", False, "signature counter used twice: " + "; ".join(shared)))
    return checks


def verdict(checks: Sequence[Check]) -> tuple[str, str | None]:
    """(``valid``, None) or (``invalid``, every failed check and an unchecked signature, as text)."""
    if all_valid(checks, required=("signature",)):
        return VALID, None
    bad = [c for c in checks if c.ok is False or (c.name == "signature" and c.ok is None)]
    return INVALID, "; ".join(f"{c.name}: {c.detail}" for c in bad)


# --- at apply time -----------------------------------------------------------------------------------------------


def node_clock_ahead_s(session: Session, node_id: str) -> float:
    cache: dict[str, float] = session.info.setdefault("floorgate_tse_node_ahead", {})
    if node_id not in cache:
        node = session.get(Node, node_id)
        skew = node.clock_skew_s if node is not None else None  # central receive − node send: < 0 when ahead
        cache[node_id] = max(0.0, -skew) if skew is not None else 0.0
    return cache[node_id]


def _neighbour(session: Session, serial: str, number: int, *, below: bool) -> SeqRow | None:
    t = TseTransaction
    q = select(*SEQ_COLUMNS).where(t.tse_serial == serial, t.start_counter.is_not(None))
    q = q.where(t.tx_number < number).order_by(t.tx_number.desc()) if below else \
        q.where(t.tx_number > number).order_by(t.tx_number.asc())  # fmt: skip
    found = session.execute(q.limit(1)).first()
    return seq_row(found) if found is not None else None


def _twins(session: Session, serial: str, row: SeqRow) -> list[SeqRow]:
    if not row.counters:
        return []
    t = TseTransaction
    found = session.execute(select(*SEQ_COLUMNS).where(
        t.tse_serial == serial, t.id != row.id,
        or_(t.signature_counter.in_(row.counters), t.start_counter.in_(row.counters)))).all()  # fmt: skip
    return [seq_row(r) for r in found if r.tx_number is not None]


def _context(session: Session, row: TseTransaction) -> tuple[SeqRow | None, SeqRow | None, list[SeqRow]]:
    """The nearest rows with a start counter below and above ``row`` (which has a serial and a number), and the
    rows sharing one of its counters — as held now."""
    assert row.tse_serial is not None
    assert row.tx_number is not None
    return (_neighbour(session, row.tse_serial, row.tx_number, below=True),
            _neighbour(session, row.tse_serial, row.tx_number, below=False),
            _twins(session, row.tse_serial, seq_row(row)))  # fmt: skip


def _verify_in_place(session: Session, row: TseTransaction,
                     context: tuple[SeqRow | None, SeqRow | None, list[SeqRow]]) -> None:  # fmt: skip
    previous, following, twins = context
    assert row.tse_serial is not None
    anchor = registry.anchor_for(session, row.tse_serial)
    checks = row_checks(row, anchor, node_ahead_s=node_clock_ahead_s(session, row.node_id))
    row.verified, row.verify_error = verdict(checks + sequence_checks(seq_row(row), previous, following, twins))


def store_transaction(session: Session, row: TseTransaction, *, now: datetime) -> TseTransaction:
    """Add ``row`` (from ``records.tse_row``) verified, re-verify the rows it affects and move the gap marks.

    The same transaction held already (same TSE, number and signature — a record sent again) is not stored twice:
    the row held is returned. Another transaction with the same TSE and number raises BadTseRecord.

    The neighbours are verified again only when that can change their verdict: when the new row's sequence checks
    fail (a regression or a counter used twice involves them), or when they are not valid now (their problem may
    have been with the row that is no longer their neighbour). A valid neighbour next to a row that fits stays
    valid — so the usual case costs one signature check, not three."""
    if row.tse_serial is not None and row.tx_number is not None:
        t = TseTransaction
        held = session.execute(select(t).where(t.tse_serial == row.tse_serial, t.tx_number == row.tx_number)
                               ).scalar_one_or_none()
        if held is not None:
            if held.signature == row.signature and held.tse_failed == row.tse_failed:
                return held
            raise BadTseRecord(
                f"data.tx_number: transaction {row.tx_number} of TSE {row.tse_serial} is already held (record "
                f"{held.record_id} of node {held.node_id}) with another signature: two transactions with one number")
    session.add(row)
    session.flush()
    if row.tse_serial is not None and not row.tse_failed:
        registry.see(session, row, now)  # pins a TSE seen for the first time (the anchor its rows verify with)
    if row.tse_serial is None or row.tx_number is None:
        return row  # a failed sale without a number: nothing to place in a sequence
    context = _context(session, row)
    if not row.tse_failed:
        _verify_in_place(session, row, context)
    previous, following, twins = context
    fits = all(c.ok is not False for c in sequence_checks(seq_row(row), previous, following, twins))
    affected = {r.id for r in (previous, following, *twins) if r is not None}
    for other in session.execute(select(TseTransaction).where(TseTransaction.id.in_(affected))).scalars():
        if other.tse_failed or other.tse_serial is None or other.tx_number is None:
            continue
        if not fits or other.verified != VALID:
            _verify_in_place(session, other, _context(session, other))
    _move_gap_marks(session, row, now)
    return row


def _move_gap_marks(session: Session, row: TseTransaction, now: datetime) -> None:
    t = TseTransaction
    assert row.tse_serial is not None
    assert row.tx_number is not None
    below = session.execute(select(t.tx_number).where(t.tse_serial == row.tse_serial, t.tx_number < row.tx_number)
                            .order_by(t.tx_number.desc()).limit(1)).scalar_one_or_none()  # fmt: skip
    above = session.execute(select(t).where(t.tse_serial == row.tse_serial, t.tx_number > row.tx_number)
                            .order_by(t.tx_number.asc()).limit(1)).scalar_one_or_none()  # fmt: skip
    missing = row.tx_number - below - 1 if below is not None else 0
    if missing > 0:
        # a gap split by a late record keeps the time it was first seen
        split = above is not None and above.gap_before is not None and above.gap_since is not None
        row.gap_before, row.gap_since = missing, above.gap_since if split else now  # type: ignore[union-attr]
    else:
        row.gap_before, row.gap_since = None, None
    if above is not None:
        assert above.tx_number is not None
        left = above.tx_number - row.tx_number - 1
        if left > 0:
            above.gap_before, above.gap_since = left, above.gap_since or now
        else:
            above.gap_before, above.gap_since = None, None


__all__ = [
    "EARLIEST", "INVALID", "SEQ_COLUMNS", "TIME_TOLERANCE_S", "TSE_FAILED", "VALID", "SeqRow", "finish_message",
    "node_clock_ahead_s", "row_checks", "seq_row", "sequence_checks", "store_transaction", "verdict",
]  # fmt: skip
