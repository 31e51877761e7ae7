"""Verify a TSE TAR export entry by entry, offline: every log message, the certificate(s) and ``info.csv``.

Per log message (``*.log``):

    der          it parses as a TR-03151 log message (strict DER, version 2)
    name         the file name says what the content says: kind, signature counter, logTime, transaction number,
                 Start/Update/Finish, client id
    serial       a certificate in the export belongs to its serialNumber (SHA-256 of the certificate's key)
    algorithm    a TR-03151 algorithm that fits the key's size
    signature    verifies over the signed bytes (version … logTime) with that certificate's key
    sequence     its signature counter follows the previous one by exactly 1 (no gap, no duplicate)
    time         its logTime is not before the previous message's
    transaction  Start opens a new, higher number; Update / Finish follow a Start of the same number and client;
                 nothing follows a Finish

Per certificate (``<serial hex>_X509.(cer|der|crt|pem)``): it loads, and the serial in its name is the SHA-256 of its
public key. ``info.csv``: it is there; when it names a serial number or public key (as floorgate's exports do), they
match a certificate.

An export filtered by transaction range, time range or client legitimately has counter gaps and transactions whose
Start lies outside: verify it with ``partial=True`` (``--partial``), which tolerates exactly those two things.
"""

from __future__ import annotations

import base64
import binascii
import io
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.tse import crypto
from protocols.tse.errors import DerError
from protocols.tse.logmsg import FINISH, START, VERSION, LogMessage, decode_log_message
from protocols.tse.report import Check, all_valid, format_checks
from protocols.tse.tarexport import (
    INFO_CSV,
    KIND_WORDS,
    LogFileName,
    parse_certificate_file_name,
    parse_info_csv,
    parse_log_file_name,
    time_text,
)

MAX_MEMBER_BYTES: Final = 16 * 1024 * 1024
# a compressed TAR (``r:*`` reads gzip, bzip2, xz) can inflate a thousandfold: the archive as read is bounded, so a
# bomb ends as an unreadable archive instead of filling memory or the CPU for minutes
MAX_MEMBERS: Final = 200_000  # more files than a 64 MiB plain TAR can hold (1 KiB each at least)
MAX_TOTAL_BYTES: Final = 256 * 1024 * 1024  # file contents kept in memory, all files together
MAX_STREAM_BYTES: Final = 1024 * 1024 * 1024  # how far into the (inflated) archive stream the reader goes


class ArchiveTooLarge(tarfile.TarError):
    """The archive exceeds one of the reader's bounds (reported as an unreadable archive)."""


@dataclass
class EntryReport:
    """The checks of one file in the export."""

    name: str
    kind: str  # log | certificate | info | other
    checks: list[Check] = field(default_factory=list)
    signature_counter: int | None = None
    message: LogMessage | None = None

    @property
    def valid(self) -> bool:
        required = ("der", "signature") if self.kind == "log" else ()
        return all_valid(self.checks, required=required)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "valid": self.valid,
                               "checks": [c.as_dict() for c in self.checks]}  # fmt: skip
        if self.message is not None:
            out["signature_counter"] = self.message.signature_counter
            out["log_time"] = self.message.log_time.unix
            if self.message.kind == "transaction":
                data = self.message.transaction
                out.update(transaction_number=data.transaction_number, operation=data.operation_type,
                           client_id=data.client_id)  # fmt: skip
        return out


@dataclass(frozen=True)
class TarVerification:
    """The whole export: one report per file plus the checks across files."""

    entries: tuple[EntryReport, ...]
    checks: tuple[Check, ...]
    readable: bool = True

    @property
    def valid(self) -> bool:
        return self.readable and all(e.valid for e in self.entries) and all_valid(
            self.checks, required=("archive", "certificate"))  # fmt: skip

    @property
    def invalid_entries(self) -> tuple[EntryReport, ...]:
        return tuple(e for e in self.entries if not e.valid)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "tar-export", "valid": self.valid, "checks": [c.as_dict() for c in self.checks],
                "entries": [e.as_dict() for e in self.entries]}  # fmt: skip

    def lines(self, *, verbose: bool = False) -> list[str]:
        """Text for people: the export's checks, then each entry with its failed and unchecked checks (every check
        with ``verbose``)."""
        logs = [e for e in self.entries if e.kind == "log"]
        bad = self.invalid_entries
        out = [f"TAR export: {'VALID' if self.valid else 'INVALID'} ({len(logs)} log messages, "
               f"{len(self.entries)} files, {len(bad)} invalid)", *format_checks(self.checks)]  # fmt: skip
        for entry in self.entries:
            out.append(f"{'ok  ' if entry.valid else 'FAIL'}  {entry.name}")
            out += format_checks([c for c in entry.checks if verbose or c.ok is not True], indent="        ")
        return out


def verify_tar(data: bytes, *, partial: bool = False) -> TarVerification:
    """Verify a TAR export; never raises on bad input (an unreadable archive gives ``readable=False``)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = _read_members(tar)
    except (tarfile.TarError, EOFError, OSError) as exc:
        return TarVerification((), (Check("archive", False, f"not a readable TAR archive: {exc}"),), readable=False)
    entries: list[EntryReport] = []
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    info: dict[str, str] | None = None
    logs: list[EntryReport] = []
    for name, content, problem in members:
        base = posixpath.basename(name)
        if problem:
            entries.append(EntryReport(name, "other", [Check("file", False, problem)]))
        elif base == INFO_CSV:
            entry = EntryReport(name, "info")
            try:
                info = parse_info_csv(content)
            except ValueError as exc:
                entry.checks.append(Check("info", False, str(exc)))
            entries.append(entry)
        elif parse_certificate_file_name(base) is not None:
            entries.append(_check_certificate(name, base, content, keys))
        elif base.endswith(".log"):
            entry = _check_log(name, base, content)
            entries.append(entry)
            logs.append(entry)
        else:
            entries.append(EntryReport(name, "other", [Check("file", None, "not part of a TSE export (ignored)")]))
    for entry in logs:
        if entry.message is not None:
            _check_signature(entry, entry.message, keys)
    checks = [Check("archive", True, f"{len(members)} files")]
    checks.append(Check("certificate", True, f"{len(keys)} certificate(s): {', '.join(sorted(keys))}") if keys else
                  Check("certificate", False, "no usable <serial>_X509.(cer|der|crt|pem) in the export"))  # fmt: skip
    checks.append(_check_info(entries, info, keys))
    checks += _check_sequence(logs, partial=partial)
    return TarVerification(tuple(entries), tuple(checks))


def _read_members(tar: tarfile.TarFile) -> list[tuple[str, bytes, str]]:
    """Every file's name, content and problem, header by header (never ``getmembers`` of the whole archive first),
    within MAX_MEMBERS, MAX_TOTAL_BYTES and MAX_STREAM_BYTES (``ArchiveTooLarge``)."""
    members: list[tuple[str, bytes, str]] = []
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise ArchiveTooLarge(f"more than {MAX_MEMBERS} files")
        if member.offset_data + max(member.size, 0) > MAX_STREAM_BYTES:
            raise ArchiveTooLarge(f"more than {MAX_STREAM_BYTES} bytes once unpacked")
        tar.members = []  # type: ignore[attr-defined]  # else the reader keeps every header it has read
        if member.isdir():
            continue
        if not member.isfile():
            members.append((member.name, b"", "not a regular file"))
        elif member.size > MAX_MEMBER_BYTES:
            members.append((member.name, b"", f"{member.size} bytes: too large for a TSE export file"))
        else:
            total += member.size
            if total > MAX_TOTAL_BYTES:
                raise ArchiveTooLarge(f"its files hold more than {MAX_TOTAL_BYTES} bytes")
            handle = tar.extractfile(member)
            members.append((member.name, handle.read(MAX_MEMBER_BYTES) if handle else b"", ""))
    return members


def _check_certificate(name: str, base: str, content: bytes, keys: dict[str, ec.EllipticCurvePublicKey]) -> EntryReport:
    entry = EntryReport(name, "certificate")
    claimed = parse_certificate_file_name(base) or ""
    try:
        certificate = (x509.load_pem_x509_certificate(content) if content.lstrip().startswith(b"-----BEGIN")
                       else x509.load_der_x509_certificate(content))  # fmt: skip
    except ValueError as exc:
        entry.checks.append(Check("certificate", False, f"cannot be loaded: {exc}"))
        return entry
    try:
        public = certificate.public_key()  # parsed lazily: a corrupt key shows only now
        subject, issuer = _name(certificate.subject), _name(certificate.issuer)
    except ValueError as exc:
        entry.checks.append(Check("certificate", False, f"cannot be loaded: {exc}"))
        return entry
    if not isinstance(public, ec.EllipticCurvePublicKey):
        entry.checks.append(Check("certificate", False, "its key is not an elliptic-curve key"))
        return entry
    try:
        curve = crypto.curve_name_of(public)
    except ValueError as exc:
        entry.checks.append(Check("certificate", False, str(exc)))
        return entry
    entry.checks.append(Check("certificate", True, f"{curve}, subject {subject}"))
    serial = crypto.serial_number(public).hex()
    if serial == claimed:
        entry.checks.append(Check("serial", True, f"{serial} = SHA-256 of its public key"))
        keys[serial] = public
    else:
        entry.checks.append(Check("serial", False, f"the name says {claimed}, its key's SHA-256 is {serial}"))
    if certificate.issuer == certificate.subject:
        try:
            certificate.verify_directly_issued_by(certificate)
            entry.checks.append(Check("issuer", None, "self-signed (its own signature verifies; not a BSI-certified "
                                                      "TSE certificate)"))  # fmt: skip
        except (ValueError, TypeError, InvalidSignature) as exc:
            entry.checks.append(Check("issuer", False, f"self-signed, but its signature does not verify: {exc}"))
    else:
        entry.checks.append(Check("issuer", None, f"issued by {issuer} (the chain is "
                                                  "not checked offline)"))  # fmt: skip
    return entry


def _name(name: x509.Name) -> str:
    """RFC 4514 text of a certificate's subject / issuer (ValueError for one that cannot be decoded)."""
    return name.rfc4514_string()


def _check_log(name: str, base: str, content: bytes) -> EntryReport:
    entry = EntryReport(name, "log")
    try:
        message = decode_log_message(content)
    except DerError as exc:
        entry.checks.append(Check("der", False, f"not a TR-03151 log message: {exc.reason}"))
        entry.checks.append(Check("signature", None, "not checked: the log message cannot be read"))
        _check_name_only(entry, base)
        return entry
    if message.version != VERSION:
        entry.checks.append(Check("der", False, f"version {message.version}, expected {VERSION}"))
    else:
        entry.checks.append(Check("der", True, f"{message.kind} log message, {len(content)} bytes"))
    entry.message = message
    entry.signature_counter = message.signature_counter
    claimed = parse_log_file_name(base)
    if claimed is None:
        entry.checks.append(Check("name", False, "does not follow (Unixt|Utc|Gent)_<time>_Sig-<n>_Log-(Tra|Sys|Aud)…"))
    else:
        entry.checks.append(_compare_name(claimed, message))
    return entry


def _check_name_only(entry: EntryReport, base: str) -> None:
    if parse_log_file_name(base) is None:
        entry.checks.append(Check("name", False, "does not follow (Unixt|Utc|Gent)_<time>_Sig-<n>_Log-(Tra|Sys|Aud)…"))


def _compare_name(claimed: LogFileName, message: LogMessage) -> Check:
    wrong: list[str] = []
    if claimed.kind != message.kind:
        wrong.append(f"Log-{KIND_WORDS.get(claimed.kind, claimed.kind)} but the content is a {message.kind} log")
    if claimed.signature_counter != message.signature_counter:
        wrong.append(f"Sig-{claimed.signature_counter} but signatureCounter {message.signature_counter}")
    if claimed.time_format != message.log_time.format:
        wrong.append(f"time prefix for {claimed.time_format} but logTime is {message.log_time.format}")
    elif claimed.time_text != time_text(message):
        wrong.append(f"time {claimed.time_text} but logTime {time_text(message)}")
    if message.kind == "transaction" and claimed.kind == "transaction":
        data = message.transaction
        if claimed.transaction_number != data.transaction_number:
            wrong.append(f"No-{claimed.transaction_number} but transactionNumber {data.transaction_number}")
        if claimed.operation != data.operation_type:
            wrong.append(f"{claimed.operation} in the name but operationType {data.operation_type}")
        if claimed.client_id != data.client_id:
            wrong.append(f"Client-{claimed.client_id} but clientId {data.client_id}")
    if wrong:
        return Check("name", False, "; ".join(wrong))
    return Check("name", True, "matches the content")


def _check_signature(entry: EntryReport, message: LogMessage, keys: dict[str, ec.EllipticCurvePublicKey]) -> None:
    serial = message.serial_number.hex()
    key = keys.get(serial)
    if key is None:
        entry.checks.append(Check("serial", False, f"no certificate in the export for serialNumber {serial}"))
    else:
        entry.checks.append(Check("serial", True, serial))
    algorithm = crypto.ALGORITHMS_BY_OID.get(message.signature_algorithm)
    if algorithm is None:
        entry.checks.append(Check("algorithm", False, f"OID {message.signature_algorithm} is not a TR-03151 "
                                                      "signature algorithm"))  # fmt: skip
    else:
        entry.checks.append(Check("algorithm", True, algorithm.name))
    if key is None or algorithm is None:
        entry.checks.append(Check("signature", None, "not checked: no key or no known algorithm"))
        return
    problem = crypto.verify_plain(key, algorithm, message.signature_value, message.signed_bytes())
    entry.checks.append(Check("signature", not problem, problem or f"verifies ({crypto.curve_name_of(key)})"))


def _check_info(entries: list[EntryReport], info: dict[str, str] | None,
                keys: dict[str, ec.EllipticCurvePublicKey]) -> Check:  # fmt: skip
    if info is None:
        return Check("info.csv", False, "missing from the export")
    entry = next(e for e in entries if e.kind == "info")
    problems: list[str] = []
    serial = info.get("serialNumber", "").lower()
    if serial and serial not in keys:
        problems.append(f"serialNumber {serial} has no certificate in the export")
    key_text = info.get("publicKey", "")
    if key_text:
        try:
            point = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            problems.append("publicKey is not base64")
        else:
            if serial and crypto.serial_number(point).hex() != serial:
                problems.append("publicKey's SHA-256 is not serialNumber")
    summary = ", ".join(f"{k}: {v}" for k, v in info.items() if k in ("description", "manufacturer", "version"))
    check = Check("info.csv", not problems, "; ".join(problems) or (summary or "present"))
    entry.checks.append(check)
    return check


def _check_sequence(logs: list[EntryReport], *, partial: bool) -> list[Check]:
    readable = sorted((e for e in logs if e.message is not None), key=lambda e: (e.signature_counter or 0, e.name))
    if not readable:
        return [Check("signature_counters", None, "no readable log messages")]
    gaps: list[str] = []
    duplicates: list[str] = []
    times: list[str] = []
    previous: EntryReport | None = None
    for entry in readable:
        message = entry.message
        assert message is not None
        if previous is not None and previous.message is not None:
            before = previous.message
            if message.signature_counter == before.signature_counter:
                duplicates.append(str(message.signature_counter))
                entry.checks.append(Check("sequence", False, f"signature counter {message.signature_counter} also in "
                                                             f"{previous.name}"))  # fmt: skip
            elif message.signature_counter != before.signature_counter + 1:
                missing = _range_text(before.signature_counter + 1, message.signature_counter - 1)
                gaps.append(missing)
                why = " (partial export)" if partial else " (a log message was removed or never exported)"
                entry.checks.append(Check("sequence", None if partial else False,
                                          f"counter {message.signature_counter} follows {before.signature_counter}: "
                                          f"{missing} missing{why}"))  # fmt: skip
            else:
                entry.checks.append(Check("sequence", True, f"follows {before.signature_counter}"))
            if message.log_time.unix < before.log_time.unix:
                times.append(entry.name)
                entry.checks.append(Check("time", False, f"logTime {message.log_time.unix} is before "
                                                         f"{before.log_time.unix} of signature counter "
                                                         f"{before.signature_counter}"))  # fmt: skip
        previous = entry
    first, last = readable[0].signature_counter, readable[-1].signature_counter
    checks = [Check("signature_counters", False, f"duplicated: {', '.join(duplicates)}")] if duplicates else []
    if gaps:
        checks.append(Check("signature_counters", None if partial else False,
                            f"{first}..{last} with gaps: {', '.join(gaps)} missing"))  # fmt: skip
    elif not duplicates:
        checks.append(Check("signature_counters", True, f"{first}..{last}, no gaps"))
    checks.append(Check("times", not times, f"logTime goes back at {', '.join(times)}" if times else "non-decreasing"))
    checks.append(_check_transactions(readable, partial=partial))
    return checks


def _check_transactions(readable: list[EntryReport], *, partial: bool) -> Check:
    state: dict[int, tuple[str, str]] = {}  # number -> (client, "open" | "finished")
    last_start: int | None = None
    problems = 0
    for entry in readable:
        message = entry.message
        assert message is not None
        if message.kind != "transaction":
            continue
        data = message.transaction
        number, client, operation = data.transaction_number, data.client_id, data.operation_type
        problem: str | None = None
        tolerated = False
        if operation == START:
            if number in state:
                problem = f"transaction {number} is started a second time"
            elif last_start is not None and number != last_start + 1:
                problem = f"transaction {number} starts after {last_start} (numbers must increase by 1)"
                tolerated = partial and number > last_start
            state[number] = (client, "open")
            last_start = number if last_start is None else max(last_start, number)
        elif number not in state:
            problem = f"{operation} of transaction {number} without its StartTransaction in this export"
            tolerated = partial
            state[number] = (client, "finished" if operation == FINISH else "open")
        else:
            owner, status = state[number]
            if status == "finished":
                problem = f"{operation} of transaction {number} after its FinishTransaction"
            elif owner != client:
                problem = f"transaction {number} was started by client {owner}, not {client}"
            if operation == FINISH:
                state[number] = (owner, "finished")
        if problem is None:
            entry.checks.append(Check("transaction", True, f"{operation} of transaction {number}"))
        else:
            problems += 0 if tolerated else 1
            entry.checks.append(Check("transaction", None if tolerated else False, problem))
    still_open = sorted(n for n, (_, status) in state.items() if status == "open")
    detail = f"{len(state)} transactions" + (f", still open: {', '.join(map(str, still_open))}" if still_open else "")
    if problems:
        return Check("transactions", False, f"{problems} log message(s) out of order; {detail}")
    return Check("transactions", True, detail)


def _range_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


__all__ = ["EntryReport", "TarVerification", "verify_tar"]
