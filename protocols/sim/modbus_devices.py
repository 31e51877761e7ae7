"""Modbus device models and their pymodbus TCP server: energy meters, sensors, weighing terminals.

    Sdm630Model         Eastron SDM630, three phases (input registers, float32)
    Sdm120Model         Eastron SDM120, one phase (input registers, float32; 2400 baud by default on RTU)
    ThProbeModel        temperature / humidity probe (input registers 1 and 2, x0.1)
    SiloCableModel      silo temperature cable, N points (input registers 0..N-1, int16 x0.1 °C, one hot spot)
    LaumasTluModel      Laumas TLU / W100 weight transmitter (holding 40006-40013)   } in weighing_terminals.py,
    SiwarexWpModel      SIWAREX WP231: DR30 from 3000, legal log DR45/46 from 6012     } re-exported here

A model turns a time into plausible values for the points of its map (``protocols.modbus.Point``); the server
encodes them with ``encode_point`` into the registers of one pymodbus ``SimDevice`` per unit id::

    client --TCP--> [ tid ][ pid ][ length ][ uid ][ fc ][ address ][ count ]
                                             │
                      uid in ``devices`` ────┤──> SimDevice(uid): registers of the model's points only;
                                             │    every read first refreshes them from model.sample(now)
                      any other uid ─────────┴──> catch-all SimDevice(0): exception 0x0B
                                                  "gateway target device failed to respond"

Behaviour (pymodbus 3.16):

* Registers that are not in the map answer exception 0x02 "illegal data address" (pymodbus marks the gaps
  between ``SimData`` blocks invalid); a read of input-only points with FC03, or of holding points with FC04,
  answers 0x02 too; coil and discrete-input requests answer 0x01 "illegal function"; writes to input registers
  answer 0x02.
* Values are refreshed on every read (never older than the request) - more than the "at least every second"
  of the brief, and without a background task.
* Unknown unit ids: pymodbus 3.16's ``SimCore`` falls back to device 0 and, without one, raises ``KeyError``,
  which the request handler logs with a traceback and answers with 0x04 "device failure"
  (``ignore_missing_devices`` has no effect: it only catches ``NoSuchIdException``, which ``SimCore`` never
  raises). So we register a catch-all device 0 that answers 0x0B, as a Modbus TCP gateway does for an RTU
  device that does not answer. Either way the client gets an exception response at once and never hangs;
  unit id 0 itself is therefore not available to models.
* ``port=0`` works: pymodbus binds a free port, and the real one is read from the listening socket.
* Writes (FC06 / FC16) to holding registers go to the model's ``write`` (``WritableModel``): the model answers
  None (done) or an exception code; a model without ``write`` answers 0x02 to every write.
* A model may declare ``reserved_registers`` - ``(register type, first address, count)`` blocks that read as 0, the
  fields of a data record it does not model - and ``max_registers`` a request (more: exception 0x03).

The same devices over Modbus RTU (a serial line, or RTU framing over TCP): ``protocols.sim.modbus_rtu``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus.points import Point, Value
from protocols.modbus.values import encode_point
from protocols.sim.weighing_terminals import (
    LAUMAS_COMMANDS,
    LAUMAS_TLU_POINTS,
    SIWAREX_WP231_POINTS,
    SIWAREX_WP_POINTS,
    LaumasStatus,
    LaumasTluModel,
    SiwarexStatus,
    SiwarexWpModel,
)

DEFAULT_HOST: Final = "127.0.0.1"
MIN_UNIT_ID: Final = 1
MAX_UNIT_ID: Final = 247
CATCH_ALL_UNIT_ID: Final = 0

_FUNCTION_REGISTER_TYPE: Final[dict[int, str]] = {3: "holding", 6: "holding", 16: "holding", 22: "holding", 4: "input"}
MAX_SILO_POINTS: Final = 64


def _float32(name: str, address: int, unit: str) -> Point:
    return Point(name, address, "input", "float32", unit=unit)


# The register maps of the simulated devices. The edge reads the same devices through the shipped profiles
# (``firmware-config/profiles``: ``sdm630`` / ``eastron-sdm630``, ``th-probe``, ``eastron-sdm120``); a unit test holds
# the profiles and these maps together. Neither map has gaps inside its blocks, so a master reading them with the
# default ``max_gap`` never asks for an unmapped register (answered "illegal data address").


SDM630_POINTS: Final[tuple[Point, ...]] = (
    _float32("voltage_l1", 0x0000, "V"),
    _float32("voltage_l2", 0x0002, "V"),
    _float32("voltage_l3", 0x0004, "V"),
    _float32("current_l1", 0x0006, "A"),
    _float32("current_l2", 0x0008, "A"),
    _float32("current_l3", 0x000A, "A"),
    _float32("power_l1", 0x000C, "W"),
    _float32("power_l2", 0x000E, "W"),
    _float32("power_l3", 0x0010, "W"),
    _float32("total_power", 0x0034, "W"),
    _float32("frequency", 0x0046, "Hz"),
    _float32("import_energy", 0x0048, "kWh"),
    _float32("export_energy", 0x004A, "kWh"),
    _float32("total_energy", 0x0156, "kWh"),
)

TH_PROBE_POINTS: Final[tuple[Point, ...]] = (
    Point("temperature", 1, "input", "int16", scale=0.1, unit="°C"),
    Point("humidity", 2, "input", "uint16", scale=0.1, unit="%RH"),
)

SDM120_POINTS: Final[tuple[Point, ...]] = (
    _float32("voltage", 0x0000, "V"),
    _float32("current", 0x0006, "A"),
    _float32("power", 0x000C, "W"),
    _float32("frequency", 0x0046, "Hz"),
    _float32("import_energy", 0x0048, "kWh"),
    _float32("export_energy", 0x004A, "kWh"),
    _float32("total_energy", 0x0156, "kWh"),
)


def silo_cable_points(points: int) -> tuple[Point, ...]:
    """``temperature_1`` (top) .. ``temperature_N``: input registers 0..N-1, int16 x0.1 °C."""
    if not 1 <= points <= MAX_SILO_POINTS:
        raise ValueError(f"silo cable: points must be within 1..{MAX_SILO_POINTS}, got {points}")
    return tuple(Point(f"temperature_{k + 1}", k, "input", "int16", scale=0.1, unit="°C") for k in range(points))


class DeviceModel(Protocol):
    """What ``start_modbus_tcp`` needs from a simulated device."""

    @property
    def points(self) -> tuple[Point, ...]: ...

    def sample(self, now_s: float) -> Mapping[str, Value]:
        """Values of every point at monotonic time ``now_s`` (seconds); called with non-decreasing times."""
        ...


@runtime_checkable
class WritableModel(Protocol):
    """A model whose holding registers can be written (FC06 / FC16): a command register, a setpoint."""

    def write(self, address: int, values: Sequence[int], now_s: float) -> int | None:
        """Apply a write of ``values`` from ``address``; None when done, else a Modbus exception code (0x02 ...)."""
        ...


def _wave(now_s: float, period_s: float, phase: float = 0.0) -> float:
    return math.sin(2 * math.pi * now_s / period_s + phase)


class Sdm630Model:
    """Three-phase meter: voltages 230 V +-2, currents 5-15 A, power = V x I, 50 Hz, energy counting up.

    Values vary slowly (periods of minutes) with a little seeded noise. ``import_energy`` integrates the total
    power between samples, so it only grows; ``total_energy`` = import + export.
    """

    NOMINAL_VOLTAGE_V: Final = 230.0
    BASE_CURRENTS_A: Final = (10.0, 12.0, 8.0)
    NOMINAL_FREQUENCY_HZ: Final = 50.0

    def __init__(
        self, *, seed: int | None = None, import_energy_kwh: float = 12_345.6, export_energy_kwh: float = 17.3
    ) -> None:
        self._rng = random.Random(seed)
        self._import_kwh = import_energy_kwh
        self._export_kwh = export_energy_kwh
        self._last_s: float | None = None

    @property
    def points(self) -> tuple[Point, ...]:
        return SDM630_POINTS

    def sample(self, now_s: float) -> dict[str, float]:
        noise = self._rng.uniform
        voltages = [self.NOMINAL_VOLTAGE_V + 1.5 * _wave(now_s, 97.0, 2.1 * k) + noise(-0.4, 0.4) for k in range(3)]
        currents = [
            base + 2.5 * _wave(now_s, 311.0, float(k)) + noise(-0.2, 0.2) for k, base in enumerate(self.BASE_CURRENTS_A)
        ]
        powers = [v * i for v, i in zip(voltages, currents, strict=True)]
        total_power = sum(powers)
        if self._last_s is not None and now_s > self._last_s:
            self._import_kwh += total_power * (now_s - self._last_s) / 3_600_000.0
        self._last_s = now_s if self._last_s is None else max(self._last_s, now_s)
        values = {f"voltage_l{k + 1}": v for k, v in enumerate(voltages)}
        values |= {f"current_l{k + 1}": i for k, i in enumerate(currents)}
        values |= {f"power_l{k + 1}": p for k, p in enumerate(powers)}
        values |= {
            "total_power": total_power,
            "frequency": self.NOMINAL_FREQUENCY_HZ + 0.04 * _wave(now_s, 53.0) + noise(-0.005, 0.005),
            "import_energy": self._import_kwh,
            "export_energy": self._export_kwh,
            "total_energy": self._import_kwh + self._export_kwh,
        }
        return values


class ThProbeModel:
    """Temperature 18-25 °C and relative humidity 40-60 %RH, slowly varying, 0.1 resolution."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    @property
    def points(self) -> tuple[Point, ...]:
        return TH_PROBE_POINTS

    def sample(self, now_s: float) -> dict[str, float]:
        temperature = 21.5 + 3.0 * _wave(now_s, 600.0) + self._rng.uniform(-0.2, 0.2)
        humidity = 50.0 + 8.0 * _wave(now_s, 900.0, 1.0) + self._rng.uniform(-0.5, 0.5)
        return {
            "temperature": round(min(25.0, max(18.0, temperature)), 1),
            "humidity": round(min(60.0, max(40.0, humidity)), 1),
        }


class Sdm120Model:
    """Single-phase meter (a mill motor circuit): 230 V +-2, 2-9 A, power = V x I, 50 Hz, energy counting up.

    The registers between its points (0x0002-0x0005, 0x0008-0x000B: the SDM630 layout's other phases) read as 0,
    so a master may read 0x0000-0x000D in one request, as the ``eastron-sdm120`` profile does.
    """

    reserved_registers: tuple[tuple[str, int, int], ...] = (("input", 0x0002, 4), ("input", 0x0008, 4))

    NOMINAL_VOLTAGE_V: Final = 230.0
    BASE_CURRENT_A: Final = 5.5
    NOMINAL_FREQUENCY_HZ: Final = 50.0

    def __init__(
        self, *, seed: int | None = None, import_energy_kwh: float = 4_321.5, export_energy_kwh: float = 0.0
    ) -> None:
        self._rng = random.Random(seed)
        self._import_kwh = import_energy_kwh
        self._export_kwh = export_energy_kwh
        self._last_s: float | None = None

    @property
    def points(self) -> tuple[Point, ...]:
        return SDM120_POINTS

    def sample(self, now_s: float) -> dict[str, float]:
        noise = self._rng.uniform
        voltage = self.NOMINAL_VOLTAGE_V + 1.5 * _wave(now_s, 97.0) + noise(-0.4, 0.4)
        current = self.BASE_CURRENT_A + 3.0 * _wave(now_s, 251.0, 0.7) + noise(-0.2, 0.2)
        power = voltage * current
        if self._last_s is not None and now_s > self._last_s:
            self._import_kwh += power * (now_s - self._last_s) / 3_600_000.0
        self._last_s = now_s if self._last_s is None else max(self._last_s, now_s)
        return {
            "voltage": voltage,
            "current": current,
            "power": power,
            "frequency": self.NOMINAL_FREQUENCY_HZ + 0.04 * _wave(now_s, 53.0) + noise(-0.005, 0.005),
            "import_energy": self._import_kwh,
            "export_energy": self._export_kwh,
            "total_energy": self._import_kwh + self._export_kwh,
        }


class SiloCableModel:
    """A temperature cable hanging in a grain silo: ``points`` sensors, 1 at the top, 0.1 °C resolution.

    The grain sits at 10-16 °C, cooler with depth; the top sensor follows the day (+-2 °C over 24 h); every value
    drifts slowly (periods of hours) with a little seeded noise. One sensor (``hot_spot``, 1-based; seeded when not
    given) is a hot spot - grain heating up - 8 °C above its surroundings and rising 0.5 °C an hour, up to 20 °C
    above; its neighbours get 40 % of that. Sensible poll interval: 5-15 min.
    """

    BASE_TOP_C: Final = 15.0
    GRADIENT_C: Final = 4.0  # cooler by this much from top to bottom
    HOT_SPOT_START_C: Final = 8.0
    HOT_SPOT_RISE_C_PER_H: Final = 0.5
    HOT_SPOT_MAX_C: Final = 20.0
    NEIGHBOUR_SHARE: Final = 0.4

    def __init__(self, points: int = 8, *, seed: int | None = None, hot_spot: int | None = None) -> None:
        self._points = silo_cable_points(points)
        self._rng = random.Random(seed)
        if hot_spot is None:
            hot_spot = self._rng.randint(2, points) if points > 1 else 1
        if not 1 <= hot_spot <= points:
            raise ValueError(f"silo cable: hot_spot must be within 1..{points}, got {hot_spot}")
        self.hot_spot = hot_spot
        self._phases = [self._rng.uniform(0, 2 * math.pi) for _ in range(points)]
        self._start_s: float | None = None

    @property
    def points(self) -> tuple[Point, ...]:
        return self._points

    def sample(self, now_s: float) -> dict[str, float]:
        if self._start_s is None:
            self._start_s = now_s
        hours = max(0.0, now_s - self._start_s) / 3600.0
        excess = min(self.HOT_SPOT_MAX_C, self.HOT_SPOT_START_C + self.HOT_SPOT_RISE_C_PER_H * hours)
        n = len(self._points)
        values: dict[str, float] = {}
        for k in range(n):
            depth = k / (n - 1) if n > 1 else 0.0
            celsius = self.BASE_TOP_C - self.GRADIENT_C * depth
            celsius += 0.6 * _wave(now_s, 5 * 3600.0, self._phases[k]) + self._rng.uniform(-0.1, 0.1)
            if k == 0:
                celsius += 2.0 * _wave(now_s, 24 * 3600.0)
            distance = abs(k + 1 - self.hot_spot)
            celsius += excess if distance == 0 else excess * self.NEIGHBOUR_SHARE if distance == 1 else 0.0
            values[f"temperature_{k + 1}"] = round(celsius, 1)
        return values


class _UnitRuntime:
    """The registers of one unit id: access check, refresh and writes, as a pymodbus ``SimDevice`` action."""

    def __init__(self, unit_id: int, model: DeviceModel, clock: Callable[[], float]) -> None:
        self.unit_id = unit_id
        self.model = model
        self.clock = clock
        self.addresses: dict[str, set[int]] = {"input": set(), "holding": set()}
        self.reserved: list[tuple[str, int, int]] = list(getattr(model, "reserved_registers", ()))
        self.max_registers: int | None = getattr(model, "max_registers", None)
        blocks: list[tuple[str, int, int, str]] = [(p.register_type, p.address, p.count, p.name) for p in model.points]
        blocks += [(kind, start, count, "reserved") for kind, start, count in self.reserved]
        for register_type, address, count, name in blocks:
            if register_type not in self.addresses:
                raise ValueError(f"unit {unit_id}: point {name} is a {register_type}, the simulator serves registers")
            self.addresses[register_type].update(range(address, address + count))
        both = self.addresses["input"] & self.addresses["holding"]
        if both:
            raise ValueError(
                f"unit {unit_id}: registers {sorted(both)} are both input and holding; the simulator keeps one "
                "register space per unit"
            )

    def registers(self) -> dict[Point, list[int]]:
        values = self.model.sample(self.clock())
        return {point: encode_point(point, values[point.name]) for point in self.model.points}

    def sim_device(self) -> SimDevice:
        blocks = [
            SimData(point.address, values=regs, datatype=DataType.REGISTERS, readonly=point.register_type == "input")
            for point, regs in self.registers().items()
        ]
        blocks += [
            SimData(start, values=[0] * count, datatype=DataType.REGISTERS, readonly=True)
            for _, start, count in self.reserved
        ]
        return SimDevice(self.unit_id, simdata=blocks, action=self.action)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        register_type = _FUNCTION_REGISTER_TYPE.get(function_code)
        if register_type is None:
            return ExcCodes.ILLEGAL_FUNCTION
        wanted = self.addresses[register_type]
        if any(a not in wanted for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        if self.max_registers is not None and count > self.max_registers:
            return ExcCodes.ILLEGAL_VALUE
        if set_values is not None:  # FC06 / FC16 write; pymodbus reads FC06's register back afterwards
            if not isinstance(self.model, WritableModel):
                return ExcCodes.ILLEGAL_ADDRESS
            code = self.model.write(address, [int(v) for v in set_values], self.clock())
            return ExcCodes(code) if code else None
        for point, regs in self.registers().items():
            offset = point.address - start_address
            registers[offset : offset + point.count] = regs
        return None


def sim_devices(devices: Mapping[int, DeviceModel], *, clock: Callable[[], float] = time.monotonic) -> list[SimDevice]:
    """One pymodbus ``SimDevice`` per unit id (1..247), each refreshed from its model on every read."""
    if not devices:
        raise ValueError("Modbus simulator: no devices given")
    for unit_id in devices:
        if not MIN_UNIT_ID <= unit_id <= MAX_UNIT_ID:
            raise ValueError(f"Modbus simulator: unit id {unit_id} outside {MIN_UNIT_ID}..{MAX_UNIT_ID}")
    return [_UnitRuntime(unit_id, model, clock).sim_device() for unit_id, model in devices.items()]


async def _no_such_unit(
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE


@dataclass
class ModbusSimHandle:
    """A running simulator: ``port`` is the bound port (also when 0 was asked for)."""

    host: str
    port: int
    unit_ids: tuple[int, ...]
    _server: ModbusTcpServer = field(repr=False)

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


async def start_modbus_tcp(
    devices: Mapping[int, DeviceModel],
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> ModbusSimHandle:
    """Serve ``devices`` (unit id -> model) over Modbus TCP on ``host:port`` (0: a free port)."""
    units = sim_devices(devices, clock=clock)
    units.append(
        SimDevice(
            CATCH_ALL_UNIT_ID,
            simdata=[SimData(0, count=0x10000, datatype=DataType.REGISTERS)],
            action=_no_such_unit,
        )
    )
    server = ModbusTcpServer(units, address=(host, port))
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:  # pymodbus: "Could not start listen, please check address."
        raise OSError(f"Modbus simulator cannot listen on {host}:{port}: {exc}") from exc
    sockets = getattr(server.transport, "sockets", None)
    if not sockets:
        await server.shutdown()  # type: ignore[no-untyped-call]
        raise OSError(f"Modbus simulator on {host}:{port}: no listening socket")
    bound_port = int(sockets[0].getsockname()[1])
    return ModbusSimHandle(host, bound_port, tuple(devices), server)


__all__ = [
    "LAUMAS_COMMANDS",
    "LAUMAS_TLU_POINTS",
    "SDM120_POINTS",
    "SDM630_POINTS",
    "SIWAREX_WP231_POINTS",
    "SIWAREX_WP_POINTS",
    "TH_PROBE_POINTS",
    "DeviceModel",
    "LaumasStatus",
    "LaumasTluModel",
    "ModbusSimHandle",
    "Sdm120Model",
    "Sdm630Model",
    "SiloCableModel",
    "SiwarexStatus",
    "SiwarexWpModel",
    "ThProbeModel",
    "WritableModel",
    "silo_cable_points",
    "sim_devices",
    "start_modbus_tcp",
]
