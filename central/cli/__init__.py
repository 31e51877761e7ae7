"""``floorgate central …`` sub-commands (``floorgate_cli`` calls ``register``):

    service.py     migrate, run, ingest
    users.py       create-admin
    verify.py      verify-alibi, verify-tse
    tse.py         tse list|confirm|reject (the TSE registry)
    checkpoint.py  checkpoint (and the --checkpoint of verify-alibi / verify-tse)
    fleet.py       node register|add|revoke|list, ca init|server-cert|client-cert|crl|list|revoke, signing-key
    quarantine.py  quarantine prune
    common.py      the --config option, the database, error messages

Each command imports what it needs when it runs, so ``floorgate --help`` stays fast.
"""

from __future__ import annotations

import argparse

from central.cli import checkpoint, fleet, quarantine, service, tse, users, verify


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    central = subparsers.add_parser("central", help="the central service",
                                    description="Run or maintain the central service.")
    sub = central.add_subparsers(dest="central_command", required=True, metavar="COMMAND")
    service.register(sub)
    users.register(sub)
    verify.register(sub)
    tse.register(sub)
    checkpoint.register(sub)
    fleet.register(sub)
    quarantine.register(sub)
