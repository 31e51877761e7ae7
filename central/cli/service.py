"""``floorgate central migrate|run|ingest``: the database schema and the service's processes."""

from __future__ import annotations

import argparse
import asyncio

from central.cli.common import with_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = with_config(sub)
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
    i.add_argument("--share-group", help="MQTT 5 shared subscription group (overrides ingest.share_group)")
    i.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus /metrics of this worker there, without login (overrides "
                   "ingest.metrics_listen; e.g. 127.0.0.1:9464)")


def _migrate(args: argparse.Namespace) -> int:
    from central.config import load_settings
    from central.db import migrate
    from central.db.engine import make_engine

    settings = load_settings(args.config, check_files=False)  # the broker's TLS files may not be there yet
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
    import sys

    from central.config import load_settings
    from central.runner import Central, run_until_signal

    settings = load_settings(args.config)
    overrides = {key: value for key, value in (("share_group", args.share_group),
                                               ("metrics_listen", args.metrics_listen)) if value}
    if overrides:
        from pydantic import ValidationError

        try:
            ingest = type(settings.ingest).model_validate({**settings.ingest.model_dump(), **overrides})
        except ValidationError as exc:
            for error in exc.errors():
                option = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "option"
                print(f"floorgate: {option}: {error['msg']} (got {error.get('input')!r})", file=sys.stderr)
            return 2
        settings = settings.model_copy(update={"ingest": ingest})
    asyncio.run(run_until_signal(Central(settings, with_api=False, client_id=args.client_id)))
    return 0
