"""``floorgate bench``: throughput figures as ratios against a raw baseline measured in the same run.

    floorgate bench outbox    Outbox.append vs. plain sqlite3 inserts of the same rows, same journal and sync mode:
                              business records (one fsync'd transaction each) and readings (batches)
                              (tools/bench/outbox.py)
    floorgate bench codec     sync.encode_batch/decode_batch (validated, maybe compressed) vs. plain json.dumps/loads
                              (tools/bench/outbox.py)
    floorgate bench bus       serial line efficiency at 19200 / 115200 baud; CPU and peak RSS polling N TCP devices
                              × R registers at 1 s vs. a raw pymodbus loop (see tools/bench/bus.py)
    floorgate bench sync      a backlog of readings / business records drained edge → mosquitto → central →
                              InfluxDB / Postgres vs. a raw paho QoS 1 loop; bytes on the wire (tools/bench/sync.py)

A ratio of 0.8 means floorgate reaches 80 % of the raw baseline's rate. Absolute rates depend on the disk and the
machine; the ratio is what to compare between versions.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

# each measurement lives in its own module, imported only when asked for: ``floorgate --help`` and the raw-baseline
# workers of ``python -m tools.bench.sync`` (which import this package first) stay light

def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("bench", help="measure throughput against a raw baseline",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["outbox", "codec", "bus", "sync", "all"], help="what to measure")
    p.add_argument("--records", type=int, default=2000, help="records per measurement (default 2000)")
    p.add_argument("--batch", type=int, default=100, help="records per batch / transaction for readings (default 100)")
    p.add_argument("--devices", type=int, default=100, help="bus: TCP devices (default 100)")
    p.add_argument("--registers", type=int, default=100, help="bus: registers per device (default 100)")
    p.add_argument("--seconds", type=float, default=20.0, help="bus: measuring time per run (default 20)")
    p.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir; "
                   "put it on the node's real disk to measure fsync cost)")
    p.add_argument("--readings", type=int, default=1_000_000, help="sync: readings in the backlog (default 1000000)")
    p.add_argument("--business", type=int, default=100_000, help="sync: business records in the backlog "
                   "(default 100000)")
    p.add_argument("--tls", action="store_true", help="sync: everything over mqtts — a throwaway fleet CA, the "
                   "broker's TLS listener with require_certificate, a client certificate for each party (the raw "
                   "baseline too, so the ratio stays like for like)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tools.bench.outbox import bench_codec, bench_outbox

    rows: list[tuple[str, float, float]] = []
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)  # a fresh --dir is made, not a traceback
    with tempfile.TemporaryDirectory(prefix="floorgate-bench-", dir=args.dir) as tmp:
        if args.what in ("outbox", "all"):
            print(f"outbox: {args.records} records each way in {tmp} …", flush=True)
            rows += bench_outbox(args.records, args.batch, Path(tmp))
        if args.what in ("codec", "all"):
            print(f"codec: {args.records} records each way …", flush=True)
            rows += bench_codec(args.records, args.batch)
    if rows:
        print(f"{'measurement':<40} {'raw rec/s':>12} {'floorgate rec/s':>16} {'ratio':>7}")
        for name, raw, ours in rows:
            print(f"{name:<40} {raw:>12,.0f} {ours:>16,.0f} {ours / raw:>7.2f}")
    if args.what in ("bus", "all"):
        _bench_bus(args)
    if args.what in ("sync", "all"):
        from tools.bench.sync import run  # edge and central together: imported only when asked for

        return run(args)
    return 0


def _bench_bus(args: argparse.Namespace) -> None:
    import logging

    from tools.bench.bus import bench_serial, bench_tcp

    for name in ("edge", "protocols"):  # the figures, not the devices' comings and goings
        logging.getLogger(name).setLevel(logging.WARNING)

    print("bus: serial line efficiency on a pty link with real wire timing …", flush=True)
    for baud, regs, eff, exchanges in bench_serial(seconds=min(args.seconds, 10.0)):
        print(f"  {baud:>6} baud, {regs:>3} registers a read: efficiency {eff:6.1%} "
              f"(wire time / elapsed over {exchanges} exchanges; target ≥ 85 %)")
    print(f"bus: {args.devices} Modbus TCP devices × {args.registers} registers at 1 s …", flush=True)
    r = bench_tcp(args.devices, args.registers, args.seconds)
    print(f"{'':<24} {'points/s':>10} {'CPU (1 core)':>13} {'peak RSS':>10}")
    print(f"{'raw pymodbus loop':<24} {r['raw_points_s']:>10,.0f} {r['raw_cpu']:>13.1%} {r['raw_rss_mb']:>8.1f} MB")
    print(f"{'floorgate agent':<24} {r['agent_points_s']:>10,.0f} {r['agent_cpu']:>13.1%} {r['agent_rss_mb']:>8.1f} MB")
    if r["raw_cpu"] > 0 and r["raw_points_s"] > 0:
        per_raw = r["raw_cpu"] / r["raw_points_s"]
        per_agent = r["agent_cpu"] / max(r["agent_points_s"], 1)
        print(f"CPU per point: agent / raw = {per_agent / per_raw:.2f} (targets: agent < 40 % of a core, < 80 MB)")
