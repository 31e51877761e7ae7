"""The FastAPI application factory: settings and resources are handed in, nothing is built at import time."""

from __future__ import annotations

import time

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from central import __version__
from central.api import errors
from central.api.deps import AppState
from central.api.routes import auth, devices, health, users, weighings
from central.api.routes import ingest as ingest_routes
from central.config import CentralSettings
from central.ingest.service import IngestService
from central.metrics import MetricsStore

DESCRIPTION = """
floorgate central: business records from the shop floor (weighings, devices) and the state of ingest.

Every error has the shape `{"error": {"code": "…", "message": "…", "field": "…"}}`.
Lists are newest first and paginated with an opaque `cursor` (`next_cursor` of the previous page).
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
    for module in (health, auth, users, weighings, devices, ingest_routes):
        app.include_router(module.router)
    return app
