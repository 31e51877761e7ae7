"""What every ``floorgate central`` command shares: the ``--config`` option, the database, how errors are told."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def with_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]
                ) -> Callable[[str, str, str], argparse.ArgumentParser]:
    """``add(name, help, description)``: a sub-command of ``sub`` that takes ``--config CENTRAL_YAML``."""

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description)
        p.add_argument("--config", required=True, metavar="CENTRAL_YAML",
                       help="central config file (see firmware-config/examples/central.yaml)")
        return p

    return add


def open_database(config: str) -> tuple[Any, Any]:
    """(engine, session factory) of the database in ``config``; no broker connection here (its TLS files need not
    be there)."""
    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory

    engine = make_engine(load_settings(config, check_files=False).database_url)
    return engine, make_session_factory(engine)


def fail(message: str) -> int:
    import sys

    print(f"floorgate: {message}", file=sys.stderr)
    return 1


def error_text(exc: Exception) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None) or exc
        return f"database: {str(orig).splitlines()[0]} (has `floorgate central migrate` been run?)"
    return str(exc)
