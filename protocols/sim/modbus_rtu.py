"""Modbus RTU slaves on one serial line (or RTU framing over TCP), with faults to inject: pymodbus's own servers.

Several unit ids share one RS-485 line; ``start_modbus_rtu`` opens the line's device (one end of a
``protocols.sim.ptylink.PtyLink``, or a real port) with pymodbus's ``ModbusSerialServer`` and the RTU framer::

    agent ---- /dev/pts/B ==PtyLink (wire time)== /dev/pts/A ---- ModbusSerialServer (RTU framer)
                                                                    ├─ unit 1  model ─┐ one pymodbus SimDevice each,
    [ unit id ][ fc ][ data ... ][ crc lo ][ crc hi ]                ├─ unit 2  model  │ refreshed from the model on
                                                                    └─ unit 3  model ─┘ every read (modbus_devices)

How it behaves - like the slaves on a real bus, not like the TCP gateway of ``start_modbus_tcp``:

* A request for a unit id nobody has gets **no answer at all** (the master times out), as on RS-485; so does a unit
  in ``silent_units`` (a dead slave: it neither answers nor executes writes). Unit id 0 is a broadcast: every unit
  executes it (writes) and none answers. A request with a bad CRC is ignored (pymodbus's framer drops it).
* Faults for testing a master's error counting, settable at any time on ``handle.faults``: ``corrupt_crc_every=N``
  flips the CRC of every Nth answer, ``truncate_every=N`` sends only the first half of every Nth answer,
  ``wrong_unit_every=N`` sends every Nth answer from another unit id (with a valid CRC). Each counts the answers
  since it was last set; when several hit the same answer they apply in that order (wrong unit, CRC, truncation).
* A slave answers as soon as the request's last byte is in (pymodbus sizes RTU frames by their function code
  instead of waiting 3.5 characters of silence), so the time a request takes is the wire time of request and
  answer plus a fraction of a millisecond - the ``PtyLink`` supplies the wire time.

pymodbus 3.16's ``ModbusSerialServer`` works on a pseudo-terminal as it is (pyserial opens ``/dev/pts/N`` like any
tty, and the RTU framer copes with bytes arriving a few at a time), so it is used here rather than a server of our
own. The no-answer and fault behaviour use its documented trace hooks: ``trace_pdu`` drops a received request
for an absent or silent unit before it is executed (the request handler skips a request whose traced PDU is None -
pymodbus would otherwise answer from a fall-back unit, or log a traceback and answer 0x04), and ``trace_packet``
alters answers on their way out. ``tests/integration/test_rtu_sim.py`` pins this behaviour, so a pymodbus upgrade
that changes it fails there.

``start_modbus_rtu_over_tcp`` is the same bus behind a transparent serial-to-Ethernet converter: RTU frames, CRC
included, over a TCP connection (pymodbus ``ModbusTcpServer`` with the RTU framer; clients use
``AsyncModbusTcpClient(..., framer=FramerType.RTU)``). No answer for absent units there either.
"""

from __future__ import annotations

import logging
import termios
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, cast

from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from protocols.crc import append_crc
from protocols.sim.modbus_devices import MAX_UNIT_ID, DeviceModel, sim_devices

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
BROADCAST_UNIT_ID: Final = 0
_FAULTS: Final = ("wrong_unit_every", "corrupt_crc_every", "truncate_every")


class RtuFaults:
    """Faults the RTU server injects into its answers; every attribute may be changed while it runs."""

    def __init__(
        self,
        *,
        corrupt_crc_every: int = 0,
        truncate_every: int = 0,
        wrong_unit_every: int = 0,
        silent_units: Iterable[int] = (),
    ) -> None:
        self._every: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self.corrupt_crc_every = corrupt_crc_every
        self.truncate_every = truncate_every
        self.wrong_unit_every = wrong_unit_every
        self.silent_units: set[int] = set(silent_units)
        self.injected = 0  # answers altered so far

    def _set(self, name: str, every: int) -> None:
        if every < 0:
            raise ValueError(f"{name} must be >= 0, got {every}")
        self._every[name], self._count[name] = every, 0

    @property
    def corrupt_crc_every(self) -> int:
        return self._every["corrupt_crc_every"]

    @corrupt_crc_every.setter
    def corrupt_crc_every(self, every: int) -> None:
        self._set("corrupt_crc_every", every)

    @property
    def truncate_every(self) -> int:
        return self._every["truncate_every"]

    @truncate_every.setter
    def truncate_every(self, every: int) -> None:
        self._set("truncate_every", every)

    @property
    def wrong_unit_every(self) -> int:
        return self._every["wrong_unit_every"]

    @wrong_unit_every.setter
    def wrong_unit_every(self, every: int) -> None:
        self._set("wrong_unit_every", every)

    def _due(self, name: str) -> bool:
        every = self._every[name]
        if not every:
            return False
        self._count[name] += 1
        return self._count[name] % every == 0

    def apply(self, frame: bytes) -> bytes:
        """The answer ``frame`` (unit id ... CRC) as it goes on the wire after the faults due now."""
        out = frame
        if self._due("wrong_unit_every"):
            out = append_crc(bytes((out[0] % MAX_UNIT_ID + 1,)) + out[1:-2])
        if self._due("corrupt_crc_every"):
            out = out[:-1] + bytes((out[-1] ^ 0xFF,))
        if self._due("truncate_every"):
            out = out[: max(1, len(out) // 2)]
        if out != frame:
            self.injected += 1
            log.debug("Modbus RTU simulator: answer %s sent as %s", frame.hex(" "), out.hex(" "))
        return out


@dataclass
class _Bus:
    """The trace hooks that make pymodbus's server behave like slaves on one RS-485 line."""

    unit_ids: frozenset[int]
    faults: RtuFaults
    requests: int = 0
    answers: int = 0
    ignored: int = 0

    def trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        self.requests += 1
        unit = pdu.dev_id
        if unit != BROADCAST_UNIT_ID and (unit not in self.unit_ids or unit in self.faults.silent_units):
            self.ignored += 1
            log.debug("Modbus RTU simulator: no answer from unit %d (%s)", unit,
                      "silent" if unit in self.unit_ids else "absent")  # fmt: skip
            return None  # the request handler skips it: nothing executed, nothing sent
        return pdu

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        self.answers += 1
        return self.faults.apply(data)

    def pdu_hook(self) -> Callable[[bool, ModbusPDU], ModbusPDU]:
        # pymodbus types the hook as returning a PDU; None on receive is how a request is dropped (module docstring)
        return cast(Callable[[bool, ModbusPDU], ModbusPDU], self.trace_pdu)


@dataclass
class ModbusRtuHandle:
    """A running RTU bus: ``faults`` may be changed while it runs; ``stop()`` closes the port or listener."""

    unit_ids: tuple[int, ...]
    faults: RtuFaults
    port_path: str | None = None
    host: str | None = None
    port: int | None = None
    _bus: _Bus = field(repr=False, default_factory=lambda: _Bus(frozenset(), RtuFaults()))
    _server: ModbusSerialServer | ModbusTcpServer | None = field(repr=False, default=None)

    @property
    def requests(self) -> int:
        """Requests received with a good CRC (for any unit id)."""
        return self._bus.requests

    @property
    def answers(self) -> int:
        """Answers sent (faulty ones included)."""
        return self._bus.answers

    @property
    def ignored(self) -> int:
        """Requests for absent or silent units, left unanswered."""
        return self._bus.ignored

    @property
    def url(self) -> str:
        if self.port_path is not None:
            return f"serial://{self.port_path}"
        return f"tcp://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Close the serial port (or the listener and its connections)."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
            self._server = None


async def start_modbus_rtu(
    devices: Mapping[int, DeviceModel],
    *,
    port_path: str,
    baudrate: int,
    parity: str = "N",
    stopbits: int = 1,
    bytesize: int = 8,
    clock: Callable[[], float] = time.monotonic,
    corrupt_crc_every: int = 0,
    truncate_every: int = 0,
    wrong_unit_every: int = 0,
    silent_units: Iterable[int] = (),
) -> ModbusRtuHandle:
    """Serve ``devices`` (unit id -> model) as RTU slaves on the serial device ``port_path``.

    Raises ``ValueError`` for bad unit ids or fault settings and ``OSError`` if the port cannot be opened.
    """
    units = sim_devices(devices, clock=clock)
    faults = RtuFaults(
        corrupt_crc_every=corrupt_crc_every,
        truncate_every=truncate_every,
        wrong_unit_every=wrong_unit_every,
        silent_units=silent_units,
    )
    bus = _Bus(frozenset(devices), faults)
    server = ModbusSerialServer(
        units,
        framer=FramerType.RTU,
        port=port_path,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
        broadcast_enable=True,
        trace_packet=bus.trace_packet,
        trace_pdu=bus.pdu_hook(),
    )
    try:
        await server.serve_forever(background=True)
    except (RuntimeError, termios.error) as exc:  # pymodbus: "Could not start listen, please check address."
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
        hint = " (a pseudo-terminal cannot take parity E: see protocols.sim.ptylink)" if parity == "E" else ""
        raise OSError(f"Modbus RTU simulator cannot open {port_path}: {exc}{hint}") from exc
    log.info("Modbus RTU simulator on %s (%d baud, %s%s): units %s", port_path, baudrate, parity, stopbits,
             sorted(devices))  # fmt: skip
    return ModbusRtuHandle(tuple(devices), faults, port_path=port_path, _bus=bus, _server=server)


async def start_modbus_rtu_over_tcp(
    devices: Mapping[int, DeviceModel],
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    clock: Callable[[], float] = time.monotonic,
    corrupt_crc_every: int = 0,
    truncate_every: int = 0,
    wrong_unit_every: int = 0,
    silent_units: Iterable[int] = (),
) -> ModbusRtuHandle:
    """Serve ``devices`` with RTU framing over TCP on ``host:port`` (0: a free port, see ``handle.port``)."""
    units = sim_devices(devices, clock=clock)
    faults = RtuFaults(
        corrupt_crc_every=corrupt_crc_every,
        truncate_every=truncate_every,
        wrong_unit_every=wrong_unit_every,
        silent_units=silent_units,
    )
    bus = _Bus(frozenset(devices), faults)
    server = ModbusTcpServer(
        units,
        framer=FramerType.RTU,
        address=(host, port),
        broadcast_enable=True,
        trace_packet=bus.trace_packet,
        trace_pdu=bus.pdu_hook(),
    )
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        raise OSError(f"Modbus RTU-over-TCP simulator cannot listen on {host}:{port}: {exc}") from exc
    sockets = getattr(server.transport, "sockets", None)
    if not sockets:
        await server.shutdown()  # type: ignore[no-untyped-call]
        raise OSError(f"Modbus RTU-over-TCP simulator on {host}:{port}: no listening socket")
    bound_port = int(sockets[0].getsockname()[1])
    return ModbusRtuHandle(tuple(devices), faults, host=host, port=bound_port, _bus=bus, _server=server)


__all__ = ["ModbusRtuHandle", "RtuFaults", "start_modbus_rtu", "start_modbus_rtu_over_tcp"]
