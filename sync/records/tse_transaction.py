"""The ``tse_transaction`` record (business stream): one sale the node's TSE signed — or could not sign — through its
POS API (``edge.pos.sales``); ``device`` is the TSE's id on the node. Central checks it with
:meth:`TseTransactionPayload.from_payload` and stores and verifies it (``central.fiscal``)::

    tse_serial         hex SHA-256 of the public key            public_key    base64 of the uncompressed point
    algorithm          ecdsa-plain-SHA256 | ecdsa-plain-SHA384  time_format   unixTime (utcTime, generalizedTime)
    client_id          the cash register                         tx_number     the TSE's transaction number
    signature_counter  of the FinishTransaction                  start_counter of the StartTransaction
    started_at         ISO 8601 UTC, as in the QR code           finished_at   the same, = logTime of the finish
    log_time           unix seconds of the finish's logTime      process_type, process_data   as signed
    signature          base64 of r ‖ s (the finish)              qr            the whole ``V0;…`` text
    total              decimal string, two places                currency      ISO 4217, default EUR
    receipt_id         optional (DSFinV-K BON_ID)                tse_failed    true: the TSE failed, no signature
    error              with tse_failed: why

A failed sale (``tse_failed: true``) needs only ``client_id`` and ``error``; its signature, counters and QR code are
null, its number and serial are there when the node has them, its times may be absent (central takes the record's).

What central cannot store as it came — a missing or mistyped field, text longer than its column or holding NUL,
base64 that is not — is a ``DecodeError`` naming ``data.<field>``. The fields the cash register controls (client and
receipt id, total, currency, process type and data) are checked with ``sync.sales.check_sale_record``: the rules the
node's POS API applies before its TSE signs, so a signed sale the node took is never refused for them. That the two
times are ISO 8601 is checked where they are read (``central.fiscal.records``, with ``protocols.tse.qr``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from sync.records.base import bad, need_text, text, whole
from sync.sales import SaleError, check_sale_record

TSE_TRANSACTION: Final = "tse_transaction"
TEXT_LIMITS: Final = {"tse_serial": 128, "client_id": 64, "process_type": 64, "algorithm": 64, "time_format": 32,
                      "receipt_id": 64, "public_key": 200}  # fmt: skip  # central's columns; other text: no limit
TIME_EXAMPLE: Final = "2021-08-23T14:36:33.000Z"


@dataclass(frozen=True)
class TseTransactionPayload:
    """The ``data`` of a ``tse_transaction`` record (see the module); None: the node does not have it."""

    KIND: ClassVar[str] = TSE_TRANSACTION

    client_id: str
    tse_failed: bool = False
    error: str | None = None
    tse_serial: str | None = None
    public_key: str | None = None
    algorithm: str | None = None
    time_format: str | None = None
    tx_number: int | None = None
    signature_counter: int | None = None
    start_counter: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    log_time: int | None = None
    process_type: str | None = None
    process_data: str | None = None
    signature: str | None = None
    qr: str | None = None
    total: str | None = None
    currency: str = "EUR"
    receipt_id: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "tse_serial": self.tse_serial, "public_key": self.public_key, "algorithm": self.algorithm,
            "time_format": self.time_format, "client_id": self.client_id, "tx_number": self.tx_number,
            "signature_counter": self.signature_counter, "start_counter": self.start_counter,
            "started_at": self.started_at, "finished_at": self.finished_at, "log_time": self.log_time,
            "process_type": self.process_type, "process_data": self.process_data, "signature": self.signature,
            "qr": self.qr, "total": self.total, "currency": self.currency, "receipt_id": self.receipt_id,
            "tse_failed": self.tse_failed, "error": self.error,
        }  # fmt: skip

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> TseTransactionPayload:
        failed = data.get("tse_failed", False)
        if not isinstance(failed, bool):
            raise bad("tse_failed", f"expected true or false, got {failed!r:.40}")
        signed = not failed  # a signed sale needs every field; a failed one what the node has
        try:
            check_sale_record(data, signed=signed)
        except SaleError as exc:
            raise bad(exc.field, exc.reason) from None
        return cls(
            finished_at=_time(data, "finished_at", required=signed),
            started_at=_time(data, "started_at", required=signed),
            error=_text(data, "error", required=failed),
            tse_serial=_serial(data, required=signed),
            public_key=_base64(data, "public_key", required=signed),
            algorithm=_text(data, "algorithm", required=signed),
            time_format=_text(data, "time_format"),
            client_id=need_text(data, "client_id"),
            tx_number=whole(data, "tx_number", required=signed),
            signature_counter=whole(data, "signature_counter", required=signed),
            start_counter=whole(data, "start_counter"),
            log_time=whole(data, "log_time"),
            process_type=_text(data, "process_type", required=signed),
            process_data=_text(data, "process_data", required=signed),
            signature=_base64(data, "signature", required=signed),
            qr=_text(data, "qr"),
            total=data.get("total"),  # checked by check_sale_record: an ASCII decimal string with two places
            currency=data.get("currency", "EUR"),
            receipt_id=_text(data, "receipt_id"),
            tse_failed=failed,
        )  # fmt: skip


def _text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    return text(data, name, limit=TEXT_LIMITS.get(name), required=required)


def _base64(data: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = _text(data, name, required=required)
    if value is None:
        return None
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad(name, f"{value[:24]!r}… is not base64") from None
    return value


def _time(data: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise bad(name, "missing")
        return None
    if not isinstance(value, str):
        raise bad(name, f"expected an ISO 8601 time such as {TIME_EXAMPLE}, got {value!r:.40}")
    return value


def _serial(data: Mapping[str, Any], *, required: bool) -> str | None:
    serial = _text(data, "tse_serial", required=required)
    if serial is None:
        return None
    if len(serial) != 64 or any(c not in "0123456789abcdefABCDEF" for c in serial):
        raise bad("tse_serial", f"expected 64 hex digits (SHA-256 of the public key), got {serial!r:.80}")
    return serial


__all__ = ["TEXT_LIMITS", "TSE_TRANSACTION", "TseTransactionPayload"]
