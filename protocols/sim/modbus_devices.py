"""Modbus device simulators on a real pymodbus TCP server: an Eastron SDM630 meter and a T/H probe.

A model turns a time into plausible values for the points of its map (``protocols.modbus_maps``); the server
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
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus_maps import SDM630_POINTS, TH_PROBE_POINTS, Point, encode_point

DEFAULT_HOST: Final = "127.0.0.1"
MIN_UNIT_ID: Final = 1
MAX_UNIT_ID: Final = 247
CATCH_ALL_UNIT_ID: Final = 0

_FUNCTION_REGISTER_TYPE: Final[dict[int, str]] = {3: "holding", 6: "holding", 16: "holding", 22: "holding", 4: "input"}


class DeviceModel(Protocol):
    """What ``start_modbus_tcp`` needs from a simulated device."""

    @property
    def points(self) -> tuple[Point, ...]: ...

    def sample(self, now_s: float) -> dict[str, float]:
        """Values of every point at monotonic time ``now_s`` (seconds); called with non-decreasing times."""
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
            base + 2.5 * _wave(now_s, 311.0, float(k)) + noise(-0.2, 0.2)
            for k, base in enumerate(self.BASE_CURRENTS_A)
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


class _UnitRuntime:
    """The registers of one unit id: access check and refresh, as a pymodbus ``SimDevice`` action."""

    def __init__(self, unit_id: int, model: DeviceModel, clock: Callable[[], float]) -> None:
        self.unit_id = unit_id
        self.model = model
        self.clock = clock
        self.addresses: dict[str, set[int]] = {"input": set(), "holding": set()}
        for point in model.points:
            self.addresses[point.register_type].update(range(point.address, point.address + point.count))
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
        if set_values is None:
            for point, regs in self.registers().items():
                offset = point.address - start_address
                registers[offset : offset + point.count] = regs
        return None


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
    if not devices:
        raise ValueError("start_modbus_tcp: no devices given")
    for unit_id in devices:
        if not MIN_UNIT_ID <= unit_id <= MAX_UNIT_ID:
            raise ValueError(f"start_modbus_tcp: unit id {unit_id} outside {MIN_UNIT_ID}..{MAX_UNIT_ID}")
    sim_devices = [_UnitRuntime(unit_id, model, clock).sim_device() for unit_id, model in devices.items()]
    sim_devices.append(
        SimDevice(
            CATCH_ALL_UNIT_ID,
            simdata=[SimData(0, count=0x10000, datatype=DataType.REGISTERS)],
            action=_no_such_unit,
        )
    )
    server = ModbusTcpServer(sim_devices, address=(host, port))
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
    "DeviceModel",
    "ModbusSimHandle",
    "Sdm630Model",
    "ThProbeModel",
    "start_modbus_tcp",
]
