"""Real receivers for alert notifications in tests: an HTTP server taking webhook POSTs and an SMTP server
(aiosmtpd), both on 127.0.0.1, each collecting what it received.

    with WebhookReceiver() as hook, SmtpSink() as smtp:
        ...  # channels: {kind: webhook, url: hook.url}, {kind: email, host: 127.0.0.1, port: smtp.port, …}
        hook.bodies()     # the JSON objects received, in order
        smtp.subjects()   # the Subject lines received, in order

``hook.fail_next(n, status=500)`` answers the next ``n`` POSTs with an error (a receiver that is down for a while).
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tools.devservers import free_port


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self._fail: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._lock:
                    status = receiver._fail.pop(0) if receiver._fail else 200
                    if status == 200:
                        receiver.received.append((dict(self.headers.items()), json.loads(raw)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/floorgate?token=s3cret-token"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def bodies(self) -> list[Any]:
        with self._lock:
            return [body for _, body in self.received]

    def headers(self) -> list[dict[str, str]]:
        with self._lock:
            return [h for h, _ in self.received]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage, bool]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append((envelope, msg, bool(session.authenticated)))
        return "250 OK"


class SmtpSink:
    """aiosmtpd on 127.0.0.1 (a free port). With ``login=(user, password)`` it offers AUTH (without TLS: loopback)
    and accepts only that login."""

    def __init__(self, *, login: tuple[str, str] | None = None) -> None:
        self._collector = _Collector()
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if login is not None:
            user, password = login[0].encode(), login[1].encode()

            def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                              auth_data: Any) -> AuthResult:
                ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (user, password)
                return AuthResult(success=ok, handled=False, auth_data=auth_data)

            kwargs = {"authenticator": authenticator, "auth_require_tls": False}
        self._controller = Controller(self._collector, hostname="127.0.0.1", port=self.port, **kwargs)

    def messages(self) -> list[EmailMessage]:
        with self._collector.lock:
            return [m for _, m, _ in self._collector.messages]

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages()]

    def authenticated(self) -> list[bool]:
        with self._collector.lock:
            return [a for _, _, a in self._collector.messages]

    def envelopes(self) -> list[Envelope]:
        with self._collector.lock:
            return [e for e, _, _ in self._collector.messages]

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._controller.stop()


__all__ = ["SmtpSink", "WebhookReceiver"]
