"""``floorgate simulate <device>``: run one device simulator until SIGINT / SIGTERM.

The top-level ``floorgate`` command calls ``register(subparsers)``; the sub-command sets ``func=run``, which
returns the exit code (0 after a signal, 1 if the simulator cannot start, 2 for options that do not fit the
device). Once the simulator is ready it prints one line on stdout and flushes it, so a parent process can wait for
it::

    listening: tcp://127.0.0.1:40213        (TCP: the weighbridge's MT-SICS lines, or Modbus TCP)
    pty: /dev/pts/7                         (weighbridge --pty: open it like a serial port, 9600 8N1)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from decimal import Decimal, InvalidOperation
from typing import Final
from urllib.parse import urlsplit

from protocols.sim.modbus_devices import (
    MAX_UNIT_ID,
    MIN_UNIT_ID,
    DeviceModel,
    Sdm630Model,
    ThProbeModel,
    start_modbus_tcp,
)
from protocols.sim.weighbridge import PtyServer, Weighbridge, serve_tcp

DEVICES: Final = ("weighbridge", "sdm630", "th-probe")
DEFAULT_LISTEN: Final = "tcp://127.0.0.1:0"
DEFAULT_UNIT_ID: Final = 1
COMMAND: Final = "floorgate simulate"

_EPILOG: Final = """\
devices:
  weighbridge   MT-SICS weighbridge (60 t, 20 kg steps): one truck per cycle - empty 3 s, drives on 2 s
                (S D, noisy), stands 4 s (S S at its weight), drives off 2 s. Answers S, SI, Z, T, TA, TAC,
                I2, I3, I4 and @; anything else ES. Sends I4 A "0123456789" at power-up.
  sdm630        Eastron SDM630 energy meter on Modbus TCP (input registers, float32): voltages, currents,
                power, frequency, energy counters.
  th-probe      temperature / humidity probe on Modbus TCP (input registers 1 and 2, x0.1).

examples:
  floorgate simulate weighbridge --pty --time-scale 0.5 --trucks 24560,18420
  floorgate simulate weighbridge --listen tcp://127.0.0.1:4001 --seed 7
  floorgate simulate sdm630 --listen tcp://127.0.0.1:5020 --unit-id 3
"""


def _listen_address(text: str) -> tuple[str, int]:
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5020")
    return parts.hostname, port


def _unit_id(text: str) -> int:
    try:
        unit_id = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not MIN_UNIT_ID <= unit_id <= MAX_UNIT_ID:
        raise argparse.ArgumentTypeError(f"{unit_id} is outside {MIN_UNIT_ID}..{MAX_UNIT_ID}")
    return unit_id


def _time_scale(text: str) -> float:
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not scale > 0 or scale == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number")
    return scale


def _trucks(text: str) -> list[Decimal]:
    weights: list[Decimal] = []
    for item in text.split(","):
        try:
            weight = Decimal(item.strip())
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"truck weight {item!r} is not a number (kg)") from None
        if not weight.is_finite() or weight <= 0:
            raise argparse.ArgumentTypeError(f"truck weight {item!r} must be a positive number of kg")
        weights.append(weight)
    return weights


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate <device>`` to the ``floorgate`` command line."""
    parser = subparsers.add_parser(
        "simulate",
        help="run a simulated device (weighbridge, sdm630, th-probe) until Ctrl-C",
        description=(
            "Run one simulated device until SIGINT or SIGTERM.\n"
            "When it is ready it prints 'listening: tcp://HOST:PORT' (or 'pty: /dev/pts/N' with --pty) on stdout."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("device", choices=DEVICES, help="the device to simulate (see below)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--listen",
        metavar="tcp://HOST:PORT",
        type=_listen_address,
        default=None,
        help=f"TCP address to serve on; port 0 picks a free port (default {DEFAULT_LISTEN})",
    )
    where.add_argument(
        "--pty",
        action="store_true",
        help="weighbridge only: serve on a new pseudo-terminal instead of TCP and print its path",
    )
    parser.add_argument(
        "--unit-id",
        type=_unit_id,
        default=None,
        help=f"Modbus devices only: unit id to answer ({MIN_UNIT_ID}-{MAX_UNIT_ID}, default {DEFAULT_UNIT_ID}); "
        "other unit ids get exception 0x0B",
    )
    parser.add_argument(
        "--time-scale",
        type=_time_scale,
        default=None,
        metavar="FACTOR",
        help="weighbridge only: multiply every phase duration by FACTOR (0.1 = ten times faster; default 1)",
    )
    parser.add_argument(
        "--trucks",
        type=_trucks,
        default=None,
        metavar="KG,KG,...",
        help="weighbridge only: gross weights of the first trucks in kg, e.g. 24560,18420; "
        "then random ones of 8,000-40,000 kg",
    )
    parser.add_argument(
        "--garbage-every",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="weighbridge only: replace every Nth reply by a garbage line (default 0 = never)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed for truck weights and sensor noise (repeatable runs)"
    )
    parser.set_defaults(func=run)


def _option_error(args: argparse.Namespace) -> str | None:
    if args.device == "weighbridge":
        if args.unit_id is not None:
            return "--unit-id applies to Modbus devices (sdm630, th-probe), not the weighbridge"
        return None
    for option, value in (
        ("--pty", args.pty or None),
        ("--time-scale", args.time_scale),
        ("--trucks", args.trucks),
        ("--garbage-every", args.garbage_every),
    ):
        if value is not None:
            return f"{option} applies to the weighbridge only, not {args.device}"
    return None


def _url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    """Run the simulator chosen in ``args`` until SIGINT / SIGTERM; the exit code."""
    problem = _option_error(args)
    if problem:
        print(f"{COMMAND}: error: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"{COMMAND} {args.device}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    host, port = args.listen or _listen_address(DEFAULT_LISTEN)
    try:
        if args.device == "weighbridge":
            bridge = Weighbridge(
                trucks=args.trucks,
                seed=args.seed,
                time_scale=args.time_scale or 1.0,
                garbage_every=args.garbage_every or 0,
            )
            if args.pty:
                async with PtyServer(bridge) as pty:
                    print(f"pty: {pty.path}", flush=True)
                    await stop.wait()
                return
            server = await serve_tcp(bridge, host=host, port=port)
            try:
                print(f"listening: {_url(host, server.sockets[0].getsockname()[1])}", flush=True)
                await stop.wait()
            finally:
                server.close()
                close_clients = getattr(server, "close_clients", None)  # Python 3.12+
                if close_clients is not None:
                    close_clients()
                await server.wait_closed()
            return
        model: DeviceModel = Sdm630Model(seed=args.seed) if args.device == "sdm630" else ThProbeModel(seed=args.seed)
        handle = await start_modbus_tcp({args.unit_id or DEFAULT_UNIT_ID: model}, host=host, port=port)
        try:
            print(f"listening: {_url(host, handle.port)}", flush=True)
            await stop.wait()
        finally:
            await handle.stop()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


__all__ = ["DEVICES", "register", "run"]
