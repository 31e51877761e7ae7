"""``floorgate central verify-alibi|verify-tse``: re-check central's copy of the legal and fiscal records."""

from __future__ import annotations

import argparse

from central.cli.common import open_database, with_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = with_config(sub)
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


def _verify_alibi(args: argparse.Namespace) -> int:
    import json
    import sys

    from central.tickets.alibi import AlibiVerifyError, verify_chain

    engine, sessions = open_database(args.config)
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

    engine, sessions = open_database(args.config)
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
