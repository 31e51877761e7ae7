"""``InfluxV2Store``: InfluxDB 2.x / 3.x — writes through the official ``influxdb-client``, reads through InfluxQL.

Writes use ``influxdb-client``'s synchronous write API (``POST /api/v2/write?org=&bucket=&precision=ns``, gzip
by default); the body is our own line protocol (``lineprotocol.py``), so all backends escape alike.

Reads use InfluxDB's **v1-compatibility InfluxQL endpoint** with the token as header, shared with the v1 store
(``influxql.py``)::

    GET /query?db=<bucket>&epoch=ns&q=<InfluxQL>      Authorization: Token <token>

InfluxQL in 2.x addresses a bucket through a **DBRP mapping** (database + retention policy → bucket). InfluxDB
OSS 2.4+ creates a virtual mapping ``<bucket>/autogen`` for every bucket, so ``db=<bucket>`` works out of the box;
on older 2.x or when the bucket name contains a ``/``, create the mapping once, e.g.
``influx v1 dbrp create --db <bucket> --rp autogen --bucket-id <id> --default``. InfluxDB 3.x answers ``/query``
with ``db=<database>`` natively and creates the database on the first write.

``ensure_ready`` creates the bucket (infinite retention) when ``/api/v2/buckets`` does not list it; a server
without that API (3.x) is left to create it on the first write. The token then needs write and read permission on
the bucket, and bucket-create permission only if the bucket does not exist yet.

Client errors map to ``MetricsStoreError``: no answer (refused, reset, timeout), 5xx, 408 and 429 are retryable;
other 4xx are not and carry the server's message. The client itself does not retry (``retries=False``): the
caller (central's writer) retries whole batches, which is safe because writes are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from central.metrics.base import MetricsStoreError, Point
from central.metrics.influxql import InfluxQLReader, InfluxQLStore, is_retryable_status
from central.metrics.lineprotocol import encode_point

__all__ = ["DEFAULT_TIMEOUT_S", "InfluxV2Store"]

DEFAULT_TIMEOUT_S = 5.0
_T = TypeVar("_T")
_PRECISION_NS: Any = WritePrecision.NS  # a str constant, though the client annotates its class


def _message(exc: InfluxDBError) -> str:
    """The server's error text (the ``message`` of a v2 JSON error body, else the raw body or reason)."""
    message: object = getattr(exc, "message", None) or getattr(exc, "reason", None) or type(exc).__name__
    if isinstance(message, bytes):
        return message.decode("utf-8", errors="replace")
    return str(message)


class InfluxV2Store(InfluxQLStore):
    """Points in one InfluxDB 2.x bucket (3.x: database) of one organisation."""

    kind = "influxdb-v2"

    def __init__(
        self,
        url: str,
        *,
        token: str,
        org: str,
        bucket: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        gzip: bool = True,
    ) -> None:
        for name, value in (("token", token), ("org", org), ("bucket", bucket)):
            if not value:
                raise ValueError(f"{name} must not be empty")
        self._url = url.rstrip("/")
        self._org = org
        self._bucket = bucket
        self._client = InfluxDBClient(
            url=self._url, token=token, org=org, timeout=int(timeout_s * 1000), enable_gzip=gzip, retries=False
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._http = httpx.Client(
            base_url=self._url, timeout=timeout_s, headers={"Authorization": f"Token {token}"}
        )
        self._reader = InfluxQLReader(self._http, backend=self.kind, database=bucket)

    def _call(self, action: str, call: Callable[[], _T]) -> _T:
        """Run an ``influxdb-client`` call, turning its exceptions into ``MetricsStoreError``."""
        try:
            return call()
        except ApiException as exc:
            status = int(exc.status or 0)
            message = _message(exc)
            raise MetricsStoreError(
                self.kind,
                f"{action} failed with HTTP {status}: {message}",
                retryable=is_retryable_status(status),
                status_code=status,
            ) from exc
        except InfluxDBError as exc:
            raise MetricsStoreError(self.kind, f"{action} failed: {_message(exc)}", retryable=False) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise MetricsStoreError(
                self.kind, f"{action} at {self._url} failed: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        except ValueError as exc:  # the client could not make sense of the answer
            raise MetricsStoreError(self.kind, f"{action}: unexpected answer: {exc}", retryable=False) from exc

    def ensure_ready(self) -> None:
        buckets = self._client.buckets_api()
        try:
            found = self._call(
                f"find bucket {self._bucket!r}",
                lambda: buckets.find_bucket_by_name(self._bucket),  # type: ignore[no-untyped-call]
            )
        except MetricsStoreError as exc:
            if exc.status_code == 404:  # no bucket API (InfluxDB 3.x): the database appears on the first write
                return
            raise
        if found is None:
            self._call(
                f"create bucket {self._bucket!r}",
                lambda: buckets.create_bucket(bucket_name=self._bucket, org=self._org),
            )

    def _write(self, points: Sequence[Point]) -> None:
        records = [encode_point(point) for point in points]
        self._call(
            f"write of {len(points)} points",
            lambda: self._write_api.write(
                bucket=self._bucket, org=self._org, record=records, write_precision=_PRECISION_NS
            ),
        )

    def close(self) -> None:
        try:
            self._write_api.close()  # type: ignore[no-untyped-call]
            self._client.close()  # type: ignore[no-untyped-call]
        finally:
            self._http.close()
