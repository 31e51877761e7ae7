"""fiskaly SIGN DE API v2 (a cloud TSE): the request bodies and the replies, as pure functions — no I/O.

The HTTP client that uses them is ``edge.pos.fiskaly.FiskalyTse`` (``protocols`` may not import an HTTP library).
This module holds the constants, the errors and the request bodies; the replies are read (and a signed transaction
verified) by ``protocols.tse.fiskaly_replies``.
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
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

from protocols.tse.der import PRINTABLE_CHARS
from protocols.tse.errors import ProcessDataError, TseError, TseInvalidArgument, TseUnavailable
from protocols.tse.logmsg import FINISH, START, UPDATE
from protocols.tse.processdata import (
    PROCESS_TYPE,
    VAT_BUCKETS,
    Kassenbeleg,
    Payment,
    format_amount,
    parse_kassenbeleg_v1,
)

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


__all__ = [
    "API_VERSION", "CLIENT_CODES", "DEFAULT_BASE_URL", "LEGACY_VAT_RATES", "MANUFACTURER", "OPERATIONS",
    "RECEIPT_KINDS", "RECEIPT_TYPES", "RETRYABLE_STATUS", "TX_STATES", "UNAVAILABLE_CODES", "VAT_RATES",
    "FiskalyError", "FiskalyUnavailable", "check_client_serial", "client_uuid", "error_from_reply",
    "process_data_from_receipt", "receipt_from_process_data", "signed_process", "tx_body", "tx_schema",
]  # fmt: skip
