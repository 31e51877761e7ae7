"""What the fake fiskaly server (``tests/fake_fiskaly.py``) accepts, written from fiskaly's OpenAPI specification
"fiskaly SIGN DE API" 2.2.2 on its own (not with ``protocols.tse.fiskaly``): fiskaly's error answer, the checks of a
transaction body and of query values, and the ``Kassenbeleg-V1`` processData a ``standard_v1.receipt`` stands for.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

# the documented tables (ProcessDataStandardV1Receipt)
VAT_RATE_ORDER = ("NORMAL", "REDUCED_1", "SPECIAL_RATE_1", "SPECIAL_RATE_2", "NULL")
LEGACY_VAT_RATES = {"19": "NORMAL", "7": "REDUCED_1", "10.7": "SPECIAL_RATE_1", "5.5": "SPECIAL_RATE_2", "0": "NULL"}
BON_TYP = {"RECEIPT": "Beleg", "TRAINING": "AVTraining", "TRANSFER": "AVTransfer", "ORDER": "AVBestellung",
           "CANCELLATION": "AVBelegabbruch", "ABORT": "AVBelegabbruch", "BENEFIT_IN_KIND": "AVSachbezug",
           "INVOICE": "AVRechnung", "OTHER": "AVSonstige", "ANNULATION": "AVBelegstorno"}  # fmt: skip
AMOUNT = re.compile(r"^-?\d+(\.\d{2,5})$")
CURRENCY = re.compile(r"^[a-zA-Z]{3}$")
CLIENT_SERIAL = re.compile(r"^(?!\s)[A-Za-z0-9 '()+,\-./:=?]{0,70}(?<!\s)$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
EXPORT_QUERY = {"client_id", "transaction_number", "start_transaction_number", "end_transaction_number", "start_date",
                "end_date", "maximum_number_records", "start_signature_counter", "end_signature_counter"}  # fmt: skip


class Refused(Exception):
    """An error answer in fiskaly's shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return JSONResponse({"status_code": status, "error": phrase, "code": code, "message": message},
                        status_code=status)


def check_tx_body(body: Any) -> tuple[str, bytes]:
    """The (processType, processData) of an upsert body, or :class:`Refused` as fiskaly refuses it."""
    if not isinstance(body, dict):
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "body must be an object")
    extra = set(body) - {"state", "client_id", "schema", "metadata"}
    missing = {"state", "client_id"} - set(body)
    if extra or missing:
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"unknown keys {sorted(extra)}, missing {sorted(missing)}")
    if body["state"] not in ("ACTIVE", "FINISHED", "CANCELLED"):
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"state {body['state']!r} is not a transaction state")
    if "schema" not in body:
        return "", b""
    schema = body["schema"]
    if not isinstance(schema, dict) or len(schema) != 1:
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "schema must hold exactly one of standard_v1, raw")
    if "raw" in schema:
        raw = schema["raw"]
        if not isinstance(raw, dict) or set(raw) != {"process_type", "process_data"}:
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "schema.raw must be {process_type, process_data}")
        try:
            return str(raw["process_type"]), base64.b64decode(str(raw["process_data"]), validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "schema.raw.process_data is not base64") from None
    standard = schema.get("standard_v1")
    if not isinstance(standard, dict) or set(standard) != {"receipt"}:
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "schema must be {standard_v1: {receipt}} or {raw} (this "
                      "fake knows receipts only)")  # fmt: skip
    return "Kassenbeleg-V1", beleg(standard["receipt"]).encode()


def beleg(receipt: Any) -> str:
    """The Kassenbeleg-V1 processData of a ``standard_v1.receipt``, checked against the documented schema."""
    if not isinstance(receipt, dict) or not set(receipt) <= {"receipt_type", "amounts_per_vat_rate",
                                                               "amounts_per_payment_type"}:  # fmt: skip
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"receipt has unknown keys: {receipt!r}")
    kind = BON_TYP.get(receipt.get("receipt_type"))  # type: ignore[arg-type]
    if kind is None:
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"receipt_type {receipt.get('receipt_type')!r} is not known")
    rates = receipt.get("amounts_per_vat_rate")
    if not isinstance(rates, list):
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "receipt.amounts_per_vat_rate is required (a list)")
    sums = dict.fromkeys(VAT_RATE_ORDER, Decimal("0"))
    for item in rates:
        if not isinstance(item, dict) or set(item) != {"vat_rate", "amount"}:
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"amounts_per_vat_rate item {item!r} is not {{vat_rate, "
                          "amount}")  # fmt: skip
        rate = LEGACY_VAT_RATES.get(item["vat_rate"], item["vat_rate"])
        if rate not in sums or not isinstance(item["amount"], str) or not AMOUNT.match(item["amount"]):
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"amounts_per_vat_rate item {item!r} is not valid")
        sums[rate] += Decimal(item["amount"])
    payments = []
    for item in receipt.get("amounts_per_payment_type", []):
        if (
            not isinstance(item, dict)
            or not {"payment_type", "amount"} <= set(item)
            or not set(item) <= {"payment_type", "amount", "currency_code"}
            or item["payment_type"] not in ("CASH", "NON_CASH")
            or not isinstance(item["amount"], str)
            or not AMOUNT.match(item["amount"])
            or not CURRENCY.match(str(item.get("currency_code", "EUR")))
        ):
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"amounts_per_payment_type item {item!r} is not valid")
        text = f"{Decimal(item['amount']):.2f}:{'Bar' if item['payment_type'] == 'CASH' else 'Unbar'}"
        currency = str(item.get("currency_code", "EUR")).upper()
        payments.append(text + ("" if currency == "EUR" else f":{currency}"))
    return f"{kind}^{'_'.join(f'{sums[r]:.2f}' for r in VAT_RATE_ORDER)}^{'_'.join(payments)}"


def positive(text: str, name: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"{name} {text!r} is not a whole number ≥ 1")
    return int(text)
