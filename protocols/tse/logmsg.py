"""The TSE log message of BSI TR-03151, DER encoded and decoded byte for byte.

    SEQUENCE {
      version                 INTEGER 2                                        02 01 02
      certifiedDataType       OBJECT IDENTIFIER 0.4.0.127.0.7.3.7.1.1          06 09 04 00 7F 00 07 03 07 01 01
                              (.1 transaction log, .2 system log, .3 audit log)
      -- certifiedData of a transaction log message, each [n] IMPLICIT and primitive:
      operationType           [0] PrintableString  StartTransaction | UpdateTransaction | FinishTransaction   80 …
      clientId                [1] PrintableString  (1-30 characters)                                        81 …
      processData             [2] OCTET STRING     (e.g. "Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar")        82 …
      processType             [3] PrintableString  (e.g. "Kassenbeleg-V1")                                  83 …
      additionalExternalData  [4] OCTET STRING OPTIONAL                                                  84 …
      transactionNumber       [5] INTEGER                                                                85 …
      additionalInternalData  [6] OCTET STRING OPTIONAL                                                  86 …
      serialNumber            OCTET STRING (32 bytes: SHA-256 of the uncompressed public key)              04 20 …
      signatureAlgorithm      SEQUENCE { algorithm OBJECT IDENTIFIER, parameters OPTIONAL }                30 0C 06 0A …
      seAuditData             OCTET STRING (audit log messages only)
      signatureCounter        INTEGER                                                                    02 …
      logTime                 INTEGER (unixTime) | UTCTime | GeneralizedTime                             02 / 17 / 18
      signatureValue          OCTET STRING (plain r ‖ s)                                                 04 …
    }

**The signed bytes are the DER encodings from ``version`` through ``logTime`` concatenated, without the outer
SEQUENCE header** (:meth:`LogMessage.signed_bytes`). System and audit log messages carry other certifiedData; they
are kept as raw elements (:class:`OtherCertifiedData`), which is enough to check their signature, counter and time.

Decoding is strict (see ``der``) and checks that the message re-encodes to exactly the same bytes, so a decoded
message's ``signed_bytes()`` are the bytes the TSE signed.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, replace
from typing import Final, Literal

from protocols.tse import der
from protocols.tse.errors import DerError

OID_TRANSACTION_LOG: Final = "0.4.0.127.0.7.3.7.1.1"
OID_SYSTEM_LOG: Final = "0.4.0.127.0.7.3.7.1.2"
OID_AUDIT_LOG: Final = "0.4.0.127.0.7.3.7.1.3"
LOG_KINDS: Final = {OID_TRANSACTION_LOG: "transaction", OID_SYSTEM_LOG: "system", OID_AUDIT_LOG: "audit"}
START: Final = "StartTransaction"
UPDATE: Final = "UpdateTransaction"
FINISH: Final = "FinishTransaction"
OPERATIONS: Final = (START, UPDATE, FINISH)
VERSION: Final = 2

TimeFormat = Literal["unixTime", "utcTime", "generalizedTime"]
TIME_FORMATS: Final[tuple[TimeFormat, ...]] = ("unixTime", "utcTime", "generalizedTime")

_UTC_TIME: Final = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z", re.ASCII)
_GENERALIZED_TIME: Final = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d*[1-9])?Z", re.ASCII)


@dataclass(frozen=True)
class LogTime:
    """``logTime``: unix seconds, or the characters of a UTCTime / GeneralizedTime (kept to re-encode exactly)."""

    format: TimeFormat
    unix: int
    text: str | None = None

    @classmethod
    def unix_time(cls, seconds: int) -> LogTime:
        return cls("unixTime", seconds)

    @classmethod
    def of(cls, time_format: TimeFormat, seconds: int, *, millis: int = 0) -> LogTime:
        """``seconds`` in ``time_format`` (GeneralizedTime keeps non-zero milliseconds, trailing zeros dropped)."""
        if time_format == "unixTime":
            return cls.unix_time(seconds)
        stamp = time.gmtime(seconds)
        if time_format == "utcTime":
            if not 1950 <= stamp.tm_year <= 2049:
                raise ValueError(f"UTCTime cannot hold the year {stamp.tm_year}")
            return cls(time_format, seconds, time.strftime("%y%m%d%H%M%SZ", stamp))
        fraction = f".{millis:03d}".rstrip("0") if millis else ""
        return cls(time_format, seconds, time.strftime("%Y%m%d%H%M%S", stamp) + fraction + "Z")

    def encode(self) -> bytes:
        if self.format == "unixTime":
            return der.encode_integer(self.unix)
        tag = der.UTC_TIME if self.format == "utcTime" else der.GENERALIZED_TIME
        return der.tlv(tag, (self.text or "").encode("ascii"))

    @classmethod
    def decode(cls, element: der.Tlv) -> LogTime:
        if element.tag == der.INTEGER:
            return cls.unix_time(der.decode_integer(element))
        if element.tag not in (der.UTC_TIME, der.GENERALIZED_TIME):
            raise DerError(element.raw, f"logTime at offset {element.offset} has tag 0x{element.tag:02x}, expected "
                                        "INTEGER (unixTime), UTCTime or GeneralizedTime")  # fmt: skip
        try:
            text = element.content.decode("ascii")
        except UnicodeDecodeError:
            raise DerError(element.raw, f"logTime at offset {element.offset} is not ASCII") from None
        if element.tag == der.UTC_TIME:
            match = _UTC_TIME.fullmatch(text)
            if not match:
                raise DerError(element.raw, f"UTCTime {text!r} is not YYMMDDhhmmssZ")
            year = int(match[1])
            fields = [year + (2000 if year < 50 else 1900), *(int(g) for g in match.groups()[1:])]
            return cls("utcTime", _timegm(element, fields, text), text)
        match = _GENERALIZED_TIME.fullmatch(text)
        if not match:
            raise DerError(element.raw, f"GeneralizedTime {text!r} is not YYYYMMDDhhmmss[.fff]Z")
        return cls("generalizedTime", _timegm(element, [int(g) for g in match.groups()[:6]], text), text)


def _timegm(element: der.Tlv, fields: list[int], text: str) -> int:
    year, month, day, hour, minute, second = fields
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        raise DerError(element.raw, f"logTime {text!r} is not a valid date and time")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


@dataclass(frozen=True)
class TransactionData:
    """The certifiedData of a transaction log message (fields [0] to [6])."""

    operation_type: str
    client_id: str
    process_data: bytes
    process_type: str
    transaction_number: int
    additional_external_data: bytes | None = None
    additional_internal_data: bytes | None = None

    def encode(self) -> bytes:
        parts = [
            der.tlv(der.context(0), _ascii(self.operation_type, "operationType")),
            der.tlv(der.context(1), _ascii(self.client_id, "clientId")),
            der.tlv(der.context(2), self.process_data),
            der.tlv(der.context(3), _ascii(self.process_type, "processType")),
        ]
        if self.additional_external_data is not None:
            parts.append(der.tlv(der.context(4), self.additional_external_data))
        if self.transaction_number < 0:
            raise ValueError(f"transactionNumber {self.transaction_number} is negative")
        parts.append(der.encode_integer(self.transaction_number, der.context(5)))
        if self.additional_internal_data is not None:
            parts.append(der.tlv(der.context(6), self.additional_internal_data))
        return b"".join(parts)

    @classmethod
    def decode(cls, elements: list[der.Tlv]) -> TransactionData:
        by_number: dict[int, der.Tlv] = {}
        last = -1
        for element in elements:
            number = element.tag & 0x1F
            if element.tag & 0xE0 != der.CONTEXT or number > 6:
                raise DerError(element.raw, f"unexpected tag 0x{element.tag:02x} at offset {element.offset} in the "
                                            "transaction data (expected [0] to [6], primitive)")  # fmt: skip
            if number <= last:
                raise DerError(element.raw, f"field [{number}] at offset {element.offset} is out of order or repeated")
            by_number[number] = element
            last = number
        required = ((0, "operationType"), (1, "clientId"), (2, "processData"), (3, "processType"),
                    (5, "transactionNumber"))  # fmt: skip
        missing = [name for n, name in required if n not in by_number]
        if missing:
            raise DerError(elements[0].raw if elements else b"", f"transaction data lacks {', '.join(missing)}")
        operation = _text(by_number[0], "operationType")
        if operation not in OPERATIONS:
            raise DerError(by_number[0].raw, f"operationType {operation!r} is not one of {', '.join(OPERATIONS)}")
        number = der.decode_integer(by_number[5])
        if number < 0:
            raise DerError(by_number[5].raw, f"transactionNumber {number} is negative")
        return cls(
            operation_type=operation,
            client_id=_text(by_number[1], "clientId"),
            process_data=by_number[2].content,
            process_type=_text(by_number[3], "processType"),
            transaction_number=number,
            additional_external_data=by_number[4].content if 4 in by_number else None,
            additional_internal_data=by_number[6].content if 6 in by_number else None,
        )


@dataclass(frozen=True)
class OtherCertifiedData:
    """The certifiedData of a system or audit log message, as (tag, content) pairs in their order."""

    elements: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        return b"".join(der.tlv(tag, content) for tag, content in self.elements)


def _ascii(text: str, name: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {text!r} is not ASCII (a PrintableString)") from None


def _text(element: der.Tlv, name: str) -> str:
    try:
        return element.content.decode("ascii")
    except UnicodeDecodeError:
        raise DerError(element.raw, f"{name} at offset {element.offset} is not ASCII") from None


@dataclass(frozen=True)
class LogMessage:
    """One log message; ``signature_value`` empty until signed (:meth:`with_signature`)."""

    certified_data_type: str
    certified_data: TransactionData | OtherCertifiedData
    serial_number: bytes
    signature_algorithm: str
    signature_counter: int
    log_time: LogTime
    signature_value: bytes = b""
    version: int = VERSION
    signature_algorithm_parameters: bytes | None = None
    se_audit_data: bytes | None = None

    @property
    def kind(self) -> str:
        """``transaction``, ``system``, ``audit`` or ``unknown``."""
        return LOG_KINDS.get(self.certified_data_type, "unknown")

    @property
    def transaction(self) -> TransactionData:
        if not isinstance(self.certified_data, TransactionData):
            raise TypeError(f"a {self.kind} log message has no transaction data")
        return self.certified_data

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: the TLVs from version through logTime."""
        if self.signature_counter < 0:
            raise ValueError(f"signatureCounter {self.signature_counter} is negative")
        algorithm = der.encode_oid(self.signature_algorithm) + (self.signature_algorithm_parameters or b"")
        return b"".join([
            der.encode_integer(self.version),
            der.encode_oid(self.certified_data_type),
            self.certified_data.encode(),
            der.tlv(der.OCTET_STRING, self.serial_number),
            der.tlv(der.SEQUENCE, algorithm),
            der.tlv(der.OCTET_STRING, self.se_audit_data) if self.se_audit_data is not None else b"",
            der.encode_integer(self.signature_counter),
            self.log_time.encode(),
        ])  # fmt: skip

    def encode(self) -> bytes:
        """The whole message: SEQUENCE { signed bytes, signatureValue }."""
        return der.tlv(der.SEQUENCE, self.signed_bytes() + der.tlv(der.OCTET_STRING, self.signature_value))

    def with_signature(self, signature: bytes) -> LogMessage:
        return replace(self, signature_value=signature)


def decode_log_message(data: bytes) -> LogMessage:
    """Parse one DER log message; :class:`DerError` naming the offset and the problem if it is not one."""
    outer = der.decode_single(data, der.SEQUENCE)
    elements = list(der.iter_elements(outer.content, base_offset=len(outer.raw) - len(outer.content)))

    def take(tag: int, name: str) -> der.Tlv:
        if not elements:
            raise DerError(data, f"the message ends before {name}")
        element = elements.pop(0)
        if element.tag != tag:
            raise DerError(data, f"{name} at offset {element.offset}: expected tag 0x{tag:02x}, "
                                 f"found 0x{element.tag:02x}")  # fmt: skip
        return element

    version = der.decode_integer(take(der.INTEGER, "version"))
    data_type = der.decode_oid(take(der.OBJECT_IDENTIFIER, "certifiedDataType"))
    certified: list[der.Tlv] = []
    while elements and elements[0].tag & 0xC0 == der.CONTEXT:
        certified.append(elements.pop(0))
    certified_data: TransactionData | OtherCertifiedData
    if data_type == OID_TRANSACTION_LOG:
        certified_data = TransactionData.decode(certified)
    else:
        certified_data = OtherCertifiedData(tuple((e.tag, e.content) for e in certified))
    serial = take(der.OCTET_STRING, "serialNumber").content
    algorithm = take(der.SEQUENCE, "signatureAlgorithm")
    algorithm_parts = list(der.iter_elements(algorithm.content))
    if not algorithm_parts or algorithm_parts[0].tag != der.OBJECT_IDENTIFIER:
        raise DerError(data, f"signatureAlgorithm at offset {algorithm.offset} does not start with an OID")
    parameters = b"".join(p.raw for p in algorithm_parts[1:]) or None
    audit = take(der.OCTET_STRING, "seAuditData").content if elements and elements[0].tag == der.OCTET_STRING else None
    counter = der.decode_integer(take(der.INTEGER, "signatureCounter"))
    if counter < 0:
        raise DerError(data, f"signatureCounter {counter} is negative")
    if not elements:
        raise DerError(data, "the message ends before logTime")
    log_time = LogTime.decode(elements.pop(0))
    signature = take(der.OCTET_STRING, "signatureValue").content
    if elements:
        raise DerError(data, f"unexpected element (tag 0x{elements[0].tag:02x}) at offset {elements[0].offset} "
                             "after signatureValue")  # fmt: skip
    message = LogMessage(
        certified_data_type=data_type, certified_data=certified_data, serial_number=serial,
        signature_algorithm=der.decode_oid(algorithm_parts[0]), signature_counter=counter, log_time=log_time,
        signature_value=signature, version=version, signature_algorithm_parameters=parameters, se_audit_data=audit,
    )  # fmt: skip
    if message.encode() != data:
        raise DerError(data, "the message is not in canonical DER form (it does not re-encode to the same bytes)")
    return message


__all__ = [
    "FINISH", "LOG_KINDS", "OID_AUDIT_LOG", "OID_SYSTEM_LOG", "OID_TRANSACTION_LOG", "OPERATIONS", "START",
    "TIME_FORMATS", "UPDATE", "VERSION", "LogMessage", "LogTime", "OtherCertifiedData", "TimeFormat",
    "TransactionData", "decode_log_message",
]  # fmt: skip
