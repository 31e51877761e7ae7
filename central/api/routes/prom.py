"""``GET /metrics``: central's Prometheus metrics (text exposition format), for any caller allowed to read.

What is in it: ``central/api/observability.py``. Like every route but ``/health`` it needs credentials; give
Prometheus an API key of role ``viewer`` (``Authorization: Bearer fgk_…``, or ``X-API-Key``)::

    scrape_configs:
      - job_name: floorgate-central
        metrics_path: /metrics
        authorization: {type: Bearer, credentials_file: /etc/prometheus/floorgate-central.key}
        static_configs: [{targets: ["central.example:8000"]}]
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest

from central.api.errors import ERROR_RESPONSES
from central.api.observability import registry_of
from central.api.security import CanRead

router = APIRouter(tags=["health"])
# the classic text format, as the node's /metrics: every Prometheus 2.x/3.x reads it (our names are plain ASCII)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "Prometheus text exposition format (version 0.0.4)",
              "content": {"text/plain": {"schema": {"type": "string"}}}},
        # JSON errors, whatever the 200 answer is: the schema is named, not given as a model (which would be
        # documented as text/plain, the route's media type)
        **{code: {"description": ERROR_RESPONSES[code]["description"],
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
           for code in (401, 403)},
    },
    summary="Prometheus metrics: ingest, HTTP latency by route, alerts firing (needs an API key or token)",
)
def metrics(request: Request, principal: CanRead) -> Response:
    # a sync route: the collectors query the database, so this runs in the thread pool
    return Response(generate_latest(registry_of(request.app)), media_type=CONTENT_TYPE)
