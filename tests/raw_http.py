"""A raw HTTP/1.1 client for body-limit tests: streams a large request body and reads the answer while it is still
sending, the way an attacker's client would — an ``httpx`` client only reads the answer after its whole body went
out (and may lose it to the reset when the server closes early).

    answer = stream_post("http://127.0.0.1:8000", "/api/v1/tickets", total=200 << 20, chunked=True)
    answer.status, answer.json(), answer.sent, answer.seconds
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    status: int | None  # None: the connection ended without an answer
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes that went out before the answer came (or the connection ended)
    seconds: float  # from the first byte sent to the complete answer

    def json(self) -> Any:
        return json.loads(self.body)


def _parse(buffer: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers, body) once the answer is complete (Content-Length), else None."""
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return status, headers, rest[:length]


def stream_post(base_url: str, path: str, *, total: int, chunked: bool = False, chunk: int = 256 * 1024,
                headers: dict[str, str] | None = None, timeout_s: float = 60,
                source_address: str | None = None) -> RawAnswer:
    """POST ``total`` bytes of ``x`` to ``path`` (Content-Length, or chunked without it), reading the answer while
    sending; stops sending as soon as an answer is complete or the server closes."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    sock = socket.create_connection((host, port), timeout=timeout_s,
                                    source_address=(source_address, 0) if source_address else None)
    fields = {"Content-Type": "application/json", **(headers or {})}
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"] + [f"{k}: {v}" for k, v in fields.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    pending = ("\r\n".join(lines) + "\r\n\r\n").encode()
    payload = b"x" * chunk
    sent = 0
    writing = True
    received = b""
    started = time.monotonic()
    deadline = started + timeout_s
    sock.setblocking(False)
    try:
        while time.monotonic() < deadline:
            if writing and not pending and sent < total:
                n = min(chunk, total - sent)
                piece = payload[:n]
                pending = f"{n:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
                sent += n
                if chunked and sent >= total:
                    pending += b"0\r\n\r\n"
            writers = [sock] if pending else []
            readable, writable, _ = select.select([sock], writers, [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    break
                received += data
                if _parse(received) is not None:
                    break
            if writable and pending:
                try:
                    pending = pending[sock.send(pending):]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:  # the server closed: read what it answered, if anything
                    pending = b""
                    writing = False
    finally:
        seconds = time.monotonic() - started
        sock.close()
    parsed = _parse(received)
    if parsed is None:
        return RawAnswer(None, {}, received, sent, seconds)
    status, answer_headers, body = parsed
    return RawAnswer(status, answer_headers, body, sent, seconds)
