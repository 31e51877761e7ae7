"""fiskaly SIGN DE API v2: the replies, read as pure functions — no I/O (the shapes and the requests are in
``protocols.tse.fiskaly``).

A reply that is not as the specification documents raises :class:`~protocols.tse.fiskaly.FiskalyUnavailable`
(code ``E_BAD_REPLY``) naming the call and the field. :func:`transaction_result` turns a transaction reply into a
:class:`FiskalyTransactionResult`: what the TSS signed is read back from the reply, the TR-03151 log message is
rebuilt and its signature verified here, and a FinishTransaction gets its receipt QR code.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocols.tse import crypto
from protocols.tse.api import TransactionResult, TseInfo
from protocols.tse.errors import ProcessDataError, ReceiptQrError
from protocols.tse.fiskaly import MANUFACTURER, OPERATIONS, TX_STATES, FiskalyUnavailable, signed_process
from protocols.tse.logmsg import (
    FINISH,
    OID_TRANSACTION_LOG,
    TIME_FORMATS,
    LogMessage,
    LogTime,
    TimeFormat,
    TransactionData,
)
from protocols.tse.qr import ReceiptQr, iso_time, parse_receipt_qr, verify_receipt_qr


def _bad_reply(what: str, problem: str) -> FiskalyUnavailable:
    return FiskalyUnavailable(f"fiskaly {what}: the reply is not as documented: {problem}", code="E_BAD_REPLY")


@dataclass(frozen=True)
class Tokens:
    """What ``POST /auth`` answered; times in unix seconds (``expires_at`` 0: unknown)."""

    access_token: str
    refresh_token: str
    access_expires_at: float
    refresh_expires_at: float

    def __repr__(self) -> str:  # tokens are secrets
        return f"Tokens(access_expires_at={self.access_expires_at}, refresh_expires_at={self.refresh_expires_at})"


def parse_auth(reply: object, *, now: float) -> Tokens:
    """The tokens of an auth reply: expiry ``now`` + ``*_expires_in`` (the node's clock may be off; the server's
    absolute ``*_expires_at`` only when no duration is given)."""
    body = _mapping(reply, "POST /auth")
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise _bad_reply("POST /auth", "no access_token")

    def expiry(prefix: str) -> float:
        at, within = body.get(f"{prefix}_expires_at"), body.get(f"{prefix}_expires_in")
        if isinstance(within, int | float) and not isinstance(within, bool) and within > 0:
            return now + float(within)
        if isinstance(at, int | float) and not isinstance(at, bool) and at > 0:
            return float(at)
        return 0.0

    refresh = body.get("refresh_token")
    return Tokens(access, refresh if isinstance(refresh, str) else "", expiry("access_token"),
                  expiry("refresh_token"))  # fmt: skip


@dataclass(frozen=True)
class TssReply:
    """The fields of a TSS resource floorgate uses."""

    tss_id: str
    state: str
    serial_number: bytes
    public_key: bytes
    curve: str
    algorithm: crypto.SignatureAlgorithm
    time_format: TimeFormat
    certificate_pem: bytes
    signature_counter: int
    transaction_counter: int
    description: str
    bsi_certification_id: str
    env: str
    version: str


def parse_tss(reply: object, *, what: str = "GET /tss") -> TssReply:
    """A TSS resource; :class:`FiskalyUnavailable` naming the field when it is not as documented."""
    body = _mapping(reply, what)
    public_key = _b64_field(body, "public_key", what)
    try:
        _, curve = crypto.load_public_key(public_key)
    except ValueError as exc:
        raise _bad_reply(what, f"public_key: {exc}") from None
    serial = _hex_field(body, "serial_number", what)
    if serial != crypto.serial_number(public_key):
        raise _bad_reply(what, f"serial_number {serial.hex()} is not the SHA-256 of public_key")
    return TssReply(
        tss_id=str(body.get("_id") or ""), state=str(body.get("state") or ""), serial_number=serial,
        public_key=public_key, curve=curve, algorithm=_algorithm(body.get("signature_algorithm"), what),
        time_format=_time_format(body.get("signature_timestamp_format"), what),
        certificate_pem=_certificate_pem(body.get("certificate"), what),
        signature_counter=_count(body.get("signature_counter"), "signature_counter", what, default=0),
        transaction_counter=_count(body.get("transaction_counter"), "transaction_counter", what, default=0),
        description=str(body.get("description") or ""),
        bsi_certification_id=str(body.get("bsi_certification_id") or ""),
        env=str(body.get("_env") or ""), version=str(body.get("_version") or ""),
    )  # fmt: skip


def tse_info(tss: TssReply, *, open_transactions: tuple[int, ...] = (), clients: tuple[str, ...] = ()) -> TseInfo:
    """A :class:`TseInfo` for a TSS resource. A cloud TSS runs its own self tests and keeps its own time, so neither
    is ever due; ``certified`` only for a LIVE TSS with a BSI certification id."""
    certified = bool(tss.bsi_certification_id) and tss.env == "LIVE"
    description = f"fiskaly SIGN DE cloud TSS {tss.tss_id} ({tss.env or '?'}, {tss.state or '?'}"
    description += f", {tss.bsi_certification_id})" if tss.bsi_certification_id else ", no BSI certification id)"
    return TseInfo(
        serial_number=tss.serial_number, public_key=tss.public_key, algorithm=tss.algorithm.name,
        algorithm_oid=tss.algorithm.oid, curve=tss.curve, certificate_pem=tss.certificate_pem,
        time_format=tss.time_format, description=description, manufacturer=MANUFACTURER,
        version=f"SIGN DE API {tss.version or '?'}", certified=certified, signature_counter=tss.signature_counter,
        transaction_number=tss.transaction_counter, open_transactions=open_transactions, clients=clients,
        self_test_due=False, time_update_due=False,
    )  # fmt: skip


@dataclass(frozen=True)
class TxReply:
    """The fields of a transaction resource (one revision) floorgate uses."""

    tx_id: str
    number: int
    state: str
    revision: int
    latest_revision: int
    client_id: str  # fiskaly's client UUID
    client_serial: str  # the TR-03151 clientId
    tss_serial: bytes
    time_start: int
    time_end: int | None
    operation: str  # StartTransaction | UpdateTransaction | FinishTransaction
    log_time: int
    time_format: TimeFormat
    signature_value: bytes  # plain r ‖ s
    algorithm: crypto.SignatureAlgorithm
    signature_counter: int
    public_key: bytes
    schema: Mapping[str, Any]
    qr_code_data: str


def parse_tx(reply: object, *, what: str = "PUT /tx") -> TxReply:
    """A transaction reply; :class:`FiskalyUnavailable` naming the field when it is not as documented.
    ``signature.counter`` may be a number or a string (a known issue fiskaly documents); a DER signature value is
    turned into plain ``r ‖ s``."""
    body = _mapping(reply, what)
    log = _mapping(body.get("log"), what, "log")
    signature = _mapping(body.get("signature"), what, "signature")
    operation = OPERATIONS.get(str(log.get("operation")))
    if operation is None:
        raise _bad_reply(what, f"log.operation {log.get('operation')!r} is not Start, Update or Finish")
    state = str(body.get("state"))
    if state not in TX_STATES:
        raise _bad_reply(what, f"state {state!r} is not one of {', '.join(TX_STATES)}")
    public_key = _b64_field(signature, "public_key", what, prefix="signature.")
    try:
        key, _ = crypto.load_public_key(public_key)
    except ValueError as exc:
        raise _bad_reply(what, f"signature.public_key: {exc}") from None
    value = _b64_field(signature, "value", what, prefix="signature.")
    time_end = body.get("time_end")
    schema = body.get("schema") or {}
    qr_text = body.get("qr_code_data") or ""
    return TxReply(
        tx_id=str(body.get("_id") or ""), number=_count(body.get("number"), "number", what),
        state=state, revision=_count(body.get("revision"), "revision", what),
        latest_revision=_count(body.get("latest_revision"), "latest_revision", what),
        client_id=str(body.get("client_id") or ""), client_serial=_text(body, "client_serial_number", what),
        tss_serial=_hex_field(body, "tss_serial_number", what),
        time_start=_count(body.get("time_start"), "time_start", what),
        time_end=None if time_end is None else _count(time_end, "time_end", what), operation=operation,
        log_time=_count(log.get("timestamp"), "log.timestamp", what),
        time_format=_time_format(log.get("timestamp_format"), what, "log.timestamp_format"),
        signature_value=plain_signature(value, key.curve.key_size), algorithm=_algorithm(signature.get("algorithm"),
                                                                                        what, "signature.algorithm"),
        signature_counter=_count(signature.get("counter"), "signature.counter", what), public_key=public_key,
        schema=schema if isinstance(schema, Mapping) else {}, qr_code_data=qr_text if isinstance(qr_text, str) else "",
    )  # fmt: skip


def plain_signature(value: bytes, key_bits: int) -> bytes:
    """``r ‖ s`` for a signature value that is plain already or DER (``SEQUENCE {r, s}``)."""
    size = (key_bits + 7) // 8
    if len(value) == 2 * size:
        return value
    try:
        return crypto.der_to_plain(value, size)
    except ValueError:
        return value  # neither: left as it is, and its verification fails and says so


@dataclass(frozen=True)
class FiskalyTransactionResult(TransactionResult):
    """A :class:`TransactionResult` with what fiskaly adds: the transaction's UUID and revision, its state, the
    receipt QR code (fiskaly's ``qr_code_data`` when it sent one, else built from the reply; FinishTransaction
    only), and whether the signature verified here over the rebuilt log message (``log_message`` is then that
    message; empty when it did not verify — the TSS's export holds the authoritative copy)."""

    tx_id: str = ""
    revision: int = 0
    state: str = ""
    qr_code_data: str = ""
    verified: bool = False
    problem: str = ""  # what did not fit: the signature not verifying, fiskaly's QR code not verifying …


def transaction_result(
    tx: TxReply, *, client_id: str, sent_process_type: str = "", sent_process_data: bytes = b""
) -> FiskalyTransactionResult:
    """The result of one upsert: what the TSS signed (read back from the reply: fiskaly's QR code of a finish, else
    the echoed schema, else what was sent), its log message rebuilt and verified, and the receipt QR code of a
    FinishTransaction (fiskaly's ``qr_code_data`` when it verifies, else the one built from the reply)."""
    problems: list[str] = []
    qr = None
    if tx.qr_code_data and tx.operation == FINISH:
        try:
            qr = parse_receipt_qr(tx.qr_code_data)
        except ReceiptQrError as exc:
            problems.append(f"qr_code_data is not a receipt QR code ({exc})")
    if qr is not None:
        process_type, process_data = qr.process_type, qr.process_data.encode()
    else:
        try:
            process_type, process_data = signed_process(tx.schema)
        except ProcessDataError as exc:
            problems.append(f"the echoed schema cannot be read ({exc}); assuming what was sent was signed")
            process_type, process_data = sent_process_type, sent_process_data
    message = LogMessage(
        certified_data_type=OID_TRANSACTION_LOG,
        certified_data=TransactionData(operation_type=tx.operation, client_id=tx.client_serial,
                                       process_data=process_data, process_type=process_type,
                                       transaction_number=tx.number),
        serial_number=tx.tss_serial, signature_algorithm=tx.algorithm.oid, signature_counter=tx.signature_counter,
        log_time=LogTime.of(tx.time_format, tx.log_time), signature_value=tx.signature_value,
    )  # fmt: skip
    verified = False
    if tx.tss_serial != crypto.serial_number(tx.public_key):
        problems.append(f"tss_serial_number {tx.tss_serial.hex()} is not the SHA-256 of signature.public_key")
    else:
        key, _ = crypto.load_public_key(tx.public_key)
        try:
            verdict = crypto.verify_plain(key, tx.algorithm, tx.signature_value, message.signed_bytes())
        except ValueError as exc:  # a field the log message cannot hold (a non-ASCII clientId …)
            verdict = str(exc)
        verified = not verdict
        if verdict:
            problems.append(f"the signature {verdict} over the rebuilt {tx.operation} log message")
    qr_text = ""
    if tx.operation == FINISH:
        built = ReceiptQr(
            client_id=tx.client_serial, process_type=process_type, process_data=process_data.decode("ascii", "replace"),
            transaction_number=tx.number, signature_counter=tx.signature_counter, start=iso_time(tx.time_start),
            end=iso_time(tx.log_time), algorithm=tx.algorithm.name, log_time_format=tx.time_format,
            signature=tx.signature_value, public_key=tx.public_key,
        ).build()  # fmt: skip
        candidates = [text for text in (tx.qr_code_data, built) if text]
        qr_text = next((text for text in candidates if verify_receipt_qr(text).valid), candidates[0])
        if tx.qr_code_data and qr_text != tx.qr_code_data:
            problems.append("fiskaly's qr_code_data does not verify; the QR code was built from the reply")
    return FiskalyTransactionResult(
        operation=tx.operation, client_id=client_id, transaction_number=tx.number,
        signature_counter=tx.signature_counter, log_time=tx.log_time, time_format=tx.time_format,
        start_time=tx.time_start, signature_value=tx.signature_value, serial_number=tx.tss_serial,
        algorithm=tx.algorithm.name, process_type=process_type, process_data=process_data,
        log_message=message.encode() if verified else b"", tx_id=tx.tx_id, revision=tx.revision, state=tx.state,
        qr_code_data=qr_text, verified=verified, problem="; ".join(problems),
    )  # fmt: skip


# --- field readers ---------------------------------------------------------------------------------------------------


def _mapping(value: object, what: str, field: str = "") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad_reply(what, f"{field or 'the body'} is not a JSON object")
    return cast(Mapping[str, Any], value)


def _text(body: Mapping[str, Any], field: str, what: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise _bad_reply(what, f"{field} is missing or empty")
    return value


def _count(value: object, field: str, what: str, *, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise _bad_reply(what, f"{field} {value!r} is not a whole number")


def _b64_field(body: Mapping[str, Any], field: str, what: str, *, prefix: str = "") -> bytes:
    text = body.get(field)
    try:
        if not isinstance(text, str) or not text:
            raise ValueError
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_reply(what, f"{prefix}{field} is not base64") from None


def _hex_field(body: Mapping[str, Any], field: str, what: str) -> bytes:
    text = body.get(field)
    try:
        if not isinstance(text, str):
            raise ValueError
        raw = bytes.fromhex(text)
    except ValueError:
        raise _bad_reply(what, f"{field} {text!r} is not hex") from None
    if len(raw) != 32:
        raise _bad_reply(what, f"{field} has {len(raw)} bytes, a TSE serial number has 32 (SHA-256)")
    return raw


def _algorithm(name: object, what: str, field: str = "signature_algorithm") -> crypto.SignatureAlgorithm:
    algorithm = crypto.ALGORITHMS.get(str(name))
    if algorithm is None:
        raise _bad_reply(what, f"{field} {name!r} is not one of {', '.join(crypto.ALGORITHMS)}")
    return algorithm


def _time_format(name: object, what: str, field: str = "signature_timestamp_format") -> TimeFormat:
    for known in TIME_FORMATS:
        if name == known:
            return known
    raise _bad_reply(what, f"{field} {name!r} is not one of {', '.join(TIME_FORMATS)}")


def _certificate_pem(value: object, what: str) -> bytes:
    """The TSS certificate ("base64-encoded"): base64 of a PEM text or of DER, given back as PEM."""
    if not value:
        return b""
    try:
        raw = base64.b64decode(str(value), validate=True)
        if raw.lstrip().startswith(b"-----BEGIN"):
            x509.load_pem_x509_certificate(raw)
            return raw
        return x509.load_der_x509_certificate(raw).public_bytes(serialization.Encoding.PEM)
    except (binascii.Error, ValueError):
        raise _bad_reply(what, "certificate is neither a base64 PEM nor a base64 DER X.509 certificate") from None


__all__ = [
    "FiskalyTransactionResult", "Tokens", "TssReply", "TxReply", "parse_auth", "parse_tss", "parse_tx",
    "plain_signature", "transaction_result", "tse_info",
]  # fmt: skip
