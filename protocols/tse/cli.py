"""``floorgate tse …``: verify receipt QR codes and TAR exports; run the software TSE from the command line.

    floorgate tse verify 'V0;…'                   one receipt QR code
    floorgate tse verify --qr-file F              every QR code in F, one a line ('#' comments; '-': stdin)
    floorgate tse verify --tar EXPORT.tar         a TAR export, entry by entry (--partial: a filtered export)
    floorgate tse init|info|selftest --dir D      the software TSE in D (NOT CERTIFIED: tests and demos)
    floorgate tse receipt --dir D --client-id C --process-data 'Beleg^…'   sign a sale, print its QR code
    floorgate tse export --dir D --out F [--tx-range A..B] [--time-range A..B] [--client-id C]

Exit status: 0 everything valid, 1 something invalid (the output says which check of which entry), 2 a usage
error or input that cannot be read (no such file, not a TAR archive, no TSE in the directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from protocols.tse.api import ensure_ready
from protocols.tse.errors import ProcessDataError, TseError
from protocols.tse.processdata import PROCESS_TYPE, parse_kassenbeleg_v1
from protocols.tse.qr import ReceiptQr, iso_time, verify_receipt_qr
from protocols.tse.software import CURVE_ALGORITHMS, DEFAULT_CURVE, SoftwareTse
from protocols.tse.verify_tar import verify_tar

COMMAND: Final = "floorgate tse"
EXIT_VALID: Final = 0
EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2

_VERIFY_EPILOG: Final = """\
checks of a receipt QR code: format (V0, 12 fields, numbers, ISO times, canonical base64), algorithm, public_key
(a point on P-256 / brainpoolP256r1 / brainpoolP384r1 / P-384; the TSE serial is its SHA-256), log_time_format,
times (start <= end), process_data (Kassenbeleg-V1 syntax) and signature (over the FinishTransaction log message
rebuilt from the fields, logTime = end).

checks of a TAR export, per log message: der, name (agrees with the content), serial (a certificate in the export),
algorithm, signature, sequence (signature counter +1, no gap), time (non-decreasing), transaction (Start before
Update/Finish, same client, nothing after Finish); per certificate: serial = SHA-256 of its key; and info.csv.

examples:
  floorgate tse verify 'V0;AMA-6200;KassenBeleg-V1;Beleg^2.90_0.00_0.00_0.00_2.10^5.00:Unbar;160504;…'
  floorgate tse verify --qr-file receipts.txt --json
  floorgate tse verify --tar export.tar
  floorgate tse verify --tar client-K1.tar --partial
"""


def _range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("..")
    try:
        low, high = int(first), int(last)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIRST..LAST, e.g. 10..20") from None
    if not sep or low > high or low < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIRST..LAST with 0 <= FIRST <= LAST")
    return low, high


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tse`` and its sub-commands to the ``floorgate`` command line."""
    parser = subparsers.add_parser(
        "tse", help="German fiscal TSE: verify receipt QR codes and TAR exports; the software TSE (not certified)",
        description="German fiscal TSE (KassenSichV, BSI TR-03151): verify receipt QR codes and TAR exports "
        "offline, and run the software TSE (NOT CERTIFIED, for tests and demos only).",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="tse_command", required=True, metavar="SUBCOMMAND")

    verify = sub.add_parser(
        "verify", help="check a receipt QR code or a TAR export; exit 0 valid, 1 invalid, 2 unreadable",
        description="Check a receipt QR code (V0;...) or a TSE TAR export offline and say what is valid and what\n"
        "is not. Exit 0 when everything is valid, 1 when something is invalid, 2 for usage errors and\n"
        "input that cannot be read.", epilog=_VERIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    what = verify.add_mutually_exclusive_group(required=True)
    what.add_argument("qr", nargs="?", metavar="QR_STRING", help="the text of a receipt QR code (quote it)")
    what.add_argument("--qr-file", type=Path, metavar="FILE",
                      help="a file with one QR code a line ('#' starts a comment; '-' reads stdin)")  # fmt: skip
    what.add_argument("--tar", type=Path, metavar="FILE", help="a TAR export of a TSE")
    verify.add_argument("--partial", action="store_true",
                        help="--tar: the export is filtered (by transactions, time or client): tolerate counter gaps "
                        "and transactions whose start is not in it")  # fmt: skip
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.add_argument("--verbose", "-v", action="store_true", help="--tar: list every check of every entry")
    verify.set_defaults(func=run_verify)

    directory = argparse.ArgumentParser(add_help=False)
    directory.add_argument("--dir", type=Path, required=True, metavar="DIR", help="the software TSE's directory")

    init = sub.add_parser("init", parents=[directory], help="make a software TSE (key, certificate, state) in DIR",
                          description="Make a software TSE in DIR (NOT CERTIFIED: tests and demos only); an existing "
                          "one is kept.")  # fmt: skip
    init.add_argument("--curve", choices=tuple(CURVE_ALGORITHMS), default=None,
                      help=f"brainpoolP384r1 with ecdsa-plain-SHA384 (default, as hardware TSEs) or P-256 with "
                      f"ecdsa-plain-SHA256 (as cloud TSEs); default {DEFAULT_CURVE}")  # fmt: skip
    init.set_defaults(func=run_init)

    info = sub.add_parser("info", parents=[directory], help="serial, algorithm, counters and certificate",
                          description="Print what the software TSE in DIR says about itself.")  # fmt: skip
    info.add_argument("--json", action="store_true", help="as JSON (with the certificate)")
    info.set_defaults(func=run_info)

    selftest = sub.add_parser("selftest", parents=[directory], help="run the software TSE's self test",
                              description="Run the self test of the software TSE in DIR: sign and verify, check the "
                              "certificate and the state database. Exit 0 passed, 1 failed.")  # fmt: skip
    selftest.set_defaults(func=run_selftest)

    receipt = sub.add_parser("receipt", parents=[directory], help="sign one sale and print its receipt QR code",
                             description="Start and finish one transaction on the software TSE in DIR (registering "
                             "the client if needed) and print the receipt QR code.")  # fmt: skip
    receipt.add_argument("--client-id", required=True, help="the cash register (PrintableString, 1-30 characters)")
    receipt.add_argument("--process-data", required=True, metavar="TEXT",
                         help="e.g. 'Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF'")  # fmt: skip
    receipt.add_argument("--process-type", default=PROCESS_TYPE, help=f"default {PROCESS_TYPE} (checked then)")
    receipt.set_defaults(func=run_receipt)

    export = sub.add_parser("export", parents=[directory], help="write a TAR export of the software TSE",
                            description="Write a TAR export (log messages, certificate, info.csv) of the software "
                            "TSE in DIR; filters combine.")  # fmt: skip
    export.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the TAR")
    export.add_argument("--tx-range", type=_range, metavar="A..B", help="transaction numbers A to B")
    export.add_argument("--time-range", type=_range, metavar="A..B", help="logTime from A to B (unix seconds)")
    export.add_argument("--client-id", default=None, help="one client's log messages")
    export.set_defaults(func=run_export)


def _fail(message: str) -> int:
    print(f"{COMMAND}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _qr_lines(args: argparse.Namespace) -> list[str] | None:
    if args.qr is not None:
        return [args.qr]
    try:
        text = sys.stdin.read() if str(args.qr_file) == "-" else args.qr_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{COMMAND} verify: cannot read {args.qr_file}: {exc}", file=sys.stderr)
        return None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_verify(args: argparse.Namespace) -> int:
    if args.tar is not None:
        try:
            data = args.tar.read_bytes()
        except OSError as exc:
            return _fail(f"cannot read {args.tar}: {exc}")
        report = verify_tar(data, partial=args.partial)
        if args.json:
            _print_json(report.as_dict())
        else:
            print("\n".join(report.lines(verbose=args.verbose)))
        if not report.readable:
            return EXIT_USAGE
        return EXIT_VALID if report.valid else EXIT_INVALID
    if args.partial:
        return _fail("--partial applies to --tar only")
    lines = _qr_lines(args)
    if lines is None:
        return EXIT_USAGE
    if not lines:
        return _fail(f"{args.qr_file} holds no QR code")
    results = [verify_receipt_qr(line) for line in lines]
    valid = all(r.valid for r in results)
    if args.json:
        _print_json({"valid": valid, "receipts": [r.as_dict() for r in results]})
    else:
        for index, result in enumerate(results):
            text = result.lines()
            if len(results) > 1:
                text[0] = f"[{index + 1}] {text[0]}"
            print("\n".join(text))
    return EXIT_VALID if valid else EXIT_INVALID


def _open(args: argparse.Namespace, *, create: bool = False, curve: str | None = None) -> SoftwareTse:
    return SoftwareTse(args.dir, create=create, curve=curve)


def run_init(args: argparse.Namespace) -> int:
    try:
        with _open(args, create=True, curve=args.curve) as tse:
            info = tse.info()
    except TseError as exc:
        return _fail(str(exc))
    print(f"{args.dir}: serial {info.serial_hex}, {info.curve}, {info.algorithm}; {info.description}")
    return EXIT_VALID


def run_info(args: argparse.Namespace) -> int:
    try:
        with _open(args) as tse:
            info = tse.info()
    except TseError as exc:
        return _fail(str(exc))
    if args.json:
        _print_json(info.as_dict())
        return EXIT_VALID
    rows = [
        ("description", info.description), ("manufacturer", info.manufacturer), ("serial", info.serial_hex),
        ("algorithm", f"{info.algorithm} ({info.algorithm_oid}) on {info.curve}"),
        ("time format", info.time_format), ("signature counter", str(info.signature_counter)),
        ("transaction number", str(info.transaction_number)),
        ("open transactions", ", ".join(map(str, info.open_transactions)) or "none"),
        ("clients", ", ".join(info.clients) or "none"), ("public key", info.public_key.hex()),
    ]  # fmt: skip
    for key, value in rows:
        print(f"{key + ':':<20} {value}")
    return EXIT_VALID


def run_selftest(args: argparse.Namespace) -> int:
    try:
        with _open(args) as tse:
            tse.self_test()
    except TseError as exc:
        print(f"{COMMAND} selftest: FAILED: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print("self test passed")
    return EXIT_VALID


def run_receipt(args: argparse.Namespace) -> int:
    if args.process_type == PROCESS_TYPE:
        try:
            parse_kassenbeleg_v1(args.process_data)
        except ProcessDataError as exc:
            return _fail(f"--process-data: {exc}")
    try:
        with _open(args) as tse:
            info = ensure_ready(tse)
            tse.register_client(args.client_id)
            start = tse.start_transaction(args.client_id, b"", args.process_type)
            finish = tse.finish_transaction(args.client_id, start.transaction_number, args.process_data,
                                            args.process_type)  # fmt: skip
    except TseError as exc:
        return _fail(str(exc))
    qr = ReceiptQr(
        client_id=finish.client_id, process_type=finish.process_type, process_data=args.process_data,
        transaction_number=finish.transaction_number, signature_counter=finish.signature_counter,
        start=iso_time(finish.start_time), end=iso_time(finish.log_time), algorithm=finish.algorithm,
        log_time_format=finish.time_format, signature=finish.signature_value, public_key=info.public_key,
    )  # fmt: skip
    print(qr.build())
    return EXIT_VALID


def run_export(args: argparse.Namespace) -> int:
    try:
        with _open(args) as tse:
            data = tse.export(tx_range=args.tx_range, time_range=args.time_range, client_id=args.client_id)
        args.out.write_bytes(data)
    except TseError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {args.out}: {exc}")
    print(f"wrote {args.out} ({len(data)} bytes)")
    return EXIT_VALID


__all__ = ["register", "run_verify"]
