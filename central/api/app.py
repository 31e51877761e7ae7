"""The FastAPI application factory: settings and resources are handed in, nothing is built at import time."""

from __future__ import annotations

import time

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from central import __version__
from central.api import boundary, errors, observability, throttle
from central.api.deps import AppState
from central.api.routes import alerts as alert_routes
from central.api.routes import alibi as alibi_routes
from central.api.routes import (
    audit_log,
    auth,
    devices,
    health,
    masterdata,
    prom,
    readings,
    sites,
    ticket_documents,
    tickets,
    tse,
    tse_exports,
    users,
    weighings,
    weighings_csv,
)
from central.api.routes import commands as cmd_routes
from central.api.routes import ingest as ingest_routes
from central.config import CentralSettings
from central.ingest.service import IngestService
from central.metrics import MetricsStore

DESCRIPTION = """
floorgate central: the shop floor's records for the ERP — weighings and tickets, TSE-signed sales, sites, nodes and
devices, master data (articles, partners, lots), readings from InfluxDB, device commands, alerts and the audit log.

**Authentication**: people log in at `POST /api/v1/auth/token` (OAuth2 password flow) and send
`Authorization: Bearer <access_token>`; machines send an API key as `X-API-Key: fgk_…` (or as the bearer token).
Roles: admin, operator, auditor, viewer (see `GET /api/v1/auth/me` for what yours may do). Only `/health` and the
login are open.

Every error has the shape `{"error": {"code": "…", "message": "…", "field": "…"}}` with a stable `code`.
Every list filters, sorts (`sort=name` or `sort=-name`) and is paginated with an opaque `cursor` (`next_cursor` of
the previous page). Decimals (weights, money) are JSON strings, exact; times are ISO 8601 in UTC.
"""


def create_app(
    settings: CentralSettings,
    *,
    sessions: sessionmaker[Session],
    store: MetricsStore,
    ingest: IngestService | None = None,
) -> FastAPI:
    app = FastAPI(title="floorgate central", version=__version__, description=DESCRIPTION)
    app.state.floorgate = AppState(
        settings=settings, sessions=sessions, store=store, ingest=ingest, started_at=time.time()
    )
    errors.install(app)
    boundary.install(app, settings.api)  # body limits and the client's address, before any route runs
    observability.install(app, app.state.floorgate)
    throttle.install(app)  # the login throttle's counters in the app's /metrics
    for module in (health, auth, users, weighings, devices, ingest_routes, readings, prom, alert_routes, cmd_routes,
                   sites, masterdata, tickets, ticket_documents, tse, tse_exports, audit_log, alibi_routes,
                   weighings_csv):
        app.include_router(module.router)
    return app
