"""``InfluxV1Store``: InfluxDB 1.x through its HTTP API (``/write`` with line protocol, ``/query`` with InfluxQL).

InfluxDB 1.x is what Debian ships (1.6.7 in Debian 12) and is still widely run next to Grafana. Requests::

    POST /write?db=<database>[&rp=<retention_policy>]&precision=ns     body: line protocol, 204 on success
    GET  /query?db=<database>&epoch=ns&q=<InfluxQL>                     reads (see ``influxql.py``)
    POST /query?q=CREATE DATABASE "<database>"                          ``ensure_ready`` when it is missing
    GET  /ping                                                          204

With ``username`` the requests use HTTP basic auth (InfluxDB 1.x ``auth-enabled = true``). ``ensure_ready`` only
creates the database when ``SHOW DATABASES`` does not list it, so a non-admin user with an existing database works;
a ``retention_policy`` must already exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from central.metrics.base import Point
from central.metrics.influxql import (
    InfluxQLReader,
    InfluxQLStore,
    quote_ident,
    raise_for_response,
    transport_error,
)
from central.metrics.lineprotocol import encode_points

__all__ = ["DEFAULT_TIMEOUT_S", "InfluxV1Store"]

DEFAULT_TIMEOUT_S = 5.0


class InfluxV1Store(InfluxQLStore):
    """Points in one InfluxDB 1.x database (optionally one retention policy of it)."""

    kind = "influxdb-v1"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retention_policy: str | None = None,
    ) -> None:
        if not database:
            raise ValueError("database must not be empty")
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._url = url.rstrip("/")
        self._database = database
        self._retention_policy = retention_policy
        self._http = httpx.Client(base_url=self._url, timeout=timeout_s, auth=auth)
        self._reader = InfluxQLReader(
            self._http, backend=self.kind, database=database, retention_policy=retention_policy
        )

    def ensure_ready(self) -> None:
        if not self._reader.database_exists():
            self._reader.execute([f"CREATE DATABASE {quote_ident(self._database)}"], post=True)

    def _write(self, points: Sequence[Point]) -> None:
        params = {"db": self._database, "precision": "ns"}
        if self._retention_policy:
            params["rp"] = self._retention_policy
        body = encode_points(points).encode("utf-8")
        try:
            response = self._http.post(
                "/write", params=params, content=body, headers={"Content-Type": "text/plain; charset=utf-8"}
            )
        except httpx.TransportError as exc:
            raise transport_error(self.kind, exc, f"write of {len(points)} points", self._url) from exc
        raise_for_response(self.kind, response, f"write of {len(points)} points", expected=204)

    def close(self) -> None:
        self._http.close()
