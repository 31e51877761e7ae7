"""``floorgate central checkpoint``: write the chain heads as a signed statement outside the database; and the
``--checkpoint FILE`` of ``verify-alibi`` / ``verify-tse`` (``verify_against``), which proves the database still holds
what such a statement vouched for (``central.fleet.checkpoint``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from central.cli.common import error_text, fail, with_config

CHECKPOINT_HELP = ("a checkpoint file (floorgate central checkpoint): instead of the usual check, prove that the "
                   "database still holds everything it vouched for — its signature must verify with central's key; "
                   "exit 1 naming each entry / transaction missing or changed, 2 for a file that is refused")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = with_config(sub)
    p = add("checkpoint", "write the chain heads as a signed statement outside the database",
            "Sign every node's alibi head (its newest entry number and hash, how many entries) and every TSE's head "
            "(its highest transaction number, signature counter, the SHA-256 of its signature, how many "
            "transactions) with central's signing key, and write the statement to the destinations of the "
            "config's checkpoint section (a directory: checkpoint-<UTC time>.json; alert channels: webhook, e-mail) "
            "and to the checkpoints table, with an audit entry. Later, `verify-alibi --checkpoint FILE` and "
            "`verify-tse --checkpoint FILE` prove the database still holds what it vouched for. central run writes "
            "one every checkpoint.interval_s. Exit 1 naming the destinations that failed.")
    p.add_argument("--dir", type=Path, metavar="DIR",
                   help="write the file into DIR (instead of checkpoint.directory)")
    p.add_argument("--json", action="store_true", help="print the signed statement as JSON")
    p.set_defaults(func=_checkpoint)


def _checkpoint(args: argparse.Namespace) -> int:
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory
    from central.fleet import signing_key
    from central.fleet.checkpoint import CheckpointError
    from central.fleet.checkpoint_out import destinations, write
    from sync.signing import SigningKeyError

    settings = load_settings(args.config, check_files=False)
    try:
        dest = destinations(settings, directory=args.dir)
        key, _ = signing_key.load_or_create(signing_key.key_path(settings.signing_key_file))
    except (CheckpointError, SigningKeyError) as exc:
        return fail(str(exc))
    if dest.empty:
        return fail(f"{args.config}: no destination for the checkpoint: set checkpoint.directory and/or "
                    "checkpoint.channels, or give --dir")
    engine = make_engine(settings.database_url)
    try:
        written = write(make_session_factory(engine), key, dest, actor="cli:checkpoint")
    except SQLAlchemyError as exc:
        return fail(f"checkpoint not written: {error_text(exc)}")
    finally:
        engine.dispose()
    doc = written.doc
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"checkpoint {written.id} of {doc['made_at']} (central key {doc['kid']}): {len(doc['alibi'])} node(s), "
              f"{len(doc['tse'])} TSE(s)")
        for where, result in written.delivered.items():
            print(f"  {'ok' if result == 'ok' else 'FAILED':6} {where}" + ("" if result == "ok" else f": {result}"))
    for where, result in written.failed.items():
        fail(f"checkpoint {written.id} not delivered to {where}: {result}")
    return 1 if written.failed else 0


def verify_against(args: argparse.Namespace, part: str) -> int:
    """``verify-alibi --checkpoint FILE [--node N]`` (``part`` alibi) / ``verify-tse --checkpoint FILE [--tse S]``
    (``part`` tse): 0 when everything the file vouched for is held, 1 naming what is not, 2 for a refused file."""
    import json
    import sys

    from sqlalchemy.exc import SQLAlchemyError

    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory
    from central.fleet.checkpoint import CheckpointError, compare_alibi, compare_tse, load, trusted_keys

    settings = load_settings(args.config, check_files=False)
    try:
        doc = load(args.checkpoint, trusted_keys(settings.signing_key_file))
    except CheckpointError as exc:
        print(f"floorgate: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    try:
        if part == "alibi":
            result = compare_alibi(sessions, doc, file=str(args.checkpoint), node=args.node)
        else:
            result = compare_tse(sessions, doc, file=str(args.checkpoint), serial=args.tse)
    except CheckpointError as exc:
        print(f"floorgate: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        return fail(error_text(exc))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.summary())
        for f in result.findings:
            print(f"  {f.kind:8} {f.message}")
    return 0 if result.ok else 1
