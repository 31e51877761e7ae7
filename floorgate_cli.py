"""The ``floorgate`` command: one entry point, sub-commands from each package.

    floorgate demo                       the whole system on this machine (tools.demo)
    floorgate edge run --config F        the edge agent (edge.cli)
    floorgate central migrate|run|ingest the central service (central.cli)
    floorgate simulate DEVICE …          a device simulator (protocols.cli)
    floorgate profiles validate [PATH…]  device profiles against their JSON Schema (tools.profiles_cli)
    floorgate probe ADDRESS …            read a register range, decoded every way (tools.probe)
    floorgate tse verify|info|…          check receipt QR codes and TSE exports; the software TSE (protocols.tse.cli)
    floorgate bench outbox|codec|bus|sync|all  throughput as ratios against a raw baseline (tools.bench)

This module is the composition root: the only place besides tests that imports both ``edge`` and ``central``.
Logs are structured: ``--log-format json`` writes one JSON object per line (for journald / Loki), the default
is ``key=value`` text for people.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from sync.runtime.config import ConfigError

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STD_ATTRS})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STD_ATTRS)
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  [{extra}]" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "httpx", "amqtt", "transitions", "uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def build_parser() -> argparse.ArgumentParser:
    from central.cli import register as register_central
    from edge.cli import register as register_edge
    from protocols.cli import register as register_simulate
    from protocols.tse.cli import register as register_tse
    from tools.bench import register as register_bench
    from tools.demo import register as register_demo
    from tools.probe import register as register_probe
    from tools.profiles_cli import register as register_profiles

    parser = argparse.ArgumentParser(
        prog="floorgate",
        description="Shop-floor gateway: scales, sensors and TSE → edge outbox → MQTT → central (Postgres, InfluxDB).",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help="json: one object per line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_demo(sub)
    register_edge(sub)
    register_central(sub)
    register_simulate(sub)
    register_profiles(sub)
    register_probe(sub)
    register_tse(sub)
    register_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
