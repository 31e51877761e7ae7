"""TAR exports of a TSE, kept byte for byte as uploaded (``POST /api/v1/tse-exports``) and verified on upload.

An export is what the TSE's ``exportData`` gave the node or the operator: log messages, certificate(s), ``info.csv``
(``protocols.tse.tarexport``). Central stores the bytes unchanged in ``tse_exports.content`` with their SHA-256, so
the download is the upload, bit for bit — the form a tax audit (Kassen-Nachschau, DSFinV-K) asks for.

On upload :func:`store_export`:

* refuses what is not an uncompressed TAR (``ustar`` at offset 257; an export is not compressed) and what
  ``protocols.tse.verify_tar`` does not accept — a signature that does not verify, a log message whose name lies,
  a missing certificate or ``info.csv``, a counter gap (unless ``partial``: an export filtered by range, time or
  client legitimately has gaps and transactions whose Start lies outside). Nothing of a refused export is kept;
  :class:`ExportRejected` carries the failed checks, which the API returns. An archive that does not verify is not
  evidence of anything, and keeping it would suggest that it is;
* gives the same bytes uploaded again the row already held (SHA-256), so an upload can be repeated safely;
* sums the verification up in ``report`` (the checks across the export, the counts, the first invalid entries) and
  keeps the TSE serial, the counter and transaction number ranges for the listing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import TseExport
from protocols.tse.verify_tar import TarVerification, verify_tar

MAX_EXPORT_BYTES: Final = 64 * 1024 * 1024
MAX_FILENAME: Final = 255
MAX_LISTED: Final = 20  # invalid entries named in a report or an error
_USTAR: Final = slice(257, 262)


class ExportRejected(Exception):
    """An upload that is not a TAR export that verifies; ``reason`` says why, ``report`` is the verification."""

    def __init__(self, reason: str, report: dict[str, Any] | None = None) -> None:
        self.reason = reason
        self.report = report
        super().__init__(reason)


@dataclass(frozen=True)
class Stored:
    export: TseExport
    created: bool  # False: the same bytes were held already


def summarize(verification: TarVerification) -> dict[str, Any]:
    """The report kept with an export: every check across it, the counts, the first invalid entries."""
    logs = [e for e in verification.entries if e.kind == "log"]
    invalid = verification.invalid_entries
    return {
        "valid": verification.valid,
        "checks": [c.as_dict() for c in verification.checks],
        "files": len(verification.entries), "log_messages": len(logs), "invalid_entries": len(invalid),
        "invalid": [{"name": e.name, "failed": [c.as_dict() for c in e.checks if c.ok is False]}
                    for e in invalid[:MAX_LISTED]],
    }  # fmt: skip


def _why(verification: TarVerification) -> str:
    failed = [f"{c.name}: {c.detail}" for c in verification.checks if c.ok is False]
    failed += [f"{e.name}: " + "; ".join(f"{c.name}: {c.detail}" for c in e.checks if c.ok is False)
               for e in verification.invalid_entries[:MAX_LISTED]]  # fmt: skip
    more = len(verification.invalid_entries) - MAX_LISTED
    return "; ".join(failed) + (f"; and {more} more invalid file(s)" if more > 0 else "")


def store_export(session: Session, data: bytes, *, filename: str | None, partial: bool, actor: str,
                 now: datetime) -> Stored:  # fmt: skip
    """Verify ``data`` and add it (not committed); the row held already for the same bytes; ExportRejected."""
    digest = hashlib.sha256(data).hexdigest()
    held = session.execute(select(TseExport).where(TseExport.sha256 == digest)).scalar_one_or_none()
    if held is not None:
        return Stored(held, created=False)
    if len(data) < 512 or data[_USTAR] != b"ustar":
        raise ExportRejected("not an uncompressed TAR archive (no ustar header): upload the export as the TSE "
                             "produced it")  # fmt: skip
    verification = verify_tar(data, partial=partial)
    report = summarize(verification)
    if not verification.valid:
        raise ExportRejected(f"the export does not verify{' (as a partial export)' if partial else ''}: "
                             f"{_why(verification)}", report)  # fmt: skip
    messages = [e.message for e in verification.entries if e.message is not None]
    serials = sorted({m.serial_number.hex() for m in messages})
    counters = [m.signature_counter for m in messages]
    numbers = [m.transaction.transaction_number for m in messages if m.kind == "transaction"]
    report["serials"] = serials
    export = TseExport(
        tse_serial=serials[0] if len(serials) == 1 else None, filename=filename, size=len(data), sha256=digest,
        content=data, partial=partial, log_messages=len(messages),
        first_counter=min(counters, default=None), last_counter=max(counters, default=None),
        first_tx=min(numbers, default=None), last_tx=max(numbers, default=None), report=report,
        uploaded_at=now, uploaded_by=actor,
    )  # fmt: skip
    session.add(export)
    session.flush()
    return Stored(export, created=True)


__all__ = ["MAX_EXPORT_BYTES", "MAX_FILENAME", "ExportRejected", "Stored", "store_export", "summarize"]
