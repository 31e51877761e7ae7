"""``floorgate central …`` sub-commands: migrate, run, ingest."""

from __future__ import annotations

import argparse
import asyncio


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    central = subparsers.add_parser("central", help="the central service",
                                    description="Run or maintain the central service.")
    sub = central.add_subparsers(dest="central_command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description)
        p.add_argument("--config", required=True, metavar="CENTRAL_YAML",
                       help="central config file (see firmware-config/examples/central.yaml)")
        return p

    m = add("migrate", "create or upgrade the database schema (Alembic)",
            "Apply the database migrations up to --revision (default: head); --downgrade goes back to it.")
    m.add_argument("--revision", default="head", help="target revision (default: head)")
    m.add_argument("--downgrade", action="store_true", help="downgrade to --revision instead (e.g. base)")
    m.set_defaults(func=_migrate)
    r = add("run", "serve the API and ingest batches from the broker",
            "Run the REST API (with /docs and /health) and the MQTT ingest in one process until SIGINT/SIGTERM.")
    r.set_defaults(func=_run)
    i = add("ingest", "ingest batches only (no API)",
            "Run only the MQTT ingest consumer; start several with distinct --client-id to share the load.")
    i.add_argument("--client-id", help="MQTT client id of this worker (default: from the config)")
    i.set_defaults(func=_ingest)


def _migrate(args: argparse.Namespace) -> int:
    from central.config import load_settings
    from central.db import migrate
    from central.db.engine import make_engine

    settings = load_settings(args.config)
    engine = make_engine(settings.database_url)
    if args.downgrade:
        migrate.downgrade(engine, args.revision)
    else:
        migrate.upgrade(engine, args.revision)
    print(f"database at revision {migrate.current_revision(engine)}")
    engine.dispose()
    return 0


def _run(args: argparse.Namespace) -> int:
    from central.config import load_settings
    from central.runner import Central, run_until_signal

    asyncio.run(run_until_signal(Central(load_settings(args.config))))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from central.config import load_settings
    from central.runner import Central, run_until_signal

    settings = load_settings(args.config)
    asyncio.run(run_until_signal(Central(settings, with_api=False, client_id=args.client_id)))
    return 0
