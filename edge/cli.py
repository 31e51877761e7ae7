"""``floorgate edge …`` sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import json

from sync.runtime.config import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    edge = subparsers.add_parser("edge", help="the edge agent", description="Run or inspect the edge agent.")
    sub = edge.add_subparsers(dest="edge_command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="poll the configured devices and sync their records to central",
        description="Poll the devices of a node config, keep every record in the SQLite outbox and sync it to "
        "central over MQTT. Runs until SIGINT/SIGTERM.",
    )
    run.add_argument("--config", required=True, metavar="NODE_YAML",
                     help="node config file (see firmware-config/examples/node.yaml)")
    run.set_defaults(func=_run)
    check = sub.add_parser("check-config", help="validate a node config and exit",
                           description="Validate a node config; print every problem with its key path.")
    check.add_argument("--config", required=True, metavar="NODE_YAML")
    check.set_defaults(func=_check)
    status = sub.add_parser("status", help="show the outbox figures of a node",
                            description="Print per stream: produced, acknowledged and pending records, the age of "
                            "the oldest pending one and the records given up to the disk quota.")
    status.add_argument("--config", required=True, metavar="NODE_YAML")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_status)
    enrol = sub.add_parser("enrol", help="make the node's signing key (if missing) and print its public key",
                           description="Create the node's Ed25519 signing key (at key_file, default "
                           "<data_dir>/node.key) unless it exists, and print the public key and the command that "
                           "registers it at central. With --central-key, write central's public signing key(s) to "
                           "central_keys_file (default central.pub beside the node key): the agent acts only on "
                           "acks, replay requests and commands signed with one of them, and does not start without.")
    enrol.add_argument("--config", required=True, metavar="NODE_YAML")
    enrol.add_argument("--central-key", action="append", metavar="KEY", default=[],
                       help="central's public signing key, ed25519:<base64> as printed by `floorgate central node "
                       "register` or `central signing-key show`; repeat it for two keys during a rotation (the file "
                       "is replaced by the keys given)")
    enrol.set_defaults(func=_enrol)
    alibi = sub.add_parser("alibi", help="list and verify the node's alibi mirror",
                           description="List the newest entries of the node's alibi mirror (one per weighing: "
                           "number, time, device, gross / tare / net, the instrument's alibi id) and re-check the "
                           "chain kept on the node: signatures with the node's keys as the fleet CA bound them "
                           "(bindings.json and ca.crt of the node bundle, beside the key file; without them a "
                           "warning says the key is not anchored and the key file is taken as it is), hashes, links "
                           "and numbering, and the chain against the node's signed head and retention boundary "
                           "(newest entries deleted: truncated; oldest deleted inside the retention period: "
                           "removed). Exit 1 if the chain is not intact.")
    alibi.add_argument("--config", required=True, metavar="NODE_YAML")
    alibi.add_argument("--json", action="store_true", help="print JSON instead of a table")
    alibi.add_argument("--limit", type=int, default=20, metavar="N", help="list the newest N entries (0: all)")
    alibi.set_defaults(func=_alibi)


def _load(path: str):  # type: ignore[no-untyped-def]
    from edge.config import load_config

    return load_config(path)


def _check(args: argparse.Namespace) -> int:
    from edge.devices.registry import plan_buses
    from edge.uplink.session import trusted_central_keys

    cfg = _load(args.config)
    buses = plan_buses(cfg, source=args.config)  # resolves and validates the profiles too, opens nothing
    central_keys = trusted_central_keys(cfg)  # the agent would refuse to start without one
    print(f"{args.config}: ok (node {cfg.node_id}, {len(cfg.devices)} device(s) on {len(buses)} bus(es), "
          f"{len(central_keys)} trusted central key(s))")
    return 0


def _status(args: argparse.Namespace) -> int:
    from edge.agent import OUTBOX_FILE
    from edge.store.outbox import read_stats

    cfg = _load(args.config)
    path = cfg.data_dir / OUTBOX_FILE
    if not path.exists():
        print(f"floorgate: node {cfg.node_id}: no outbox at {path} yet (the agent has not run)")
        return 1
    epoch, stats = read_stats(path)
    if args.json:
        print(json.dumps({"node": cfg.node_id, "epoch": epoch, "streams": {
            name: {"produced": s.produced, "acked": s.acked, "pending": s.pending, "lost": s.lost,
                   "oldest_age_s": s.oldest_age_s()} for name, s in stats.items()}}, indent=2))
        return 0
    print(f"node {cfg.node_id} epoch {epoch}  outbox {path}")
    print(f"  {'stream':9} {'produced':>10} {'acked':>10} {'pending':>10} {'oldest pending':>15} {'lost':>8}")
    for stream, s in stats.items():
        age = s.oldest_age_s()
        age_text = "-" if age is None else f"{age:.1f} s"
        print(f"  {stream:9} {s.produced:10} {s.acked:10} {s.pending:10} {age_text:>15} {s.lost:8}")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    from sync.signing import fingerprint, load_or_create_private_key, public_key_text

    cfg = _load(args.config)
    key, created = load_or_create_private_key(cfg.key_path)
    print(f"node {cfg.node_id}: {'new' if created else 'existing'} signing key {cfg.key_path}")
    print(f"fingerprint {fingerprint(key)}")
    print(f"public key  {public_key_text(key)}")
    print(f"register it at central with:\n  floorgate central node register {cfg.node_id} "
          f"--public-key {public_key_text(key)} --config CENTRAL_YAML")
    if args.central_key:
        import sys

        from sync.downlink import keys_file_text
        from sync.errors import SyncError

        path = cfg.central_keys_path
        try:
            text = keys_file_text(args.central_key, comment="central's public signing keys (floorgate edge enrol)")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except SyncError as exc:
            print(f"floorgate: --central-key: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"floorgate: {path}: cannot write: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"central key(s) written to {path}: " + ", ".join(fingerprint(k) for k in args.central_key))
    return 0


def _alibi(args: argparse.Namespace) -> int:
    import sys
    import time

    from edge.agent import OUTBOX_FILE
    from edge.store.alibi import check_local, meta_warning, read_chain
    from edge.store.alibi_keys import load_anchor
    from sync.errors import SyncError
    from sync.signing import load_private_key

    cfg = _load(args.config)
    path = cfg.data_dir / OUTBOX_FILE
    if not path.exists():
        print(f"floorgate: node {cfg.node_id}: no outbox at {path} yet (the agent has not run)")
        return 1
    try:
        key = load_private_key(cfg.key_path).public_key()
    except SyncError as exc:
        print(f"floorgate: node {cfg.node_id}: {exc}")
        return 1
    tls = cfg.broker.tls
    anchor = load_anchor(cfg.node_id, key, cfg.key_path, ca_file=tls.ca_file if tls is not None else None)
    entries, meta = read_chain(path)
    check = check_local(entries, anchor.keys, cfg.node_id, meta=meta, suspects=anchor.suspects)
    check.problems[:0] = anchor.problems
    warnings = [w for w in (anchor.warning, meta_warning(meta)) if w]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    shown = check.entries if args.limit <= 0 else check.entries[-args.limit:]
    bodies = {e.position: e.body for e in entries}
    rows = []
    for e in shown:
        body = json.loads(bodies[e.position]) if e.verdict != "invalid" else {}
        rows.append({"no": e.position, "record_id": e.record_id, "device": e.device,
                     "weighed_at_ns": body.get("weighed_at_ns"), "hash": e.stored_hash,
                     **{k: body.get(k) for k in ("gross", "tare", "tare_preset", "net", "unit", "instrument_alibi")}})
    first = check.entries[0].position if check.entries else None
    last = check.entries[-1].position if check.entries else None
    if args.json:
        print(json.dumps({"node": cfg.node_id, "ok": check.ok, "kept": len(entries), "first": first, "last": last,
                          "head_hash": check.head_hash, "anchored": anchor.anchored, "warnings": warnings,
                          "problems": [p.to_json() for p in check.problems], "entries": rows}, indent=2))
        return 0 if check.ok else 1
    print(f"node {cfg.node_id}: alibi mirror {path}, {len(entries)} entries kept"
          + (f" ({first}…{last})" if entries else ""))
    print(f"  {'no':>8} {'weighed at (UTC)':19} {'device':12} {'gross':>10} {'tare':>10} {'net':>10} unit  alibi id")
    for r in rows:
        ns = r["weighed_at_ns"]
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9)) if isinstance(ns, int) else "?"
        tare = f"{r['tare'] or '-'}{'*' if r['tare_preset'] else ''}"
        print(f"  {r['no']:>8} {at:19} {r['device'] or '?':12} {r['gross'] or '-':>10} {tare:>10} "
              f"{r['net'] or '-':>10} {r['unit'] or '?':5} {r['instrument_alibi'] or '-'}")
    if check.ok:
        print(f"chain verified: {len(entries)} entries" + (f" ({first}…{last})" if entries else "")
              + ("; older entries given up to retention" if first not in (None, 1) else "")
              + ("" if anchor.anchored else "; key NOT anchored in the fleet CA")
              + "  (* preset tare)")
        return 0
    print(f"chain NOT intact: {len(check.problems)} problem(s)")
    for p in check.problems:
        print(f"  {p.kind}: {p.message}")
    return 1


def _run(args: argparse.Namespace) -> int:
    from edge.agent import Agent, run_until_signal

    cfg = _load(args.config)
    asyncio.run(run_until_signal(Agent(cfg, source=args.config, config_path=args.config)))
    return 0


__all__ = ["ConfigError", "register"]
