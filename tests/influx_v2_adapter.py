"""TEST-ONLY: a small InfluxDB 2.x API in front of a real InfluxDB 1.x, so ``influxdb-client`` can be exercised.

Debian ships InfluxDB 1.6.7, which has no ``/api/v2/write`` (it came in 1.8). This adapter answers the few v2
endpoints ``InfluxV2Store`` and ``influxdb-client`` use and forwards them to the 1.x server, so the real client's
write path (synchronous writes, gzip bodies, error parsing, bucket lookup) runs against a real storage engine.
**Production uses a real InfluxDB 2.x / 3.x**; nothing outside ``tests/`` imports this module.

    GET|HEAD /ping, GET /health         -> upstream /ping (204 / health JSON; 503 when upstream is down)
    POST /api/v2/write?org=&bucket=B&precision=P  (gzip or plain)
                                        -> POST /write?db=B&precision=n|u|ms|s, 204
    GET  /api/v2/orgs[?org=NAME]        -> the one organisation this adapter knows
    GET  /api/v2/buckets[?name=B]       -> SHOW DATABASES
    POST /api/v2/buckets {"name": B}    -> CREATE DATABASE "B", 201 (422 if it exists)
    GET|POST /query?db=B&q=...          -> passed through unchanged (the v1-compatibility InfluxQL endpoint)

Every request but ``/ping`` and ``/health`` needs ``Authorization: Token <token>`` (401 otherwise, like 2.x);
the token is random unless given. Upstream errors become 2.x JSON
errors ``{"code": ..., "message": ...}``: 400 ``invalid``, 404 ``not found``, 401/403 ``unauthorized``,
5xx or no answer from upstream ``unavailable`` (503).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx

__all__ = ["InfluxV2Adapter"]

ORG_ID = "0000000000000001"
_PRECISIONS = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not found", 413: "request too large"}


def _bucket_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class _Server(ThreadingHTTPServer):
    """Tracks open connections, so that ``stop()`` really ends keep-alive connections of clients."""

    daemon_threads = True

    def __init__(self, adapter: InfluxV2Adapter) -> None:
        self.adapter = adapter
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as influxdb-client's urllib3 pool expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures through the assertions, not an access log."""

    # --- plumbing ---------------------------------------------------------------------------------------------

    @property
    def adapter(self) -> InfluxV2Adapter:
        return self.server.adapter

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("X-Influxdb-Version", "1.6.7 (floorgate test adapter)")
        self.send_header("X-Influxdb-Build", "OSS")
        if body or status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode())

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        code = code or _CODES.get(status, "unavailable" if status >= 500 else "invalid")
        self._json(status, {"code": code, "message": message})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Token {self.adapter.token}":
            return True
        self._error(401, "unauthorized access", "unauthorized")
        return False

    def _upstream(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """Send to InfluxDB 1.x; answer 503 and return None when it cannot be reached."""
        try:
            return self.adapter.upstream.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self._error(503, f"upstream InfluxDB unreachable: {type(exc).__name__}: {exc}", "unavailable")
            return None

    def _upstream_error(self, response: httpx.Response, bucket: str | None = None) -> None:
        try:
            message = str(response.json().get("error", response.text))
        except ValueError:
            message = response.text
        if response.status_code == 404 and bucket is not None:
            message = f'bucket "{bucket}" not found'
        status = 503 if response.status_code >= 500 else response.status_code
        self._error(status, message)

    def _databases(self) -> list[str] | None:
        response = self._upstream("GET", "/query", params={"q": "SHOW DATABASES"})
        if response is None:
            return None
        if response.status_code != 200:
            self._upstream_error(response)
            return None
        series = response.json()["results"][0].get("series", [])
        return [row[0] for s in series for row in s.get("values", [])]

    def _bucket(self, name: str) -> dict[str, Any]:
        bucket_id = _bucket_id(name)
        return {
            "id": bucket_id,
            "orgID": ORG_ID,
            "type": "user",
            "name": name,
            "retentionRules": [],
            "links": {"self": f"/api/v2/buckets/{bucket_id}", "org": f"/api/v2/orgs/{ORG_ID}"},
        }

    # --- routes -----------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path in ("/ping", "/health"):
            self._ping(health=url.path == "/health")
        elif not self._authorised():
            return
        elif url.path == "/query":
            self._query()
        elif url.path == "/api/v2/orgs":
            name = params.get("org")
            if name is not None and name != self.adapter.org:
                self._error(404, f'organization name "{name}" not found')
            else:
                self._json(200, {
                    "links": {"self": "/api/v2/orgs"},
                    "orgs": [{"id": ORG_ID, "name": self.adapter.org, "status": "active"}],
                })
        elif url.path == "/api/v2/buckets":
            databases = self._databases()
            if databases is not None:
                wanted = params.get("name")
                names = [d for d in databases if wanted in (None, d) and not d.startswith("_")]
                self._json(200, {"links": {"self": "/api/v2/buckets"}, "buckets": [self._bucket(n) for n in names]})
        else:
            self._error(404, "path not found", "not found")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not self._authorised():
            return
        try:
            body = self._body()
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            self._error(400, f"cannot read the request body: {exc}")
            return
        if url.path == "/api/v2/write":
            self._write(params, body)
        elif url.path == "/api/v2/buckets":
            self._create_bucket(body)
        elif url.path == "/query":
            self._query(body)
        else:
            self._error(404, "path not found", "not found")

    def _ping(self, *, health: bool) -> None:
        response = self._upstream("GET", "/ping")
        if response is None:
            return
        if not health:
            self._send(204 if response.status_code == 204 else 503)
        elif response.status_code == 204:
            self._json(200, {"name": "influxdb", "status": "pass", "message": "ready for queries and writes",
                             "checks": [], "version": "1.6.7", "commit": "adapter"})
        else:
            self._json(503, {"name": "influxdb", "status": "fail", "message": "upstream not ready", "checks": []})

    def _write(self, params: dict[str, str], body: bytes) -> None:
        bucket = params.get("bucket")
        if not bucket:
            self._error(400, "bucket is required")
            return
        if params.get("org") not in (None, self.adapter.org, ORG_ID) or params.get("orgID") not in (None, ORG_ID):
            self._error(404, f'organization name "{params.get("org")}" not found')
            return
        precision = _PRECISIONS.get(params.get("precision", "ns"))
        if precision is None:
            self._error(400, f"invalid precision {params.get('precision')!r}")
            return
        response = self._upstream(
            "POST", "/write", params={"db": bucket, "precision": precision}, content=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        if response is None:
            return
        if response.status_code == 204:
            with self.server.connections_lock:
                self.adapter.writes += 1
                self.adapter.gzip_writes += self.headers.get("Content-Encoding", "").lower() == "gzip"
            self._send(204)
        else:
            self._upstream_error(response, bucket)

    def _create_bucket(self, body: bytes) -> None:
        try:
            request = json.loads(body)
            name = str(request["name"])
        except (ValueError, KeyError, TypeError):
            self._error(400, "bucket request needs a JSON body with a name")
            return
        if request.get("orgID") not in (None, ORG_ID):
            self._error(404, f"organization {request.get('orgID')} not found")
            return
        databases = self._databases()
        if databases is None:
            return
        if name in databases:
            self._error(422, f"bucket with name {name} already exists", "conflict")
            return
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        response = self._upstream("POST", "/query", params={"q": f'CREATE DATABASE "{escaped}"'})
        if response is None:
            return
        if response.status_code != 200:
            self._upstream_error(response)
            return
        self._json(201, self._bucket(name))

    def _query(self, body: bytes | None = None) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
        response = self._upstream(
            self.command, "/query", params=urlsplit(self.path).query, content=body, headers=headers
        )
        if response is not None:
            self._send(response.status_code, response.content, response.headers.get("Content-Type", "text/plain"))


class InfluxV2Adapter:
    """Serve the v2 subset above on 127.0.0.1 (random port) in a background thread until ``stop()``."""

    def __init__(self, upstream_url: str, *, token: str | None = None, org: str = "floorgate") -> None:
        self.token = token or secrets.token_hex(16)
        self.org = org
        self.upstream = httpx.Client(base_url=upstream_url, timeout=10.0)
        self.writes = 0  # successful /api/v2/write requests, so tests can see the v2 path was used
        self.gzip_writes = 0  # ... of which had a gzip body
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the adapter has not been started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = _Server(self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="influx-v2-adapter", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut open connections: afterwards the port refuses connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            for connection in list(server.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.upstream.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

