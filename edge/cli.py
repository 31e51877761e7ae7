"""``floorgate edge …`` sub-commands."""

from __future__ import annotations

import argparse
import asyncio

from sync.config_errors import ConfigError


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
                            description="Print produced / acknowledged / pending records per stream.")
    status.add_argument("--config", required=True, metavar="NODE_YAML")
    status.set_defaults(func=_status)


def _load(path: str):  # type: ignore[no-untyped-def]
    from edge.config import load_config

    return load_config(path)


def _check(args: argparse.Namespace) -> int:
    from edge.wiring import build_buses

    cfg = _load(args.config)
    buses = build_buses(cfg, _NoSink(), source=args.config)  # resolves and validates the profiles too
    print(f"{args.config}: ok (node {cfg.node_id}, {len(cfg.devices)} device(s) on {len(buses)} bus(es))")
    return 0


class _NoSink:
    def emit(self, stream: str, records: object) -> None:
        raise AssertionError("check-config produces no records")


def _status(args: argparse.Namespace) -> int:
    from edge.agent import OUTBOX_FILE
    from edge.outbox import read_stats

    cfg = _load(args.config)
    epoch, stats = read_stats(cfg.data_dir / OUTBOX_FILE)
    print(f"node {cfg.node_id} epoch {epoch}")
    for stream, s in stats.items():
        print(f"  {stream:9} produced {s.produced:8}  acked {s.acked:8}  pending {s.pending:8}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from edge.agent import Agent, run_until_signal

    cfg = _load(args.config)
    asyncio.run(run_until_signal(Agent(cfg, source=args.config)))
    return 0


__all__ = ["ConfigError", "register"]
