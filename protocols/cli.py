"""``floorgate simulate <device>``: run one device simulator until SIGINT / SIGTERM.

The top-level ``floorgate`` command calls ``register(subparsers)``; the sub-command sets ``func=run``, which
returns the exit code (0 after a signal, 1 if the simulator cannot start, 2 for options that do not fit the
device). Devices are named like the profiles in ``firmware-config/profiles`` (``SIMULATORS`` maps every accepted
name to a one-line description; ``ALIASES`` the old short names to profile names). Once the simulator is ready it
prints one line on stdout and flushes it, so a parent process can wait for it::

    listening: tcp://127.0.0.1:40213     scale lines, Toledo frames, Modbus TCP, or RTU frames (--rtu-over-tcp)
    pty: /dev/pts/7                      --pty: open it like a serial port. Scales: the device itself; Modbus
                                         devices: the agent's end of a PtyLink (real wire time at --baudrate)
                                         whose other end an RTU slave holds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from protocols.sim.forced import ForcedValues
from protocols.sim.modbus_devices import (
    MAX_UNIT_ID,
    MIN_UNIT_ID,
    DeviceModel,
    LaumasTluModel,
    Sdm120Model,
    Sdm630Model,
    SiloCableModel,
    SiwarexWpModel,
    ThProbeModel,
    start_modbus_tcp,
)
from protocols.sim.modbus_rtu import start_modbus_rtu, start_modbus_rtu_over_tcp
from protocols.sim.ptylink import PtyLink, bits_per_byte
from protocols.sim.sartorius import PtyServer as SbiPtyServer
from protocols.sim.sartorius import SartoriusScale
from protocols.sim.sartorius import serve_tcp as serve_sbi_tcp
from protocols.sim.serve import DevicePty
from protocols.sim.toledo import PtyServer as ToledoPtyServer
from protocols.sim.toledo import ToledoIndicator
from protocols.sim.toledo import serve_tcp as serve_toledo_tcp
from protocols.sim.weighbridge import PtyServer, Weighbridge, serve_tcp

SIMULATORS: Final[dict[str, str]] = {
    "mettler-toledo-mtsics": "MT-SICS weighbridge, 60 t in 20 kg steps, one truck per cycle (S, SI, Z, T, TA, I2-I4)",
    "weighbridge": "alias of mettler-toledo-mtsics",
    "sartorius-sbi": "Sartorius SBI platform scale, 150 kg in 0.02 kg: ESC P prints 16 or 22 characters (--form)",
    "toledo-continuous": "Toledo Continuous weighbridge indicator: 18-byte frames streamed at the line's pace",
    "laumas-tlu": "Laumas TLU weight transmitter on Modbus (holding 40006-40013, commands in 40006)",
    "siemens-siwarex-wp": "Siemens SIWAREX WP231 on Modbus, data record DR30 from 3000, legal log DR45/DR46",
    "eastron-sdm630": "Eastron SDM630 three-phase energy meter on Modbus (input registers, float32)",
    "sdm630": "alias of eastron-sdm630",
    "eastron-sdm120": "Eastron SDM120 single-phase energy meter on Modbus (input registers, float32; 2400 baud)",
    "th-probe": "temperature / humidity probe on Modbus (input registers 1 and 2, x0.1)",
    "silo-cable-8": "silo temperature cable, 8 points on Modbus (input registers 0-7, x0.1 °C, one hot spot)",
}
ALIASES: Final[dict[str, str]] = {"weighbridge": "mettler-toledo-mtsics", "sdm630": "eastron-sdm630"}
DEVICES: Final = tuple(SIMULATORS)
SCALES: Final = ("mettler-toledo-mtsics", "sartorius-sbi", "toledo-continuous")
MODBUS_MODELS: Final[dict[str, Callable[[int | None], DeviceModel]]] = {
    "laumas-tlu": lambda seed: LaumasTluModel(seed=seed),
    "siemens-siwarex-wp": lambda seed: SiwarexWpModel(seed=seed),
    "eastron-sdm630": lambda seed: Sdm630Model(seed=seed),
    "eastron-sdm120": lambda seed: Sdm120Model(seed=seed),
    "th-probe": lambda seed: ThProbeModel(seed=seed),
    "silo-cable-8": lambda seed: SiloCableModel(8, seed=seed),
}
DEFAULT_BAUDRATES: Final[dict[str, int]] = {"eastron-sdm120": 2400}
DEFAULT_BAUDRATE: Final = 9600
DEFAULT_LISTEN: Final = "tcp://127.0.0.1:0"
DEFAULT_UNIT_ID: Final = 1
COMMAND: Final = "floorgate simulate"
_FAULT_OPTIONS: Final = ("corrupt_crc_every", "truncate_every", "wrong_unit_every")

_EPILOG: Final = """\
devices (aliases: weighbridge = mettler-toledo-mtsics, sdm630 = eastron-sdm630):
  mettler-toledo-mtsics   MT-SICS weighbridge (60 t, 20 kg steps): one truck per cycle - empty 3 s, drives on
                          2 s (S D, noisy), stands 4 s (S S at its weight), drives off 2 s. Answers S, SI, Z, T,
                          TA, TAC, I2, I3, I4 and @; anything else ES. Sends I4 A "0123456789" at power-up.
  sartorius-sbi           Sartorius SBI scale (150 kg, 0.02 kg): ESC P prints the weight (unit blank while
                          moving, High / Low, Err 101 with --error-every), ESC T/U/V tare and zero, ESC x1_ /
                          ESC x2_ model and serial number. --form 22 adds the ids G#, N, T, PT2.
  toledo-continuous       Toledo Continuous indicator (60 t, 1 kg): streams 18-byte frames at the pace of
                          --baudrate (18.75 ms at 9600 8N1), motion while a truck moves; takes P, T, Z, C.
  laumas-tlu              Laumas TLU on Modbus: 40006 command (1 zero, 2 tare, 3 gross, 4 reset peak),
                          40007 status, 40008-13 gross / net / peak (uint32); a feed hopper's load cycle.
  siemens-siwarex-wp      SIWAREX WP231 on Modbus: DR30 from 3000, status 3004, float32 gross / net / tare
                          at 3008 / 3010 / 3012; command 10 in 2000 logs the weight in its legal log (DR45 /
                          DR46 from 6012 / 6104: protocol ID, string, CRC16).
  eastron-sdm630          Eastron SDM630 energy meter (input registers, float32): voltages, currents, power,
                          frequency, energy counters.
  eastron-sdm120          Eastron SDM120 single-phase meter, the same layout for one phase.
  th-probe                temperature / humidity probe (input registers 1 and 2, x0.1).
  silo-cable-8            silo temperature cable, 8 sensors (input registers 0-7, int16 x0.1 °C), one hot spot.

Modbus devices serve Modbus TCP by default; with --pty an RTU slave on a simulated serial line (a PtyLink: bytes
take their real wire time at --baudrate) - open the printed pty with an RTU master; --rtu-over-tcp serves RTU
frames over TCP. Other unit ids get exception 0x0B on Modbus TCP and no answer at all on RTU (as on RS-485).

examples:
  floorgate simulate weighbridge --pty --time-scale 0.5 --trucks 24560,18420
  floorgate simulate weighbridge --pty --mixed-decimals --trucks 24560,8420.5,32980,8420
  floorgate simulate sartorius-sbi --listen tcp://127.0.0.1:4001 --form 22 --seed 7
  floorgate simulate toledo-continuous --pty --baudrate 9600
  floorgate simulate laumas-tlu --pty --baudrate 19200 --unit-id 3
  floorgate simulate sdm630 --listen tcp://127.0.0.1:5020 --unit-id 3
"""


def canonical(name: str) -> str:
    """The profile name for ``name`` (``weighbridge`` -> ``mettler-toledo-mtsics``)."""
    return ALIASES.get(name, name)


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


def _baudrate(text: str) -> int:
    value = _non_negative_int(text)
    if not 50 <= value <= 4_000_000:
        raise argparse.ArgumentTypeError(f"{value} baud is outside 50..4000000")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate <device>`` to the ``floorgate`` command line."""
    parser = subparsers.add_parser(
        "simulate",
        help="run a simulated device (scales, weighing terminals, meters, sensors) until Ctrl-C",
        description=(
            "Run one simulated device until SIGINT or SIGTERM.\n"
            "When it is ready it prints 'listening: tcp://HOST:PORT' (or 'pty: /dev/pts/N' with --pty) on stdout."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("device", choices=DEVICES, metavar="DEVICE", help="the device to simulate (see below)")
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
        help="serve on a new pseudo-terminal and print its path: scales directly; Modbus devices as an RTU slave "
        "behind a simulated serial line with real timing",
    )
    parser.add_argument(
        "--rtu-over-tcp",
        action="store_true",
        help="Modbus devices only: RTU frames (with CRC) over TCP at --listen, as from a serial-to-Ethernet converter",
    )
    parser.add_argument(
        "--unit-id",
        type=_unit_id,
        default=None,
        help=f"Modbus devices only: unit id to answer ({MIN_UNIT_ID}-{MAX_UNIT_ID}, default {DEFAULT_UNIT_ID}); "
        "other unit ids get exception 0x0B on Modbus TCP, no answer on RTU",
    )
    parser.add_argument(
        "--force-file", type=Path, default=None, metavar="PATH",
        help="Modbus devices only: a JSON object of point name -> value, read on every poll; those points read "
        "these values instead of the model's (no file: none forced), e.g. {\"temperature_5\": 41.0}",
    )  # fmt: skip
    line = parser.add_argument_group("serial line (Modbus devices with --pty; toledo-continuous: the stream's pace)")
    line.add_argument("--baudrate", type=_baudrate, default=None,
                      help=f"bits per second (default {DEFAULT_BAUDRATE}; eastron-sdm120: 2400)")  # fmt: skip
    line.add_argument(
        "--parity", choices=("N", "E", "O"), default=None,
        help="parity: counts in each byte's wire time (default N); open the pty itself with parity N",
    )  # fmt: skip
    line.add_argument("--stopbits", type=int, choices=(1, 2), default=None, help="stop bits (default 1)")
    faults = parser.add_argument_group("faults (Modbus RTU: --pty or --rtu-over-tcp)")
    for option, what in (
        ("--corrupt-crc-every", "flip the CRC of every Nth answer"),
        ("--truncate-every", "send only the first half of every Nth answer"),
        ("--wrong-unit-every", "send every Nth answer from another unit id"),
    ):
        faults.add_argument(option, type=_non_negative_int, default=None, metavar="N", help=what)
    scale = parser.add_argument_group("scales (mettler-toledo-mtsics, sartorius-sbi, toledo-continuous)")
    scale.add_argument(
        "--time-scale",
        type=_time_scale,
        default=None,
        metavar="FACTOR",
        help="multiply every phase duration by FACTOR (0.1 = ten times faster; default 1)",
    )
    scale.add_argument(
        "--trucks",
        "--loads",
        dest="trucks",
        type=_trucks,
        default=None,
        metavar="KG,KG,...",
        help="weights of the first loads in kg, e.g. 24560,18420 (the weighbridge's trucks); then random ones "
        "(weighbridge 8,000-40,000 kg)",
    )
    scale.add_argument(
        "--garbage-every",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="replace every Nth reply (toledo-continuous: frame) by garbage (default 0 = never)",
    )
    scale.add_argument("--form", type=int, choices=(16, 22), default=None,
                       help="sartorius-sbi only: 16 characters, or 22 with the id code (default 16)")  # fmt: skip
    scale.add_argument("--error-every", type=_non_negative_int, default=None, metavar="N",
                       help="sartorius-sbi only: print 'Err 101' instead of every Nth weight")  # fmt: skip
    scale.add_argument("--mixed-decimals", action="store_true",
                       help="mettler-toledo-mtsics only: a multi-interval display - below 30 t in 0.5 kg steps with "
                       "one decimal (24560.0, 8420.5), above in 20 kg steps (32980)")  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed for load weights and sensor noise (repeatable runs)"
    )
    parser.set_defaults(func=run)


def _option_error(args: argparse.Namespace) -> str | None:
    device = canonical(args.device)
    is_modbus = device in MODBUS_MODELS
    scale_options = (
        ("--time-scale", args.time_scale), ("--trucks", args.trucks), ("--garbage-every", args.garbage_every),
    )  # fmt: skip
    if is_modbus:
        for option, value in scale_options:
            if value is not None:
                return f"{option} applies to the scales ({', '.join(SCALES)}) only, not {args.device}"
    else:
        for option, value in (("--unit-id", args.unit_id), ("--rtu-over-tcp", args.rtu_over_tcp or None),
                              ("--force-file", args.force_file)):
            if value is not None:
                return f"{option} applies to Modbus devices, not the {args.device} scale"
    if device != "sartorius-sbi":
        for option, value in (("--form", args.form), ("--error-every", args.error_every)):
            if value is not None:
                return f"{option} applies to sartorius-sbi only, not {args.device}"
    if device != "mettler-toledo-mtsics" and args.mixed_decimals:
        return f"--mixed-decimals applies to mettler-toledo-mtsics (weighbridge) only, not {args.device}"
    rtu = is_modbus and (args.pty or args.rtu_over_tcp)
    if args.pty and args.rtu_over_tcp:
        return "--rtu-over-tcp serves TCP: it does not go with --pty"
    for option in _FAULT_OPTIONS:
        if getattr(args, option) is not None and not rtu:
            return f"--{option.replace('_', '-')} applies to Modbus RTU (--pty or --rtu-over-tcp)"
    serial_options = (("--baudrate", args.baudrate), ("--parity", args.parity), ("--stopbits", args.stopbits))
    line_device = device == "toledo-continuous" or (is_modbus and args.pty)
    for option, value in serial_options:
        if value is not None and not line_device:
            return f"{option} applies to toledo-continuous and to Modbus devices with --pty, not here"
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


@contextlib.asynccontextmanager
async def _tcp_server(server: asyncio.Server, host: str) -> AsyncIterator[None]:
    try:
        print(f"listening: {_url(host, server.sockets[0].getsockname()[1])}", flush=True)
        yield
    finally:
        server.close()
        close_clients = getattr(server, "close_clients", None)  # Python 3.12+
        if close_clients is not None:
            close_clients()
        await server.wait_closed()


async def _serve_scale(args: argparse.Namespace, device: str, stop: asyncio.Event) -> None:
    host, port = args.listen or _listen_address(DEFAULT_LISTEN)
    seed, time_scale, garbage_every = args.seed, args.time_scale or 1.0, args.garbage_every or 0
    pty: DevicePty
    start_tcp: Callable[[], Awaitable[asyncio.Server]]
    if device == "mettler-toledo-mtsics":
        bridge = Weighbridge(trucks=args.trucks, seed=seed, time_scale=time_scale, garbage_every=garbage_every,
                             mixed_decimals=args.mixed_decimals)
        pty, start_tcp = PtyServer(bridge), lambda: serve_tcp(bridge, host=host, port=port)
    elif device == "sartorius-sbi":
        scale = SartoriusScale(
            loads=args.trucks, seed=seed, time_scale=time_scale, garbage_every=garbage_every, form=args.form or 16,
            error_every=args.error_every or 0,
        )  # fmt: skip
        pty, start_tcp = SbiPtyServer(scale), lambda: serve_sbi_tcp(scale, host=host, port=port)
    else:
        indicator = ToledoIndicator(
            trucks=args.trucks, seed=seed, time_scale=time_scale, garbage_every=garbage_every,
            baudrate=args.baudrate or DEFAULT_BAUDRATE,
            bits_per_byte=bits_per_byte(parity=args.parity or "N", stopbits=args.stopbits or 1),
        )  # fmt: skip
        pty, start_tcp = ToledoPtyServer(indicator), lambda: serve_toledo_tcp(indicator, host=host, port=port)
    if args.pty:
        async with pty:
            print(f"pty: {pty.path}", flush=True)
            await stop.wait()
        return
    async with _tcp_server(await start_tcp(), host):
        await stop.wait()


async def _serve_modbus(args: argparse.Namespace, device: str, stop: asyncio.Event) -> None:
    host, port = args.listen or _listen_address(DEFAULT_LISTEN)
    unit_id = args.unit_id or DEFAULT_UNIT_ID
    model = MODBUS_MODELS[device](args.seed)
    devices = {unit_id: ForcedValues(model, args.force_file) if args.force_file else model}
    crc, truncate, wrong_unit = (getattr(args, option) or 0 for option in _FAULT_OPTIONS)
    if args.pty:
        baudrate = args.baudrate or DEFAULT_BAUDRATES.get(device, DEFAULT_BAUDRATE)
        parity, stopbits = args.parity or "N", args.stopbits or 1
        async with PtyLink(baudrate=baudrate, parity=parity, stopbits=stopbits) as link:
            slave_end, agent_end = link.paths
            rtu = await start_modbus_rtu(  # parity N on the pty: a pty keeps none (see protocols.sim.ptylink)
                devices, port_path=slave_end, baudrate=baudrate, parity="N", stopbits=stopbits,
                corrupt_crc_every=crc, truncate_every=truncate, wrong_unit_every=wrong_unit,
            )  # fmt: skip
            try:
                print(f"pty: {agent_end}", flush=True)
                await stop.wait()
            finally:
                await rtu.stop()
        return
    if args.rtu_over_tcp:
        handle = await start_modbus_rtu_over_tcp(
            devices, host, port, corrupt_crc_every=crc, truncate_every=truncate, wrong_unit_every=wrong_unit
        )
        bound = handle.port or port
        stop_handle = handle.stop
    else:
        tcp = await start_modbus_tcp(devices, host=host, port=port)
        bound, stop_handle = tcp.port, tcp.stop
    try:
        print(f"listening: {_url(host, bound)}", flush=True)
        await stop.wait()
    finally:
        await stop_handle()


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        device = canonical(args.device)
        if device in MODBUS_MODELS:
            await _serve_modbus(args, device, stop)
        else:
            await _serve_scale(args, device, stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


__all__ = ["ALIASES", "DEVICES", "SIMULATORS", "canonical", "register", "run"]
