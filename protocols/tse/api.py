"""The TSE driver interface, after the SE API of BSI TR-03151: what every TSE looks like to floorgate.

    register_client(client_id)                       a cash register (ERS) may use the TSE
    start_transaction(client_id, data, type)   ──>   TransactionResult  (number, counter, logTime, signature, serial)
    update_transaction(client_id, n, data, type) ─>  TransactionResult
    finish_transaction(client_id, n, data, type) ─>  TransactionResult  (+ start time: all a receipt QR code needs)
    export(tx_range=, time_range=, client_id=)  ──>  TAR bytes (log messages, certificate, info.csv)
    info() / self_test() / update_time()             serial, algorithm, certificate, time format; readiness

Drivers: ``software.SoftwareTse`` (NOT certified; tests and the demo), ``edge.pos.fiskaly.FiskalyTse`` (the
fiskaly SIGN DE cloud TSE over HTTPS; its request and reply shapes are ``fiskaly``). Next: a Swissbit driver
(vendor library). Calls block (a hardware TSE takes tens of milliseconds, a cloud TSE a network
round trip); the edge runs them in a worker thread. A driver raises only the exceptions of ``errors``: when it
raises :class:`~protocols.tse.errors.TseUnavailable`, the sale completes anyway and the receipt says
"TSE ausgefallen" — that policy belongs to the caller.

A real TSE wants a self test after power-up (and every 25 hours or so) and its time set after power-up and then
regularly (about every 30 minutes); it refuses to sign otherwise. ``TseInfo.self_test_due`` / ``time_update_due``
say so, and :func:`ensure_ready` does both when needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from protocols.tse.logmsg import TimeFormat


@dataclass(frozen=True)
class TseInfo:
    """What a TSE says about itself (SE API getters: serial numbers, certificates, time sync variant, state)."""

    serial_number: bytes  # SHA-256 of the uncompressed public key (32 bytes)
    public_key: bytes  # uncompressed point 04 ‖ X ‖ Y
    algorithm: str  # ecdsa-plain-SHA256 | ecdsa-plain-SHA384
    algorithm_oid: str
    curve: str  # brainpoolP384r1 | P-256 | …
    certificate_pem: bytes
    time_format: TimeFormat
    description: str
    manufacturer: str
    version: str
    certified: bool
    signature_counter: int  # the last counter used (0: none yet)
    transaction_number: int  # the last transaction number given out (0: none yet)
    open_transactions: tuple[int, ...]
    clients: tuple[str, ...]
    self_test_due: bool
    time_update_due: bool

    @property
    def serial_hex(self) -> str:
        return self.serial_number.hex()

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial_hex, "public_key": self.public_key.hex(), "algorithm": self.algorithm,
            "algorithm_oid": self.algorithm_oid, "curve": self.curve, "time_format": self.time_format,
            "description": self.description, "manufacturer": self.manufacturer, "version": self.version,
            "certified": self.certified, "signature_counter": self.signature_counter,
            "transaction_number": self.transaction_number, "open_transactions": list(self.open_transactions),
            "clients": list(self.clients), "self_test_due": self.self_test_due,
            "time_update_due": self.time_update_due, "certificate_pem": self.certificate_pem.decode(),
        }  # fmt: skip


@dataclass(frozen=True)
class TransactionResult:
    """What start / update / finish return: everything a receipt and an audit need."""

    operation: str  # StartTransaction | UpdateTransaction | FinishTransaction
    client_id: str
    transaction_number: int
    signature_counter: int
    log_time: int  # unix seconds (the log message's logTime)
    time_format: TimeFormat
    start_time: int  # logTime of the transaction's StartTransaction (the receipt's "start")
    signature_value: bytes  # plain r ‖ s
    serial_number: bytes
    algorithm: str
    process_type: str
    process_data: bytes
    log_message: bytes  # the whole DER log message, as exported


@runtime_checkable
class TseDriver(Protocol):
    """The SE API as floorgate uses it. Every method may raise ``TseUnavailable``."""

    def info(self) -> TseInfo:
        """Serial number, public key, algorithm, certificate, time format, counters and readiness."""
        ...

    def self_test(self) -> None:
        """Run the self test (required after power-up and then periodically)."""
        ...

    def update_time(self, unix_time: float | None = None) -> None:
        """Set the TSE's clock (``None``: the host's time)."""
        ...

    def register_client(self, client_id: str) -> None:
        """Allow ``client_id`` (a PrintableString of 1-30 characters) to sign; registering twice is harmless."""
        ...

    def start_transaction(
        self, client_id: str, process_data: bytes | str = b"", process_type: str = "", *,
        additional_data: bytes | None = None,
    ) -> TransactionResult:  # fmt: skip
        """Open a transaction: the next transaction number, a signed StartTransaction log message."""
        ...

    def update_transaction(
        self, client_id: str, transaction_number: int, process_data: bytes | str, process_type: str
    ) -> TransactionResult:
        """Sign an UpdateTransaction for an open transaction of ``client_id``."""
        ...

    def finish_transaction(
        self, client_id: str, transaction_number: int, process_data: bytes | str, process_type: str, *,
        additional_data: bytes | None = None,
    ) -> TransactionResult:  # fmt: skip
        """Sign the FinishTransaction and close the transaction."""
        ...

    def export(
        self, *, tx_range: tuple[int, int] | None = None, time_range: tuple[int, int] | None = None,
        client_id: str | None = None,
    ) -> bytes:  # fmt: skip
        """A TAR with the log messages matching every filter given (inclusive ranges), the certificate and info.csv."""
        ...


def ensure_ready(tse: TseDriver) -> TseInfo:
    """Run the self test and set the time when the TSE says they are due; its info afterwards."""
    info = tse.info()
    if info.self_test_due:
        tse.self_test()
    if info.time_update_due:
        tse.update_time()
    return tse.info() if info.self_test_due or info.time_update_due else info


__all__ = ["TransactionResult", "TseDriver", "TseInfo", "ensure_ready"]
