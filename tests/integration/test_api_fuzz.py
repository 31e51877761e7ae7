"""Schemathesis against central's OpenAPI document, served on real HTTP with real Postgres and InfluxDB and an
authenticated client (an admin, who may call every route): no 5xx, and every response matches the status codes,
content types and schemas the document declares. The number of examples per operation is bounded for CI
(FLOORGATE_FUZZ_EXAMPLES, default 12)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_support import ApiHarness, build_api
from tests.services import InfluxServer, MosquittoServer

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FLOORGATE_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def fuzz_api(postgres_server, influx_server: InfluxServer,  # type: ignore[no-untyped-def]
             mosquitto_server: MosquittoServer) -> Iterator[ApiHarness]:
    """One app for the whole run (module scope): built once, fuzzed operation by operation."""
    name = "fuzz_" + os.urandom(4).hex()
    url = postgres_server.create_database(name)
    if not influx_server.is_running:
        influx_server.start()
    influx_server.create_database(name)
    if not mosquitto_server.is_running:
        mosquitto_server.start()
    try:
        yield from build_api(url, {"kind": "influxdb-v1", "url": influx_server.url, "database": name},
                             broker={"url": mosquitto_server.url})
    finally:
        postgres_server.drop_database(name)
        if influx_server.is_running:
            influx_server.drop_database(name)


def test_no_server_error_and_every_response_matches_the_document(fuzz_api: ApiHarness) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_api.base_url}/openapi.json")
    headers = dict(fuzz_api.auth("admin"))
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  phases=[Phase.explicit, Phase.generate])
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            sent = dict(headers)
            if case.headers:
                # generated credentials would replace the admin's: keep them out, fuzz the rest
                sent.update({k: v for k, v in case.headers.items() if k.lower() not in ("authorization", "x-api-key")})
            case.call_and_validate(base_url=fuzz_api.base_url, headers=sent, checks=checks)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report together
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert failures == {}, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    assert operations >= 40, f"only {operations} operations in the OpenAPI document"
