"""TSE log messages (TR-03151): DER primitives, exact bytes of a hand-built message, round trips, strict decoding,
and the signed bytes of the two real receipts rebuilt field by field."""

from __future__ import annotations

import base64
import calendar
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.tse import crypto, der
from protocols.tse.errors import DerError
from protocols.tse.logmsg import (
    FINISH,
    OID_SYSTEM_LOG,
    OID_TRANSACTION_LOG,
    OPERATIONS,
    START,
    LogMessage,
    LogTime,
    OtherCertifiedData,
    TransactionData,
    decode_log_message,
)
from tests.tse_support import BRAINPOOL_QR, P256_QR


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "020100"), (1, "020101"), (127, "02017f"), (128, "02020080"), (255, "020200ff"), (256, "02020100"),
    (-1, "0201ff"), (-128, "020180"), (-129, "0202ff7f"), (1_700_000_000, "02046553f100"),
    (344413, "020305415d"), (2**63, "0209008000000000000000"),
])  # fmt: skip
def test_der_integer_is_minimal_twos_complement(value: int, encoded: str) -> None:
    assert der.encode_integer(value).hex() == encoded
    assert der.decode_integer(der.decode_single(bytes.fromhex(encoded), der.INTEGER)) == value


@pytest.mark.parametrize(("oid", "encoded"), [
    ("0.4.0.127.0.7.3.7.1.1", "060904007f000703070101"),
    ("0.4.0.127.0.7.1.1.4.1.3", "060a04007f00070101040103"),
    ("0.4.0.127.0.7.1.1.4.1.4", "060a04007f00070101040104"),
    ("1.2.840.10045.4.3.2", "06082a8648ce3d040302"),
    ("2.999.3", "0603883703"),
])  # fmt: skip
def test_der_object_identifier(oid: str, encoded: str) -> None:
    assert der.encode_oid(oid).hex() == encoded
    assert der.decode_oid(der.decode_single(bytes.fromhex(encoded), der.OBJECT_IDENTIFIER)) == oid


@pytest.mark.parametrize(("length", "header"), [(0, "0400"), (127, "047f"), (128, "048180"), (255, "0481ff"),
                                                (256, "04820100"), (70000, "0483011170")])  # fmt: skip
def test_der_length_short_and_long_form(length: int, header: str) -> None:
    encoded = der.tlv(der.OCTET_STRING, bytes(length))
    assert encoded[: len(header) // 2].hex() == header
    assert der.decode_single(encoded, der.OCTET_STRING).content == bytes(length)


@pytest.mark.parametrize(("data", "why"), [
    ("0480", "indefinite length"),
    ("04810100", "not minimally encoded"),
    ("0482000100", "not minimally encoded"),
    ("0405010203", "claims 5 bytes"),
    ("02020001", "INTEGER at offset 0 is not minimally encoded"),
    ("0202ff80", "not minimally encoded"),
    ("0200", "no content"),
    ("1f0100", "multi-byte tag"),
    ("04", "has no length"),
    ("040100ff", "1 trailing bytes"),
])  # fmt: skip
def test_der_decoder_is_strict(data: str, why: str) -> None:
    raw = bytes.fromhex(data)

    def decode() -> None:
        element = der.decode_single(raw, raw[0])
        if element.tag == der.INTEGER:
            der.decode_integer(element)

    with pytest.raises(DerError, match=why):
        decode()


# ---- one message built by hand from the structure in the device reference -----------------------------------------

SERIAL = bytes([0x11]) * 32
HAND_BUILT = "".join([
    "3076",                                                          # SEQUENCE, 118 bytes
    "020102",                                                        # version 2
    "060904007f000703070101",                                        # certifiedDataType: transaction log
    "8010" + b"StartTransaction".hex(),                              # [0] operationType
    "8102" + b"K1".hex(),                                            # [1] clientId
    "8200",                                                          # [2] processData (empty at the start)
    "830e" + b"Kassenbeleg-V1".hex(),                                # [3] processType
    "850101",                                                        # [5] transactionNumber 1
    "0420" + "11" * 32,                                              # serialNumber
    "300c" + "060a04007f00070101040103",                             # signatureAlgorithm ecdsa-plain-SHA256
    "020101",                                                        # signatureCounter 1
    "02046553f100",                                                  # logTime 1700000000 (unixTime)
    "04020102",                                                      # signatureValue
])  # fmt: skip


def _hand_message() -> LogMessage:
    return LogMessage(
        certified_data_type=OID_TRANSACTION_LOG,
        certified_data=TransactionData(START, "K1", b"", "Kassenbeleg-V1", 1),
        serial_number=SERIAL, signature_algorithm=crypto.ECDSA_PLAIN_SHA256.oid, signature_counter=1,
        log_time=LogTime.unix_time(1_700_000_000), signature_value=b"\x01\x02",
    )  # fmt: skip


def test_exact_bytes_of_a_hand_built_start_transaction() -> None:
    message = _hand_message()
    assert message.encode().hex() == HAND_BUILT
    # the signed bytes: everything from version through logTime, without the outer header and the signature
    assert message.signed_bytes().hex() == HAND_BUILT[4:-8]
    assert decode_log_message(bytes.fromhex(HAND_BUILT)) == message


def test_optional_fields_long_process_data_and_big_numbers() -> None:
    data = TransactionData(FINISH, "ERS 1", b"x" * 300, "Kassenbeleg-V1", 128, additional_external_data=b"ext",
                           additional_internal_data=b"\x00\xff")  # fmt: skip
    message = LogMessage(OID_TRANSACTION_LOG, data, SERIAL, crypto.ECDSA_PLAIN_SHA384.oid, 2**40,
                         LogTime.unix_time(1_629_729_393), b"s" * 96)  # fmt: skip
    encoded = message.encode()
    assert encoded[:2] == b"\x30\x82"  # long-form outer length, two bytes
    assert int.from_bytes(encoded[2:4], "big") == len(encoded) - 4
    assert bytes.fromhex("82 82 01 2c") + b"x" * 300 in encoded  # [2] with a two-byte length
    assert bytes.fromhex("84 03") + b"ext" in encoded
    assert bytes.fromhex("85 02 00 80") in encoded  # transactionNumber 128 needs a leading zero byte
    assert bytes.fromhex("86 02 00 ff") in encoded
    assert decode_log_message(encoded) == message


@pytest.mark.parametrize(("time_format", "tag", "text"), [
    ("utcTime", "17", "231114221320Z"), ("generalizedTime", "18", "20231114221320Z"),
])  # fmt: skip
def test_log_time_formats(time_format: str, tag: str, text: str) -> None:
    log_time = LogTime.of(time_format, 1_700_000_000)  # type: ignore[arg-type]
    assert log_time.text == text
    assert log_time.encode().hex() == tag + f"{len(text):02x}" + text.encode().hex()
    message = replace(_hand_message(), log_time=log_time)
    assert decode_log_message(message.encode()).log_time == log_time
    assert LogTime.of("generalizedTime", 1_700_000_000, millis=120).text == "20231114221320.12Z"


def test_system_log_messages_are_kept_as_raw_elements() -> None:
    other = OtherCertifiedData(((0x80, b"UpdateTime"), (0x81, b"\x30\x00")))
    message = LogMessage(OID_SYSTEM_LOG, other, SERIAL, crypto.ECDSA_PLAIN_SHA256.oid, 7, LogTime.unix_time(5), b"ab")
    decoded = decode_log_message(message.encode())
    assert decoded == message
    assert decoded.kind == "system"
    with pytest.raises(TypeError):
        _ = decoded.transaction


def _wrap(inner: str) -> bytes:
    """A SEQUENCE around the hex ``inner`` (so that a mutation keeps the outer length right)."""
    return der.tlv(der.SEQUENCE, bytes.fromhex(inner))


INNER = HAND_BUILT[4:]


@pytest.mark.parametrize(("data", "why"), [
    (_wrap(INNER.replace(b"StartTransaction".hex(), b"StartTransactioN".hex())), "operationType 'StartTransactioN'"),
    (_wrap(INNER.replace("850101", "")), "lacks transactionNumber"),
    (_wrap(INNER.replace("850101", "").replace("830e", "850101830e")), "field \\[3\\] at offset .* out of order"),
    (_wrap(INNER.replace("0420" + "11" * 32, "")), "serialNumber at offset .*: expected tag 0x04, found 0x30"),
    (_wrap(INNER.replace("8102" + b"K1".hex(), "") + ""), "lacks clientId"),
    (_wrap(INNER + "0500"), "unexpected element \\(tag 0x05\\) .* after signatureValue"),
    (_wrap(INNER.replace("020102", "040102", 1)), "version at offset 2: expected tag 0x02"),
    (_wrap(INNER.replace("02046553f100", "0c046553f100")), "logTime at offset .* has tag 0x0c"),
    (_wrap(INNER.replace("04020102", "")), "ends before signatureValue"),
    (bytes.fromhex(HAND_BUILT[:-2]), "claims 118 bytes"),
    (bytes.fromhex("3176" + INNER), "expected tag 0x30"),
])  # fmt: skip
def test_malformed_messages_are_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(DerError, match=why):
        decode_log_message(data)


_printable = st.text(alphabet=sorted(der.PRINTABLE_CHARS), min_size=1, max_size=30)


@given(
    operation=st.sampled_from(OPERATIONS), client=_printable, process_data=st.binary(max_size=400),
    process_type=_printable, number=st.integers(0, 2**64), counter=st.integers(0, 2**64),
    log_time=st.integers(0, 2**40), external=st.none() | st.binary(max_size=40),
    internal=st.none() | st.binary(max_size=40), signature=st.binary(max_size=130),
    algorithm=st.sampled_from([crypto.ECDSA_PLAIN_SHA256.oid, crypto.ECDSA_PLAIN_SHA384.oid]),
)  # fmt: skip
def test_round_trip_of_any_transaction_log_message(
    operation: str, client: str, process_data: bytes, process_type: str, number: int, counter: int, log_time: int,
    external: bytes | None, internal: bytes | None, signature: bytes, algorithm: str,
) -> None:  # fmt: skip
    message = LogMessage(
        OID_TRANSACTION_LOG, TransactionData(operation, client, process_data, process_type, number, external, internal),
        SERIAL, algorithm, counter, LogTime.unix_time(log_time), signature,
    )  # fmt: skip
    encoded = message.encode()
    decoded = decode_log_message(encoded)
    assert decoded == message
    assert decoded.encode() == encoded
    assert encoded.endswith(der.tlv(der.OCTET_STRING, signature))


# ---- the two real receipts: rebuild the signed bytes by hand, verify with the key in the QR code -------------------


def _unix(iso: str) -> int:
    return calendar.timegm((int(iso[0:4]), int(iso[5:7]), int(iso[8:10]), int(iso[11:13]), int(iso[14:16]),
                            int(iso[17:19]), 0, 0, 0))  # fmt: skip


@pytest.mark.parametrize("qr", [P256_QR, BRAINPOOL_QR], ids=["P-256", "brainpoolP384r1"])
def test_real_receipts_verify_over_the_rebuilt_signed_bytes(qr: str) -> None:
    _, client, ptype, pdata, tx, counter, _start, end, algorithm_name, _fmt, signature, public_key = qr.split(";")
    point = base64.b64decode(public_key)
    algorithm = crypto.ALGORITHMS[algorithm_name]
    message = LogMessage(
        certified_data_type=OID_TRANSACTION_LOG,
        certified_data=TransactionData(FINISH, client, pdata.encode(), ptype, int(tx)),
        serial_number=crypto.serial_number(point), signature_algorithm=algorithm.oid,
        signature_counter=int(counter), log_time=LogTime.unix_time(_unix(end)),
        signature_value=base64.b64decode(signature),
    )  # fmt: skip
    key, curve = crypto.load_public_key(point)
    assert curve == ("P-256" if algorithm_name.endswith("256") else "brainpoolP384r1")
    assert crypto.verify_plain(key, algorithm, message.signature_value, message.signed_bytes()) == ""
    # and the full message decodes back to the same fields
    assert decode_log_message(message.encode()) == message
    tampered = replace(message, signature_counter=int(counter) + 1)
    assert crypto.verify_plain(key, algorithm, message.signature_value, tampered.signed_bytes()) == "does not verify"


def test_plain_signature_conversion_round_trips() -> None:
    plain = bytes(range(1, 65))
    assert crypto.der_to_plain(crypto.plain_to_der(plain), 32) == plain
    with pytest.raises(ValueError, match="two halves"):
        crypto.plain_to_der(b"\x01\x02\x03")


@pytest.mark.parametrize(("point", "why"), [
    (b"", "empty"), (b"\x02" + bytes(32), "not an uncompressed point"), (b"\x04" + bytes(40), "fits no TSE curve"),
    (b"\x04" + bytes(64), "not a point on P-256 or brainpoolP256r1"),
])  # fmt: skip
def test_public_keys_that_are_not_points_are_refused(point: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        crypto.load_public_key(point)
