"""``floorgate central create-admin``: the first person who can log in (there is no default password)."""

from __future__ import annotations

import argparse

from central.cli.common import open_database, with_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = with_config(sub)
    ca = add("create-admin", "create the first admin (or another one)",
             "Create a user with role admin. There is no default password anywhere: this is how the first person "
             "gets in. The password is asked for (twice) on a terminal, or read from stdin with --password-stdin.")
    ca.add_argument("--username", required=True, help="user name to log in with")
    ca.add_argument("--full-name", help="the person's name, for the audit log")
    ca.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    ca.set_defaults(func=_create_admin)


def _create_admin(args: argparse.Namespace) -> int:
    import getpass
    import re
    import sys
    from datetime import UTC, datetime

    from sqlalchemy import select

    from central.api.routes.users import USERNAME
    from central.api.security import check_password_strength, hash_secret
    from central.db import audit
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
    engine, sessions = open_database(args.config)
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
