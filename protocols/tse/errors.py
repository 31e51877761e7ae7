"""Exceptions of the TSE (technische Sicherheitseinrichtung) code.

    TseError (ProtocolError)        base of everything raised by ``protocols.tse``
    ├── TseUnavailable              the TSE cannot be used now: not reachable, its key or state missing or
    │                               damaged, in use by another process, closed. A sale still completes and the
    │                               receipt says "TSE ausgefallen" (the caller's job)
    ├── TseNotReady                 the TSE works but first needs a self test (``reason="self-test"``) or a time
    │                               update (``reason="time"``); ``ensure_ready`` in ``api`` does both
    ├── TseInvalidArgument          (also a ``ValueError``) the caller asked for something the SE API refuses:
    │   │                           a client id that is not a PrintableString of 1-30 characters, a transaction
    │   │                           number that is not open, another client's transaction; ``argument`` names it
    │   ├── TseClientNotRegistered  the client id was never registered with ``register_client``
    │   ├── TseUnknownTransaction   no open transaction with that number
    │   └── ProcessDataError        a ``Kassenbeleg-V1`` processData that cannot be built / parsed; ``field``
    │                               names the bucket or payment (``vat_19``, ``payments[1].currency``)
    ├── DerError (also FrameError)  bytes that are not a well-formed DER transaction log message; ``reason``
    │                               says what and at which offset, ``raw`` holds the bytes
    └── ReceiptQrError              (also a ``ValueError``) text that is not a ``V0;…`` receipt QR code; the
                                    message names the field (``signatureCounter: 'x1' is not a number``)

Verification results are *not* exceptions: ``qr.verify_receipt_qr`` and ``verify_tar.verify_tar`` return a report
listing every check with valid / invalid and the reason.
"""

from __future__ import annotations

from protocols.errors import FrameError, ProtocolError


class TseError(ProtocolError):
    """Base of all TSE errors."""


class TseUnavailable(TseError):
    """The TSE cannot be used (hardware gone, key or state missing, locked by another process, closed)."""


class TseNotReady(TseError):
    """A self test or a time update is due before the TSE signs again; ``reason`` is ``"self-test"`` or ``"time"``."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class TseInvalidArgument(TseError, ValueError):
    """The SE API refuses the arguments; ``argument`` names the offending one."""

    def __init__(self, message: str, *, argument: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class TseClientNotRegistered(TseInvalidArgument):
    """The client (cash register, ERS) is not registered with this TSE."""


class TseUnknownTransaction(TseInvalidArgument):
    """No open transaction with the given number."""


class ProcessDataError(TseInvalidArgument):
    """A processData that cannot be built or parsed; ``field`` names the part (``vat_7``, ``payments[0].amount``)."""

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(message, argument=field)


class DerError(FrameError, TseError):
    """Bytes that are not a valid DER log message; ``reason`` says what and where, ``raw`` holds the bytes."""

    def __init__(self, raw: bytes, reason: str, *, device: str | None = None) -> None:
        super().__init__(raw[:64], reason, device=device)


class ReceiptQrError(TseError, ValueError):
    """Text that is not a receipt QR code (``V0;…``); ``field`` names the part that is wrong."""

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


__all__ = [
    "DerError", "ProcessDataError", "ReceiptQrError", "TseClientNotRegistered", "TseError", "TseInvalidArgument",
    "TseNotReady", "TseUnavailable", "TseUnknownTransaction",
]  # fmt: skip
