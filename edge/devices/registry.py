"""Builds the node's buses and device drivers from its config (and the profiles it names).

Each bus in ``buses`` gets one scheduler. A built-in device with its own ``address`` (``type: mtsics-scale``,
``sdm630``, ``th-probe``) gets an implicit bus of its own, named after the device. Scales, and Modbus weighing
terminals (``edge.devices.terminal``), take weighings as their device's ``weighing`` settings say.
"""

from __future__ import annotations

from collections import defaultdict

from edge.bus.connection import LineConnection, ModbusConnection, SerialParams
from edge.bus.health import RecordSink
from edge.bus.scheduler import BusScheduler, Driver
from edge.config import BusConfig, ModbusDevice, NodeConfig, ProfileDevice, ScaleDevice
from edge.devices.modbus import ModbusDriver, ModbusOptions
from edge.devices.profiles import DEFAULT_PROFILES_DIR, Profile, load_profile
from edge.devices.sartorius import SbiDriver
from edge.devices.scale import MtSicsDriver
from edge.devices.terminal import TERMINALS, WeighingTerminalDriver, is_weighing_terminal
from edge.devices.toledo import ToledoDriver
from protocols.modbus_maps import DEVICE_MAPS
from protocols.mtsics import LineFramer
from protocols.toledo import ToledoFramer
from sync.runtime.config import ConfigError


def _serial(bus: BusConfig) -> SerialParams:
    return SerialParams(baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits, bytesize=bus.bytesize)


def _connection(bus: BusConfig, *, streaming: bool = False) -> ModbusConnection | LineConnection:
    if bus.kind == "line":
        return LineConnection(bus.id, bus.address, serial=_serial(bus), timeout_s=bus.timeout_s,
                              framer_factory=ToledoFramer if streaming else LineFramer)
    return ModbusConnection(bus.id, bus.kind, bus.address, serial=_serial(bus), timeout_s=bus.timeout_s)


def _implicit_bus(dev: ScaleDevice | ModbusDevice) -> BusConfig:
    kind = "line" if isinstance(dev, ScaleDevice) else "tcp"
    baud = dev.baudrate if isinstance(dev, ScaleDevice) else 9600
    return BusConfig(id=dev.id, kind=kind, address=dev.address, baudrate=baud, timeout_s=dev.timeout_s)


def _profile_driver(profile: Profile, dev: ProfileDevice, bus: BusConfig,
                    conn: ModbusConnection | LineConnection, sink: RecordSink, source: str) -> Driver:
    groups = {g.name: g.interval_s for g in profile.poll_groups}
    for name, interval in dev.poll_groups.items():
        if name not in groups:
            raise ConfigError(source, [f"devices[{dev.id}].poll_groups.{name}: the profile {profile.profile!r} has "
                                       f"no poll group {name!r} (it has {', '.join(sorted(groups))})"])
        groups[name] = interval
    if profile.protocol == "modbus":
        if not isinstance(conn, ModbusConnection):
            raise ConfigError(source, [f"devices[{dev.id}].bus: profile {profile.profile!r} speaks Modbus, "
                                       f"bus {bus.id!r} is a {bus.kind} bus"])
        m = profile.modbus
        assert m is not None
        options = ModbusOptions(
            unit_id=dev.unit_id, max_gap=m.max_gap, max_registers=m.max_registers,
            one_request_per_point=m.one_request_per_point, close_after_poll=m.close_after_poll,
            pause_between_requests_s=m.pause_between_requests_s, retries=profile.transport.retries,
            report_every_s=dev.report_every_s)
        points, writable = profile.modbus_points(), profile.modbus_points(writable=True)
        if is_weighing_terminal(profile.profile, points):
            return WeighingTerminalDriver(dev.id, profile.profile, conn, points, groups, sink, options=options,
                                          writable=writable, spec=TERMINALS[profile.profile],
                                          threshold=dev.weighing.threshold, empty_below=dev.weighing.empty_below,
                                          auto=dev.weighing.auto)
        return ModbusDriver(dev.id, profile.profile, conn, points, groups, sink, options=options, writable=writable)
    if profile.protocol in ("mtsics", "sartorius-sbi", "toledo-continuous"):
        if not isinstance(conn, LineConnection):
            raise ConfigError(source, [f"devices[{dev.id}].bus: a scale needs a bus of kind line, "
                                       f"{bus.id!r} is {bus.kind}"])
        interval = min(groups.values()) if groups else 0.5
        driver_class = {"mtsics": MtSicsDriver, "sartorius-sbi": SbiDriver, "toledo-continuous": ToledoDriver}[
            profile.protocol]
        return driver_class(dev.id, conn, sink, interval_s=interval, timeout_s=bus.timeout_s,
                            threshold=dev.weighing.threshold, empty_below=dev.weighing.empty_below,
                            auto=dev.weighing.auto)
    raise ConfigError(source, [f"devices[{dev.id}].profile: protocol {profile.protocol!r} of profile "
                               f"{profile.profile!r} is not supported by this agent yet"])


def build_buses(cfg: NodeConfig, sink: RecordSink, *, source: str = "node config") -> list[BusScheduler]:
    buses = {b.id: b for b in cfg.buses}
    members: dict[str, list[Driver]] = defaultdict(list)
    conns: dict[str, ModbusConnection | LineConnection] = {}
    streaming_buses: set[str] = set()
    for dev in cfg.devices:
        if isinstance(dev, ProfileDevice):
            bus = buses[dev.bus]
            profile = load_profile(dev.profile, profiles_dir=cfg.profiles_dir or DEFAULT_PROFILES_DIR)
            streaming = profile.protocol == "toledo-continuous"
            if bus.id in conns and (streaming or bus.id in streaming_buses):
                raise ConfigError(source, [f"devices[{dev.id}].bus: {bus.id!r} carries a streaming indicator "
                                           "(toledo-continuous), which needs a line of its own"])
            if streaming:
                streaming_buses.add(bus.id)
            conn = conns.setdefault(bus.id, _connection(bus, streaming=streaming))
            members[bus.id].append(_profile_driver(profile, dev, bus, conn, sink, source))
            continue
        bus = _implicit_bus(dev)
        buses[bus.id] = bus
        conn = conns.setdefault(bus.id, _connection(bus))
        if isinstance(dev, ScaleDevice):
            assert isinstance(conn, LineConnection)
            members[bus.id].append(MtSicsDriver(dev.id, conn, sink, interval_s=dev.interval_s,
                                                timeout_s=dev.timeout_s, threshold=dev.weighing.threshold,
                                                empty_below=dev.weighing.empty_below, auto=dev.weighing.auto))
        else:
            assert isinstance(conn, ModbusConnection)
            members[bus.id].append(ModbusDriver(dev.id, dev.type, conn, DEVICE_MAPS[dev.type],
                                                {"default": dev.interval_s}, sink,
                                                options=ModbusOptions(unit_id=dev.unit_id, report_every_s=0.0)))
    return [
        BusScheduler(bus_id, conns[bus_id], drivers, skip_after=buses[bus_id].skip_after,
                     skip_base_s=buses[bus_id].skip_base_s, skip_max_s=buses[bus_id].skip_max_s)
        for bus_id, drivers in members.items()
    ]
