"""``floorgate central tse list|confirm|reject``: the TSE registry (``central.fiscal.registry``).

Central pins every TSE the first time it sees one of its transactions — ``unconfirmed`` unless ``fiscal.tse`` of
the config lists it — and trusts its transactions only once it is confirmed. ``confirm`` and ``reject`` sign the pin
with central's key (the ``signing_key_file`` of the config), write an audit-log row (actor ``cli:tse-confirm`` /
``cli:tse-reject``) and re-verify the TSE's transactions at once.
"""

from __future__ import annotations

import argparse

from central.cli.common import error_text, fail, with_config

SERIAL_HELP = "the TSE's serial: hex SHA-256 of its public key (64 digits; `tse list` shows them)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tse = sub.add_parser("tse", help="the TSE registry: list, confirm or reject TSEs",
                         description="The TSE registry: every TSE central pinned with its public key (the first time "
                                     "it saw a transaction of it, or from fiscal.tse of the config). Transactions "
                                     "are verified against the pinned key; only a confirmed TSE's are trusted.")
    add = with_config(tse.add_subparsers(dest="tse_command", required=True, metavar="COMMAND"))
    ls = add("list", "list the pinned TSEs and TSEs seen without a pin",
             "One line per TSE: serial, status (unconfirmed / confirmed / rejected, `not pinned`, `(pin invalid)` "
             "for a pin central did not sign or that was changed), where it was first seen, the transactions held, "
             "and why it is not trusted. Exit 0.")
    ls.add_argument("--status", choices=("unconfirmed", "confirmed", "rejected", "not pinned"),
                    help="only TSEs with this status")
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    ls.set_defaults(func=_list)
    for name, verb, what in (("confirm", "confirm", "its transactions are trusted from now on"),
                             ("reject", "reject", "its transactions are invalid (untrusted_key)")):
        p = add(name, f"{verb} a TSE: {what}",
                f"{verb.capitalize()} the TSE SERIAL after checking it is (or is not) the TSE registered with the "
                f"tax office for one of your registers: {what}. The pin is signed with central's signing key and "
                "the decision is an audit-log row; then the TSE's transactions are re-verified (as verify-tse). A "
                "TSE without a pin is pinned from a transaction central holds of it, or from --public-key. Exit 0 "
                "when decided, 1 naming the problem.")
        p.add_argument("serial", metavar="SERIAL", help=SERIAL_HELP)
        p.add_argument("--reason", required=name == "reject", help="why (kept in the audit log)")
        p.add_argument("--public-key", metavar="BASE64",
                       help="the TSE's public key (base64 of the uncompressed point) when central holds no "
                            "transaction of it yet")
        p.set_defaults(func=_decide, status="confirmed" if name == "confirm" else "rejected", actor=f"cli:tse-{name}")


def _list(args: argparse.Namespace) -> int:
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory
    from central.fiscal.registry import load_registry, states
    from sync.errors import SyncError
    from sync.runtime.config import ConfigError

    try:
        settings = load_settings(args.config, check_files=False)
        reg = load_registry(settings)
    except (ConfigError, SyncError, OSError) as exc:  # the config, a key file: named in the message
        return fail(str(exc))
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            listed = states(session, reg, status=args.status)
    except SQLAlchemyError as exc:
        return fail(error_text(exc))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([s.to_json() for s in listed], indent=2))
        return 0
    if not listed:
        print("no TSE pinned or seen")
    for s in listed:
        seen = f"node {s.node_id or '?'}, device {s.device_id or '?'}"
        decided = f"; {s.decided_by} at {s.decided_at.isoformat()}" if s.decided_at and s.decided_by else ""
        print(f"{s.serial}  {s.status:<11}  {s.source or '-':<6}  {seen}  {s.transactions} transaction(s){decided}")
        if s.problem:
            print(f"    {s.problem}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory
    from central.fiscal.registry import RegistryError, active_signer, decide, load_registry, use_registry
    from central.fiscal.sweep import sweep
    from sync.errors import SyncError
    from sync.runtime.config import ConfigError

    try:
        settings = load_settings(args.config, check_files=False)
        reg = load_registry(settings, signer=active_signer(settings))
    except (ConfigError, SyncError, OSError, RegistryError) as exc:  # the config, the signing key: named in the message
        return fail(str(exc))
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    use_registry(sessions, reg)
    serial = args.serial.strip().lower()
    try:
        with sessions.begin() as session:
            pin = decide(session, serial, args.status, actor=args.actor, now=datetime.now(UTC), registry=reg,
                         public_key=args.public_key, reason=args.reason)
            print(f"TSE {serial} {pin.status} by {args.actor} (pin signed with central's key {pin.kid})")
        for report in sweep(sessions, serial):
            print(report.summary())
            for finding in report.findings:
                print(f"  {finding.kind:13} {finding.message}")
    except RegistryError as exc:
        return fail(str(exc))
    except SQLAlchemyError as exc:
        return fail(error_text(exc))
    finally:
        engine.dispose()
    return 0
