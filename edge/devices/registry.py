"""Builds the node's buses and device drivers from its config and the profiles its devices name.

Every device is a profile on a bus. A device given by ``type`` (``mtsics-scale``, ``sdm630``, ``th-probe``) with
an ``address`` of its own is its shipped profile on a bus of its own, named after it
(``edge.config.DEVICE_TYPE_PROFILES``).
Each bus gets one scheduler. The driver of a device is found by its profile's ``protocol`` in ``DRIVERS``::

    protocol            driver                                           bus
    modbus              ModbusDriver, or WeighingTerminalDriver for a    rtu, tcp, rtu-over-tcp
                        weighing terminal (``edge.devices.terminal``)
    mtsics              MtSicsDriver (``edge.devices.scale``)            line (CR LF lines)
    sartorius-sbi       SbiDriver (``edge.devices.sartorius``)           line (CR LF lines)
    toledo-continuous   ToledoDriver (``edge.devices.toledo``)           line of its own (a stream of frames)

A new protocol is a driver module, an entry here and its name in the profile schema. Drivers emit their records into
the ``RecordSink`` they are given (``edge.bus.sink``), never into the agent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from edge.bus.connection import BusConnection, LineConnection, ModbusConnection, SerialParams
from edge.bus.scheduler import BusScheduler, Driver
from edge.bus.sink import RecordSink
from edge.bus.transport import Framer
from edge.config import BusConfig, NodeConfig, ProfileDevice
from edge.devices.modbus import ModbusDriver, ModbusOptions
from edge.devices.profile_model import Profile
from edge.devices.profiles import DEFAULT_PROFILES_DIR, load_profile
from edge.devices.sartorius import SbiDriver
from edge.devices.scale import MtSicsDriver
from edge.devices.terminal import TERMINALS, WeighingTerminalDriver, is_weighing_terminal
from edge.devices.toledo import ToledoDriver
from protocols.mtsics import LineFramer
from protocols.toledo import ToledoFramer
from sync.runtime.config import ConfigError

MODBUS_BUS_KINDS = ("rtu", "tcp", "rtu-over-tcp")


@dataclass(frozen=True)
class DeviceSetup:
    """What a driver is built from: the device's settings, its profile, its bus and the connection to it."""

    device: ProfileDevice
    profile: Profile
    bus: BusConfig
    conn: BusConnection
    groups: dict[str, float]  # the profile's poll groups, with the device's intervals


@dataclass(frozen=True)
class ProtocolDrivers:
    """How devices of one protocol are driven: the driver, the kinds of bus it runs on and, on a line, its framer."""

    build: Callable[[DeviceSetup, RecordSink], Driver]
    bus_kinds: tuple[str, ...]
    framer: Callable[[], Framer] = LineFramer
    exclusive: bool = False  # the device talks unasked (a stream): no other device may share its line


def _modbus(setup: DeviceSetup, sink: RecordSink) -> Driver:
    dev, profile, conn = setup.device, setup.profile, setup.conn
    assert isinstance(conn, ModbusConnection)
    m = profile.modbus
    assert m is not None
    options = ModbusOptions(
        unit_id=dev.unit_id, max_gap=m.max_gap, max_registers=m.max_registers,
        one_request_per_point=m.one_request_per_point, close_after_poll=m.close_after_poll,
        pause_between_requests_s=m.pause_between_requests_s, retries=profile.transport.retries,
        report_every_s=dev.report_every_s)
    points, writable = profile.modbus_points(), profile.modbus_points(writable=True)
    if is_weighing_terminal(profile.profile, points):
        return WeighingTerminalDriver(dev.id, profile.profile, conn, points, setup.groups, sink,
                                      options=options, writable=writable, spec=TERMINALS[profile.profile],
                                      threshold=dev.weighing.threshold, empty_below=dev.weighing.empty_below,
                                      auto=dev.weighing.auto)
    return ModbusDriver(dev.id, profile.profile, conn, points, setup.groups, sink, options=options,
                        writable=writable)


def _scale(driver: type[MtSicsDriver]) -> Callable[[DeviceSetup, RecordSink], Driver]:
    def build(setup: DeviceSetup, sink: RecordSink) -> Driver:
        assert isinstance(setup.conn, LineConnection)
        weighing = setup.device.weighing
        return driver(setup.device.id, setup.conn, sink,
                      interval_s=min(setup.groups.values()) if setup.groups else 0.5, timeout_s=setup.bus.timeout_s,
                      threshold=weighing.threshold, empty_below=weighing.empty_below, auto=weighing.auto)

    return build


DRIVERS: dict[str, ProtocolDrivers] = {
    "modbus": ProtocolDrivers(_modbus, MODBUS_BUS_KINDS),
    "mtsics": ProtocolDrivers(_scale(MtSicsDriver), ("line",)),
    "sartorius-sbi": ProtocolDrivers(_scale(SbiDriver), ("line",)),
    "toledo-continuous": ProtocolDrivers(_scale(ToledoDriver), ("line",), framer=ToledoFramer, exclusive=True),
}


def _connection(bus: BusConfig, framer: Callable[[], Framer]) -> BusConnection:
    serial = SerialParams(baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits, bytesize=bus.bytesize)
    if bus.kind == "line":
        return LineConnection(bus.id, bus.address, serial=serial, timeout_s=bus.timeout_s, framer_factory=framer)
    return ModbusConnection(bus.id, bus.kind, bus.address, serial=serial, timeout_s=bus.timeout_s)


def _poll_groups(profile: Profile, dev: ProfileDevice, source: str) -> dict[str, float]:
    groups = {g.name: g.interval_s for g in profile.poll_groups}
    for name, interval in dev.poll_groups.items():
        if name not in groups:
            raise ConfigError(source, [f"devices[{dev.id}].poll_groups.{name}: the profile {profile.profile!r} has "
                                       f"no poll group {name!r} (it has {', '.join(sorted(groups))})"])
        groups[name] = interval
    return groups


def _protocol(profile: Profile, dev: ProfileDevice, bus: BusConfig, source: str) -> ProtocolDrivers:
    drivers = DRIVERS.get(profile.protocol)
    if drivers is None:
        raise ConfigError(source, [f"devices[{dev.id}].profile: protocol {profile.protocol!r} of profile "
                                   f"{profile.profile!r} is not supported by this agent yet"])
    if bus.kind not in drivers.bus_kinds:
        raise ConfigError(source, [f"devices[{dev.id}].bus: profile {profile.profile!r} speaks {profile.protocol}, "
                                   f"which needs a bus of kind {' or '.join(drivers.bus_kinds)}; bus {bus.id!r} is "
                                   f"{bus.kind}"])
    return drivers


@dataclass(frozen=True)
class BusPlan:
    """One bus with its devices, resolved and checked: ``build`` makes its scheduler and drivers."""

    bus: BusConfig
    conn: BusConnection
    devices: tuple[tuple[ProtocolDrivers, DeviceSetup], ...]

    def build(self, sink: RecordSink) -> BusScheduler:
        """The bus's scheduler, its drivers emitting into ``sink``. Once per plan (the connection is the plan's)."""
        drivers = [protocol.build(setup, sink) for protocol, setup in self.devices]
        return BusScheduler(self.bus.id, self.conn, drivers, skip_after=self.bus.skip_after,
                            skip_base_s=self.bus.skip_base_s, skip_max_s=self.bus.skip_max_s)


def plan_buses(cfg: NodeConfig, *, source: str = "node config") -> list[BusPlan]:
    """Every bus that has devices, with their profiles loaded and everything checked: ``ConfigError`` naming the
    file, the device and what is wrong; no I/O but reading the profiles."""
    declared = {b.id: b for b in cfg.buses}
    buses: dict[str, BusConfig] = {}
    members: dict[str, list[tuple[ProtocolDrivers, DeviceSetup]]] = defaultdict(list)
    conns: dict[str, BusConnection] = {}
    exclusive: set[str] = set()
    profiles: dict[str, Profile] = {}  # read and validated once per plan, however many devices share one
    for dev in cfg.devices:
        device, bus = dev.placement(declared)
        if declared.get(bus.id, bus) is not bus:
            raise ConfigError(source, [f"devices[{dev.id}].id: {dev.id!r} is also the id of a bus; a device given "
                                       "by type gets a bus of its own, named after it"])
        buses[bus.id] = bus
        if device.profile not in profiles:
            profiles[device.profile] = load_profile(device.profile,
                                                    profiles_dir=cfg.profiles_dir or DEFAULT_PROFILES_DIR)
        profile = profiles[device.profile]
        drivers = _protocol(profile, device, bus, source)
        if bus.id in conns and (drivers.exclusive or bus.id in exclusive):
            streams = ", ".join(name for name, d in DRIVERS.items() if d.exclusive)
            raise ConfigError(source, [f"devices[{dev.id}].bus: {bus.id!r} carries a device that streams "
                                       f"({streams}), which needs a line of its own"])
        if drivers.exclusive:
            exclusive.add(bus.id)
        conn = conns.setdefault(bus.id, _connection(bus, drivers.framer))
        groups = _poll_groups(profile, device, source)
        members[bus.id].append((drivers, DeviceSetup(device, profile, bus, conn, groups)))
    return [BusPlan(buses[bus_id], conns[bus_id], tuple(devices)) for bus_id, devices in members.items()]


def build_buses(cfg: NodeConfig, sink: RecordSink, *, source: str = "node config") -> list[BusScheduler]:
    """One scheduler per bus that has devices, its drivers emitting into ``sink`` (``plan_buses``, then ``build``)."""
    return [plan.build(sink) for plan in plan_buses(cfg, source=source)]


__all__ = ["DRIVERS", "BusPlan", "DeviceSetup", "ProtocolDrivers", "build_buses", "plan_buses"]
