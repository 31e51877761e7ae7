"""The counter's sales API on the node (``pos.listen``, loopback or LAN): the cash register signs its sales here.

Every request carries ``Authorization: Bearer <token>`` (``pos.token_file`` / ``pos.token_env``); without it: 401.

    POST /pos/v1/sales                         start + finish in one call (the usual way)
    POST /pos/v1/transactions                  {client_id} → StartTransaction only: {tx_number, …}
    POST /pos/v1/transactions/{n}/finish       the sale body → FinishTransaction of n (started here, this run)
    GET  /pos/v1/tse                           the TSE: id, serial, public key, algorithm, clients, failing
    GET  /pos/v1/openapi.json

A sale::

    {"client_id": "KASSE-1", "receipt_id": "B-1001", "kind": "Beleg",
     "amounts": {"vat_19": "10.00", "vat_7": "2.50", "vat_24_1_3": "0.00", "vat_24_1_1": "0.00", "vat_0": "0.00"},
     "payments": [{"amount": "12.50", "type": "Bar"}, {"amount": "5.00", "type": "Unbar", "currency": "CHF"}]}

* amounts are **strings** of ASCII digits with at most two decimals and 12 digits before the point (``"12.5"``,
  ``"-3.00"``); JSON numbers are refused (not exact); a bucket left out is ``0.00``; buckets: ``vat_19``, ``vat_7``,
  ``vat_24_1_3`` (§24(1) Nr. 3 UStG, farmers), ``vat_24_1_1`` (§24(1) Nr. 1, forestry), ``vat_0``; the total of
  the buckets must stay under 10¹² as well;
* ``kind`` (default ``Beleg``) is a Kassenbeleg-V1 kind; ``receipt_id`` (optional, 1 to 64 printable characters:
  no NUL, no control characters) makes a retry safe: the same receipt sent again — also after the node restarted,
  for ``pos.receipt_retention_days`` — gets the first answer (``replayed: true``) and signs nothing; other amounts,
  payments or kind under it are a 409;
* for a ``Beleg`` whose payments are all in EUR, the payments must add up to the total; with a foreign currency
  (unknown rate) or another kind they are not checked. No payment at all is fine for a total of 0.00.

The answer (200, also when the TSE failed) — ``qr`` is the receipt's QR code content::

    {"tx_number": 17, "start_counter": 33, "signature_counter": 34, "started_at": "2024-05-01T10:00:00.000Z",
     "finished_at": "…", "signature": "base64", "qr": "V0;KASSE-1;Kassenbeleg-V1;Beleg^…", "tse_serial": "hex",
     "tse_failed": false, "message": null, "record_id": "…", "process_data": "Beleg^…", "total": "12.50", …}

When the TSE fails: ``tse_failed: true``, ``message: "TSE ausgefallen"`` (print it on the receipt), ``error`` the
reason, no signature or QR code. A start that says ``tse_failed`` has no number to finish: sell the sale with
``POST /pos/v1/sales``, which tries the TSE again and records the failure if it still fails.

The rules are central's (``sync.sales``): what this API takes, central stores — nothing is signed that central
would quarantine.

Errors are ``{"error": {"code", "message", "field"}}``: 401 no or wrong token, 404 unknown transaction, 409
receipt id reused / transaction of another client, 413 ``payload_too_large`` a body over ``pos.max_body_bytes``
(default 64 KiB: by its Content-Length before the token is checked, a chunked body as soon as it has read more —
the connection is closed), 422 bad input (``field`` names it, e.g. ``amounts.vat_7``, ``payments[1].amount``,
``client_id``), 503 the node is stopping or cannot store the sale (then nothing was signed, or the alarm says what
was).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge import __version__
from edge.pos.config import DEFAULT_MAX_BODY_BYTES
from edge.pos.sales import PosError, PosService, Sale
from edge.runtime.http import SignalFreeServer
from protocols.tse.errors import ProcessDataError
from protocols.tse.processdata import KINDS, Kassenbeleg, Payment
from sync.sales import MAX_PAYMENTS, MAX_RECEIPT_ID, SaleError, check_receipt_id, parse_amount

if TYPE_CHECKING:
    from edge.pos.config import PosConfig

log = logging.getLogger(__name__)

GRACEFUL_STOP_S: Final = 5  # on stop: answers of sales in progress are sent within this
AUTH_LOG_EVERY_S: Final = 60.0  # refused requests are logged at most this often (with a count)


def _amount(value: object) -> Decimal:
    try:
        return parse_amount(value, "amount")
    except SaleError as exc:
        raise ValueError(exc.reason) from None


def _receipt_id(value: str) -> str:
    try:
        return check_receipt_id(value)
    except SaleError as exc:
        raise ValueError(exc.reason) from None


Amount = Annotated[Decimal, BeforeValidator(_amount)]
ZERO: Final = Decimal("0.00")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AmountsIn(_In):
    """Gross amounts per VAT bucket, in processData order."""

    vat_19: Amount = ZERO
    vat_7: Amount = ZERO
    vat_24_1_3: Amount = Field(ZERO, description="§24(1) Nr. 3 UStG (farmers' flat rate)")
    vat_24_1_1: Amount = Field(ZERO, description="§24(1) Nr. 1 UStG (forestry flat rate)")
    vat_0: Amount = ZERO


class PaymentIn(_In):
    amount: Amount
    type: Literal["Bar", "Unbar"] = Field(description="Bar: cash; Unbar: card, transfer, …")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")] = "EUR"


class StartIn(_In):
    client_id: Annotated[str, Field(min_length=1, max_length=30, examples=["KASSE-1"])]


class SaleIn(StartIn):
    receipt_id: Annotated[str | None, Field(min_length=1, max_length=MAX_RECEIPT_ID, examples=["B-1001"]),
                          AfterValidator(lambda v: v if v is None else _receipt_id(v))] = None
    kind: str = Field("Beleg", description="Kassenbeleg-V1 kind: " + ", ".join(KINDS))
    amounts: AmountsIn
    payments: list[PaymentIn] = Field(default_factory=list, max_length=MAX_PAYMENTS)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"{v!r} is not a Kassenbeleg-V1 kind ({', '.join(KINDS)})")
        return v


def to_sale(body: SaleIn) -> Sale:
    """The sale, its processData built (a ``PosError`` 422 naming the field if it cannot be)."""
    a = body.amounts
    beleg = Kassenbeleg(vat_19=a.vat_19, vat_7=a.vat_7, vat_24_1_3=a.vat_24_1_3, vat_24_1_1=a.vat_24_1_1,
                        vat_0=a.vat_0, kind=body.kind,
                        payments=tuple(Payment(p.amount, p.type == "Bar", p.currency) for p in body.payments))
    try:
        beleg.build()
    except ProcessDataError as exc:
        raise PosError(422, "invalid_request", str(exc), field=exc.field) from None
    if body.kind == "Beleg" and all(p.currency == "EUR" for p in body.payments):
        paid = sum((p.amount for p in body.payments), ZERO)
        if paid != beleg.total:
            raise PosError(422, "invalid_request", f"the payments add up to {paid:.2f}, the amounts to "
                           f"{beleg.total:.2f}: a Beleg paid in EUR must be paid in full", field="payments")
    return Sale(client_id=body.client_id, beleg=beleg, receipt_id=body.receipt_id)


def _error(status: int, code: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status,
                        headers=headers)


def _field(loc: Any) -> str | None:
    out = ""
    for part in loc:
        if part in ("body", "path", "query"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


class BearerAuth:
    """Every request needs ``Authorization: Bearer <token>`` (compared in constant time); otherwise 401."""

    def __init__(self, app: ASGIApp, *, token: str, counts: dict[str, int] | None = None) -> None:
        self.app = app
        self.token = token.encode()
        self.counts = counts if counts is not None else {}
        self.refused = 0
        self._logged_at = -AUTH_LOG_EVERY_S
        self._unlogged = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    given = value
            scheme, _, credentials = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials.strip(), self.token):
                self._log_refused(scope, bool(given))
                why = "a wrong token" if given else "no token"
                await _error(401, "unauthorized", f"{why}: send 'Authorization: Bearer <token>' (pos.token_file on "
                             "the node)", headers={"WWW-Authenticate": 'Bearer realm="floorgate-pos"'}
                             )(scope, receive, send)  # fmt: skip
                return
        await self.app(scope, receive, send)

    def _log_refused(self, scope: Scope, had_token: bool) -> None:
        self.refused += 1
        self.counts["unauthorized"] = self.counts.get("unauthorized", 0) + 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= AUTH_LOG_EVERY_S:
            client = scope.get("client") or ("?", 0)
            log.warning("POS API: refused %d request(s) without a valid token (last from %s, %s)", self._unlogged,
                        client[0], "wrong token" if had_token else "no token")
            self._logged_at, self._unlogged = now, 0


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a body grows past the limit (an HTTPException: FastAPI lets it through rather
    than calling it a 400); ``BodyLimit`` answers 413 in its place."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is too large")


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 while reading, without buffering them: a Content-Length over
    the limit before anything else (the token check included) and before a byte of the body is read; a chunked body
    (or one longer than it said) as soon as the bytes read pass the limit. The 413 closes the connection (the rest
    of the body is never read). uvicorn itself holds at most ~64 KiB of a body the app has not read yet."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, counts: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.counts = counts if counts is not None else {}
        self.refused = 0
        self._logged_at = -AUTH_LOG_EVERY_S
        self._unlogged = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            # h11 has checked the header: ASCII digits; more than one differing value is refused by it
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send, f"Content-Length {int(value)}")
                return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's own answer to the cut body is replaced by the 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send, f"more than {self.max_bytes} bytes read")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        self.refused += 1
        self.counts["payload_too_large"] = self.counts.get("payload_too_large", 0) + 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= AUTH_LOG_EVERY_S:
            client = scope.get("client") or ("?", 0)
            log.warning("POS API: refused %d request body(ies) over pos.max_body_bytes = %d (last from %s: %s)",
                        self._unlogged, self.max_bytes, client[0], what)  # fmt: skip
            self._logged_at, self._unlogged = now, 0
        await _error(413, "payload_too_large", f"the request body is larger than {self.max_bytes} bytes "
                     "(pos.max_body_bytes on the node)", headers={"Connection": "close"})(scope, receive, send)


def make_pos_app(service: PosService, token: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title=f"floorgate POS API ({service.cfg.id})", version=__version__, docs_url=None,
                  redoc_url=None, openapi_url="/pos/v1/openapi.json")
    app.add_middleware(BearerAuth, token=token, counts=service.refused)
    # added last: outermost, before the token check
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, counts=service.refused)

    @app.exception_handler(PosError)
    async def _pos_error(_: Request, exc: PosError) -> JSONResponse:
        if exc.status == 422:
            service.refused["invalid"] = service.refused.get("invalid", 0) + 1
        return _error(exc.status, exc.code, str(exc), exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        service.refused["invalid"] = service.refused.get("invalid", 0) + 1
        errors = exc.errors()
        parts = []
        for e in errors:
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                msg = "unknown field"
                if tuple(e.get("loc", ()))[-2:-1] == ("amounts",):
                    msg += f"; the VAT buckets are {', '.join(AmountsIn.model_fields)}"
            parts.append(f"{_field(e.get('loc', ())) or '(body)'}: {msg}")
        return _error(422, "invalid_request", "; ".join(parts), _field(errors[0].get("loc", ())) if errors else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error", str(exc.detail),
                      headers=getattr(exc, "headers", None))

    # async: they run on the agent's event loop, which owns the outbox; the TSE calls go to a worker thread
    @app.post("/pos/v1/sales", summary="Sign a sale (start + finish) and record it")
    async def post_sale(body: SaleIn) -> JSONResponse:
        answer = await service.sale(to_sale(body))
        return JSONResponse(answer.as_dict())

    @app.post("/pos/v1/transactions", summary="Start a transaction (finish it with …/finish)")
    async def post_start(body: StartIn) -> JSONResponse:
        answer = await service.start(body.client_id)
        return JSONResponse(answer.as_dict())

    @app.post("/pos/v1/transactions/{tx_number}/finish", summary="Finish a started transaction and record it")
    async def post_finish(tx_number: int, body: SaleIn) -> JSONResponse:
        answer = await service.finish(tx_number, to_sale(body))
        return JSONResponse(answer.as_dict())

    @app.get("/pos/v1/tse", summary="The node's TSE")
    async def get_tse() -> JSONResponse:
        info = service.info
        return JSONResponse({
            "id": service.cfg.id, "driver": service.cfg.driver, "clients": list(service.cfg.clients),
            "failing": service.failing, "sales": service.sales, "failed_sales": service.failed_sales,
            **({} if info is None else {
                "serial": info.serial_hex, "public_key": base64.b64encode(info.public_key).decode(),
                "algorithm": info.algorithm,
                "curve": info.curve, "time_format": info.time_format, "certified": info.certified,
                "description": info.description, "certificate_pem": info.certificate_pem.decode()}),
        })  # fmt: skip

    return app


async def serve_pos(service: PosService, cfg: PosConfig, token: str, *,
                    set_alarm: Callable[[str | None], None] = lambda _text: None) -> None:
    """Open the TSE, serve the API until cancelled; then answer the sales in progress, record them, close the TSE.
    A port that cannot be bound is an alarm (the rest of the agent goes on)."""
    app = make_pos_app(service, token, max_body_bytes=cfg.max_body_bytes)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=GRACEFUL_STOP_S)
    server = SignalFreeServer(config)  # the agent's SIGTERM handler cancels it

    async def run_server() -> bool:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind: caught here, inside the task
            return False
        return server.started

    try:
        await service.open()
        inner = asyncio.create_task(run_server(), name="pos-http")
        try:
            served = await asyncio.shield(inner)
        except asyncio.CancelledError:
            server.should_exit = True  # uvicorn stops listening, lets the answers of running sales go out
            await _stopped(inner, server)
            raise
        if not served:
            text = f"POS API not available: cannot listen on {cfg.listen}"
            log.error("%s", text)
            set_alarm(text)
    finally:
        await service.drain()


async def _stopped(inner: asyncio.Task[bool], server: uvicorn.Server) -> None:
    """Wait for uvicorn's graceful stop (bounded), also if cancelled again meanwhile; then force it."""
    for wait_s in (GRACEFUL_STOP_S + 1.0, 2.0):
        end = time.monotonic() + wait_s
        while not inner.done() and (left := end - time.monotonic()) > 0:
            with contextlib.suppress(asyncio.CancelledError):  # the caller re-raises its cancellation afterwards
                await asyncio.wait([inner], timeout=left)
        if inner.done():
            if not inner.cancelled():
                inner.exception()
            return
        server.force_exit = True
        inner.cancel()
    log.error("POS API: the HTTP server did not stop")


__all__ = ["BearerAuth", "BodyLimit", "make_pos_app", "serve_pos", "to_sale"]
