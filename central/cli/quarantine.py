"""``floorgate central quarantine prune``: keep the ingest quarantine within its retention."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser("quarantine", help="maintain the ingest quarantine",
                       description="Maintain the ingest quarantine (messages central could not use).")
    qsub = q.add_subparsers(dest="quarantine_command", required=True, metavar="COMMAND")
    pr = qsub.add_parser(
        "prune", help="delete quarantine entries older than the retention",
        description="Delete the quarantine entries received more than --older-than days ago (default: "
        "ingest.quarantine_retention_days of the config, 30), then the oldest beyond ingest.quarantine_max_rows, "
        "and print how many were removed. A running ingest process does the same every "
        "ingest.quarantine_prune_every_s; this is for cron or for making room at once (--older-than 0 removes "
        "every entry).")
    pr.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    pr.add_argument("--older-than", type=_days, metavar="DAYS",
                    help="age in days (a decimal number ≥ 0; default: ingest.quarantine_retention_days)")
    pr.set_defaults(func=_quarantine_prune)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not 0 <= days <= 36_500:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a number of days from 0 to 36500, got {text!r}")
    return days


def _quarantine_prune(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory
    from central.ingest.quarantine import prune_report

    settings = load_settings(args.config, check_files=False)
    days = settings.ingest.quarantine_retention_days if args.older_than is None else args.older_than
    engine = make_engine(settings.database_url)
    try:
        report = prune_report(make_session_factory(engine), timedelta(days=days),
                              max_rows=settings.ingest.quarantine_max_rows)
    finally:
        engine.dispose()
    print(f"removed {report.removed} quarantine entr{'y' if report.removed == 1 else 'ies'} received before "
          f"{report.cutoff:%Y-%m-%d %H:%M:%S} UTC (older than {days:g} day(s))")
    if report.beyond_max:
        print(f"removed {report.beyond_max} more, the oldest beyond ingest.quarantine_max_rows "
              f"({settings.ingest.quarantine_max_rows})")
    return 0
