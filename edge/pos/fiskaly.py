"""The fiskaly SIGN DE cloud TSE as a floorgate TSE driver (:class:`protocols.tse.api.TseDriver`), over HTTPS.

    FiskalyTse(FiskalySettings(api_key=…, api_secret=…, tss_id=…, admin_pin=…))

    info()                   GET  /tss/{tss_id}                           serial, public key, algorithm, time format
    register_client(serial)  GET  /tss/{tss_id}/client/{uuid}             then, if missing or deregistered, with the
                             POST /tss/{tss_id}/admin/auth {admin_pin}    admin PIN (fiskaly demands it):
                             PUT  /tss/{tss_id}/client/{uuid} {serial_number} (or PATCH {state: REGISTERED}),
                             POST /tss/{tss_id}/admin/logout {}
    start_transaction        PUT  /tss/{tss_id}/tx/{new uuid}?tx_revision=1  {state: ACTIVE, client_id}
    update_transaction       PUT  …?tx_revision=n+1  {state: ACTIVE, client_id, schema}
    finish_transaction       PUT  …?tx_revision=n+1  {state: FINISHED, client_id, schema: {standard_v1: {receipt}}}
    export(…)                PUT  /tss/{tss_id}/export/{uuid}?filters {}, GET … until COMPLETED, GET …/file (TAR)

Request bodies and the error mapping are the pure ``protocols.tse.fiskaly``, reply parsing ``…fiskaly_replies``; this
module does the I/O:
``POST /auth`` with api_key / api_secret, the bearer token renewed before it runs out and, on a 401, once with the
refresh token (or the key again); a timeout per request (``timeout_s``); retries of network errors, timeouts, 5xx,
429 and 499 with an exponential delay from ``backoff_min_s`` doubling to ``backoff_max_s`` (``Retry-After``
honoured up to that); fiskaly's requests are idempotent, so a retried upsert whose first reply was lost gets the
same signature. What is left fails as ``FiskalyUnavailable`` (a ``TseUnavailable``: the sale completes with
"TSE ausgefallen") or, for a refused request, ``FiskalyError`` whose text names fiskaly's code and message.

The driver remembers the open transactions it started (number → UUID and revision); after a restart it finds one
again with ``GET /tss/{tss_id}/tx/{number}``. A StartTransaction signs an empty processType and processData
(DSFinV-K; fiskaly: "the type and data of the transaction must be empty"). Secrets (api_secret, api_key, tokens,
admin PIN) are never logged and never part of an exception. The TSS runs its self tests and keeps its own time:
:meth:`FiskalyTse.self_test` checks that the TSS is ``INITIALIZED``, :meth:`FiskalyTse.update_time` does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from protocols.tse.api import TseInfo
from protocols.tse.errors import TseClientNotRegistered, TseInvalidArgument, TseUnavailable, TseUnknownTransaction
from protocols.tse.fiskaly import (
    CLIENT_CODES,
    DEFAULT_BASE_URL,
    RETRYABLE_STATUS,
    FiskalyError,
    FiskalyUnavailable,
    check_client_serial,
    client_uuid,
    error_from_reply,
    tx_body,
    tx_schema,
)
from protocols.tse.fiskaly_replies import (
    FiskalyTransactionResult,
    Tokens,
    TssReply,
    parse_auth,
    parse_tss,
    parse_tx,
    transaction_result,
    tse_info,
)
from protocols.tse.logmsg import FINISH
from sync.runtime.config import ConfigModel, parse_model

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 5.0  # per HTTP request
DEFAULT_MAX_RETRIES: Final = 2  # after the first attempt
DEFAULT_BACKOFF_MIN_S: Final = 0.25
DEFAULT_BACKOFF_MAX_S: Final = 4.0
DEFAULT_EXPORT_TIMEOUT_S: Final = 900.0  # fiskaly: "the export can take up to one hour" for a big one
DEFAULT_EXPORT_POLL_S: Final = 5.0  # retrieveExport allows 12 requests a minute per export
TOKEN_MARGIN_S: Final = 60.0  # renew the access token this long before it expires
_LOCAL_HOSTS: Final = ("127.0.0.1", "localhost", "::1")  # where plain http is allowed (tests)


class FiskalySettings(ConfigModel):
    """How to reach one fiskaly TSS. Secrets have no defaults and never show in ``repr`` or in errors."""

    base_url: str = Field(DEFAULT_BASE_URL, description="the SIGN DE API v2 (the middleware URL serves everything)")
    api_key: SecretStr = Field(description="API key of the (managed) organization, from the fiskaly HUB")
    api_secret: SecretStr = Field(description="its secret")
    tss_id: str = Field(description="UUID of the TSS (created, INITIALIZED, with its admin PIN set, beforehand)")
    admin_pin: SecretStr | None = Field(None, description="the TSS admin PIN: needed only to register a client")
    client_ids: dict[str, str] = Field(
        default_factory=dict, description="ERS serial → fiskaly client UUID, for clients registered elsewhere "
        "(default: a UUID derived from the TSS id and the serial)")  # fmt: skip
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, le=120, description="timeout of one HTTP request")
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0, le=10, description="retries after network errors, 5xx …")
    backoff_min_s: float = Field(DEFAULT_BACKOFF_MIN_S, ge=0, description="first delay before a retry")
    backoff_max_s: float = Field(DEFAULT_BACKOFF_MAX_S, ge=0, description="longest delay before a retry")
    export_timeout_s: float = Field(DEFAULT_EXPORT_TIMEOUT_S, gt=0, description="give up an export after this long")
    export_poll_s: float = Field(DEFAULT_EXPORT_POLL_S, ge=0, description="pause between export state requests")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme == "https" and url.host:
            return value.rstrip("/")
        if url.scheme == "http" and url.host in _LOCAL_HOSTS:
            return value.rstrip("/")
        raise ValueError("expected https://… (plain http only to localhost, for tests)")

    @model_validator(mode="after")
    def _backoff(self) -> FiskalySettings:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError(f"backoff_max_s: {self.backoff_max_s} is less than backoff_min_s ({self.backoff_min_s})")
        return self

    @field_validator("api_key", "api_secret", "admin_pin")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("tss_id")
    @classmethod
    def _tss_id(cls, value: str) -> str:
        return _uuid(value)

    @field_validator("client_ids")
    @classmethod
    def _client_ids(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for serial, client in value.items():
            try:
                check_client_serial(serial)
            except TseInvalidArgument as exc:
                raise ValueError(f"{serial!r}: {str(exc).removeprefix('client_id: ')}") from None
            out[serial] = _uuid(client)
        return out


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{value!r} is not a UUID") from None


def parse_fiskaly_settings(data: object, *, source: str) -> FiskalySettings:
    """Validate the driver's configuration; :class:`~sync.runtime.config.ConfigError` naming the source, the key and
    the problem (a secret given wrongly is not echoed: ``sync.runtime.config.secret_fields``)."""
    return parse_model(FiskalySettings, data, source=source, expected="a mapping (api_key, api_secret, tss_id, …)")


@dataclass
class _OpenTx:
    tx_id: str
    client_id: str  # the ERS serial
    client_uuid: str
    revision: int  # the latest revision signed


class FiskalyTse:
    """A fiskaly TSS. ``transport`` replaces the network (tests), ``clock`` gives unix seconds, ``sleep`` waits
    between retries and export polls. Calls are serialized (one at a time); use it as a context manager or call
    :meth:`close`."""

    def __init__(
        self, settings: FiskalySettings, *, transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.Client(base_url=settings.base_url + "/", timeout=httpx.Timeout(settings.timeout_s),
                                  transport=transport, headers={"Accept": "application/json"})  # fmt: skip
        self._tss_path = f"/tss/{settings.tss_id}"
        self._tokens: Tokens | None = None
        self._tss: TssReply | None = None
        self._open: dict[int, _OpenTx] = {}
        self._clients: dict[str, str] = {}  # serial → client UUID, registered through this driver
        self._lock = threading.RLock()
        self._failing = False
        self._closed = False

    # --- SE API --------------------------------------------------------------------------------------------------

    def info(self) -> TseInfo:
        with self._lock:
            self._check_open()
            tss = self._read_tss()
            return tse_info(tss, open_transactions=tuple(sorted(self._open)), clients=tuple(sorted(self._clients)))

    def self_test(self) -> None:
        """The TSS tests itself; here: it must be ``INITIALIZED`` (anything else cannot sign)."""
        with self._lock:
            self._check_open()
            tss = self._read_tss()
            if tss.state != "INITIALIZED":
                raise FiskalyUnavailable(f"fiskaly TSS {self.settings.tss_id} is {tss.state or '?'}, not INITIALIZED: "
                                         "it cannot sign", code=f"E_TSS_{tss.state or 'UNKNOWN'}")  # fmt: skip

    def update_time(self, unix_time: float | None = None) -> None:
        """Nothing to do: the cloud TSS keeps its own time."""
        log.debug("fiskaly TSS %s keeps its own time; update_time(%s) ignored", self.settings.tss_id, unix_time)

    def register_client(self, client_id: str) -> None:
        check_client_serial(client_id)
        with self._lock:
            self._check_open()
            client = self._client_uuid(client_id)
            path = f"{self._tss_path}/client/{client}"
            response = self._call("GET", path, what="GET /tss/{tss_id}/client/{client_id}", ok=frozenset({404}))
            if response.status_code == 200:
                body = self._json(response, "GET /tss/{tss_id}/client/{client_id}")
                serial, state = body.get("serial_number"), body.get("state")
                if serial != client_id:
                    raise TseInvalidArgument(f"fiskaly client {client} of TSS {self.settings.tss_id} is the register "
                                             f"{serial!r}, not {client_id!r}", argument="client_id")  # fmt: skip
                if state != "REGISTERED":
                    with self._admin(client_id):
                        self._call("PATCH", path, json={"state": "REGISTERED"}, what="PATCH /tss/{tss_id}/client/"
                                   "{client_id}", admin=True)  # fmt: skip
                    log.info("fiskaly TSS %s: client %s (%s) registered again", self.settings.tss_id, client_id, client)
            else:
                with self._admin(client_id):
                    self._call("PUT", path, json={"serial_number": client_id}, what="PUT /tss/{tss_id}/client/"
                               "{client_id}", admin=True)  # fmt: skip
                log.info("fiskaly TSS %s: client %s created (%s)", self.settings.tss_id, client_id, client)
            self._clients[client_id] = client

    def start_transaction(
        self, client_id: str, process_data: bytes | str = b"", process_type: str = "", *,
        additional_data: bytes | None = None,
    ) -> FiskalyTransactionResult:  # fmt: skip
        check_client_serial(client_id)
        _no_additional_data(additional_data)
        data = _bytes(process_data)
        schema = tx_schema(process_type, data) if data else None  # a start signs empty type and data (DSFinV-K)
        with self._lock:
            self._check_open()
            client = self._client_uuid(client_id)
            tx_id = str(uuid.uuid4())
            result = self._upsert(tx_id, 1, tx_body("ACTIVE", client, schema), client_id,
                                  process_type if data else "", data)  # fmt: skip
            self._open[result.transaction_number] = _OpenTx(tx_id, client_id, client, result.revision)
            return result

    def update_transaction(
        self, client_id: str, transaction_number: int, process_data: bytes | str, process_type: str
    ) -> FiskalyTransactionResult:
        return self._next_revision("ACTIVE", client_id, transaction_number, process_data, process_type)

    def finish_transaction(
        self, client_id: str, transaction_number: int, process_data: bytes | str, process_type: str, *,
        additional_data: bytes | None = None,
    ) -> FiskalyTransactionResult:  # fmt: skip
        _no_additional_data(additional_data)
        return self._next_revision("FINISHED", client_id, transaction_number, process_data, process_type)

    def export(
        self, *, tx_range: tuple[int, int] | None = None, time_range: tuple[int, int] | None = None,
        client_id: str | None = None,
    ) -> bytes:  # fmt: skip
        """The TSS's own TAR export (log messages, certificates, info), filtered as asked (inclusive ranges)."""
        params: dict[str, str] = {}
        if client_id is not None:
            if tx_range is not None or time_range is not None:
                raise TseInvalidArgument("fiskaly exports by client ignore every other filter: ask for the client "
                                         "alone", argument="client_id")  # fmt: skip
            check_client_serial(client_id)
        for name, pair in (("tx_range", tx_range), ("time_range", time_range)):
            if pair is not None and not (0 <= pair[0] <= pair[1]):
                raise TseInvalidArgument(f"{pair} is not a range (first ≤ last, both ≥ 0)", argument=name)
        if tx_range is not None:
            params.update(start_transaction_number=str(tx_range[0]), end_transaction_number=str(tx_range[1]))
        if time_range is not None:
            params.update(start_date=str(time_range[0]), end_date=str(time_range[1]))
        with self._lock:
            self._check_open()
            if client_id is not None:
                params["client_id"] = self._client_uuid(client_id)
            return self._export(params)

    # --- life cycle ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._http.close()

    def __enter__(self) -> FiskalyTse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions --------------------------------------------------------------------------------------------

    def _next_revision(
        self, state: str, client_id: str, number: int, process_data: bytes | str, process_type: str
    ) -> FiskalyTransactionResult:
        check_client_serial(client_id)
        data = _bytes(process_data)
        schema = tx_schema(process_type, data)
        with self._lock:
            self._check_open()
            open_tx = self._open_tx(client_id, number)
            result = self._upsert(open_tx.tx_id, open_tx.revision + 1, tx_body(state, open_tx.client_uuid, schema),
                                  client_id, process_type, data)  # fmt: skip
            if result.state == "ACTIVE":
                open_tx.revision = result.revision
            else:
                self._open.pop(number, None)
            return result

    def _open_tx(self, client_id: str, number: int) -> _OpenTx:
        open_tx = self._open.get(number)
        if open_tx is None:
            open_tx = self._recover(number)
        if open_tx.client_id != client_id:
            raise TseInvalidArgument(f"transaction {number} belongs to client {open_tx.client_id!r}, not "
                                     f"{client_id!r}", argument="client_id")  # fmt: skip
        return open_tx

    def _recover(self, number: int) -> _OpenTx:
        """An open transaction this driver did not start (or forgot in a restart), read back from fiskaly."""
        what = "GET /tss/{tss_id}/tx/{tx_number}"
        response = self._call("GET", f"{self._tss_path}/tx/{int(number)}", what=what, ok=frozenset({404}))
        if response.status_code == 404:
            raise TseUnknownTransaction(f"fiskaly TSS {self.settings.tss_id} has no transaction {number}",
                                        argument="transaction_number")  # fmt: skip
        tx = parse_tx(self._json(response, what), what=what)
        if tx.state != "ACTIVE":
            raise TseUnknownTransaction(f"transaction {number} is {tx.state}", argument="transaction_number")
        open_tx = _OpenTx(tx.tx_id, tx.client_serial, tx.client_id, tx.latest_revision)
        self._open[number] = open_tx
        return open_tx

    def _upsert(self, tx_id: str, revision: int, body: dict[str, Any], client_id: str, sent_type: str,
                sent_data: bytes) -> FiskalyTransactionResult:  # fmt: skip
        what = f"PUT /tss/{{tss_id}}/tx/{{tx_id}}?tx_revision={revision}"
        try:
            response = self._call("PUT", f"{self._tss_path}/tx/{tx_id}", json=body, params={"tx_revision": revision},
                                  what=what)  # fmt: skip
        except FiskalyError as exc:
            if exc.code in CLIENT_CODES:
                raise TseClientNotRegistered(f"{client_id!r} cannot sign on fiskaly TSS {self.settings.tss_id}: {exc}",
                                             argument="client_id") from exc  # fmt: skip
            raise
        tx = parse_tx(self._json(response, what), what=what)
        if tx.tx_id != tx_id or tx.revision != revision or tx.client_serial != client_id:
            raise FiskalyUnavailable(f"fiskaly {what}: the reply is for transaction {tx.tx_id} revision {tx.revision} "
                                     f"of {tx.client_serial!r}, not {tx_id} revision {revision} of {client_id!r}",
                                     code="E_BAD_REPLY")  # fmt: skip
        result = transaction_result(tx, client_id=client_id, sent_process_type=sent_type, sent_process_data=sent_data)
        if result.problem:
            level = logging.WARNING if result.operation == FINISH else logging.DEBUG
            log.log(level, "fiskaly TSS %s: transaction %d, signature counter %d: %s", self.settings.tss_id,
                    result.transaction_number, result.signature_counter, result.problem)  # fmt: skip
        return result

    # --- export --------------------------------------------------------------------------------------------------

    def _export(self, params: dict[str, str]) -> bytes:
        export_id = str(uuid.uuid4())
        path = f"{self._tss_path}/export/{export_id}"
        self._call("PUT", path, json={}, params=params, what="PUT /tss/{tss_id}/export/{export_id}")
        deadline = self._clock() + self.settings.export_timeout_s
        while True:
            resource = self._json(self._call("GET", path, what="GET /tss/{tss_id}/export/{export_id}"),
                                  "GET /tss/{tss_id}/export/{export_id}")  # fmt: skip
            state = str(resource.get("state"))
            if state == "COMPLETED":
                break
            if state in ("CANCELLED", "ERROR"):
                exception = str(resource.get("exception") or "")
                why = f": {exception}" if exception else ""
                code = exception or f"E_EXPORT_{state}"
                raise FiskalyError(f"fiskaly export {export_id} ended {state}{why}", code=code)
            left = deadline - self._clock()
            if left <= 0:
                with contextlib.suppress(FiskalyError):
                    self._call("DELETE", path, what="DELETE /tss/{tss_id}/export/{export_id}")
                raise FiskalyUnavailable(f"fiskaly export {export_id} not COMPLETED within "
                                         f"{self.settings.export_timeout_s:.0f} s (state {state})",
                                         code="E_EXPORT_TIMEOUT")  # fmt: skip
            self._sleep(min(self.settings.export_poll_s, left))
        response = self._call("GET", path + "/file", what="GET /tss/{tss_id}/export/{export_id}/file")
        log.info("fiskaly TSS %s: export %s, %d bytes", self.settings.tss_id, export_id, len(response.content))
        return response.content

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TseUnavailable(f"the fiskaly driver of TSS {self.settings.tss_id} is closed")

    def _client_uuid(self, client_id: str) -> str:
        return self._clients.get(client_id) or self.settings.client_ids.get(client_id) or client_uuid(
            self.settings.tss_id, client_id)  # fmt: skip

    def _read_tss(self) -> TssReply:
        what = "GET /tss/{tss_id}"
        tss = parse_tss(self._json(self._call("GET", self._tss_path, what=what), what), what=what)
        if self._tss is not None and tss.public_key != self._tss.public_key:
            log.error("fiskaly TSS %s: its public key changed (serial %s → %s)", self.settings.tss_id,
                      self._tss.serial_number.hex(), tss.serial_number.hex())  # fmt: skip
        self._tss = tss
        return tss

    @contextlib.contextmanager
    def _admin(self, client_id: str) -> Iterator[None]:
        pin = self.settings.admin_pin
        if pin is None:
            raise FiskalyError(f"the register {client_id!r} is not a registered client of fiskaly TSS "
                               f"{self.settings.tss_id}, and registering one needs the TSS admin PIN: set admin_pin, "
                               "or register it in the fiskaly HUB and give its UUID in client_ids",
                               code="E_ADMIN_PIN_MISSING")  # fmt: skip
        self._call("POST", f"{self._tss_path}/admin/auth", json={"admin_pin": pin.get_secret_value()},
                   what="POST /tss/{tss_id}/admin/auth", admin=True)  # fmt: skip
        try:
            yield
        finally:
            try:
                self._call("POST", f"{self._tss_path}/admin/logout", json={}, what="POST /tss/{tss_id}/admin/logout")
            except FiskalyError as exc:
                log.warning("fiskaly TSS %s: admin logout failed: %s", self.settings.tss_id, exc)

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise FiskalyUnavailable(f"fiskaly {what}: the reply is not JSON", code="E_BAD_REPLY") from None
        if not isinstance(body, dict):
            raise FiskalyUnavailable(f"fiskaly {what}: the reply is not a JSON object", code="E_BAD_REPLY")
        return body

    def _access_token(self) -> str:
        tokens = self._tokens
        if tokens is None or (tokens.access_expires_at and self._clock() >= tokens.access_expires_at - TOKEN_MARGIN_S):
            tokens = self._renew_tokens()
        return tokens.access_token

    def _renew_tokens(self) -> Tokens:
        """New tokens: with the refresh token while it is valid, else (or when it is refused) with the API key."""
        old = self._tokens
        self._tokens = None
        if old is not None and old.refresh_token and (not old.refresh_expires_at or
                                                      self._clock() < old.refresh_expires_at):  # fmt: skip
            try:
                self._tokens = self._auth({"refresh_token": old.refresh_token})
                log.debug("fiskaly: access token renewed with the refresh token")
                return self._tokens
            except FiskalyError as exc:
                if exc.status_code not in (400, 401):
                    raise
                log.info("fiskaly: the refresh token was refused (%s); authenticating with the API key", exc.code)
        key, secret = self.settings.api_key.get_secret_value(), self.settings.api_secret.get_secret_value()
        self._tokens = self._auth({"api_key": key, "api_secret": secret})
        log.debug("fiskaly: authenticated with the API key")
        return self._tokens

    def _auth(self, body: dict[str, str]) -> Tokens:
        what = "POST /auth"
        try:
            response = self._call("POST", "/auth", json=body, what=what, auth=False)
        except FiskalyError as exc:
            if exc.status_code == 401 and "api_key" in body:
                raise FiskalyUnavailable(f"fiskaly {what}: the API key was refused ({exc.code or 'HTTP 401'}: "
                                         f"{exc.detail}); check api_key, api_secret and the environment (TEST keys "
                                         "only reach TEST TSS)", status_code=401, code=exc.code,
                                         detail=exc.detail) from None  # fmt: skip
            raise
        return parse_auth(self._json(response, what), now=self._clock())

    def _call(
        self, method: str, path: str, *, what: str, json: Any = None, params: Mapping[str, Any] | None = None,
        auth: bool = True, admin: bool = False, ok: frozenset[int] = frozenset(),
    ) -> httpx.Response:  # fmt: skip
        """One request with authentication, retries and the error mapping; ``what`` names it in messages (without
        ids). A status in ``ok`` is returned like a success. ``admin``: a 401 is a refused PIN, not an outage."""
        retries = self.settings.max_retries
        attempt = 0
        renewed = False
        while True:
            headers = {"Authorization": f"Bearer {self._access_token()}"} if auth else {}
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.HTTPError as exc:  # network errors and timeouts (no raise_for_status: statuses come below)
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if attempt < retries:
                    self._pause(what, problem, attempt, None)
                    attempt += 1
                    continue
                raise self._unavailable(FiskalyUnavailable(
                    f"fiskaly {what}: not reachable after {attempt + 1} attempt(s) ({problem})",
                    code="E_NETWORK")) from None  # fmt: skip
            status = response.status_code
            if status < 400 or status in ok:
                self._recovered()
                return response
            if status == 401 and auth and not renewed:
                renewed = True
                log.debug("fiskaly %s: HTTP 401, authenticating again", what)
                self._renew_tokens()
                continue
            if status in RETRYABLE_STATUS and attempt < retries:
                self._pause(what, f"HTTP {status}", attempt, response.headers.get("retry-after"))
                attempt += 1
                continue
            error = error_from_reply(status, _body(response), what=what)
            if status == 401 and auth and not admin:
                error = FiskalyUnavailable(f"{error} (refused again after a new authentication)",
                                           status_code=status, code=error.code, detail=error.detail)  # fmt: skip
            elif status in RETRYABLE_STATUS:
                error = FiskalyUnavailable(f"{error} (after {attempt + 1} attempt(s))", status_code=status,
                                           code=error.code, detail=error.detail)  # fmt: skip
            if isinstance(error, FiskalyUnavailable):
                raise self._unavailable(error)
            raise error

    def _pause(self, what: str, problem: str, attempt: int, retry_after: str | None) -> None:
        delay = min(self.settings.backoff_max_s, self.settings.backoff_min_s * 2**attempt)
        with contextlib.suppress(ValueError):
            if retry_after is not None:
                delay = min(max(delay, float(retry_after)), self.settings.backoff_max_s)
        log.warning("fiskaly %s: %s; retry %d of %d in %.2f s", what, problem, attempt + 1, self.settings.max_retries,
                    delay)  # fmt: skip
        self._sleep(delay)

    def _unavailable(self, error: FiskalyUnavailable) -> FiskalyUnavailable:
        if not self._failing:
            log.error("fiskaly TSS %s unavailable: %s", self.settings.tss_id, error)
            self._failing = True
        else:
            log.debug("fiskaly TSS %s still unavailable: %s", self.settings.tss_id, error)
        return error

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("fiskaly TSS %s answers again", self.settings.tss_id)


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _bytes(process_data: bytes | str) -> bytes:
    return process_data.encode() if isinstance(process_data, str) else bytes(process_data)


def _no_additional_data(additional_data: bytes | None) -> None:
    if additional_data is not None:
        raise TseInvalidArgument("fiskaly SIGN DE has no additionalExternalData", argument="additional_data")


__all__ = ["FiskalySettings", "FiskalyTse", "parse_fiskaly_settings"]
