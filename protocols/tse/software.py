"""A software TSE — NOT CERTIFIED, for tests and demos only — that behaves like a real one on the SE API.

It signs real TR-03151 log messages (``logmsg``) with ECDSA — brainpoolP384r1 / ecdsa-plain-SHA384 by default,
P-256 / ecdsa-plain-SHA256 as an option — so its receipts and exports verify with ``floorgate tse verify`` and with
any other TR-03151 verifier. It is not a TSE in law: the key sits in a file, nothing protects it or the counters,
and the BSI never looked at it. It says so in a WARNING when it is opened, in ``info().description`` and in
``info.csv``.

One directory holds everything::

    <dir>/tse-key.pem      the private key, PKCS#8 PEM, mode 0600 (made once, never replaced)
    <dir>/tse-cert.pem     a self-signed X.509 certificate of the key (CN names it NOT CERTIFIED)
    <dir>/tse-state.db     SQLite: counters, clients, transactions, every signed log message
    <dir>/tse.lock         held (flock) while the TSE is open: one process at a time

Every signature is committed together with its counter and log message in one SQLite transaction (WAL,
``synchronous=FULL``) before it is returned, so transaction numbers and the signature counter never repeat or go
back across restarts and crashes; a signature whose commit did not happen was never handed out. Only transaction
log messages are written (no system or audit log messages), so the signature counter has no gaps in a full export.

Like a hardware TSE it refuses to sign (:class:`TseNotReady`) until it has run its self test after opening (and
again once it is 24 h old) and has had its time set since opening; after 30 min ``info().time_update_due`` asks
for the next time update, without refusing. ``api.ensure_ready`` does both.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocols.tse import crypto
from protocols.tse.api import TransactionResult, TseInfo
from protocols.tse.der import PRINTABLE_CHARS
from protocols.tse.errors import (
    TseClientNotRegistered,
    TseInvalidArgument,
    TseNotReady,
    TseUnavailable,
    TseUnknownTransaction,
)
from protocols.tse.logmsg import FINISH, OID_TRANSACTION_LOG, START, UPDATE, LogMessage, LogTime, TransactionData
from protocols.tse.tarexport import build_tar, certificate_file_name, info_csv, log_file_name

log = logging.getLogger(__name__)

NOT_CERTIFIED: Final = "software TSE — NOT CERTIFIED, for tests and demos only"
MANUFACTURER: Final = "floorgate (software, not certified)"
VERSION: Final = "1"
DEFAULT_CURVE: Final = "brainpoolP384r1"
CURVE_ALGORITHMS: Final = {"brainpoolP384r1": crypto.ECDSA_PLAIN_SHA384, "P-256": crypto.ECDSA_PLAIN_SHA256}
SELF_TEST_INTERVAL_S: Final = 24 * 3600.0
TIME_UPDATE_INTERVAL_S: Final = 30 * 60.0
MAX_CLIENT_ID_LENGTH: Final = 30
MAX_PROCESS_TYPE_LENGTH: Final = 100
CERTIFICATE_VALIDITY_DAYS: Final = 3650
KEY_FILE: Final = "tse-key.pem"
CERT_FILE: Final = "tse-cert.pem"
STATE_FILE: Final = "tse-state.db"
LOCK_FILE: Final = "tse.lock"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    number INTEGER PRIMARY KEY, client_id TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('open', 'finished')),
    start_time INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log_messages (
    signature_counter INTEGER PRIMARY KEY, transaction_number INTEGER NOT NULL, client_id TEXT NOT NULL,
    operation TEXT NOT NULL, log_time INTEGER NOT NULL, file_name TEXT NOT NULL, der BLOB NOT NULL);
"""


def is_tse_directory(directory: str | Path) -> bool:
    """Whether ``directory`` holds a software TSE (its key)."""
    return (Path(directory) / KEY_FILE).is_file()


def check_client_id(client_id: str) -> None:
    """A client id is a PrintableString of 1 to 30 characters (TR-03151)."""
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= MAX_CLIENT_ID_LENGTH:
        raise TseInvalidArgument(f"{client_id!r} must be 1 to {MAX_CLIENT_ID_LENGTH} characters", argument="client_id")
    bad = sorted(set(client_id) - PRINTABLE_CHARS)
    if bad:
        raise TseInvalidArgument(
            f"{client_id!r} has characters a PrintableString cannot hold: {''.join(bad)!r} "
            "(allowed: A-Z a-z 0-9 space ' ( ) + , - . / : = ?)", argument="client_id",
        )  # fmt: skip


def _check_process_type(process_type: str) -> None:
    if len(process_type) > MAX_PROCESS_TYPE_LENGTH or set(process_type) - PRINTABLE_CHARS:
        raise TseInvalidArgument(f"{process_type!r} must be a PrintableString of at most {MAX_PROCESS_TYPE_LENGTH} "
                                 "characters", argument="process_type")  # fmt: skip


def _bytes(process_data: bytes | str) -> bytes:
    return process_data.encode() if isinstance(process_data, str) else bytes(process_data)


class SoftwareTse:
    """The software TSE in ``directory`` (made there on first use unless ``create=False``).

    ``curve``: ``brainpoolP384r1`` (default, as hardware TSEs) or ``P-256`` (as cloud TSEs); only when the TSE is
    made — an existing one keeps its key, and naming another curve is an error. ``clock`` gives unix seconds (a
    fake one in tests). Use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self, directory: str | Path, *, curve: str | None = None, create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        if curve is not None and curve not in CURVE_ALGORITHMS:
            raise TseInvalidArgument(f"{curve!r} is not one of {', '.join(CURVE_ALGORITHMS)}", argument="curve")
        self.directory = Path(directory)
        self._clock = clock
        self._lock = threading.RLock()
        self._time_offset_s = 0.0
        self._time_set_at: float | None = None
        self._self_test_at: float | None = None
        self._closed = False
        self._lock_fd: int | None = None
        if not is_tse_directory(self.directory) and not create:
            raise TseUnavailable(f"{self.directory}: no software TSE here (no {KEY_FILE})")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = self._take_lock()
        except OSError as exc:
            raise TseUnavailable(f"{self.directory}: {exc}") from exc
        try:
            self._db = self._open_state()
            self._key, self._curve = self._open_key(curve)
            self._algorithm = CURVE_ALGORITHMS[self._curve]
            self._public_key = crypto.public_key_bytes(self._key.public_key())
            self._serial = crypto.serial_number(self._public_key)
            self._bind_serial()
            self._certificate = self._open_certificate()
        except BaseException:
            self._release()
            raise
        log.warning("%s (serial %s, %s, %s)", NOT_CERTIFIED, self._serial.hex()[:16], self._curve,
                    self.directory)  # fmt: skip

    # --- opening ---------------------------------------------------------------------------------------------------

    def _take_lock(self) -> int:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TseUnavailable(f"{self.directory}: the software TSE is in use by another process") from None
        return fd

    def _open_state(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.directory / STATE_FILE, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise TseUnavailable(f"{self.directory / STATE_FILE}: {exc}") from exc
        return db

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _counter(self, key: str) -> int:
        return int(self._meta(key) or 0)

    def _open_key(self, curve: str | None) -> tuple[ec.EllipticCurvePrivateKey, str]:
        path = self.directory / KEY_FILE
        if not path.exists():
            if self._meta("serial") is not None:
                raise TseUnavailable(f"{path} is missing but {STATE_FILE} holds signed log messages of serial "
                                     f"{self._meta('serial')}: refusing to make a new key over them")  # fmt: skip
            chosen = curve or DEFAULT_CURVE
            key = ec.generate_private_key(crypto.CURVES[chosen])
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())  # fmt: skip
            _write_atomic(path, pem, mode=0o600)
            return key, chosen
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise TseUnavailable(f"{path}: cannot load the key: {exc}") from exc
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise TseUnavailable(f"{path}: not an elliptic-curve key")
        name = crypto.curve_name_of(loaded)
        if name not in CURVE_ALGORITHMS:
            raise TseUnavailable(f"{path}: curve {name} is not one a software TSE uses")
        if curve is not None and curve != name:
            raise TseInvalidArgument(f"this TSE was made with {name}; its key is never replaced (asked: {curve})",
                                     argument="curve")  # fmt: skip
        return loaded, name

    def _bind_serial(self) -> None:
        stored = self._meta("serial")
        if stored is None:
            with self._write():
                self._db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("serial", self._serial.hex()), ("curve", self._curve), ("algorithm", self._algorithm.name),
                    ("signature_counter", "0"), ("transaction_number", "0"),
                    ("created_at", str(int(self._clock()))),
                ])  # fmt: skip
        elif stored != self._serial.hex():
            raise TseUnavailable(f"{self.directory}: {KEY_FILE} (serial {self._serial.hex()}) does not belong to "
                                 f"{STATE_FILE} (serial {stored})")  # fmt: skip

    def _open_certificate(self) -> x509.Certificate:
        path = self.directory / CERT_FILE
        if path.exists():
            try:
                certificate = x509.load_pem_x509_certificate(path.read_bytes())
            except ValueError as exc:
                raise TseUnavailable(f"{path}: {exc}") from exc
            public = certificate.public_key()
            if isinstance(public, ec.EllipticCurvePublicKey) and crypto.public_key_bytes(public) == self._public_key:
                return certificate
            log.warning("%s does not match the key; making a new self-signed certificate", path)
        certificate = self._make_certificate()
        _write_atomic(path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return certificate

    def _make_certificate(self) -> x509.Certificate:
        name = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"floorgate software TSE {self._serial.hex()[:16]} NOT CERTIFIED"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "floorgate"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, self._serial.hex()),
        ])  # fmt: skip
        now = dt.datetime.fromtimestamp(int(self._clock()), tz=dt.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=CERTIFICATE_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        )  # fmt: skip
        digest = hashes.SHA384() if self._algorithm.hash_name == "SHA384" else hashes.SHA256()
        return builder.sign(self._key, digest)

    # --- plumbing --------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One durable SQLite write transaction."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise TseUnavailable(f"{self.directory / STATE_FILE}: {exc}") from exc
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise TseUnavailable(f"{self.directory / STATE_FILE}: commit failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise TseUnavailable(f"{self.directory}: the software TSE is closed")

    def _now(self) -> float:
        return self._clock() + self._time_offset_s

    def _self_test_due(self) -> bool:
        return self._self_test_at is None or self._clock() - self._self_test_at >= SELF_TEST_INTERVAL_S

    def _time_update_due(self) -> bool:
        return self._time_set_at is None or self._clock() - self._time_set_at >= TIME_UPDATE_INTERVAL_S

    def _check_ready(self) -> None:
        self._check_open()
        if self._self_test_due():
            raise TseNotReady("the TSE needs its self test (after opening and every 24 h): call self_test()",
                              reason="self-test")  # fmt: skip
        if self._time_set_at is None:
            raise TseNotReady("the TSE's time has not been set since it was opened: call update_time()", reason="time")

    # --- SE API ----------------------------------------------------------------------------------------------------

    def info(self) -> TseInfo:
        with self._lock:
            self._check_open()
            open_numbers = tuple(r[0] for r in self._db.execute(
                "SELECT number FROM transactions WHERE state = 'open' ORDER BY number"))  # fmt: skip
            clients = tuple(r[0] for r in self._db.execute("SELECT client_id FROM clients ORDER BY client_id"))
            return TseInfo(
                serial_number=self._serial, public_key=self._public_key, algorithm=self._algorithm.name,
                algorithm_oid=self._algorithm.oid, curve=self._curve,
                certificate_pem=self._certificate.public_bytes(serialization.Encoding.PEM), time_format="unixTime",
                description=NOT_CERTIFIED, manufacturer=MANUFACTURER, version=VERSION, certified=False,
                signature_counter=self._counter("signature_counter"),
                transaction_number=self._counter("transaction_number"), open_transactions=open_numbers,
                clients=clients, self_test_due=self._self_test_due(), time_update_due=self._time_update_due(),
            )  # fmt: skip

    def self_test(self) -> None:
        """Sign and verify a test value, check the certificate and the state database; ``TseUnavailable`` if bad."""
        with self._lock:
            self._check_open()
            probe = b"floorgate software TSE self test"
            signature = crypto.sign_plain(self._key, self._algorithm, probe)
            if crypto.verify_plain(self._key.public_key(), self._algorithm, signature, probe):
                raise TseUnavailable("self test failed: the key does not verify its own signature")
            public = self._certificate.public_key()
            if not isinstance(public, ec.EllipticCurvePublicKey) or crypto.public_key_bytes(public) != self._public_key:
                raise TseUnavailable("self test failed: the certificate is not that of the key")
            try:
                result = self._db.execute("PRAGMA quick_check").fetchone()
            except sqlite3.Error as exc:
                raise TseUnavailable(f"self test failed: {exc}") from exc
            if result is None or result[0] != "ok":
                raise TseUnavailable(f"self test failed: the state database is damaged ({result})")
            self._self_test_at = self._clock()

    def update_time(self, unix_time: float | None = None) -> None:
        with self._lock:
            self._check_open()
            self._time_offset_s = 0.0 if unix_time is None else unix_time - self._clock()
            self._time_set_at = self._clock()

    def register_client(self, client_id: str) -> None:
        check_client_id(client_id)
        with self._lock:
            self._check_open()
            with self._write():
                self._db.execute("INSERT OR IGNORE INTO clients (client_id, registered_at) VALUES (?, ?)",
                                 (client_id, int(self._now())))  # fmt: skip

    def start_transaction(
        self, client_id: str, process_data: bytes | str = b"", process_type: str = "", *,
        additional_data: bytes | None = None,
    ) -> TransactionResult:  # fmt: skip
        return self._sign(START, client_id, None, process_data, process_type, additional_data)

    def update_transaction(
        self, client_id: str, transaction_number: int, process_data: bytes | str, process_type: str
    ) -> TransactionResult:
        return self._sign(UPDATE, client_id, transaction_number, process_data, process_type, None)

    def finish_transaction(
        self, client_id: str, transaction_number: int, process_data: bytes | str, process_type: str, *,
        additional_data: bytes | None = None,
    ) -> TransactionResult:  # fmt: skip
        return self._sign(FINISH, client_id, transaction_number, process_data, process_type, additional_data)

    def _sign(
        self, operation: str, client_id: str, number: int | None, process_data: bytes | str, process_type: str,
        additional_data: bytes | None,
    ) -> TransactionResult:  # fmt: skip
        check_client_id(client_id)
        _check_process_type(process_type)
        data = _bytes(process_data)
        with self._lock:
            self._check_ready()
            with self._write():
                if self._db.execute("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)).fetchone() is None:
                    raise TseClientNotRegistered(f"{client_id!r} is not registered with this TSE",
                                                 argument="client_id")  # fmt: skip
                log_time = int(self._now())
                if number is None:
                    number = self._counter("transaction_number") + 1
                    start_time = log_time
                    self._db.execute("INSERT INTO transactions (number, client_id, state, start_time) "
                                     "VALUES (?, ?, 'open', ?)", (number, client_id, start_time))  # fmt: skip
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'transaction_number'", (str(number),))
                else:
                    start_time = self._open_transaction(number, client_id)
                counter = self._counter("signature_counter") + 1
                message = LogMessage(
                    certified_data_type=OID_TRANSACTION_LOG,
                    certified_data=TransactionData(
                        operation_type=operation, client_id=client_id, process_data=data, process_type=process_type,
                        transaction_number=number, additional_external_data=additional_data,
                    ),
                    serial_number=self._serial, signature_algorithm=self._algorithm.oid,
                    signature_counter=counter, log_time=LogTime.unix_time(log_time),
                )  # fmt: skip
                signature = crypto.sign_plain(self._key, self._algorithm, message.signed_bytes())
                signed = message.with_signature(signature)
                der = signed.encode()
                self._db.execute(
                    "INSERT INTO log_messages (signature_counter, transaction_number, client_id, operation, log_time, "
                    "file_name, der) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (counter, number, client_id, operation, log_time, log_file_name(signed), der),
                )
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'signature_counter'", (str(counter),))
                if operation == FINISH:
                    self._db.execute("UPDATE transactions SET state = 'finished' WHERE number = ?", (number,))
        return TransactionResult(
            operation=operation, client_id=client_id, transaction_number=number, signature_counter=counter,
            log_time=log_time, time_format="unixTime", start_time=start_time, signature_value=signature,
            serial_number=self._serial, algorithm=self._algorithm.name, process_type=process_type,
            process_data=data, log_message=der,
        )  # fmt: skip

    def _open_transaction(self, number: int, client_id: str) -> int:
        row = self._db.execute("SELECT client_id, state, start_time FROM transactions WHERE number = ?",
                               (number,)).fetchone()  # fmt: skip
        if row is None:
            raise TseUnknownTransaction(f"there is no transaction {number}", argument="transaction_number")
        if row[1] != "open":
            raise TseUnknownTransaction(f"transaction {number} is already finished", argument="transaction_number")
        if row[0] != client_id:
            raise TseInvalidArgument(f"transaction {number} belongs to client {row[0]!r}, not {client_id!r}",
                                     argument="client_id")  # fmt: skip
        return int(row[2])

    def export(
        self, *, tx_range: tuple[int, int] | None = None, time_range: tuple[int, int] | None = None,
        client_id: str | None = None,
    ) -> bytes:  # fmt: skip
        where: list[str] = []
        params: list[object] = []
        if tx_range is not None:
            where.append("transaction_number BETWEEN ? AND ?")
            params += [tx_range[0], tx_range[1]]
        if time_range is not None:
            where.append("log_time BETWEEN ? AND ?")
            params += [time_range[0], time_range[1]]
        if client_id is not None:
            where.append("client_id = ?")
            params.append(client_id)
        query = "SELECT file_name, der, log_time FROM log_messages"
        query += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY signature_counter"
        with self._lock:
            self._check_open()
            rows = [(str(r[0]), bytes(r[1]), int(r[2])) for r in self._db.execute(query, params)]
            info = self.info()
        now = int(self._now())
        cert_name = certificate_file_name(self._serial)
        about = info_csv({
            "description": NOT_CERTIFIED, "manufacturer": MANUFACTURER, "version": VERSION,
            "serialNumber": self._serial.hex(), "publicKey": base64.b64encode(self._public_key).decode(),
            "signatureAlgorithm": self._algorithm.name, "curve": self._curve, "timeFormat": info.time_format,
            "certificate": cert_name, "certified": "no",
        })  # fmt: skip
        return build_tar([*rows, (cert_name, info.certificate_pem, now), ("info.csv", about, now)])

    # --- life cycle ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def _release(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> SoftwareTse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_atomic(path: Path, content: bytes, *, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


__all__ = [
    "CURVE_ALGORITHMS", "DEFAULT_CURVE", "NOT_CERTIFIED", "SELF_TEST_INTERVAL_S", "TIME_UPDATE_INTERVAL_S",
    "SoftwareTse", "check_client_id", "is_tse_directory",
]  # fmt: skip
