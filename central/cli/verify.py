"""``floorgate central verify-alibi|verify-tse``: re-check central's copy of the legal and fiscal records."""

from __future__ import annotations

import argparse
from pathlib import Path

from central.cli.checkpoint import CHECKPOINT_HELP
from central.cli.common import open_database, with_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = with_config(sub)
    va = add("verify-alibi", "re-check central's copy of a node's alibi mirror",
             "Walk central's copy of the node's alibi chain by entry number: each signature with the node's key "
             "that the fleet CA (pki.dir/ca.crt) vouches for at the entry's time, each body against its hash, the "
             "links (prev_hash) and the numbering; compare each entry with its weighing; compare the chain with the "
             "head the node signed in its heartbeat. Exit 0 when intact; exit 1 naming every entry that was "
             "altered, removed, inserted, reordered or truncated (acknowledged by central, said to exist by the "
             "node's signed head, missing here), every key the fleet CA did not bind (untrusted_key: without a "
             "pki section no key is trusted) and every weighing that differs from its signed entry; exit 2 for an "
             "unknown or not enrolled node, or an unreadable CA certificate.")
    va.add_argument("--node", metavar="NODE", help="the node's id (required unless --checkpoint: then only this "
                    "node of the checkpoint)")
    va.add_argument("--json", action="store_true", help="print the report as JSON")
    va.add_argument("--checkpoint", type=Path, metavar="FILE", help=CHECKPOINT_HELP)
    va.set_defaults(func=_verify_alibi)

    vt = add("verify-tse", "re-verify the TSE transactions and their sequence",
             "Re-check every synced transaction of one TSE (--tse) or of all: the signature with the key pinned for "
             "the TSE in central's TSE registry (never the key a row brings; the pin must be signed with central's "
             "signing key and the TSE confirmed or listed in fiscal.tse — else untrusted_key), the serial, the QR "
             "code, the times and the total of each; per TSE the start counters along the transaction numbers "
             "(regressions), counters used twice, gaps in the numbers, numbers the node's signed head says exist "
             "above the highest held (truncated), and a pinned TSE none of whose transactions are held any more "
             "(removed). The results are stored on the rows (verified, verify_error, gap marks), as at ingest. Exit "
             "0 when every transaction verifies and no number is missing; 1 naming each problem; 2 for a TSE "
             "central holds nothing of. Run it from cron to re-check regularly.")
    vt.add_argument("--tse", metavar="SERIAL", help="the TSE's serial (hex SHA-256 of its public key); default: all")
    vt.add_argument("--json", action="store_true", help="print the report as JSON")
    vt.add_argument("--checkpoint", type=Path, metavar="FILE", help=CHECKPOINT_HELP)
    vt.set_defaults(func=_verify_tse)


def _verify_alibi(args: argparse.Namespace) -> int:
    import json
    import sys

    if args.checkpoint is not None:
        from central.cli.checkpoint import verify_against

        return verify_against(args, "alibi")
    if args.node is None:
        print("floorgate: verify-alibi: --node NODE is required (or --checkpoint FILE)", file=sys.stderr)
        return 2

    from central.config import load_settings
    from central.fleet.keys import CaCertError, load_ca_cert
    from central.tickets.alibi import AlibiVerifyError, verify_chain

    settings = load_settings(args.config, check_files=False)
    try:
        ca_cert = load_ca_cert(settings.pki.dir if settings.pki is not None else None)
    except CaCertError as exc:
        print(f"floorgate: fleet CA: {exc}", file=sys.stderr)
        return 2
    engine, sessions = open_database(args.config)
    try:
        report = verify_chain(sessions, args.node, ca_cert=ca_cert)
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

    if args.checkpoint is not None:
        from central.cli.checkpoint import verify_against

        return verify_against(args, "tse")

    from central.config import load_settings
    from central.fiscal.registry import load_registry, use_registry
    from central.fiscal.sweep import UnknownTse, sweep
    from sync.signing import SigningKeyError

    settings = load_settings(args.config, check_files=False)
    try:
        registry = load_registry(settings)
    except SigningKeyError as exc:
        print(f"floorgate: central's signing key: {exc}", file=sys.stderr)
        return 1
    if not registry.trusted:
        print(f"floorgate: central's signing key ({settings.signing_key_file}) not found: no pin of the TSE "
              "registry can be verified, so only the TSEs listed in fiscal.tse are trusted", file=sys.stderr)
    engine, sessions = open_database(args.config)
    use_registry(sessions, registry)
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
                print(f"  {finding.kind:13} {finding.message}")
        if not reports:
            print("no TSE transactions held")
    return 0 if all(r.ok for r in reports) else 1
