"""The TAR export of a TSE (BSI TR-03151 / TR-03153): file names, ``info.csv``, and packing.

    Unixt_1629729393_Sig-31_Log-Tra_No-1_Finish_Client-ERS 8cb8….log    a transaction log message (full DER)
    (Unixt|Utc|Gent)_<time>_Sig-<counter>_Log-Tra_No-<tx>_(Start|Update|Finish)_Client-<clientId>[_Fc-<k>].log
    (Unixt|Utc|Gent)_<time>_Sig-<counter>_Log-Sys_<event>[_Fc-<k>].log                     a system log message
    (Unixt|Utc|Gent)_<time>_Sig-<counter>_Log-Aud[_Fc-<k>].log                             an audit log message
    <serial hex>_X509.(cer|der|crt|pem)                                                    the TSE certificate(s)
    info.csv                                                                               about the TSE

The time prefix names the logTime format (unixTime, utcTime, generalizedTime). ``_Fc-<k>`` makes names unique
when two would collide. A client id is a PrintableString, which has no ``_``, so the names parse unambiguously.

``info.csv``: TR-03153 asks for a description of the TSE, its manufacturer and version; the text of the standard
was not at hand when this was written, so the layout here is a documented guess that a reader of real exports must
not rely on: one ``"key:","value"`` row per item — ``description``, ``manufacturer``, ``version`` first, then what
floorgate adds to make an export self-describing: ``serialNumber`` (hex), ``publicKey`` (base64 of the
uncompressed point), ``signatureAlgorithm``, ``curve``, ``timeFormat``, ``certificate`` (the file name),
``certified`` (``yes`` / ``no``). :func:`parse_info_csv` reads any rows of two cells and ignores the rest.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from protocols.tse.logmsg import FINISH, START, UPDATE, LogMessage

TIME_PREFIXES: Final = {"unixTime": "Unixt", "utcTime": "Utc", "generalizedTime": "Gent"}
OPERATION_WORDS: Final = {START: "Start", UPDATE: "Update", FINISH: "Finish"}
KIND_WORDS: Final = {"transaction": "Tra", "system": "Sys", "audit": "Aud"}
CERTIFICATE_SUFFIXES: Final = ("cer", "der", "crt", "pem")
INFO_CSV: Final = "info.csv"

_LOG_NAME: Final = re.compile(
    r"(?P<prefix>Unixt|Utc|Gent)_(?P<time>[^_]+)_Sig-(?P<counter>\d+)_Log-(?P<kind>Tra|Sys|Aud)(?P<rest>.*?)"
    r"(?:_Fc-(?P<fc>\d+))?\.log",
    re.ASCII,  # member names from an uploaded TAR: ASCII digits only
)
_TRA_REST: Final = re.compile(r"_No-(?P<number>\d+)_(?P<operation>Start|Update|Finish)_Client-(?P<client>[^_]+)",
                              re.ASCII)
_CERT_NAME: Final = re.compile(r"(?P<serial>[0-9A-Fa-f]+)_X509\.(?P<suffix>cer|der|crt|pem)")


@dataclass(frozen=True)
class LogFileName:
    """What a log file's name claims about its content."""

    time_format: str  # unixTime | utcTime | generalizedTime
    time_text: str
    signature_counter: int
    kind: str  # transaction | system | audit
    transaction_number: int | None = None
    operation: str | None = None  # StartTransaction | UpdateTransaction | FinishTransaction
    client_id: str | None = None
    event: str | None = None  # system log messages
    file_counter: int | None = None


def parse_log_file_name(name: str) -> LogFileName | None:
    """The parts of a log file name; ``None`` when ``name`` does not follow the pattern at all."""
    match = _LOG_NAME.fullmatch(name)
    if not match:
        return None
    time_format = next(f for f, p in TIME_PREFIXES.items() if p == match["prefix"])
    kind = next(k for k, w in KIND_WORDS.items() if w == match["kind"])
    rest = match["rest"]
    fc = int(match["fc"]) if match["fc"] else None
    head = (time_format, match["time"], int(match["counter"]), kind)
    if kind == "transaction":
        tra = _TRA_REST.fullmatch(rest)
        if not tra:
            return None
        operation = next(o for o, w in OPERATION_WORDS.items() if w == tra["operation"])
        return LogFileName(*head, transaction_number=int(tra["number"]), operation=operation,
                           client_id=tra["client"], file_counter=fc)  # fmt: skip
    if kind == "system":
        if not rest.startswith("_") or len(rest) < 2:
            return None
        return LogFileName(*head, event=rest[1:], file_counter=fc)
    if rest:
        return None
    return LogFileName(*head, file_counter=fc)


def time_text(message: LogMessage) -> str:
    """The ``<time>`` of a file name: unix seconds, or the UTCTime / GeneralizedTime characters."""
    return str(message.log_time.unix) if message.log_time.format == "unixTime" else message.log_time.text or ""


def log_file_name(message: LogMessage, *, file_counter: int | None = None) -> str:
    """The export file name of a transaction log message."""
    data = message.transaction
    name = (
        f"{TIME_PREFIXES[message.log_time.format]}_{time_text(message)}_Sig-{message.signature_counter}_Log-Tra"
        f"_No-{data.transaction_number}_{OPERATION_WORDS[data.operation_type]}_Client-{data.client_id}"
    )
    return name + (f"_Fc-{file_counter}" if file_counter is not None else "") + ".log"


def certificate_file_name(serial: bytes, *, suffix: str = "pem") -> str:
    return f"{serial.hex()}_X509.{suffix}"


def parse_certificate_file_name(name: str) -> str | None:
    """The serial (lower-case hex) a certificate file name claims, or ``None`` when it is not one."""
    match = _CERT_NAME.fullmatch(name)
    return match["serial"].lower() if match else None


def info_csv(items: Mapping[str, str]) -> bytes:
    """``info.csv``: one ``"key:","value"`` row per item, in the order given."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    for key, value in items.items():
        writer.writerow([f"{key}:", value])
    return out.getvalue().encode()


def parse_info_csv(data: bytes) -> dict[str, str]:
    """The key/value rows of an ``info.csv`` (keys without the trailing ``:``); other rows ignored. ``ValueError``
    for a file the CSV reader cannot split (a field beyond its size limit, a quote left open at the end)."""
    text = data.decode("utf-8", errors="replace")
    items: dict[str, str] = {}
    try:
        for row in csv.reader(io.StringIO(text, newline="")):
            if len(row) >= 2 and row[0].strip():
                items[row[0].strip().rstrip(":")] = row[1]
    except csv.Error as exc:
        raise ValueError(f"info.csv is not CSV: {exc}") from None
    return items


def build_tar(members: Iterable[tuple[str, bytes, int]]) -> bytes:
    """A TAR (POSIX pax, so that long client ids fit) of (name, content, mtime) in the order given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mtime in members:
            entry = tarfile.TarInfo(name)
            entry.size = len(content)
            entry.mtime = mtime
            entry.mode = 0o644
            tar.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


__all__ = [
    "CERTIFICATE_SUFFIXES", "INFO_CSV", "KIND_WORDS", "OPERATION_WORDS", "TIME_PREFIXES", "LogFileName", "build_tar",
    "certificate_file_name", "info_csv", "log_file_name", "parse_certificate_file_name", "parse_info_csv",
    "parse_log_file_name", "time_text",
]  # fmt: skip
