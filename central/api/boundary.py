"""What the API checks of a request before any route, dependency or authentication runs (pure ASGI middleware).

``BodyLimitMiddleware``: a body larger than ``api.max_body_bytes`` (``api.max_upload_bytes`` on the upload routes,
``UPLOAD_ROUTES``) is answered 413 ``payload_too_large`` in the documented error shape —

- at once, from the ``Content-Length`` header, before a byte of the body is read;
- for a chunked body (no ``Content-Length``), as soon as the bytes received pass the limit: every ``receive`` is
  counted as the application reads it, nothing is buffered here.

FastAPI reads a JSON or form body *before* it runs the dependencies that check the credentials, so without this a
caller without credentials could make central read (and hold) any amount; the 413 comes first, credentials or not.
After the 413 the server closes the connection (the rest of the body is not read).

``ClientAddressMiddleware``: the client's address (``scope["client"]``, which ``request.client``, the login
throttle and the logs use) is the TCP peer, unless the peer is one of ``api.trusted_proxies``: then it is the
right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy. uvicorn's own proxy-header handling
is switched off where central serves the API (``central.runner``): it believes any loopback peer.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Final

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central.config import ApiSettings

__all__ = ["UPLOAD_ROUTES", "BodyLimitMiddleware", "ClientAddressMiddleware", "TrustedProxies"]

UPLOAD_ROUTES: Final = frozenset({("POST", "/api/v1/tse-exports")})  # (method, path) with api.max_upload_bytes

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _TooLarge(Exception):
    """Raised into the application from ``receive`` once the body passed the limit (the 413 is sent already)."""


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"error": {"code": "payload_too_large",
                                 "message": f"the request body is larger than {limit} bytes",
                                 "field": None}}).encode()


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, scope: Scope) -> int:
        upload = (scope.get("method", ""), scope.get("path", "").rstrip("/")) in UPLOAD_ROUTES
        return self.max_upload_bytes if upload else self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit)
            return
        received = 0
        response_started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not response_started and not refused:
                        refused = True
                        await _send_413(send, limit)
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:  # the 413 went out: whatever the application answers to the exception is dropped
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not refused:
                raise
        except Exception:
            if not refused:  # the application turned _TooLarge into an error of its own: the 413 is out already
                raise


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else 1 << 62  # unreadable: refuse as too large
    return None


async def _send_413(send: Send, limit: int) -> None:
    body = _too_large_body(limit)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class TrustedProxies:
    """``api.trusted_proxies`` parsed: ``contains(address)``."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, address: IpAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == n.version and address in n for n in self.networks)

    def client_of(self, peer: str, forwarded_for: list[str]) -> str:
        """The client's address: the peer, or — when the peer is a trusted proxy — the right-most address of the
        ``X-Forwarded-For`` values that is not a trusted proxy (a garbled entry ends the walk: the hop before it
        is the client we can vouch for)."""
        current = _parse(peer)
        if current is None or not self.contains(current):
            return peer
        client = str(current)
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                break
            client = str(address)
            if not self.contains(address):
                break
        return client


def _parse(text: str) -> IpAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddressMiddleware:
    def __init__(self, app: ASGIApp, *, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted and scope.get("client"):
            forwarded = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
            if forwarded:
                host, _port = scope["client"]
                client = self.trusted.client_of(host, forwarded)
                if client != host:
                    scope = {**scope, "client": (client, 0)}
        await self.app(scope, receive, send)


def install(app: FastAPI, api: ApiSettings) -> None:
    """Add both middlewares to ``app`` (the client address is settled first)."""
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=api.max_body_bytes,
                       max_upload_bytes=api.max_upload_bytes)
    app.add_middleware(ClientAddressMiddleware, trusted=TrustedProxies(api.trusted_proxies))
