"""A fake fiskaly SIGN DE API v2 for tests: a real HTTP server on 127.0.0.1 that follows the documented shapes
(OpenAPI "fiskaly SIGN DE API" 2.2.2) and signs real TR-03151 log messages with its own P-256 key.

    with running_fake() as fake:                 # FastAPI + uvicorn in a thread, random port
        fake.base_url                            # http://127.0.0.1:PORT/api/v2
        fake.fail(2, status=500)                 # the next 2 requests answer 500 (filters: method=, path=)
        fake.stall(1, seconds=1.0)               # the next request answers only after 1 s, unprocessed
        fake.lose_reply(1, seconds=1.0)          # the next request is processed, its reply comes 1 s late
        fake.expire_access_tokens()              # the tokens handed out so far answer 401 (refresh works)
        fake.refuse_tokens = True                # every token answers 401, fresh ones too
        fake.requests                            # every request: method, path, query, body, authorized

It refuses what fiskaly refuses, with fiskaly's error body ``{status_code, error, code, message}``: bodies with
unknown or missing keys (``E_FAILED_SCHEMA_VALIDATION``), a transaction that does not start with
``tx_revision=1`` and ``state: ACTIVE``, a revision that is not the next one, a change to a finished transaction
(``E_TX_UPSERT``), an unknown or deregistered client, client creation without admin login. Repeating the latest
revision with the same body answers the same reply again (fiskaly's idempotent requests).

The processData of a ``standard_v1.receipt`` is built from the receipt on its own (the tables of the specification,
in ``tests/fake_fiskaly_schema.py`` with the other checks of what fiskaly accepts), not with
``protocols.tse.fiskaly``, so the driver's mapping is checked against an independent one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from protocols.tse import crypto
from protocols.tse.logmsg import FINISH, OID_TRANSACTION_LOG, START, UPDATE, LogMessage, LogTime, TransactionData
from protocols.tse.tarexport import build_tar, certificate_file_name, info_csv, log_file_name
from tests.fake_fiskaly_schema import (
    CLIENT_SERIAL,
    EXPORT_QUERY,
    UUID4,
    Refused,
    check_tx_body,
    error_response,
    positive,
)

API = "/api/v2"
VERSION = "2.2.2"
API_KEY = "test_fake_api_key_0123456789"
API_SECRET = "fake-api-secret-do-not-log-0123456789abcdef"  # noqa: S105 — a test credential
ADMIN_PIN = "246810"
ACCESS_TTL_S = 600
REFRESH_TTL_S = 1200


@dataclass
class Recorded:
    method: str
    path: str  # after /api/v2
    query: dict[str, str]
    body: Any
    authorized: bool


@dataclass
class Fault:
    kind: str  # fail | stall | lose
    times: int
    method: str | None
    path: str | None
    status: int = 500
    code: str = ""
    message: str = ""
    seconds: float = 0.0
    retry_after: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path in path)


@dataclass
class Tx:
    tx_id: str
    number: int
    client_id: str
    time_start: int
    state: str = "ACTIVE"
    revisions: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (request body, reply)


@dataclass
class Export:
    export_id: str
    query: dict[str, str]
    time_request: int
    state: str = "PENDING"
    polls: int = 0


class FakeFiskaly:
    """The fake's state and its FastAPI app (``app``); serve it with :func:`running_fake`."""

    def __init__(self, *, clock: Callable[[], float] = time.time, export_polls: int = 2,
                 counter_as_string: bool = False) -> None:  # fmt: skip
        self.clock = clock
        self.export_polls = export_polls  # retrieveExport answers PENDING, WORKING … this many times first
        self.counter_as_string = counter_as_string  # signature.counter: the schema says string, the middleware int
        self.tss_id = str(uuid.uuid4())
        self.tss_state = "INITIALIZED"
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = crypto.public_key_bytes(self.key.public_key())
        self.serial = hashlib.sha256(self.public_key).digest()
        self.certificate = self._certificate()
        self.signature_counter = 0
        self.transaction_counter = 0
        self.clients: dict[str, dict[str, str]] = {}  # client UUID → {serial_number, state}
        self.txs: dict[str, Tx] = {}
        self.logs: list[LogMessage] = []  # every signed log message, in counter order
        self.exports: dict[str, Export] = {}
        self.access_tokens: dict[str, float] = {}  # token → expiry
        self.refresh_tokens: dict[str, float] = {}
        self.refuse_tokens = False
        self.admin_logged_in = False
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.base_url = ""
        self._lock = threading.Lock()
        self.app = self._make_app()

    # --- switches ------------------------------------------------------------------------------------------------

    def fail(self, times: int = 1, *, status: int = 500, code: str = "", message: str = "injected failure",
             method: str | None = None, path: str | None = None, retry_after: str | None = None) -> None:  # fmt: skip
        """The next ``times`` requests (matching ``method`` / a ``path`` substring) answer ``status`` (with a
        ``Retry-After`` header when given)."""
        code = code or ("E_INTERNAL" if status >= 500 else "E_INJECTED")
        self._add(Fault("fail", times, method, path, status=status, code=code, message=message,
                        retry_after=retry_after))  # fmt: skip

    def stall(self, times: int = 1, *, seconds: float, method: str | None = None, path: str | None = None) -> None:
        """The next ``times`` requests wait ``seconds``, then answer 504 without being processed."""
        self._add(Fault("stall", times, method, path, seconds=seconds))

    def lose_reply(self, times: int = 1, *, seconds: float, method: str | None = None, path: str | None = None) -> None:
        """The next ``times`` requests are processed, but their reply comes ``seconds`` late."""
        self._add(Fault("lose", times, method, path, seconds=seconds))

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def expire_access_tokens(self) -> None:
        with self._lock:
            self.access_tokens = dict.fromkeys(self.access_tokens, 0.0)

    def expire_refresh_tokens(self) -> None:
        with self._lock:
            self.refresh_tokens = dict.fromkeys(self.refresh_tokens, 0.0)

    def calls(self, method: str, path_part: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_part in r.path]

    # --- the app -------------------------------------------------------------------------------------------------

    def _make_app(self) -> FastAPI:
        app = FastAPI(title="fake fiskaly SIGN DE", openapi_url=None, docs_url=None, redoc_url=None)

        @app.api_route(API + "/{path:path}", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
        async def dispatch(path: str, request: Request) -> Response:
            return await self._dispatch(request, "/" + path)

        return app

    async def _dispatch(self, request: Request, path: str) -> Response:
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return error_response(400, "E_FAILED_SCHEMA_VALIDATION", "the body is not JSON")
        method = request.method
        query = dict(request.query_params)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self._lock:
            authorized = self._token_ok(token)
            self.requests.append(Recorded(method, path, query, body, authorized))
            fault = self._take_fault(method, path)
        if fault is not None and fault.kind == "fail":
            response = error_response(fault.status, fault.code, fault.message)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return error_response(504, "E_GATEWAY_TIMEOUT", "stalled (injected)")
        with self._lock:
            try:
                if path != "/auth" and not authorized:
                    raise Refused(401, "E_UNAUTHORIZED", "the access token is missing, invalid or expired")
                response = self._route(method, path, query, body)
            except Refused as exc:
                response = exc.response()
        if fault is not None and fault.kind == "lose":
            await asyncio.sleep(fault.seconds)
        return response

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                return fault
        return None

    def _token_ok(self, token: str) -> bool:
        expiry = self.access_tokens.get(token)
        return not self.refuse_tokens and expiry is not None and expiry > self.clock()

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Response:
        parts = path.strip("/").split("/")
        if parts == ["auth"] and method == "POST":
            return self._auth(body)
        if len(parts) < 2 or parts[0] != "tss":
            raise Refused(404, "E_NOT_FOUND", f"no route {method} {path}")
        if parts[1] != self.tss_id:
            raise Refused(404, "E_TSS_NOT_FOUND", f"no TSS {parts[1]}")
        rest = parts[2:]
        if rest == [] and method == "GET":
            return JSONResponse(self._tss())
        if rest == ["admin", "auth"] and method == "POST":
            return self._admin_auth(body)
        if rest == ["admin", "logout"] and method == "POST":
            self.admin_logged_in = False
            return JSONResponse({})
        if len(rest) == 2 and rest[0] == "client":
            return self._client(method, rest[1], body)
        if len(rest) == 2 and rest[0] == "tx" and method == "GET":
            return JSONResponse(self._retrieve_tx(rest[1], query))
        if len(rest) == 2 and rest[0] == "tx" and method == "PUT":
            return JSONResponse(self._upsert(rest[1], query, body))
        if len(rest) >= 2 and rest[0] == "export":
            return self._export(method, rest[1], rest[2:], query, body)
        raise Refused(404, "E_NOT_FOUND", f"no route {method} {path}")

    # --- auth ----------------------------------------------------------------------------------------------------

    def _auth(self, body: Any) -> Response:
        now = self.clock()
        if isinstance(body, dict) and set(body) == {"api_key", "api_secret"}:
            if body["api_key"] != API_KEY or body["api_secret"] != API_SECRET:
                raise Refused(401, "E_UNAUTHORIZED", "api_key or api_secret is not correct")
        elif isinstance(body, dict) and set(body) == {"refresh_token"}:
            expiry = self.refresh_tokens.get(str(body["refresh_token"]))
            if expiry is None or expiry <= now:
                raise Refused(401, "E_UNAUTHORIZED", "the refresh token is invalid or expired")
        else:
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"body must be {{api_key, api_secret}} or "
                          f"{{refresh_token}}, got {keys}")  # fmt: skip
        access, refresh = f"fake-access-{uuid.uuid4().hex}", f"fake-refresh-{uuid.uuid4().hex}"
        self.access_tokens[access] = now + ACCESS_TTL_S
        self.refresh_tokens[refresh] = now + REFRESH_TTL_S
        return JSONResponse({
            "access_token": access, "access_token_claims": {"env": "TEST", "organization_id": str(uuid.UUID(int=7))},
            "access_token_expires_in": ACCESS_TTL_S, "access_token_expires_at": int(now + ACCESS_TTL_S),
            "refresh_token": refresh, "refresh_token_expires_in": REFRESH_TTL_S,
            "refresh_token_expires_at": int(now + REFRESH_TTL_S),
        })  # fmt: skip

    def _admin_auth(self, body: Any) -> Response:
        if not isinstance(body, dict) or set(body) != {"admin_pin"}:
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "body must be {admin_pin}")
        if body["admin_pin"] != ADMIN_PIN:
            raise Refused(401, "E_ADMIN_LOGIN_FAILED", "the admin PIN is not correct")
        self.admin_logged_in = True
        return JSONResponse({})

    # --- TSS and clients -----------------------------------------------------------------------------------------

    def _certificate(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fake fiskaly TSS {self.serial.hex()[:16]}")])
        now = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365)).sign(self.key, hashes.SHA256()))  # fmt: skip

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _tss(self) -> dict[str, Any]:
        return {
            "certificate": base64.b64encode(self.certificate_pem()).decode(), "serial_number": self.serial.hex(),
            "public_key": base64.b64encode(self.public_key).decode(), "signature_algorithm": "ecdsa-plain-SHA256",
            "signature_timestamp_format": "unixTime", "transaction_data_encoding": "UTF-8",
            "max_number_registered_clients": 199, "max_number_active_transactions": 2000,
            "supported_update_variants": "SIGNED", "metadata": {}, "_id": self.tss_id, "_type": "TSS",
            "_env": "TEST", "_version": VERSION, "time_creation": 1_700_000_000, "description": "fake TSS",
            "state": self.tss_state, "signature_counter": str(self.signature_counter),
            "transaction_counter": str(self.transaction_counter),
            "number_registered_clients": sum(c["state"] == "REGISTERED" for c in self.clients.values()),
            "number_active_transactions": sum(t.state == "ACTIVE" for t in self.txs.values()),
        }  # fmt: skip

    def _client(self, method: str, client_id: str, body: Any) -> Response:
        client = self.clients.get(client_id)
        if method == "GET":
            if client is None:
                raise Refused(404, "E_CLIENT_NOT_FOUND", f"no client {client_id}")
            return JSONResponse(self._client_resource(client_id))
        if method not in ("PUT", "PATCH"):
            raise Refused(404, "E_NOT_FOUND", f"no route {method} client")
        if not self.admin_logged_in:
            raise Refused(401, "E_UNAUTHORIZED", "this operation requires admin authentication")
        self._check_tss_usable()
        if method == "PATCH":
            if not isinstance(body, dict) or not set(body) <= {"state", "metadata"} or body.get("state") not in (
                    "REGISTERED", "DEREGISTERED"):  # fmt: skip
                raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "body must be {state: REGISTERED | DEREGISTERED}")
            if client is None:
                raise Refused(404, "E_CLIENT_NOT_FOUND", f"no client {client_id}")
            client["state"] = body["state"]
            return JSONResponse(self._client_resource(client_id))
        if not UUID4.match(client_id):
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"client_id {client_id!r} is not a UUIDv4")
        if not isinstance(body, dict) or "serial_number" not in body or not set(body) <= {"serial_number", "metadata"}:
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"body must be {{serial_number[, metadata]}}: {body!r}")
        serial = body["serial_number"]
        if not isinstance(serial, str) or not serial or not CLIENT_SERIAL.match(serial):
            raise Refused(400, "E_ILLEGAL_CLIENT_SERIAL", f"serial_number {serial!r} does not match the pattern")
        if client is not None:
            if client["serial_number"] != serial:
                raise Refused(409, "E_CLIENT_CONFLICT", f"client {client_id} exists with another serial number")
            return JSONResponse(self._client_resource(client_id))
        if any(c["serial_number"] == serial for c in self.clients.values()):
            raise Refused(400, "E_ILLEGAL_CLIENT_SERIAL", f"serial_number {serial!r} is used by another client")
        self.clients[client_id] = {"serial_number": serial, "state": "REGISTERED"}
        return JSONResponse(self._client_resource(client_id))

    def _client_resource(self, client_id: str) -> dict[str, Any]:
        client = self.clients[client_id]
        return {"serial_number": client["serial_number"], "state": client["state"], "tss_id": self.tss_id,
                "metadata": {}, "_id": client_id, "_type": "CLIENT", "_env": "TEST", "_version": VERSION,
                "time_creation": 1_700_000_000, "time_update": 1_700_000_000}  # fmt: skip

    def _check_tss_usable(self) -> None:
        if self.tss_state in ("DEFECTIVE", "DELETED", "EVICTED"):
            raise Refused(423, f"E_TSS_{self.tss_state}", f"the TSS is {self.tss_state}")
        if self.tss_state == "DISABLED":
            raise Refused(400, "E_TSS_DISABLED", "the TSS is disabled")
        if self.tss_state != "INITIALIZED":
            raise Refused(400, "E_TSS_NOT_INITIALIZED", f"the TSS is {self.tss_state}")

    # --- transactions --------------------------------------------------------------------------------------------

    def _find_tx(self, tx_id_or_number: str) -> Tx:
        tx = self.txs.get(tx_id_or_number)
        if tx is None and tx_id_or_number.isdigit():
            tx = next((t for t in self.txs.values() if t.number == int(tx_id_or_number)), None)
        if tx is None:
            raise Refused(404, "E_TX_NOT_FOUND", f"no transaction {tx_id_or_number}")
        return tx

    def _retrieve_tx(self, tx_id_or_number: str, query: dict[str, str]) -> dict[str, Any]:
        tx = self._find_tx(tx_id_or_number)
        if "tx_revision" not in query:
            return tx.revisions[-1][1]
        revision = positive(query["tx_revision"], "tx_revision")
        if revision > len(tx.revisions):
            raise Refused(400, "E_TX_REVISION_NOT_FOUND", f"no revision {revision}; latest is {len(tx.revisions)}")
        return tx.revisions[revision - 1][1]

    def _upsert(self, tx_id: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        if set(query) != {"tx_revision"}:
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"query must be tx_revision=<n>, got {sorted(query)}")
        revision = positive(query["tx_revision"], "tx_revision")
        if not UUID4.match(tx_id):
            raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"tx_id {tx_id!r} is not a UUIDv4")
        process_type, process_data = check_tx_body(body)
        self._check_tss_usable()
        client = self.clients.get(body["client_id"])
        if client is None:
            raise Refused(400, "E_CLIENT_NOT_FOUND", f"no client {body['client_id']}")
        if client["state"] != "REGISTERED":
            raise Refused(400, "E_CLIENT_DEREGISTERED", f"client {body['client_id']} is DEREGISTERED")
        tx = self.txs.get(tx_id)
        state = body["state"]
        if tx is None:
            if revision != 1:
                raise Refused(400, "E_TX_UPSERT", f"transaction {tx_id} does not exist: start it with tx_revision=1")
            if state != "ACTIVE":
                raise Refused(400, "E_TX_UPSERT", f"a transaction starts with state ACTIVE, not {state}")
            self.transaction_counter += 1
            tx = Tx(tx_id, self.transaction_counter, body["client_id"], int(self.clock()))
            self.txs[tx_id] = tx
            operation = START
        else:
            latest = len(tx.revisions)
            if revision == latest and tx.revisions[-1][0] == body:
                return tx.revisions[-1][1]  # the same request again: the same answer
            if revision != latest + 1:
                raise Refused(400, "E_TX_UPSERT", f"tx_revision {revision}: the latest revision of {tx_id} is "
                              f"{latest}, the next one must be {latest + 1}")  # fmt: skip
            if tx.state != "ACTIVE":
                raise Refused(400, "E_TX_UPSERT", f"transaction {tx_id} is {tx.state} and cannot change")
            if body["client_id"] != tx.client_id:
                raise Refused(400, "E_TX_UPSERT", f"transaction {tx_id} belongs to client {tx.client_id}")
            operation = UPDATE if state == "ACTIVE" else FINISH
        tx.state = state
        reply = self._sign(tx, revision, operation, client["serial_number"], process_type, process_data, body)
        tx.revisions.append((body, reply))
        return reply


    def _sign(self, tx: Tx, revision: int, operation: str, serial: str, process_type: str, process_data: bytes,
              body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        self.signature_counter += 1
        now = int(self.clock())
        message = LogMessage(
            certified_data_type=OID_TRANSACTION_LOG,
            certified_data=TransactionData(operation_type=operation, client_id=serial, process_data=process_data,
                                           process_type=process_type, transaction_number=tx.number),
            serial_number=self.serial, signature_algorithm=crypto.ECDSA_PLAIN_SHA256.oid,
            signature_counter=self.signature_counter, log_time=LogTime.unix_time(now),
        )  # fmt: skip
        signature = crypto.sign_plain(self.key, crypto.ECDSA_PLAIN_SHA256, message.signed_bytes())
        self.logs.append(message.with_signature(signature))
        counter: int | str = str(self.signature_counter) if self.counter_as_string else self.signature_counter
        reply: dict[str, Any] = {
            "number": tx.number, "time_start": tx.time_start, "client_serial_number": serial,
            "tss_serial_number": self.serial.hex(), "state": tx.state, "client_id": tx.client_id,
            "schema": body.get("schema", {}), "revision": revision, "latest_revision": revision, "tss_id": self.tss_id,
            "metadata": {}, "_type": "TRANSACTION", "_id": tx.tx_id, "_env": "TEST", "_version": VERSION,
            "log": {"operation": {START: "Start", UPDATE: "Update", FINISH: "Finish"}[operation], "timestamp": now,
                    "timestamp_format": "unixTime"},
            "signature": {"value": base64.b64encode(signature).decode(), "algorithm": "ecdsa-plain-SHA256",
                          "counter": counter, "public_key": base64.b64encode(self.public_key).decode()},
        }  # fmt: skip
        if tx.state != "ACTIVE":
            reply["time_end"] = now
        if tx.state == "FINISHED":
            reply["qr_code_data"] = ";".join([
                "V0", serial, process_type, process_data.decode(), str(tx.number), str(self.signature_counter),
                _iso(tx.time_start), _iso(now), "ecdsa-plain-SHA256", "unixTime",
                base64.b64encode(signature).decode(), base64.b64encode(self.public_key).decode(),
            ])  # fmt: skip
        return reply

    # --- exports -------------------------------------------------------------------------------------------------

    def _export(self, method: str, export_id: str, rest: list[str], query: dict[str, str], body: Any) -> Response:
        export = self.exports.get(export_id)
        if method == "PUT" and not rest:
            if body not in (None, {}):
                raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", "triggerExport takes an empty body")
            unknown = set(query) - EXPORT_QUERY
            if unknown:
                raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"unknown query parameters {sorted(unknown)}")
            if "client_id" in query and len(query) > 1:
                raise Refused(400, "E_PARAMETER_MISMATCH", "client_id is not combined with other parameters")
            for key, value in query.items():
                if key != "client_id" and not value.isdigit():
                    raise Refused(400, "E_FAILED_SCHEMA_VALIDATION", f"{key} {value!r} is not a whole number")
            if export is None:
                export = Export(export_id, query, int(self.clock()))
                self.exports[export_id] = export
            return JSONResponse(self._export_resource(export))
        if export is None:
            raise Refused(404, "E_EXPORT_NOT_FOUND", f"no export {export_id}")
        if method == "GET" and not rest:
            if export.state in ("PENDING", "WORKING"):
                export.polls += 1
                export.state = "COMPLETED" if export.polls > self.export_polls else ("WORKING" if export.polls > 1
                                                                                     else "PENDING")  # fmt: skip
            return JSONResponse(self._export_resource(export))
        if method == "DELETE" and not rest:
            if export.state not in ("PENDING", "WORKING"):
                raise Refused(400, "E_CANCEL_EXPORT", f"export {export_id} is {export.state}")
            export.state = "CANCELLED"
            return JSONResponse(self._export_resource(export))
        if method == "GET" and rest == ["file"]:
            if export.state != "COMPLETED":
                raise Refused(404, "E_EXPORT_NOT_COMPLETED", f"export {export_id} is {export.state}")
            return Response(self._tar(export.query), media_type="application/x-tar")
        raise Refused(404, "E_NOT_FOUND", f"no route {method} export/{'/'.join(rest)}")

    def _export_resource(self, export: Export) -> dict[str, Any]:
        resource: dict[str, Any] = {"state": export.state, "time_request": export.time_request, "_type": "EXPORT",
                                    "_id": export.export_id, "_env": "TEST", "_version": VERSION, "metadata": {},
                                    "tss_id": self.tss_id}  # fmt: skip
        if export.state in ("PENDING", "WORKING"):
            resource["estimated_time_of_completion"] = int(self.clock()) + 1
        return resource

    def _tar(self, query: dict[str, str]) -> bytes:
        def wanted(message: LogMessage) -> bool:
            data = message.transaction
            if "client_id" in query:
                client = self.clients.get(query["client_id"])
                return client is not None and data.client_id == client["serial_number"]
            number, counter, when = data.transaction_number, message.signature_counter, message.log_time.unix
            checks = [("transaction_number", number, "=="), ("start_transaction_number", number, ">="),
                      ("end_transaction_number", number, "<="), ("start_date", when, ">="), ("end_date", when, "<="),
                      ("start_signature_counter", counter, ">="), ("end_signature_counter", counter, "<=")]  # fmt: skip
            for key, value, op in checks:
                if key in query:
                    limit = int(query[key])
                    if {"==": value != limit, ">=": value < limit, "<=": value > limit}[op]:
                        return False
            return True

        now = int(self.clock())
        members = [(log_file_name(m), m.encode(), m.log_time.unix) for m in self.logs if wanted(m)]
        members.append((certificate_file_name(self.serial), self.certificate_pem(), now))
        about = {
            "description": "fake fiskaly TSS (tests)",
            "manufacturer": "floorgate",
            "version": VERSION,
            "serialNumber": self.serial.hex(),
            "publicKey": base64.b64encode(self.public_key).decode(),
        }
        members.append(("info.csv", info_csv(about), now))
        return build_tar(members)


def _iso(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@contextlib.contextmanager
def running_fake(**options: Any) -> Iterator[FakeFiskaly]:
    """A :class:`FakeFiskaly` served on 127.0.0.1 (random port) for the ``with`` block."""
    from tests.api_support import serve

    fake = FakeFiskaly(**options)
    for url in serve(fake.app):
        fake.base_url = url + API
        yield fake


__all__ = ["ADMIN_PIN", "API_KEY", "API_SECRET", "FakeFiskaly", "Recorded", "running_fake"]
