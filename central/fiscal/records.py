"""A ``tse_transaction`` record → a ``TseTransaction`` row, the fields exactly as the node sent them.

The record's ``data`` (the contract the node's sales API and central code against; ``device`` is the TSE's id on
the node)::

    tse_serial         hex SHA-256 of the public key            public_key    base64 of the uncompressed point
    algorithm          ecdsa-plain-SHA256 | ecdsa-plain-SHA384  time_format   unixTime (utcTime, generalizedTime)
    client_id          the cash register                         tx_number     the TSE's transaction number
    signature_counter  of the FinishTransaction                  start_counter of the StartTransaction
    started_at         ISO 8601 UTC, as in the QR code           finished_at   the same, = logTime of the finish
    log_time           unix seconds of the finish's logTime      process_type, process_data   as signed
    signature          base64 of r ‖ s (the finish)              qr            the whole ``V0;…`` text
    total              decimal string                            currency      ISO 4217, default EUR
    receipt_id         optional (DSFinV-K BON_ID)                tse_failed    true: the TSE failed, no signature
    error              with tse_failed: why

A failed sale (``tse_failed: true``) needs only ``client_id`` and ``error``; its signature, counters and QR code
are null, its number and serial are kept when the node has them, its times default to the record's time.

What cannot be stored as it came — a missing or mistyped field, text longer than its column or holding NUL, base64
that is not, a time that is not ISO 8601 — raises :class:`BadTseRecord` naming ``data.<field>``: the record goes to
the quarantine (``apply``). The fields the cash register controls (client and receipt id, total, currency, process
type and data) are checked with ``sync.sales.check_sale_record`` — the same rules the node's POS API applies before
its TSE signs, so a signed sale the node took is never quarantined for them. What is well-formed but does not
verify (a wrong signature, an unknown algorithm, a serial that is not the key's) is stored and marked ``invalid`` by
``verify``: that is evidence, not garbage.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from central.db.models import TseTransaction
from central.ingest.weighings import BadWeighing, legal_decimal
from protocols.tse.errors import ReceiptQrError
from protocols.tse.qr import parse_iso_time
from sync.envelope import Record
from sync.sales import SaleError, check_sale_record

MAX_INT: Final = 2**63 - 1  # BIGINT
TEXT_LIMITS: Final = {"tse_serial": 128, "client_id": 64, "process_type": 64, "algorithm": 64, "time_format": 32,
                      "receipt_id": 64, "public_key": 200}
UNLIMITED: Final = ("process_data", "qr", "error", "signature")  # Text columns


class BadTseRecord(Exception):
    """A ``tse_transaction`` record central cannot store as it came; ``reason`` names the field."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _text(data: Mapping[str, Any], name: str, *, required: bool, default: str | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise BadTseRecord(f"data.{name}: missing")
        return default
    limit = TEXT_LIMITS.get(name)
    if not isinstance(value, str) or "\x00" in value or (limit is not None and len(value) > limit):
        expected = f"text of at most {limit} characters" if limit else "text"
        raise BadTseRecord(f"data.{name}: expected {expected} without NUL, got {value!r:.80}")
    return value


def _int(data: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = data.get(name)
    if value is None:
        if required:
            raise BadTseRecord(f"data.{name}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise BadTseRecord(f"data.{name}: expected a whole number from 0 to 2**63-1, got {value!r:.40}")
    return value


def _base64(data: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    text = _text(data, name, required=required)
    if text is None:
        return None
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadTseRecord(f"data.{name}: {text[:24]!r}… is not base64") from None
    return text


def _time(data: Mapping[str, Any], name: str, default: datetime | None) -> datetime:
    value = data.get(name)
    if value is None:
        if default is None:
            raise BadTseRecord(f"data.{name}: missing")
        return default
    if not isinstance(value, str):
        raise BadTseRecord(f"data.{name}: expected an ISO 8601 time such as 2021-08-23T14:36:33.000Z, "
                           f"got {value!r:.40}")
    try:
        unix, millis = parse_iso_time(value, field=name)
    except ReceiptQrError as exc:
        raise BadTseRecord(f"data.{exc}") from None
    try:
        return datetime.fromtimestamp(unix + millis / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise BadTseRecord(f"data.{name}: {value!r} is out of range") from None


def _serial(data: Mapping[str, Any], *, required: bool) -> str | None:
    serial = _text(data, "tse_serial", required=required)
    if serial is None:
        return None
    if len(serial) != 64 or any(c not in "0123456789abcdefABCDEF" for c in serial):
        raise BadTseRecord(f"data.tse_serial: expected 64 hex digits (SHA-256 of the public key), got {serial!r:.80}")
    return serial.lower()


def _sale_fields(data: Mapping[str, Any], *, signed: bool) -> None:
    """The register's fields, by the rules the node's POS API applies before signing (``sync.sales``)."""
    try:
        check_sale_record(data, signed=signed)
    except SaleError as exc:
        raise BadTseRecord(f"data.{exc}") from None


def _total(data: Mapping[str, Any]) -> Decimal | None:
    try:
        return legal_decimal(data, "total")  # checked by _sale_fields: an ASCII decimal string with two places
    except BadWeighing as exc:
        raise BadTseRecord(exc.reason) from None


def tse_row(*, node: str, record: Record, received_at: datetime) -> TseTransaction:
    """The row for ``record`` (a ``tse_transaction``), ``verified`` still pending; raises BadTseRecord."""
    data = record.data
    failed = data.get("tse_failed", False)
    if not isinstance(failed, bool):
        raise BadTseRecord(f"data.tse_failed: expected true or false, got {failed!r:.40}")
    signed = not failed  # a signed sale needs every field; a failed one what the node has
    _sale_fields(data, signed=signed)
    at = datetime.fromtimestamp(record.ts_ns / 1e9, UTC)
    finished_at = _time(data, "finished_at", None if signed else at)
    started_at = _time(data, "started_at", None if signed else finished_at)
    error = _text(data, "error", required=failed)
    row = TseTransaction(
        node_id=node, record_id=record.record_id, device_id=record.device,
        tse_serial=_serial(data, required=signed),
        public_key=_base64(data, "public_key", required=signed),
        algorithm=_text(data, "algorithm", required=signed),
        time_format=_text(data, "time_format", required=False, default="unixTime"),
        client_id=str(data["client_id"]),
        tx_number=_int(data, "tx_number", required=signed),
        signature_counter=_int(data, "signature_counter", required=signed),
        start_counter=_int(data, "start_counter", required=False),
        started_at=started_at, finished_at=finished_at,
        log_time=_int(data, "log_time", required=False),
        process_type=_text(data, "process_type", required=signed, default=""),
        process_data=_text(data, "process_data", required=signed, default=""),
        signature=_base64(data, "signature", required=signed),
        qr=_text(data, "qr", required=False),
        total=_total(data), currency=str(data.get("currency", "EUR")),
        receipt_id=_text(data, "receipt_id", required=False),
        tse_failed=failed, tse_error=error if failed else None,
        verified="tse_failed" if failed else "pending", received_at=received_at,
    )  # fmt: skip
    if signed and row.log_time is None:
        row.log_time = int(finished_at.timestamp())
    return row


__all__ = ["BadTseRecord", "tse_row"]
