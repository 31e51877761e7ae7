"""The receipt QR code (DSFinV-K, version ``V0``): build it, parse it, and verify its signature offline.

    V0;<clientId>;<processType>;<processData>;<transactionNumber>;<signatureCounter>;<start>;<end>;
       <algorithm>;<logTimeFormat>;<signature, base64>;<public key, base64>

    V0;ERS 8cb8…;Kassenbeleg-V1;Beleg^21.42_0.00_0.00_0.00_0.00^21.42:Unbar;1;31;2021-08-23T14:36:27.000Z;
       2021-08-23T14:36:33.000Z;ecdsa-plain-SHA256;unixTime;TGnW…7w==;BGFK…/g=

``start`` / ``end`` are ISO 8601 in UTC (``YYYY-MM-DDThh:mm:ss.fffZ``). A QR code carries everything needed to
check the receipt: the signature is that of the *FinishTransaction* log message, which :func:`rebuild_log_message`
puts together from the fields — certifiedDataType transaction log, serialNumber = SHA-256 of the public key in the
QR code, signatureAlgorithm from the algorithm's name, logTime = ``end`` in ``logTimeFormat`` (unixTime: whole
seconds; utcTime ``YYMMDDhhmmssZ``; generalizedTime ``YYYYMMDDhhmmss[.fff]Z``). processData may itself contain
``;`` (orders): the first three and the last eight fields are fixed, processData is what lies between.

:func:`verify_receipt_qr` never raises on bad input; it returns a :class:`QrVerification` with one
:class:`~protocols.tse.report.Check` per aspect: ``format`` (fields, numbers, times, canonical base64),
``algorithm``, ``public_key`` (a point on a TSE curve), ``log_time_format``, ``times`` (start ≤ end; with unixTime
the printed end has no milliseconds, since the signed logTime has none), ``process_data`` (Kassenbeleg-V1 syntax)
and ``signature``. Only ``end`` is signed here: ``start`` is the logTime of the StartTransaction, another message.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time
from dataclasses import dataclass
from typing import Any, Final

from protocols.tse import crypto
from protocols.tse.errors import ProcessDataError, ReceiptQrError
from protocols.tse.logmsg import FINISH, OID_TRANSACTION_LOG, TIME_FORMATS, LogMessage, LogTime, TransactionData
from protocols.tse.processdata import PROCESS_TYPE, parse_kassenbeleg_v1
from protocols.tse.report import Check, all_valid, format_checks

VERSION: Final = "V0"
FIELD_NAMES: Final = (
    "version", "clientId", "processType", "processData", "transactionNumber", "signatureCounter", "start", "end",
    "algorithm", "logTimeFormat", "signature", "publicKey",
)  # fmt: skip
_ISO: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})",
                         re.ASCII)
_DIGITS: Final = re.compile(r"\d{1,20}", re.ASCII)


def iso_time(unix: int, millis: int = 0) -> str:
    """``2021-08-23T14:36:33.000Z`` for a unix time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{millis:03d}Z"


def parse_iso_time(text: str, *, field: str = "time") -> tuple[int, int]:
    """(unix seconds, milliseconds) of an ISO 8601 time with ``Z`` or an offset."""
    match = _ISO.fullmatch(text)
    if not match:
        raise ReceiptQrError(f"{text!r} is not an ISO 8601 time like 2021-08-23T14:36:33.000Z", field=field)
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        raise ReceiptQrError(f"{text!r} is not a valid date and time", field=field)
    unix = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = match[8]
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        unix -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    millis = int((match[7] or "0")[:3].ljust(3, "0"))
    return unix, millis


def _b64(text: str, field: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ReceiptQrError(f"{text[:24]!r}… is not base64", field=field) from None
    if base64.b64encode(raw).decode() != text:
        raise ReceiptQrError("is not canonical base64 (padding bits or padding characters altered)", field=field)
    return raw


@dataclass(frozen=True)
class ReceiptQr:
    """The fields of a ``V0`` receipt QR code, as printed (times as their text)."""

    client_id: str
    process_type: str
    process_data: str
    transaction_number: int
    signature_counter: int
    start: str
    end: str
    algorithm: str
    log_time_format: str
    signature: bytes
    public_key: bytes
    version: str = VERSION

    def build(self) -> str:
        return ";".join([
            self.version, self.client_id, self.process_type, self.process_data, str(self.transaction_number),
            str(self.signature_counter), self.start, self.end, self.algorithm, self.log_time_format,
            base64.b64encode(self.signature).decode(), base64.b64encode(self.public_key).decode(),
        ])  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "client_id": self.client_id, "process_type": self.process_type,
            "process_data": self.process_data, "transaction_number": self.transaction_number,
            "signature_counter": self.signature_counter, "start": self.start, "end": self.end,
            "algorithm": self.algorithm, "log_time_format": self.log_time_format,
            "signature": base64.b64encode(self.signature).decode(),
            "public_key": base64.b64encode(self.public_key).decode(),
        }  # fmt: skip


def parse_receipt_qr(text: str) -> ReceiptQr:
    """The fields of a receipt QR code; :class:`ReceiptQrError` naming the field that is malformed."""
    text = text.strip()
    parts = text.split(";")
    if len(parts) < len(FIELD_NAMES):
        raise ReceiptQrError(f"{len(parts)} ';'-separated fields, {len(FIELD_NAMES)} expected "
                             f"({';'.join(FIELD_NAMES)})", field="format")  # fmt: skip
    parts = [*parts[:3], ";".join(parts[3 : len(parts) - 8]), *parts[len(parts) - 8 :]]
    values = dict(zip(FIELD_NAMES, parts, strict=True))
    if values["version"] != VERSION:
        raise ReceiptQrError(f"{values['version']!r}, only {VERSION} is defined", field="version")
    for name in ("clientId", "processType", "processData", "algorithm", "logTimeFormat"):
        if not values[name]:
            raise ReceiptQrError("is empty", field=name)
    numbers: dict[str, int] = {}
    for name in ("transactionNumber", "signatureCounter"):
        if not _DIGITS.fullmatch(values[name]):
            raise ReceiptQrError(f"{values[name]!r} is not a whole number", field=name)
        numbers[name] = int(values[name])
    for name in ("start", "end"):
        parse_iso_time(values[name], field=name)
    return ReceiptQr(
        client_id=values["clientId"], process_type=values["processType"], process_data=values["processData"],
        transaction_number=numbers["transactionNumber"], signature_counter=numbers["signatureCounter"],
        start=values["start"], end=values["end"], algorithm=values["algorithm"],
        log_time_format=values["logTimeFormat"], signature=_b64(values["signature"], "signature"),
        public_key=_b64(values["publicKey"], "publicKey"),
    )  # fmt: skip


def rebuild_log_message(qr: ReceiptQr) -> LogMessage:
    """The FinishTransaction log message the QR code's signature is over (``ValueError`` if it cannot be built)."""
    algorithm = crypto.ALGORITHMS.get(qr.algorithm)
    if algorithm is None:
        raise ValueError(f"unknown algorithm {qr.algorithm!r}")
    if qr.log_time_format not in TIME_FORMATS:
        raise ValueError(f"unknown logTimeFormat {qr.log_time_format!r}")
    end, millis = parse_iso_time(qr.end, field="end")
    time_format = next(f for f in TIME_FORMATS if f == qr.log_time_format)
    data = TransactionData(
        operation_type=FINISH, client_id=qr.client_id, process_data=qr.process_data.encode(),
        process_type=qr.process_type, transaction_number=qr.transaction_number,
    )  # fmt: skip
    return LogMessage(
        certified_data_type=OID_TRANSACTION_LOG, certified_data=data, serial_number=crypto.serial_number(qr.public_key),
        signature_algorithm=algorithm.oid, signature_counter=qr.signature_counter,
        log_time=LogTime.of(time_format, end, millis=millis), signature_value=qr.signature,
    )  # fmt: skip


@dataclass(frozen=True)
class QrVerification:
    """What was checked in one receipt QR code; ``valid`` only when the signature verified and nothing failed."""

    text: str
    checks: tuple[Check, ...]
    qr: ReceiptQr | None
    serial_hex: str | None

    @property
    def valid(self) -> bool:
        return all_valid(self.checks, required=("format", "signature"))

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.ok is False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "receipt-qr", "valid": self.valid, "serial": self.serial_hex,
            "checks": [c.as_dict() for c in self.checks], "fields": self.qr.as_dict() if self.qr else None,
        }  # fmt: skip

    def lines(self) -> list[str]:
        head = f"receipt QR code: {'VALID' if self.valid else 'INVALID'}"
        if self.qr:
            head += f" (client {self.qr.client_id}, transaction {self.qr.transaction_number}, " \
                    f"signature counter {self.qr.signature_counter})"  # fmt: skip
        return [head, *format_checks(self.checks)]


def verify_receipt_qr(text: str) -> QrVerification:
    """Check one receipt QR code entirely offline; never raises on bad input."""
    checks: list[Check] = []
    try:
        qr = parse_receipt_qr(text)
    except ReceiptQrError as exc:
        checks.append(Check("format", False, str(exc)))
        checks.append(Check("signature", None, "not checked: the QR code cannot be read"))
        return QrVerification(text, tuple(checks), None, None)
    checks.append(Check("format", True, f"{VERSION}, {len(FIELD_NAMES)} fields"))
    algorithm = crypto.ALGORITHMS.get(qr.algorithm)
    if algorithm is None:
        checks.append(Check("algorithm", False, f"{qr.algorithm!r} is not a TR-03151 algorithm "
                                                f"({', '.join(crypto.ALGORITHMS)})"))  # fmt: skip
    else:
        checks.append(Check("algorithm", True, f"{algorithm.name} ({algorithm.oid})"))
    key: Any = None
    serial_hex = crypto.serial_number(qr.public_key).hex()
    try:
        key, curve = crypto.load_public_key(qr.public_key)
        checks.append(Check("public_key", True, f"{curve} point, {len(qr.public_key)} bytes; TSE serial "
                                                f"(SHA-256 of the key) {serial_hex}"))  # fmt: skip
    except ValueError as exc:
        checks.append(Check("public_key", False, str(exc)))
    format_ok = qr.log_time_format in TIME_FORMATS
    checks.append(Check("log_time_format", format_ok, qr.log_time_format if format_ok else
                        f"{qr.log_time_format!r} is not one of {', '.join(TIME_FORMATS)}"))  # fmt: skip
    start, _ = parse_iso_time(qr.start, field="start")
    end, end_millis = parse_iso_time(qr.end, field="end")
    if start > end:
        checks.append(Check("times", False, f"start {qr.start} is after end {qr.end}"))
    elif end_millis and qr.log_time_format == "unixTime":
        checks.append(Check("times", False, f"end {qr.end} has milliseconds, but the signed logTime (unixTime) has "
                                            "whole seconds: the printed end is not the signed one"))  # fmt: skip
    else:
        checks.append(Check("times", True, f"start {qr.start} ≤ end {qr.end} (end = logTime, signed; start is not "
                                           "part of this signature)"))  # fmt: skip
    checks.append(_process_data_check(qr))
    if algorithm is None or key is None or not format_ok:
        checks.append(Check("signature", None, "not checked: the algorithm, public key or logTime format is unusable"))
    else:
        try:
            message = rebuild_log_message(qr)
        except ValueError as exc:
            checks.append(Check("signature", False, f"the log message cannot be rebuilt: {exc}"))
            return QrVerification(text, tuple(checks), qr, serial_hex)
        problem = crypto.verify_plain(key, algorithm, qr.signature, message.signed_bytes())
        where = f"FinishTransaction log message of transaction {qr.transaction_number}, signature counter " \
                f"{qr.signature_counter}, logTime {message.log_time.text or message.log_time.unix}"  # fmt: skip
        if problem:
            checks.append(Check("signature", False, f"{problem} over the {where} rebuilt from the QR fields "
                                                    "(a field or the signature was changed)"))  # fmt: skip
        else:
            checks.append(Check("signature", True, f"verifies over the {where}"))
    return QrVerification(text, tuple(checks), qr, serial_hex)


def _process_data_check(qr: ReceiptQr) -> Check:
    if qr.process_type.lower() != PROCESS_TYPE.lower():
        return Check("process_data", None, f"not checked: processType {qr.process_type!r} is not {PROCESS_TYPE}")
    try:
        beleg = parse_kassenbeleg_v1(qr.process_data)
    except ProcessDataError as exc:
        return Check("process_data", False, f"not a valid {PROCESS_TYPE} processData: {exc}")
    spelled = "" if qr.process_type == PROCESS_TYPE else f"; processType spelled {qr.process_type!r}"
    return Check("process_data", True, f"{beleg.kind}, total {beleg.total}, {len(beleg.payments)} payment(s){spelled}")


__all__ = [
    "FIELD_NAMES", "VERSION", "QrVerification", "ReceiptQr", "iso_time", "parse_iso_time", "parse_receipt_qr",
    "rebuild_log_message", "verify_receipt_qr",
]  # fmt: skip
