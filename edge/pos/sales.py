"""The counter's sales on the node: sign each sale with the node's TSE and keep it as a business record.

    register ──HTTP──> edge.pos.api ──> PosService.sale()
                                           │ one sale at a time per TSE (asyncio lock)
                                           ├─ worker thread: StartTransaction + FinishTransaction (processData)
                                           ├─ outbox.append("business", tse_transaction)   durable (fsync)
                                           └─ answer: number, counters, times, signature, receipt QR code

A sale always completes. When the TSE fails (:class:`~protocols.tse.errors.TseError`: unavailable, not ready after
a self test and a time update, refusing), the sale is recorded with ``tse_failed: true`` and the reason, logged, a
node alarm (``/health``) is raised until a sale is signed again, and the answer says ``TSE ausgefallen`` — the
register prints that on the receipt. The TSE is opened again on the next sale.

The ``tse_transaction`` record (device = ``tse.id``), the contract with central::

    tse_serial  public_key  algorithm  time_format   hex SHA-256 of the key, base64 04‖X‖Y, ecdsa-plain-SHA…, unixTime
    client_id  tx_number  start_counter  signature_counter    counters of StartTransaction and FinishTransaction
    started_at  finished_at  log_time          ISO 8601 UTC as in the QR code; log_time = finish, unix seconds
    process_type  process_data  signature  qr  Kassenbeleg-V1, the processData signed, base64 r‖s, V0;…
    total  currency  receipt_id  tse_failed  error

A failed sale has ``signature``, ``signature_counter``, ``log_time`` and ``qr`` null; ``tx_number`` and
``start_counter`` are set only if the StartTransaction was signed, ``tse_serial`` / ``public_key`` / ``algorithm``
only if the TSE was opened once, and ``started_at`` / ``finished_at`` are the node's clock.

Cancellation: the agent stops by cancelling; a sale that has begun is finished and recorded first (``drain``), so a
signature handed out by the TSE is never lost between the TSE and the outbox.

Before anything is signed, the fields the register controls are checked with the rules central applies to the record
(``sync.sales.check_sale_record``): a sale central would quarantine — a gap in the TSE's sequence — is a 422 here.

Idempotency: a sale with a ``receipt_id`` is answered once. The answer is committed with the sale's record in one
SQLite transaction (``edge.store.receipts``, the agent's ``OutboxReceipts``); the same receipt sent again — also after
the agent restarted — gets that answer with ``replayed: true`` and signs nothing, the same receipt with another
processData (amounts, payments, kind) a 409. The crash window between the TSE's signature and the commit is
described in ``edge.store.receipts``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from edge.errors import EdgeError, OutboxError
from edge.pos.config import TseConfig
from edge.store.outbox import NewRecord
from edge.store.receipts import MemoryReceipts, Receipt, ReceiptBook
from protocols.tse.api import TransactionResult, TseDriver, TseInfo, ensure_ready
from protocols.tse.errors import TseError, TseInvalidArgument, TseNotReady, TseUnknownTransaction
from protocols.tse.processdata import PROCESS_TYPE, Kassenbeleg
from protocols.tse.qr import ReceiptQr, iso_time
from sync.records import TSE_TRANSACTION, TseTransactionPayload
from sync.sales import SaleError, check_sale_record, clean_text, format_total

log = logging.getLogger(__name__)

TSE_FAILED: Final = "TSE ausgefallen"
READY_CHECK_S: Final = 60.0  # self test / time update are checked this often (and whenever the TSE asks)
DRAIN_TIMEOUT_S: Final = 10.0  # on stop, sales in progress get this long to be signed and recorded
REMEMBERED_STARTS: Final = 1000  # transactions started through the API and not finished yet
ALARM: Final = "tse"

T = TypeVar("T")


class PosError(EdgeError):
    """A sale the node does not take; ``status`` is the HTTP status, ``field`` the request field (if one)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Sale:
    """One sale as the register hands it in."""

    client_id: str
    beleg: Kassenbeleg
    receipt_id: str | None = None

    @property
    def process_data(self) -> str:
        return self.beleg.build()

    def digest(self) -> str:
        return hashlib.sha256(f"{self.client_id}\n{self.receipt_id}\n{self.process_data}".encode()).hexdigest()


@dataclass(frozen=True)
class SaleAnswer:
    """What the register gets: everything the receipt prints, or ``tse_failed`` and ``TSE ausgefallen``."""

    record_id: str
    client_id: str
    receipt_id: str | None
    tx_number: int | None
    start_counter: int | None
    signature_counter: int | None
    started_at: str
    finished_at: str
    process_type: str
    process_data: str
    signature: str | None
    qr: str | None
    tse_id: str
    tse_serial: str | None
    public_key: str | None
    algorithm: str | None
    time_format: str | None
    total: str
    tse_failed: bool
    message: str | None
    error: str | None
    replayed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class StartAnswer:
    """The answer to an explicit start: the transaction number to finish later."""

    client_id: str
    tx_number: int | None
    signature_counter: int | None
    started_at: str
    tse_serial: str | None
    tse_failed: bool
    message: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Signed:
    """What the worker thread brings back from the TSE."""

    info: TseInfo | None = None
    start: TransactionResult | None = None
    finish: TransactionResult | None = None
    error: str | None = None
    failed_at: float = field(default_factory=time.time)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def open_software_tse(cfg: TseConfig, data_dir: Path) -> TseDriver:
    from protocols.tse.software import SoftwareTse

    return SoftwareTse(cfg.directory(data_dir), curve=cfg.algorithm)


def open_fiskaly_tse(cfg: TseConfig, data_dir: Path) -> TseDriver:
    from edge.pos.fiskaly import FiskalyTse

    assert cfg.fiskaly is not None  # the config checks it
    return FiskalyTse(cfg.fiskaly)  # type: ignore[return-value]


DRIVERS: Final[dict[str, Callable[[TseConfig, Path], TseDriver]]] = {"software": open_software_tse,
                                                                      "fiskaly": open_fiskaly_tse}


class PosService:
    """Sales on the node's TSE. ``emit`` stores business records (durable before it returns; raises
    ``OutboxError``), ``set_alarm(text | None)`` raises / clears the node alarm, ``has_room()`` says whether a
    business record would fit. ``open_driver`` makes the TSE (default: by ``cfg.driver``); tests hand in others.
    ``receipts`` keeps the answers of sales with a receipt id and stores the records (the agent's is durable, in
    the outbox; default: in memory through ``emit``). Everything but the TSE calls runs on the agent's event
    loop."""

    def __init__(
        self, cfg: TseConfig, *, data_dir: Path, emit: Callable[[str, Sequence[NewRecord]], None],
        set_alarm: Callable[[str | None], None] = lambda _text: None, has_room: Callable[[], bool] = lambda: True,
        open_driver: Callable[[], TseDriver] | None = None, receipts: ReceiptBook | None = None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.emit = emit
        self.set_alarm = set_alarm
        self.has_room = has_room
        self.open_driver = open_driver or (lambda: DRIVERS[cfg.driver](cfg, data_dir))
        self.clients = frozenset(cfg.clients)
        self.sales = 0
        self.failed_sales = 0
        # requests the POS API refused before any TSE work: "unauthorized" (no / wrong token), "payload_too_large"
        # (over pos.max_body_bytes), "invalid" (a sale central's rules would refuse: 422) — node /health and /metrics
        self.refused: dict[str, int] = {}
        self._tse: TseDriver | None = None
        self._info: TseInfo | None = None  # of the last TSE opened: serial, key, algorithm stay known when it fails
        self._ready_at = 0.0
        self._failing: str | None = None  # the reason while the TSE fails
        self._lock = asyncio.Lock()  # one TSE operation at a time: a TSE is a single device
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.receipts: ReceiptBook = receipts if receipts is not None else MemoryReceipts(emit)
        self._starts: OrderedDict[int, TransactionResult] = OrderedDict()

    # -- public, on the event loop --------------------------------------------------------------------------------
    @property
    def info(self) -> TseInfo | None:
        return self._info

    @property
    def failing(self) -> str | None:
        return self._failing

    async def open(self) -> None:
        """Open the TSE now (self test, time, clients); a failure is an alarm, and the next sale tries again."""
        await self._run(self._open())

    async def sale(self, sale: Sale) -> SaleAnswer:
        """Start and finish one transaction, record it, answer. ``PosError`` for a sale the node refuses."""
        return await self._run(self._sale(sale))

    async def start(self, client_id: str) -> StartAnswer:
        """Only the StartTransaction (the register finishes it later with :meth:`finish`)."""
        return await self._run(self._start(client_id))

    async def finish(self, tx_number: int, sale: Sale) -> SaleAnswer:
        """Finish a transaction begun with :meth:`start`, record it, answer."""
        return await self._run(self._finish(tx_number, sale))

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Refuse new sales and wait (at most ``timeout_s``, even if cancelled meanwhile) until the ones begun are
        signed and recorded; then close the TSE."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        cancelled = False
        while self._inflight and (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait(list(self._inflight), timeout=left)
            except asyncio.CancelledError:
                cancelled = True
        if self._inflight:
            log.error("TSE %s: %d sale(s) still with the TSE after %.0f s; stopping without them",
                      self.cfg.id, len(self._inflight), timeout_s)
        tse, self._tse = self._tse, None
        if tse is not None and not self._inflight:
            with contextlib.suppress(TseError, OSError):
                _close(tse)
        if cancelled:
            raise asyncio.CancelledError

    # -- the work, each as a task of its own (finished even when the request is cancelled) --------------------------
    async def _run(self, work: Coroutine[Any, Any, T]) -> T:
        if self._closing:
            work.close()
            raise PosError(503, "stopping", "the node is stopping; try again in a moment")
        task = asyncio.get_running_loop().create_task(work, name="pos-sale")
        self._inflight.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the request that waited for it may have been cancelled

    async def _sale(self, sale: Sale) -> SaleAnswer:
        self._check_client(sale.client_id)
        self._check_sale(sale)
        async with self._lock:
            if (seen := self._replay(sale)) is not None:
                return seen
            self._check_room()
            process_data = sale.process_data
            signed = await asyncio.to_thread(self._sign_sale, sale.client_id, process_data)
            return self._record(sale, process_data, signed)

    async def _start(self, client_id: str) -> StartAnswer:
        self._check_client(client_id)
        async with self._lock:
            signed = await asyncio.to_thread(self._sign_start, client_id)
            if signed.start is None:
                self._fail(signed.error or "?")
                return StartAnswer(client_id=client_id, tx_number=None, signature_counter=None,
                                   started_at=iso_time(int(signed.failed_at)), tse_serial=self._serial(),
                                   tse_failed=True, message=TSE_FAILED, error=signed.error)  # fmt: skip
            self._recovered()
            start = signed.start
            self._starts[start.transaction_number] = start
            while len(self._starts) > REMEMBERED_STARTS:
                self._starts.popitem(last=False)
            return StartAnswer(client_id=client_id, tx_number=start.transaction_number,
                               signature_counter=start.signature_counter, started_at=iso_time(start.log_time),
                               tse_serial=start.serial_number.hex(), tse_failed=False, message=None,
                               error=None)  # fmt: skip

    async def _finish(self, tx_number: int, sale: Sale) -> SaleAnswer:
        self._check_client(sale.client_id)
        self._check_sale(sale)
        async with self._lock:
            if (seen := self._replay(sale)) is not None:
                return seen
            start = self._starts.get(tx_number)
            if start is None:
                raise PosError(404, "unknown_transaction", f"no open transaction {tx_number} started through this "
                               "node's API since it started; sell it with POST /pos/v1/sales", field="tx_number")
            if start.client_id != sale.client_id:
                raise PosError(409, "other_client", f"transaction {tx_number} was started by {start.client_id!r}, "
                               f"not {sale.client_id!r}", field="client_id")  # fmt: skip
            self._check_room()
            process_data = sale.process_data
            signed = await asyncio.to_thread(self._sign_finish, start, process_data)
            if isinstance(signed, PosError):
                raise signed
            self._starts.pop(tx_number, None)
            return self._record(sale, process_data, signed)

    async def _open(self) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self._driver)
            except Exception as exc:  # whatever the driver raises: the node runs on, sales say TSE ausgefallen
                self._fail(f"cannot open the TSE: {_describe(exc)}")
            else:
                self._recovered()

    # -- checks -----------------------------------------------------------------------------------------------------
    def _check_client(self, client_id: str) -> None:
        if client_id not in self.clients:
            raise PosError(422, "unknown_client", f"{client_id!r} is not a client of TSE {self.cfg.id} (tse.clients: "
                           f"{', '.join(sorted(self.clients))})", field="client_id")  # fmt: skip

    def _check_room(self) -> None:
        if not self.has_room():
            raise PosError(503, "outbox_full", "the node cannot store a sale now (its outbox is full): nothing was "
                           "signed; see the node's /health")  # fmt: skip

    def _check_sale(self, sale: Sale) -> None:
        """Central's rules for the record (``sync.sales``), on what the register sent — before anything is signed."""
        try:
            total = format_total(sale.beleg.total)
            check_sale_record({"client_id": sale.client_id, "receipt_id": sale.receipt_id, "total": total,
                               "currency": "EUR", "process_type": PROCESS_TYPE,
                               "process_data": sale.process_data}, signed=True)  # fmt: skip
        except SaleError as exc:
            raise PosError(422, "invalid_request", str(exc), field=_BODY_FIELD.get(exc.field, exc.field)) from None

    def _replay(self, sale: Sale) -> SaleAnswer | None:
        if sale.receipt_id is None:
            return None
        try:
            seen = self.receipts.find(sale.client_id, sale.receipt_id)
        except OutboxError as exc:
            raise PosError(503, "outbox_unavailable", f"the node cannot read its receipt book: {exc}") from exc
        if seen is None:
            return None
        if seen.digest != sale.digest():
            raise PosError(409, "receipt_id_used", f"receipt {sale.receipt_id!r} of {sale.client_id!r} was already "
                           "sold with other amounts, payments or kind; nothing was signed", field="receipt_id")
        known = {k: v for k, v in seen.answer.items() if k in SaleAnswer.__dataclass_fields__}
        return SaleAnswer(**{**known, "replayed": True})

    # -- the TSE, in the worker thread (under the lock: one thread at a time) ---------------------------------------
    def _driver(self) -> TseDriver:
        if self._tse is None:
            tse = self.open_driver()
            try:
                for client in self.cfg.clients:
                    tse.register_client(client)
                self._info = ensure_ready(tse)
            except BaseException:
                with contextlib.suppress(Exception):
                    _close(tse)
                raise
            self._tse = tse
            self._ready_at = time.monotonic()
            log.info("TSE %s open: serial %s, %s, %s, signature counter %d, transaction %d", self.cfg.id,
                     self._info.serial_hex, self._info.algorithm, self._info.description,
                     self._info.signature_counter, self._info.transaction_number)  # fmt: skip
        elif time.monotonic() - self._ready_at >= READY_CHECK_S:
            self._info = ensure_ready(self._tse)
            self._ready_at = time.monotonic()
        return self._tse

    def _call(self, op: Callable[[TseDriver], T]) -> T:
        tse = self._driver()
        try:
            return op(tse)
        except TseNotReady:  # a self test or a time update came due: do it, then once more
            self._info = ensure_ready(tse)
            self._ready_at = time.monotonic()
            return op(tse)

    def _drop(self) -> None:
        tse, self._tse = self._tse, None
        if tse is not None:
            with contextlib.suppress(Exception):
                _close(tse)

    def _sign_sale(self, client_id: str, process_data: str) -> _Signed:
        out = _Signed()
        try:
            out.start = self._call(lambda t: t.start_transaction(client_id, b"", PROCESS_TYPE))
            number = out.start.transaction_number
            out.finish = self._call(lambda t: t.finish_transaction(client_id, number, process_data, PROCESS_TYPE))
        except Exception as exc:  # any failure of the TSE or its driver: the sale goes on unsigned
            out.error = self._failed_call(exc, out.start)
        out.info = self._info
        return out

    def _sign_start(self, client_id: str) -> _Signed:
        out = _Signed()
        try:
            out.start = self._call(lambda t: t.start_transaction(client_id, b"", PROCESS_TYPE))
        except Exception as exc:
            out.error = self._failed_call(exc, None)
        out.info = self._info
        return out

    def _sign_finish(self, start: TransactionResult, process_data: str) -> _Signed | PosError:
        out = _Signed(start=start)
        try:
            out.finish = self._call(lambda t: t.finish_transaction(start.client_id, start.transaction_number,
                                                                   process_data, PROCESS_TYPE))  # fmt: skip
        except TseUnknownTransaction as exc:  # the TSE no longer has it open (finished elsewhere, another TSE)
            return PosError(409, "not_open", f"the TSE has no open transaction {start.transaction_number}: {exc}",
                            field="tx_number")
        except Exception as exc:
            out.error = self._failed_call(exc, start)
        out.info = self._info
        return out

    def _failed_call(self, exc: Exception, start: TransactionResult | None) -> str:
        """The reason for the record; the TSE is opened again next time unless it only refused the arguments."""
        if not isinstance(exc, TseError):
            log.exception("TSE %s: the driver failed unexpectedly", self.cfg.id)
        if not isinstance(exc, TseInvalidArgument):
            self._drop()
        step = "StartTransaction" if start is None else f"FinishTransaction of transaction {start.transaction_number}"
        return f"{step}: {_describe(exc)}"

    # -- the record, on the event loop ------------------------------------------------------------------------------
    def _serial(self) -> str | None:
        return self._info.serial_hex if self._info is not None else None

    def _record(self, sale: Sale, process_data: str, signed: _Signed) -> SaleAnswer:
        info = signed.info or self._info
        start, finish = signed.start, signed.finish
        if finish is None or info is None:  # info is known once the TSE was opened: always when it signed
            finish = None
            started_at = iso_time(start.log_time) if start is not None else iso_time(int(signed.failed_at))
            finished_at = iso_time(int(signed.failed_at))
            signature = qr = None
        else:
            started_at, finished_at = iso_time(finish.start_time), iso_time(finish.log_time)
            signature = _b64(finish.signature_value)
            qr = ReceiptQr(
                client_id=sale.client_id, process_type=PROCESS_TYPE, process_data=process_data,
                transaction_number=finish.transaction_number, signature_counter=finish.signature_counter,
                start=started_at, end=finished_at, algorithm=finish.algorithm, log_time_format=finish.time_format,
                signature=finish.signature_value, public_key=info.public_key,
            ).build()  # fmt: skip
        failed = finish is None
        total = format_total(sale.beleg.total)  # checked in _check_sale
        data = TseTransactionPayload(
            tse_serial=info.serial_hex if info else None,
            public_key=_b64(info.public_key) if info else None,
            algorithm=info.algorithm if info else None,
            time_format=info.time_format if info else None,
            client_id=sale.client_id,
            tx_number=start.transaction_number if start is not None else None,
            signature_counter=finish.signature_counter if finish is not None else None,
            start_counter=start.signature_counter if start is not None else None,
            started_at=started_at, finished_at=finished_at,
            log_time=finish.log_time if finish is not None else None,
            process_type=PROCESS_TYPE, process_data=process_data,
            signature=signature, qr=qr,
            total=total, currency="EUR", receipt_id=sale.receipt_id,
            tse_failed=failed, error=clean_text(signed.error or "?") if failed else None,
        ).to_payload()  # fmt: skip
        record = NewRecord(kind=TSE_TRANSACTION, device=self.cfg.id, data=data)
        answer = SaleAnswer(
            record_id=record.record_id, client_id=sale.client_id, receipt_id=sale.receipt_id,
            tx_number=data["tx_number"], start_counter=data["start_counter"],
            signature_counter=data["signature_counter"], started_at=started_at, finished_at=finished_at,
            process_type=PROCESS_TYPE, process_data=process_data, signature=signature, qr=qr, tse_id=self.cfg.id,
            tse_serial=data["tse_serial"], public_key=data["public_key"], algorithm=data["algorithm"],
            time_format=data["time_format"], total=total, tse_failed=failed,
            message=TSE_FAILED if failed else None, error=data["error"],
        )  # fmt: skip
        receipt = None
        if sale.receipt_id is not None:
            receipt = Receipt(client_id=sale.client_id, receipt_id=sale.receipt_id, digest=sale.digest(),
                              answer=answer.as_dict(), record_id=record.record_id)
        try:
            # the record and the receipt's answer in one transaction, durable (fsync) before it returns
            self.receipts.store("business", [record], receipt)
        except OutboxError as exc:
            where = (f"transaction {data['tx_number']} (signature counter {data['signature_counter']})"
                     if not failed else "an unsigned sale")  # fmt: skip
            text = f"TSE {self.cfg.id}: {where} of {sale.client_id} signed but NOT stored: {exc}"
            log.critical(text)
            self.set_alarm(text)
            raise PosError(503, "outbox_unavailable", f"the sale could not be stored on the node: {exc}") from exc
        self.sales += 1
        if failed:
            self.failed_sales += 1
            self._fail(signed.error or "?", sale=sale)
        else:
            self._recovered()
        return answer

    # -- the alarm --------------------------------------------------------------------------------------------------
    def _fail(self, reason: str, *, sale: Sale | None = None) -> None:
        what = f"sale of {sale.client_id} recorded without signature ({TSE_FAILED})" if sale else TSE_FAILED
        if self._failing is None:
            log.error("TSE %s: %s: %s", self.cfg.id, what, reason)
        else:
            log.warning("TSE %s: %s: %s", self.cfg.id, what, reason)
        self._failing = reason
        self.set_alarm(f"TSE {self.cfg.id}: {TSE_FAILED}: {reason}")

    def _recovered(self) -> None:
        if self._failing is not None:
            log.warning("TSE %s works again (it failed: %s)", self.cfg.id, self._failing)
            self._failing = None
        self.set_alarm(None)


_BODY_FIELD: Final = {"total": "amounts", "process_data": "payments", "currency": "payments"}  # record → POS body


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _close(tse: TseDriver) -> None:
    close = getattr(tse, "close", None)
    if callable(close):
        close()


__all__ = ["TSE_FAILED", "PosError", "PosService", "Sale", "SaleAnswer", "StartAnswer"]
