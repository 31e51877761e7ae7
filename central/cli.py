"""``floorgate central …`` sub-commands: migrate, run, ingest, create-admin, node register|list, verify-alibi,
verify-tse."""

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
    i.add_argument("--share-group", help="MQTT 5 shared subscription group (overrides ingest.share_group)")

    ca = add("create-admin", "create the first admin (or another one)",
             "Create a user with role admin. There is no default password anywhere: this is how the first person "
             "gets in. The password is asked for (twice) on a terminal, or read from stdin with --password-stdin.")
    ca.add_argument("--username", required=True, help="user name to log in with")
    ca.add_argument("--full-name", help="the person's name, for the audit log")
    ca.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    ca.set_defaults(func=_create_admin)

    va = add("verify-alibi", "re-check central's copy of a node's alibi mirror",
             "Walk central's copy of the node's alibi chain by entry number: each signature with the node's "
             "registered key, each body against its hash, the links (prev_hash) and the numbering; compare each "
             "entry with its weighing. Exit 0 when intact; exit 1 naming every entry that was altered, removed, "
             "inserted or reordered, and every weighing that differs from its signed entry; exit 2 for an unknown "
             "or not enrolled node.")
    va.add_argument("--node", required=True, metavar="NODE", help="the node's id")
    va.add_argument("--json", action="store_true", help="print the report as JSON")
    va.set_defaults(func=_verify_alibi)

    vt = add("verify-tse", "re-verify the TSE transactions and their sequence",
             "Re-check every synced transaction of one TSE (--tse) or of all: the signature with the TSE's public key, "
             "the serial, the QR code, the times and the total of each; per TSE the start counters along the "
             "transaction numbers (regressions), counters used twice, and gaps in the numbers. The results are "
             "stored on the rows (verified, verify_error, gap marks), as at ingest. Exit 0 when every transaction "
             "verifies and no number is missing; 1 naming each problem; 2 for a TSE without transactions. Run it "
             "from cron to re-check regularly.")
    vt.add_argument("--tse", metavar="SERIAL", help="the TSE's serial (hex SHA-256 of its public key); default: all")
    vt.add_argument("--json", action="store_true", help="print the report as JSON")
    vt.set_defaults(func=_verify_tse)

    node = sub.add_parser("node", help="enrol nodes and list them",
                          description="Register a node's public signing key at central, or list the nodes.")
    nsub = node.add_subparsers(dest="node_command", required=True, metavar="COMMAND")
    reg = nsub.add_parser("register", help="register (or replace) a node's Ed25519 public key",
                          description="Register NODE with the public key its agent printed (`floorgate edge enrol`). "
                          "Batches of a node without a registered key are quarantined.")
    reg.add_argument("node_id", metavar="NODE")
    key = reg.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", metavar="KEY", help="ed25519:<base64>, as printed by `floorgate edge enrol`")
    key.add_argument("--public-key-file", metavar="FILE", help="a file holding the key (text or PEM)")
    reg.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    reg.set_defaults(func=_node_register)
    ls = nsub.add_parser("list", help="list nodes with key fingerprint, last heartbeat and backlog",
                         description="List the nodes central knows, with their enrolment and last heartbeat.")
    ls.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    ls.set_defaults(func=_node_list)


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
    if args.share_group:
        settings = settings.model_copy(
            update={"ingest": settings.ingest.model_copy(update={"share_group": args.share_group})})
    asyncio.run(run_until_signal(Central(settings, with_api=False, client_id=args.client_id)))
    return 0


def _sessions(config: str):  # type: ignore[no-untyped-def]
    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory

    engine = make_engine(load_settings(config).database_url)
    return engine, make_session_factory(engine)


def _node_register(args: argparse.Namespace) -> int:
    from pathlib import Path

    from central.nodes import register_node
    from sync.errors import SyncError

    text = args.public_key
    if args.public_key_file:
        try:
            text = Path(args.public_key_file).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"floorgate: {args.public_key_file}: cannot read: {exc.strerror}")
            return 2
    engine, sessions = _sessions(args.config)
    try:
        fp, replaced = register_node(sessions, args.node_id, text)
    except SyncError as exc:
        print(f"floorgate: node {args.node_id}: public key: {exc}")
        return 2
    finally:
        engine.dispose()
    print(f"node {args.node_id} registered, key fingerprint {fp}{' (previous key replaced)' if replaced else ''}")
    return 0


def _verify_alibi(args: argparse.Namespace) -> int:
    import json
    import sys

    from central.alibi import AlibiVerifyError, verify_chain

    engine, sessions = _sessions(args.config)
    try:
        report = verify_chain(sessions, args.node)
    except AlibiVerifyError as exc:
        print(f"floorgate: {exc.message}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.summary())
        for p in report.problems:
            print(f"  {p.kind:16} {p.message}")
    return 0 if report.ok else 1


def _verify_tse(args: argparse.Namespace) -> int:
    import json
    import sys

    from central.fiscal.verify import UnknownTse, sweep

    engine, sessions = _sessions(args.config)
    try:
        reports = sweep(sessions, args.tse)
    except UnknownTse as exc:
        print(f"floorgate: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        for report in reports:
            print(report.summary())
            for finding in report.findings:
                print(f"  {finding.kind:10} {finding.message}")
        if not reports:
            print("no TSE transactions held")
    return 0 if all(r.ok for r in reports) else 1


def _node_list(args: argparse.Namespace) -> int:
    from central.nodes import list_nodes

    engine, sessions = _sessions(args.config)
    try:
        nodes = list_nodes(sessions)
    finally:
        engine.dispose()
    print(f"{'node':20} {'key':17} {'last heartbeat':26} {'version':8} {'skew s':>7}  backlog / alarms")
    for n in nodes:
        hb = n.heartbeat or {}
        backlog = " ".join(f"{s}={v.get('pending')}" for s, v in (hb.get("streams") or {}).items())
        alarms = "; ".join(hb.get("alarms") or [])
        print(f"{n.node_id:20} {n.key_fingerprint or 'NOT ENROLLED':17} {n.last_heartbeat_at or '-'!s:26} "
              f"{n.software_version or '-':8} {n.clock_skew_s if n.clock_skew_s is not None else '-':>7}  "
              f"{backlog} {alarms}{'  CLOCK: ' + n.clock_flag if n.clock_flag else ''}")
    return 0


def _create_admin(args: argparse.Namespace) -> int:
    import getpass
    import re
    import sys
    from datetime import UTC, datetime

    from sqlalchemy import select

    from central.api import audit
    from central.api.routes.users import USERNAME
    from central.api.security import check_password_strength, hash_secret
    from central.db.models import User

    if not re.match(USERNAME, args.username):
        print(f"floorgate: --username {args.username!r}: use 1-64 letters, digits, _ . @ -", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            print("floorgate: no terminal to ask for the password: use --password-stdin", file=sys.stderr)
            return 2
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            print("floorgate: the two passwords differ", file=sys.stderr)
            return 2
    problem = check_password_strength(password)
    if problem:
        print(f"floorgate: password: {problem}", file=sys.stderr)
        return 2
    engine, sessions = _sessions(args.config)
    try:
        with sessions.begin() as session:
            if session.execute(select(User).where(User.username == args.username)).scalar_one_or_none():
                print(f"floorgate: user {args.username!r} exists already (change it through the API)",
                      file=sys.stderr)
                return 1
            now = datetime.now(UTC)
            user = User(username=args.username, password_hash=hash_secret(password), role="admin",
                        full_name=args.full_name, active=True, created_at=now, updated_at=now)
            session.add(user)
            session.flush()
            audit.record(session, "cli:create-admin", "create", "users", user.id, after=audit.snapshot(user))
    finally:
        engine.dispose()
    print(f"admin {args.username!r} created; log in at POST /api/v1/auth/token")
    return 0
