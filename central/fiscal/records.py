"""A ``tse_transaction`` record → a ``TseTransaction`` row, the fields exactly as the node sent them.

The record's ``data`` is ``sync.records.tse_transaction.TseTransactionPayload`` (the contract the node's sales API
and central code against; ``device`` is the TSE's id on the node): its ``from_payload`` checks every field — a
missing or mistyped field, text longer than its column or holding NUL, base64 that is not, and the fields the cash
register controls by the rules the node's POS API applies before its TSE signs (``sync.sales``). Here the two times
are read (ISO 8601, ``protocols.tse.qr``) and the defaults of a failed sale applied: its times are the record's
time, its process type and data empty.

What cannot be stored as it came raises :class:`BadTseRecord` naming ``data.<field>``: the record goes to the
quarantine (``central.ingest.handlers.tse_transaction``). What is well-formed but does not verify (a wrong
signature, an unknown algorithm, a serial that is not the key's) is stored and marked ``invalid`` by ``verify``:
that is evidence, not garbage.
"""

from __future__ import annotations

from datetime import UTC, datetime

from central.db.models import TseTransaction
from central.db.types import utc_from_ns
from central.db.values import decimal_or_none
from protocols.tse.errors import ReceiptQrError
from protocols.tse.qr import parse_iso_time
from sync.envelope import Record
from sync.errors import DecodeError
from sync.records.tse_transaction import TseTransactionPayload


class BadTseRecord(Exception):
    """A ``tse_transaction`` record central cannot store as it came; ``reason`` names the field."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _time(name: str, value: str | None, default: datetime) -> datetime:
    """An ISO 8601 time of the payload (``default`` when the payload has none)."""
    if value is None:
        return default
    try:
        unix, millis = parse_iso_time(value, field=name)
    except ReceiptQrError as exc:
        raise BadTseRecord(f"data.{exc}") from None
    try:
        return datetime.fromtimestamp(unix + millis / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise BadTseRecord(f"data.{name}: {value!r} is out of range") from None


def tse_row(*, node: str, record: Record, received_at: datetime) -> TseTransaction:
    """The row for ``record`` (a ``tse_transaction``), ``verified`` still pending; raises BadTseRecord."""
    try:
        tx = TseTransactionPayload.from_payload(record.data)
    except DecodeError as exc:
        raise BadTseRecord(str(exc)) from None
    failed = tx.tse_failed
    at = utc_from_ns(record.ts_ns)
    finished_at = _time("finished_at", tx.finished_at, at)  # required of a signed sale (checked)
    started_at = _time("started_at", tx.started_at, finished_at)
    row = TseTransaction(
        node_id=node, record_id=record.record_id, device_id=record.device,
        tse_serial=tx.tse_serial.lower() if tx.tse_serial is not None else None,
        public_key=tx.public_key, algorithm=tx.algorithm,
        time_format=tx.time_format if tx.time_format is not None else "unixTime",
        client_id=tx.client_id, tx_number=tx.tx_number, signature_counter=tx.signature_counter,
        start_counter=tx.start_counter, started_at=started_at, finished_at=finished_at, log_time=tx.log_time,
        process_type=tx.process_type or "", process_data=tx.process_data or "",
        signature=tx.signature, qr=tx.qr,
        total=decimal_or_none(tx.total), currency=tx.currency,
        receipt_id=tx.receipt_id,
        tse_failed=failed, tse_error=tx.error if failed else None,
        verified="tse_failed" if failed else "pending", received_at=received_at,
    )  # fmt: skip
    if not failed and row.log_time is None:
        row.log_time = int(finished_at.timestamp())
    return row


__all__ = ["BadTseRecord", "tse_row"]
