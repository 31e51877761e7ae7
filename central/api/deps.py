"""Typed dependencies of the API routes (full-stack-fastapi-template style)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from central.config import CentralSettings
from central.ingest.service import IngestService
from central.metrics import MetricsStore


@dataclass
class AppState:
    settings: CentralSettings
    sessions: sessionmaker[Session]
    store: MetricsStore
    ingest: IngestService | None
    started_at: float


def get_state(request: Request) -> AppState:
    return request.app.state.floorgate  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
