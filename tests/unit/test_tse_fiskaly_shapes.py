"""fiskaly SIGN DE v2 shapes (protocols.tse.fiskaly), without a server: Kassenbeleg-V1 ↔ ``standard_v1.receipt``
(table-driven, and a property round trip checked against the fake server's independent mapping), request bodies,
replies read back — a real fiskaly receipt among them — the error mapping, client ids and the driver's settings."""

from __future__ import annotations

import base64
import hashlib
import uuid
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from edge.pos.fiskaly import FiskalySettings, parse_fiskaly_settings
from protocols.tse import crypto
from protocols.tse.errors import ProcessDataError, TseInvalidArgument, TseUnavailable
from protocols.tse.fiskaly import (
    FiskalyError,
    FiskalyUnavailable,
    check_client_serial,
    client_uuid,
    error_from_reply,
    process_data_from_receipt,
    receipt_from_process_data,
    tx_body,
    tx_schema,
)
from protocols.tse.fiskaly_replies import parse_auth, parse_tss, parse_tx, plain_signature, transaction_result
from protocols.tse.logmsg import decode_log_message
from protocols.tse.processdata import KINDS, Kassenbeleg, Payment
from protocols.tse.qr import parse_receipt_qr
from sync.runtime.config import ConfigError
from tests.fake_fiskaly_schema import beleg
from tests.tse_support import P256_QR

RECEIPTS = [
    ("Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF",
     {"receipt_type": "RECEIPT",
      "amounts_per_vat_rate": [{"vat_rate": "NORMAL", "amount": "75.33"}, {"vat_rate": "REDUCED_1", "amount": "7.99"}],
      "amounts_per_payment_type": [{"payment_type": "CASH", "amount": "10.00"},
                                   {"payment_type": "CASH", "amount": "5.00", "currency_code": "CHF"}]}),
    ("Beleg^0.00_0.00_107.00_55.00_0.00^162.00:Unbar",  # farm trade: the §24 flat rates
     {"receipt_type": "RECEIPT",
      "amounts_per_vat_rate": [{"vat_rate": "SPECIAL_RATE_1", "amount": "107.00"},
                               {"vat_rate": "SPECIAL_RATE_2", "amount": "55.00"}],
      "amounts_per_payment_type": [{"payment_type": "NON_CASH", "amount": "162.00"}]}),
    ("AVBelegstorno^-19.99_0.00_0.00_0.00_0.00^-19.99:Bar",
     {"receipt_type": "ANNULATION", "amounts_per_vat_rate": [{"vat_rate": "NORMAL", "amount": "-19.99"}],
      "amounts_per_payment_type": [{"payment_type": "CASH", "amount": "-19.99"}]}),
    ("AVBelegabbruch^0.00_0.00_0.00_0.00_0.00^",  # all zero, no payment
     {"receipt_type": "ABORT", "amounts_per_vat_rate": [{"vat_rate": "NULL", "amount": "0.00"}]}),
    ("AVTraining^0.00_0.00_0.00_0.00_4.20^4.20:Unbar:USD",
     {"receipt_type": "TRAINING", "amounts_per_vat_rate": [{"vat_rate": "NULL", "amount": "4.20"}],
      "amounts_per_payment_type": [{"payment_type": "NON_CASH", "amount": "4.20", "currency_code": "USD"}]}),
]  # fmt: skip


@pytest.mark.parametrize(("process_data", "receipt"), RECEIPTS)
def test_receipt_from_process_data(process_data: str, receipt: dict[str, Any]) -> None:
    assert receipt_from_process_data(process_data) == receipt
    assert process_data_from_receipt(receipt) == process_data
    assert beleg(receipt) == process_data  # the fake server's own mapping agrees


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_receipt_type(kind: str) -> None:
    text = f"{kind}^1.00_0.00_0.00_0.00_0.00^1.00:Bar"
    assert process_data_from_receipt(receipt_from_process_data(text)) == text


def test_receipt_read_back_adds_rates_and_knows_the_old_spellings() -> None:
    receipt = {"receipt_type": "CANCELLATION",
               "amounts_per_vat_rate": [{"vat_rate": "19", "amount": "1.10"}, {"vat_rate": "NORMAL", "amount": "2.20"},
                                        {"vat_rate": "10.7", "amount": "3.00"}],
               "amounts_per_payment_type": [{"payment_type": "NON_CASH", "amount": "6.30", "currency_code": "eur"}]}
    assert process_data_from_receipt(receipt) == "AVBelegabbruch^3.30_0.00_3.00_0.00_0.00^6.30:Unbar"  # fmt: skip


@pytest.mark.parametrize(("receipt", "field"), [
    ({"receipt_type": "GIFT", "amounts_per_vat_rate": []}, "receipt_type"),
    ({"receipt_type": "RECEIPT", "amounts_per_vat_rate": [{"vat_rate": "HIGH", "amount": "1.00"}]},
     "amounts_per_vat_rate[0].vat_rate"),
    ({"receipt_type": "RECEIPT", "amounts_per_vat_rate": [{"vat_rate": "NORMAL", "amount": "x"}]},
     "amounts_per_vat_rate[0].amount"),
    ({"receipt_type": "RECEIPT", "amounts_per_vat_rate": [],
      "amounts_per_payment_type": [{"payment_type": "CARD", "amount": "1.00"}]},
     "amounts_per_payment_type[0].payment_type"),
])  # fmt: skip
def test_unreadable_receipt_names_the_field(receipt: dict[str, Any], field: str) -> None:
    with pytest.raises(ProcessDataError) as caught:
        process_data_from_receipt(receipt)
    assert caught.value.field == field


amounts = st.decimals(min_value=Decimal("-99999.99"), max_value=Decimal("99999.99"), places=2)


@given(st.builds(Kassenbeleg, vat_19=amounts, vat_7=amounts, vat_24_1_3=amounts, vat_24_1_1=amounts, vat_0=amounts,
                 payments=st.lists(st.builds(Payment, amounts, st.booleans(), st.sampled_from(["EUR", "CHF", "USD"])),
                                   max_size=4).map(tuple), kind=st.sampled_from(KINDS)))  # fmt: skip
def test_any_kassenbeleg_survives_the_receipt_schema(sale: Kassenbeleg) -> None:
    text = sale.build()
    receipt = receipt_from_process_data(text)
    assert process_data_from_receipt(receipt) == text
    assert beleg(receipt) == text


def test_tx_schema_and_bodies() -> None:
    assert tx_schema("", b"") is None
    assert tx_schema("Kassenbeleg-V1", "Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Bar") == {"standard_v1": {"receipt": {
        "receipt_type": "RECEIPT", "amounts_per_vat_rate": [{"vat_rate": "NORMAL", "amount": "1.00"}],
        "amounts_per_payment_type": [{"payment_type": "CASH", "amount": "1.00"}]}}}  # fmt: skip
    raw = {"process_type": "SonstigerVorgang", "process_data": base64.b64encode(b"Kasse auf").decode()}
    assert tx_schema("SonstigerVorgang", b"Kasse auf") == {"raw": raw}
    with pytest.raises(TseInvalidArgument):
        tx_schema("", b"data without a type")
    with pytest.raises(ProcessDataError):
        tx_schema("Kassenbeleg-V1", "Beleg^1.005_0.00_0.00_0.00_0.00^")
    assert tx_body("ACTIVE", "c") == {"state": "ACTIVE", "client_id": "c"}
    assert tx_body("FINISHED", "c", {"raw": {}}) == {"state": "FINISHED", "client_id": "c", "schema": {"raw": {}}}
    with pytest.raises(ValueError, match="state"):
        tx_body("DONE", "c")


def test_client_uuid_is_a_stable_uuid4_per_tss_and_register() -> None:
    tss = str(uuid.uuid4())
    first = uuid.UUID(client_uuid(tss, "KASSE-1"))
    assert (first.version, first.variant) == (4, uuid.RFC_4122)
    assert client_uuid(tss, "KASSE-1") == client_uuid(tss.upper(), "KASSE-1") == str(first)
    assert client_uuid(tss, "KASSE-2") != str(first)
    assert client_uuid(str(uuid.uuid4()), "KASSE-1") != str(first)


@pytest.mark.parametrize("serial", ["", "x" * 31, "KASSE_1", "Kasse/1", " KASSE", "KASSE ", "Kaße"])
def test_client_serials_fiskaly_or_tr03151_refuse(serial: str) -> None:
    with pytest.raises(TseInvalidArgument):
        check_client_serial(serial)


@pytest.mark.parametrize(("status", "code", "unavailable"), [
    (400, "E_TX_UPSERT", False), (400, "E_FAILED_SCHEMA_VALIDATION", False), (400, "E_CLIENT_NOT_FOUND", False),
    (409, "E_PENDING_TX_CONFLICT", False), (403, "E_ACCESS_DENIED", False), (400, "E_TSS_DISABLED", True),
    (400, "E_TSS_NOT_INITIALIZED", True), (404, "E_TSS_NOT_FOUND", True), (423, "E_TSS_DEFECTIVE", True),
    (423, "E_CERTIFICATE_EXPIRED", True), (429, "", True), (499, "", True), (500, "", True),
    (503, "E_TSS_LOCKED", True),
])  # fmt: skip
def test_error_mapping(status: int, code: str, unavailable: bool) -> None:
    error = error_from_reply(status, {"status_code": status, "error": "x", "code": code, "message": "fiskaly says"},
                             what="PUT /tss/{tss_id}/tx/{tx_id}")  # fmt: skip
    assert isinstance(error, FiskalyError)
    assert isinstance(error, TseUnavailable) is unavailable
    assert (error.status_code, error.code, error.detail) == (status, code, "fiskaly says")
    named = f" {code}" if code else ""
    assert str(error) == f"fiskaly PUT /tss/{{tss_id}}/tx/{{tx_id}}: HTTP {status}{named}: fiskaly says"


def test_error_mapping_without_a_json_body() -> None:
    error = error_from_reply(502, None, what="GET /tss/{tss_id}")
    assert isinstance(error, FiskalyUnavailable)
    assert str(error) == "fiskaly GET /tss/{tss_id}: HTTP 502"


def test_auth_expiry_counts_on_the_local_clock() -> None:
    tokens = parse_auth({"access_token": "a", "access_token_expires_at": 1000, "access_token_expires_in": 5,
                         "refresh_token": "r", "refresh_token_expires_at": 2000}, now=100.0)  # fmt: skip
    assert (tokens.access_expires_at, tokens.refresh_expires_at) == (105.0, 2000.0)  # durations win (clock skew)
    tokens = parse_auth({"access_token": "a", "access_token_expires_in": 600}, now=100.0)
    assert (tokens.access_expires_at, tokens.refresh_token, tokens.refresh_expires_at) == (700.0, "", 0.0)
    assert "a" not in repr(tokens).replace("access_expires_at", "").replace("refresh_expires_at", "")
    with pytest.raises(FiskalyUnavailable, match="no access_token"):
        parse_auth({"token": "x"}, now=0.0)


# --- a real fiskaly receipt (../shared/reference/tse-qr-vectors.txt) as a transaction reply ---------------------------

REAL = parse_receipt_qr(P256_QR)


def real_reply(**changes: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "_id": "5b0f8c64-1b4d-4b34-9d2f-0c6e2a7d9c11", "number": REAL.transaction_number, "state": "FINISHED",
        "revision": 2, "latest_revision": 2, "client_id": "0e8d2c9e-6f5b-4d8a-9e2f-3a1b4c5d6e7f",
        "client_serial_number": REAL.client_id, "tss_serial_number": crypto.serial_number(REAL.public_key).hex(),
        "time_start": 1629729387, "time_end": 1629729393, "tss_id": "8a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "schema": {"standard_v1": {"receipt": {"receipt_type": "RECEIPT",
                                               "amounts_per_vat_rate": [{"vat_rate": "NORMAL", "amount": "21.42"}],
                                               "amounts_per_payment_type": [{"payment_type": "NON_CASH",
                                                                             "amount": "21.42"}]}}},
        "log": {"operation": "Finish", "timestamp": 1629729393, "timestamp_format": "unixTime"},
        "signature": {"value": base64.b64encode(REAL.signature).decode(), "algorithm": "ecdsa-plain-SHA256",
                      "counter": "31", "public_key": base64.b64encode(REAL.public_key).decode()},
        "_type": "TRANSACTION", "_env": "LIVE", "_version": "2.2.2",
    }  # fmt: skip
    reply.update(changes)
    return reply


@pytest.mark.parametrize("with_qr", [True, False])
def test_a_real_fiskaly_finish_reply_verifies(with_qr: bool) -> None:
    reply = real_reply(qr_code_data=P256_QR) if with_qr else real_reply()
    result = transaction_result(parse_tx(reply), client_id=REAL.client_id)
    assert result.verified, result.problem
    assert result.problem == ""
    assert (result.transaction_number, result.signature_counter, result.start_time, result.log_time) == (
        1, 31, 1629729387, 1629729393)
    assert (result.process_type, result.process_data) == ("Kassenbeleg-V1", REAL.process_data.encode())
    assert result.qr_code_data == P256_QR  # built from the reply when fiskaly sent none: the same text
    message = decode_log_message(result.log_message)
    assert (message.signature_counter, message.transaction.client_id) == (31, REAL.client_id)


def test_a_der_signature_value_is_made_plain_and_a_wrong_qr_code_is_replaced() -> None:
    key, _ = crypto.load_public_key(REAL.public_key)
    der = crypto.plain_to_der(REAL.signature)
    assert plain_signature(der, key.curve.key_size) == REAL.signature
    broken_qr = P256_QR.replace(";31;", ";32;")
    signature = dict(real_reply()["signature"], value=base64.b64encode(der).decode(), counter=31)
    result = transaction_result(parse_tx(real_reply(signature=signature, qr_code_data=broken_qr)),
                                client_id=REAL.client_id)  # fmt: skip
    assert result.signature_value == REAL.signature
    assert result.verified  # over the log message rebuilt from the reply: counter 31
    assert result.qr_code_data == P256_QR  # fiskaly's QR text (counter 32) does not verify: built from the reply
    assert "qr_code_data does not verify" in result.problem


def test_a_changed_amount_does_not_verify() -> None:
    reply = real_reply()
    reply["schema"]["standard_v1"]["receipt"]["amounts_per_vat_rate"][0]["amount"] = "21.43"
    result = transaction_result(parse_tx(reply), client_id=REAL.client_id)
    assert (result.verified, result.log_message) == (False, b"")
    assert "does not verify" in result.problem


@pytest.mark.parametrize(("change", "field"), [
    ({"log": None}, "log"), ({"number": "one"}, "number"), ({"state": "DONE"}, "state"),
    ({"tss_serial_number": "zz"}, "tss_serial_number"), ({"client_serial_number": ""}, "client_serial_number"),
    ({"signature": {"value": "!!", "algorithm": "ecdsa-plain-SHA256", "counter": 1, "public_key": "BA=="}},
     "signature.public_key"),
])  # fmt: skip
def test_a_reply_not_as_documented_is_unavailable_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(FiskalyUnavailable, match=field.replace(".", r"\.")) as caught:
        parse_tx(real_reply(**change))
    assert caught.value.code == "E_BAD_REPLY"


def test_tss_reply_and_serial_check() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    point = crypto.public_key_bytes(key.public_key())
    body = {"_id": "t", "state": "INITIALIZED", "serial_number": hashlib.sha256(point).hexdigest(),
            "public_key": base64.b64encode(point).decode(), "signature_algorithm": "ecdsa-plain-SHA256",
            "signature_timestamp_format": "unixTime", "signature_counter": "12", "transaction_counter": "5",
            "_env": "TEST", "_version": "2.2.2"}  # fmt: skip
    tss = parse_tss(body)
    assert (tss.curve, tss.signature_counter, tss.transaction_counter, tss.certificate_pem) == ("P-256", 12, 5, b"")
    with pytest.raises(FiskalyUnavailable, match="not the SHA-256"):
        parse_tss({**body, "serial_number": "00" * 32})
    with pytest.raises(FiskalyUnavailable, match="certificate"):
        parse_tss({**body, "certificate": base64.b64encode(b"not a certificate").decode()})


# --- the driver's settings -------------------------------------------------------------------------------------------

SECRET = "s3cr3t-value-that-must-not-show"  # noqa: S105 — a test value
TSS = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def test_settings_hide_secrets_and_check_fields() -> None:
    settings = FiskalySettings(api_key="key-123456", api_secret=SECRET, tss_id=TSS.upper(), admin_pin="123456")
    for secret in (SECRET, "123456", "key-123456"):
        assert secret not in repr(settings)
    assert settings.tss_id == TSS
    assert settings.base_url == "https://kassensichv-middleware.fiskaly.com/api/v2"
    with pytest.raises(ConfigError) as caught:
        parse_fiskaly_settings({"api_key": "k", "api_secret": " ", "tss_id": "no", "base_url": "http://fiskaly.com",
                                "client_ids": {"KASSE_1": "x"}, "colour": 1}, source="node.yaml: tse.fiskaly")
    text = str(caught.value)
    for expected in ("node.yaml: tse.fiskaly: api_secret: must not be empty", "tss_id: 'no' is not a UUID",
                     "base_url: expected https://", "client_ids: 'KASSE_1'", "colour: unknown key"):  # fmt: skip
        assert expected in text, text
    with pytest.raises(ConfigError) as missing:
        parse_fiskaly_settings({"tss_id": TSS, "api_key": "k", "api_secret": SECRET, "admin_pin": 123},
                               source="x.yaml")  # fmt: skip
    assert "admin_pin: Input should be a valid string" in str(missing.value)
    with pytest.raises(ConfigError, match=r"backoff_max_s: 1\.0 is less than backoff_min_s \(2\.0\)"):
        parse_fiskaly_settings({"tss_id": TSS, "api_key": "k", "api_secret": SECRET, "backoff_min_s": 2,
                                "backoff_max_s": 1}, source="x.yaml")  # fmt: skip
    assert parse_fiskaly_settings({"tss_id": TSS, "api_key": "k", "api_secret": SECRET,
                                   "base_url": "http://127.0.0.1:8080/api/v2/"}, source="x.yaml").base_url == (
        "http://127.0.0.1:8080/api/v2")  # fmt: skip
    assert SECRET not in str(missing.value)
    assert "123" not in str(missing.value)
