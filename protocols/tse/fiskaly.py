"""fiskaly SIGN DE API v2 (a cloud TSE): the request bodies and the replies, as pure functions — no I/O.

The HTTP client that uses them is ``edge.pos.fiskaly.FiskalyTse`` (``protocols`` may not import an HTTP library).
Shapes follow fiskaly's OpenAPI specification "fiskaly SIGN DE API" 2.2.2 (``sign-de-v2.json``)::

    POST /api/v2/auth                 {api_key, api_secret} | {refresh_token}
                                      → {access_token, access_token_expires_in, access_token_expires_at,
                                         refresh_token, refresh_token_expires_in, …}
    GET  /api/v2/tss/{tss_id}         → {serial_number (hex), public_key (base64), certificate (base64),
                                         signature_algorithm, signature_timestamp_format, signature_counter,
                                         transaction_counter, state, bsi_certification_id?, _env, _version, …}
    PUT  /api/v2/tss/{tss_id}/client/{client_id}      {serial_number}            (needs admin authentication)
    PUT  /api/v2/tss/{tss_id}/tx/{tx_id}?tx_revision=1  {state: ACTIVE, client_id}
    PUT  /api/v2/tss/{tss_id}/tx/{tx_id}?tx_revision=n  {state: ACTIVE | FINISHED, client_id,
                                                          schema: {standard_v1: {receipt: {…}}} | {raw: {…}}}
                                      → {_id, number, state, revision, latest_revision, time_start, time_end?,
                                         client_id, client_serial_number, tss_serial_number, schema,
                                         log: {operation: Start|Update|Finish, timestamp, timestamp_format},
                                         signature: {value, algorithm, counter, public_key}, qr_code_data?}
    error (4xx / 5xx)                 {status_code, error, code: "E_…", message}

The TR-03151 ``clientId`` in the log messages is the fiskaly client's ``serial_number`` (the ERS serial, e.g.
``KASSE-1``); fiskaly's ``client_id`` is a UUID. :func:`client_uuid` derives one per TSS and serial.

A ``Kassenbeleg-V1`` processData becomes a ``standard_v1.receipt``::

    Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF
      → {receipt_type: RECEIPT,
         amounts_per_vat_rate: [{vat_rate: NORMAL, amount: "75.33"}, {vat_rate: REDUCED_1, amount: "7.99"}],
         amounts_per_payment_type: [{payment_type: CASH, amount: "10.00"},
                                    {payment_type: CASH, amount: "5.00", currency_code: "CHF"}]}

    bucket (processdata)  vat_rate         rate          bucket       vat_rate
    vat_19                NORMAL           19 %          vat_24_1_1   SPECIAL_RATE_2   5.5 % (§24(1) Nr. 1)
    vat_7                 REDUCED_1        7 %           vat_0        NULL             0 %
    vat_24_1_3            SPECIAL_RATE_1   10.7 % (§24(1) Nr. 3)

fiskaly builds the signed processData from that schema itself, so a reply is read back into what was signed
(:func:`process_data_from_receipt`), the log message is rebuilt and its signature checked (``verified``).

Errors (both are :class:`~protocols.tse.errors.TseError`; ``status_code``, ``code``, ``detail`` as attributes)::

    FiskalyError (TseError)                     fiskaly refused the request (4xx: E_TX_UPSERT, schema errors,
    │                                           client not found …): the text names the code and fiskaly's message
    └── FiskalyUnavailable (+ TseUnavailable)   the TSS cannot be used now: network, timeout, 5xx, 429, a token
                                                refused after re-authentication, TSS not found / disabled / not
                                                initialized / defective (423), or a reply that is not what the
                                                documentation says — the sale completes with "TSE ausgefallen"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocols.tse import crypto
from protocols.tse.api import TransactionResult, TseInfo
from protocols.tse.der import PRINTABLE_CHARS
from protocols.tse.errors import ProcessDataError, ReceiptQrError, TseError, TseInvalidArgument, TseUnavailable
from protocols.tse.logmsg import (
    FINISH,
    OID_TRANSACTION_LOG,
    START,
    TIME_FORMATS,
    UPDATE,
    LogMessage,
    LogTime,
    TimeFormat,
    TransactionData,
)
from protocols.tse.processdata import (
    PROCESS_TYPE,
    VAT_BUCKETS,
    Kassenbeleg,
    Payment,
    format_amount,
    parse_kassenbeleg_v1,
)
from protocols.tse.qr import ReceiptQr, iso_time, parse_receipt_qr, verify_receipt_qr

#: the middleware URL serves every operation (client creation and admin login only work there)
DEFAULT_BASE_URL: Final = "https://kassensichv-middleware.fiskaly.com/api/v2"
API_VERSION: Final = "2.2.2"  # the version of the specification these shapes were taken from
MANUFACTURER: Final = "fiskaly GmbH"
#: processdata bucket → fiskaly ``vat_rate``
VAT_RATES: Final = {"vat_19": "NORMAL", "vat_7": "REDUCED_1", "vat_24_1_3": "SPECIAL_RATE_1",
                    "vat_24_1_1": "SPECIAL_RATE_2", "vat_0": "NULL"}  # fmt: skip
#: the deprecated numeric spellings fiskaly still accepts in replies ("UST_SATZ" of DSFinV-K)
LEGACY_VAT_RATES: Final = {"19": "NORMAL", "7": "REDUCED_1", "10.7": "SPECIAL_RATE_1", "5.5": "SPECIAL_RATE_2",
                           "0": "NULL"}  # fmt: skip
#: Kassenbeleg-V1 kind (DSFinV-K BON_TYP) → ``receipt_type``
RECEIPT_TYPES: Final = {"Beleg": "RECEIPT", "AVTraining": "TRAINING", "AVTransfer": "TRANSFER",
                        "AVBestellung": "ORDER", "AVBelegabbruch": "ABORT", "AVSachbezug": "BENEFIT_IN_KIND",
                        "AVRechnung": "INVOICE", "AVSonstige": "OTHER", "AVBelegstorno": "ANNULATION"}  # fmt: skip
#: ``receipt_type`` → kind (fiskaly documents CANCELLATION as AVBelegabbruch too)
RECEIPT_KINDS: Final = {**{v: k for k, v in RECEIPT_TYPES.items()}, "CANCELLATION": "AVBelegabbruch"}
OPERATIONS: Final = {"Start": START, "Update": UPDATE, "Finish": FINISH}
TX_STATES: Final = ("ACTIVE", "FINISHED", "CANCELLED")
MAX_CLIENT_SERIAL_LENGTH: Final = 30  # TR-03151 clientId (fiskaly allows 70; the log message does not)
#: status codes worth a retry (fiskaly: "5xx … may safely retry", 429 with Retry-After, 499 "should be retried")
RETRYABLE_STATUS: Final = frozenset({429, 499, *range(500, 600)})
#: 4xx codes that mean "this TSS cannot sign now" rather than "this request is wrong"
UNAVAILABLE_CODES: Final = frozenset({"E_TSS_NOT_FOUND", "E_TSS_DISABLED", "E_TSS_NOT_INITIALIZED", "E_TSS_DEFECTIVE",
                                      "E_TSS_DELETED", "E_TSS_EVICTED", "E_CERTIFICATE_EXPIRED",
                                      "E_TSS_LOCKED"})  # fmt: skip
CLIENT_CODES: Final = frozenset({"E_CLIENT_NOT_FOUND", "E_CLIENT_DEREGISTERED"})
_UUID_NAMESPACE: Final = "floorgate/fiskaly-client"


# --- errors ----------------------------------------------------------------------------------------------------------


class FiskalyError(TseError):
    """fiskaly refused a request; ``status_code`` (0: no HTTP answer), ``code`` (``E_…``), ``detail`` (its message)."""

    def __init__(self, message: str, *, status_code: int = 0, code: str = "", detail: str = "") -> None:
        self.status_code = status_code
        self.code = code
        self.detail = detail
        super().__init__(message)


class FiskalyUnavailable(FiskalyError, TseUnavailable):
    """The TSS cannot be used now (network, timeout, 5xx, TSS unusable, unreadable reply)."""


def error_from_reply(status_code: int, body: object, *, what: str) -> FiskalyError:
    """The exception for an error reply: ``body`` is the decoded JSON (or anything else); ``what`` names the call
    (``PUT /tss/…/tx/…``). Retryable statuses, 423 and :data:`UNAVAILABLE_CODES` give :class:`FiskalyUnavailable`."""
    code = detail = ""
    if isinstance(body, Mapping):
        code = str(body.get("code") or "")
        detail = str(body.get("message") or body.get("error") or "")
    text = f"fiskaly {what}: HTTP {status_code}"
    text += f" {code}" if code else ""
    text += f": {detail}" if detail else ""
    unavailable = status_code in RETRYABLE_STATUS or status_code == 423 or code in UNAVAILABLE_CODES
    cls = FiskalyUnavailable if unavailable else FiskalyError
    return cls(text, status_code=status_code, code=code, detail=detail)


def _bad_reply(what: str, problem: str) -> FiskalyUnavailable:
    return FiskalyUnavailable(f"fiskaly {what}: the reply is not as documented: {problem}", code="E_BAD_REPLY")


# --- requests --------------------------------------------------------------------------------------------------------


def check_client_serial(serial: str) -> None:
    """The ERS serial is the log messages' clientId: a PrintableString of 1-30 characters; fiskaly also refuses
    ``/`` (DSFinV-K 2.3) and leading or trailing spaces."""
    if not isinstance(serial, str) or not 1 <= len(serial) <= MAX_CLIENT_SERIAL_LENGTH:
        raise TseInvalidArgument(f"{serial!r} must be 1 to {MAX_CLIENT_SERIAL_LENGTH} characters", argument="client_id")
    bad = sorted(set(serial) - PRINTABLE_CHARS)
    if bad:
        raise TseInvalidArgument(f"{serial!r} has characters a PrintableString cannot hold: {''.join(bad)!r}",
                                 argument="client_id")  # fmt: skip
    if "/" in serial or serial != serial.strip():
        raise TseInvalidArgument(f"{serial!r}: fiskaly refuses '/' and leading or trailing spaces in a client serial "
                                 "number (DSFinV-K 2.3)", argument="client_id")  # fmt: skip


def client_uuid(tss_id: str, serial: str) -> str:
    """The fiskaly ``client_id`` for the register ``serial`` on TSS ``tss_id``: a version-4 UUID made from a hash of
    both, so registering again is idempotent, and the same register on another TSS gets another id (fiskaly wants
    client ids unique system-wide)."""
    digest = hashlib.sha256(f"{_UUID_NAMESPACE}:{tss_id.lower()}:{serial}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def receipt_from_process_data(process_data: str) -> dict[str, Any]:
    """``standard_v1.receipt`` for a ``Kassenbeleg-V1`` processData (:class:`ProcessDataError` if it is not one).
    Zero buckets are left out (one ``NULL`` 0.00 when all are zero); payments keep their order; ``currency_code``
    only when not EUR (fiskaly's default)."""
    beleg = parse_kassenbeleg_v1(process_data)
    rates = [{"vat_rate": VAT_RATES[name], "amount": format_amount(getattr(beleg, name), field_name=name)}
             for name, _ in VAT_BUCKETS if getattr(beleg, name) != 0]  # fmt: skip
    receipt: dict[str, Any] = {
        "receipt_type": RECEIPT_TYPES[beleg.kind],
        "amounts_per_vat_rate": rates or [{"vat_rate": "NULL", "amount": "0.00"}],
    }
    payments = []
    for index, payment in enumerate(beleg.payments):
        item = {"payment_type": "CASH" if payment.cash else "NON_CASH",
                "amount": format_amount(payment.amount, field_name=f"payments[{index}].amount")}  # fmt: skip
        if payment.currency != "EUR":
            item["currency_code"] = payment.currency
        payments.append(item)
    if payments:
        receipt["amounts_per_payment_type"] = payments
    return receipt


def process_data_from_receipt(receipt: Mapping[str, Any]) -> str:
    """The ``Kassenbeleg-V1`` processData of a ``standard_v1.receipt`` (amounts of one rate added up)."""
    kind = RECEIPT_KINDS.get(str(receipt.get("receipt_type")))
    if kind is None:
        raise ProcessDataError(f"receipt_type {receipt.get('receipt_type')!r} is not one of "
                               f"{', '.join(RECEIPT_KINDS)}", field="receipt_type")  # fmt: skip
    bucket_of = {rate: name for name, rate in VAT_RATES.items()}
    totals = {name: Decimal("0.00") for name, _ in VAT_BUCKETS}
    for index, item in enumerate(_items(receipt, "amounts_per_vat_rate")):
        rate = str(item.get("vat_rate"))
        name = bucket_of.get(LEGACY_VAT_RATES.get(rate, rate))
        if name is None:
            raise ProcessDataError(f"vat_rate {rate!r} is not one of {', '.join(VAT_RATES.values())}",
                                   field=f"amounts_per_vat_rate[{index}].vat_rate")  # fmt: skip
        totals[name] += _decimal(item.get("amount"), f"amounts_per_vat_rate[{index}].amount")
    payments = []
    for index, item in enumerate(_items(receipt, "amounts_per_payment_type")):
        kind_text = item.get("payment_type")
        if kind_text not in ("CASH", "NON_CASH"):
            raise ProcessDataError(f"payment_type {kind_text!r} is neither CASH nor NON_CASH",
                                   field=f"amounts_per_payment_type[{index}].payment_type")  # fmt: skip
        amount = _decimal(item.get("amount"), f"amounts_per_payment_type[{index}].amount")
        payments.append(Payment(amount, kind_text == "CASH", str(item.get("currency_code") or "EUR").upper()))
    return Kassenbeleg(**totals, payments=tuple(payments), kind=kind).build()


def _items(receipt: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = receipt.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ProcessDataError("is not a list of objects", field=key)
    return cast(list[Mapping[str, Any]], items)


def _decimal(value: object, field: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ProcessDataError(f"amount {value!r} is not a decimal number", field=field) from None


def tx_schema(process_type: str, process_data: bytes | str) -> dict[str, Any] | None:
    """The ``schema`` of an upsert: ``standard_v1.receipt`` for Kassenbeleg-V1, ``raw`` (base64 data) for any other
    processType, ``None`` when both are empty (a StartTransaction: "type and data must be empty", DSFinV-K)."""
    data = process_data.encode() if isinstance(process_data, str) else bytes(process_data)
    if not process_type and not data:
        return None
    if process_type.lower() == PROCESS_TYPE.lower():
        return {"standard_v1": {"receipt": receipt_from_process_data(data.decode("ascii", errors="replace"))}}
    if not process_type:
        raise TseInvalidArgument("a processData needs a processType", argument="process_type")
    return {"raw": {"process_type": process_type, "process_data": base64.b64encode(data).decode()}}


def tx_body(state: str, client_id: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body of ``PUT /tss/{tss}/tx/{tx}?tx_revision=n``: ``{state, client_id[, schema]}``."""
    if state not in TX_STATES:
        raise ValueError(f"state {state!r} is not one of {', '.join(TX_STATES)}")
    body: dict[str, Any] = {"state": state, "client_id": client_id}
    if schema is not None:
        body["schema"] = dict(schema)
    return body


def signed_process(schema: Mapping[str, Any] | None) -> tuple[str, bytes]:
    """(processType, processData) the TSS signs for a transaction whose (echoed) ``schema`` is this."""
    if not schema:
        return "", b""
    standard = schema.get("standard_v1")
    if isinstance(standard, Mapping) and isinstance(standard.get("receipt"), Mapping):
        return PROCESS_TYPE, process_data_from_receipt(standard["receipt"]).encode()
    raw = schema.get("raw")
    if isinstance(raw, Mapping):
        try:
            data = base64.b64decode(str(raw.get("process_data") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise ProcessDataError("raw.process_data is not base64", field="raw.process_data") from None
        return str(raw.get("process_type") or ""), data
    raise ProcessDataError(f"schema {sorted(schema)} is neither standard_v1.receipt nor raw", field="schema")


# --- replies ---------------------------------------------------------------------------------------------------------


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
    "API_VERSION", "CLIENT_CODES", "DEFAULT_BASE_URL", "LEGACY_VAT_RATES", "MANUFACTURER", "OPERATIONS",
    "RECEIPT_KINDS", "RECEIPT_TYPES", "RETRYABLE_STATUS", "TX_STATES", "UNAVAILABLE_CODES", "VAT_RATES",
    "FiskalyError", "FiskalyTransactionResult", "FiskalyUnavailable", "Tokens", "TssReply", "TxReply",
    "check_client_serial", "client_uuid", "error_from_reply", "parse_auth", "parse_tss", "parse_tx",
    "plain_signature", "process_data_from_receipt", "receipt_from_process_data", "signed_process", "transaction_result",
    "tse_info", "tx_body", "tx_schema",
]  # fmt: skip
