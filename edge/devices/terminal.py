"""Weighing terminals on Modbus (Laumas TLU / W100, Siemens SIWAREX WP2xx): a Modbus device that also weighs.

The device is polled like any profile device (``edge.devices.modbus``: readings, status-bit events); after each poll
of the group that holds ``gross`` the driver feeds the weighing detector (automatic mode, ``weighing.auto``) from
the profile's points by name::

    gross, stable            required: the weight and the standstill bit
    net, tare                the terminal's net / tare, when it has them
    gross_negative, net_negative                 sign bits (Laumas: the registers carry no sign)
    net_displayed | tared                        a tare is active
    overload, gross_over_110_percent, gross_out_of_display, out_of_range    never a weighing

Commands: ``zero`` and ``tare`` write the terminal's command codes (it executes them once stable, and confirms
nothing but the write: they answer ``sent``), ``weigh_now`` reads the weight now and takes a weighing if it is
stable and in range (else ``refused``), ``poll_now`` and ``write`` as for any Modbus device. No preset tare.

What a weighing holds (devices.md §4: values as delivered, never recomputed)::

    laumas-tlu           gross (40008/09), and net (40010/11) when a tare is active; integer display counts with
                         the sign from the status word, as the registers deliver them. No tare register, no alibi
                         memory: tare and instrument_alibi stay out. raw: the registers read, in hex.
    siemens-siwarex-wp   the legal log of the WP231 (``protocols.siwarex``): the driver writes the ``log`` command,
                         selects the newest protocol (DR45 = 0) and reads DR46: G and the gross, or N, the net, the
                         tare and its id (``pT``: preset) - the strings the module logged, not the DR30 floats -
                         and ``instrument_alibi`` = the protocol ID; its CRC16 is checked and kept in raw.

``scale_serial`` is the value of a string point named ``serial_number`` when the profile has one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from pymodbus.exceptions import ConnectionException, ModbusException

from edge.bus.connection import ModbusConnection
from edge.bus.scheduler import ExchangeError
from edge.bus.sink import RecordSink
from edge.devices.modbus import ModbusDriver, ModbusOptions
from edge.devices.weighing import Phase, WeighingDetector, weighing_record
from edge.errors import DeviceIOError
from protocols import siwarex
from protocols.errors import FrameError
from protocols.modbus import Point, ReadBlock, decode_block, plan_reads
from sync.records.weighing import TRIGGER_AUTO, TRIGGER_COMMAND, WeighingValues

log = logging.getLogger(__name__)

OVERLOAD_POINTS: Final = ("overload", "gross_over_110_percent", "gross_out_of_display", "out_of_range")
TARED_POINTS: Final = ("net_displayed", "tared")
MODBUS_DEVICE_BUSY: Final = 6


@dataclass(frozen=True)
class TerminalSpec:
    """What the register map alone does not say: where commands go, their codes, and the legal log."""

    command_address: int
    command_codes: Mapping[str, int]  # zero, tare
    alibi_log: bool = False  # SIWAREX WP231: DR45 / DR46
    log_code: int | None = None


TERMINALS: Final[dict[str, TerminalSpec]] = {
    # command codes of floorgate's simulators (protocols/sim/weighing_terminals.py): check a real device's manual
    "laumas-tlu": TerminalSpec(command_address=5, command_codes={"zero": 1, "tare": 2}),
    "siemens-siwarex-wp": TerminalSpec(
        command_address=siwarex.COMMAND_REGISTER,
        command_codes={"zero": siwarex.COMMANDS["zero"], "tare": siwarex.COMMANDS["tare"]},
        alibi_log=True, log_code=siwarex.COMMANDS["log"]),
}
_LOG_BLOCK: Final = plan_reads(siwarex.LOG_POINTS, max_gap=32)


def is_weighing_terminal(profile: str, points: Sequence[Point]) -> bool:
    names = {p.name for p in points}
    return profile in TERMINALS and {"gross", "stable"} <= names


class WeighingTerminalDriver(ModbusDriver):
    commands = frozenset({"poll_now", "write", "zero", "tare", "weigh_now"})

    def __init__(self, device_id: str, kind: str, conn: ModbusConnection, points: Sequence[Point],
                 groups: dict[str, float], sink: RecordSink, *, options: ModbusOptions, writable: Sequence[Point],
                 spec: TerminalSpec, threshold: Decimal, empty_below: Decimal | None, auto: bool = True) -> None:
        super().__init__(device_id, kind, conn, points, groups, sink, options=options, writable=writable)
        self.spec = spec
        self.auto = auto
        self.detector = WeighingDetector(threshold=threshold, empty_below=empty_below, on_event=self.health.event)
        self.weight_group = next(p.poll_group for p in points if p.name == "gross")
        self.weighings = 0
        self._raw: dict[int, list[int]] = {}  # registers of the last read of each block, by start address

    async def _read(self, block: ReadBlock) -> list[int] | list[bool]:
        data = await super()._read(block)
        self._raw[block.address] = [int(x) for x in data]
        return data

    async def poll(self, group: str) -> None:
        await super().poll(group)
        if group != self.weight_group or not self.auto:
            return
        weight, stable, overload = self._weight()
        if overload:
            self.detector.overload()
            return
        if self.detector.feed(value=weight, stable=stable, unit=self.points["gross"].unit, raw=b"") is None:
            return
        try:
            self._emit(await self._delivered(), trigger=TRIGGER_AUTO)
        except _NotTaken as exc:  # it moved between the poll and the log: try again at the next stable poll
            log.info("device %s: weighing not taken (%s); waiting for the next stable value", self.device_id, exc)
            self.detector.phase = Phase.MOVING

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name in ("zero", "tare"):
            if args.get("preset_tare") is not None:
                raise ExchangeError("command", f"device {self.device_id} ({self.kind}) takes no preset tare")
            code = self.spec.command_codes[name]
            refused = await self._write_registers(self.spec.command_address, [code])
            if refused:
                return {"status": "refused", "error": f"the terminal refused {name}: Modbus exception {refused}",
                        "answer": f"exception {refused}"}
            return {"status": "sent", "command_code": code}
        if name == "weigh_now":
            await super().poll(self.weight_group)  # fresh values; not fed to the detector
            weight, stable, overload = self._weight()
            if overload:
                return {"status": "refused", "error": "overload: the terminal reports out of range",
                        "answer": "out of range"}
            if not stable:
                return {"status": "refused", "error": "no stable weight: the terminal reports motion",
                        "answer": f"{weight} {self.points['gross'].unit} (motion)"}
            try:
                values = await self._delivered()
            except _NotTaken as exc:
                return {"status": "refused", "error": str(exc), "answer": exc.answer}
            record_id = self._emit(values, trigger=TRIGGER_COMMAND, args=args)
            return {"status": "done", **values.as_dict(), "answer": values.raw, "record_id": record_id}
        return await super().command(name, args)

    # -- values ----------------------------------------------------------------------------------------------------
    def _flag(self, *names: str) -> bool:
        return any(self.last_values.get(n) is True for n in names)

    def _signed(self, name: str) -> Decimal:
        value = self.last_values[name]
        number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
        return -number if self._flag(f"{name}_negative") and number > 0 else number

    def _weight(self) -> tuple[Decimal, bool, bool]:
        """(gross, stable, overload) from the last poll."""
        return self._signed("gross"), self._flag("stable"), self._flag(*OVERLOAD_POINTS)

    async def _delivered(self) -> WeighingValues:
        if self.spec.alibi_log:
            return await self._from_alibi_log()
        unit = self.points["gross"].unit
        raw = " | ".join(f"{self.points['gross'].register_type} {start}: " + " ".join(f"{r:04X}" for r in regs)
                         for start, regs in sorted(self._raw.items()))
        gross = str(self._signed("gross"))  # Laumas: integer display counts, as the registers deliver them
        if self._flag(*TARED_POINTS) and "net" in self.points:
            return WeighingValues(unit=unit, raw=raw, gross=gross, net=str(self._signed("net")))
        return WeighingValues(unit=unit, raw=raw, gross=gross)

    async def _from_alibi_log(self) -> WeighingValues:
        """Log the weight on the WP231 and read the log back: the legal values and the protocol ID."""
        assert self.spec.log_code is not None
        refused = await self._write_registers(self.spec.command_address, [self.spec.log_code])
        if refused == MODBUS_DEVICE_BUSY:
            raise _NotTaken("no stable weight: the terminal did not log it (busy: motion or out of range)",
                            answer=f"exception {refused}")
        if refused:
            raise ExchangeError(f"exception_{refused}", f"Modbus exception {refused} to the log command")
        refused = await self._write_registers(siwarex.REQUEST_ID, [0, 0])  # DR45 = 0: DR46 shows the newest log
        if refused:
            raise ExchangeError(f"exception_{refused}", f"Modbus exception {refused} selecting the newest log")
        (block,) = _LOG_BLOCK
        try:
            values = decode_block(block, await self._read(block))
            entry = siwarex.parse_log(str(values["log"]))
        except FrameError as exc:
            raise ExchangeError("framing", str(exc)) from exc
        text, crc = str(values["log"]), str(values["log_checksum"])
        if siwarex.checksum(text) != crc:
            raise ExchangeError("framing", f"SIWAREX log {values['log_selected_id']}: checksum {crc!r}, expected "
                                           f"{siwarex.checksum(text)!r} for {text!r}")
        raw = f"DR46 protocol {values['log_selected_id']}: {text} CRC {crc}"
        common: dict[str, Any] = {"unit": entry.unit, "raw": raw, "instrument_alibi": str(values["log_selected_id"])}
        if entry.kind == "gross":
            return WeighingValues(gross=entry.weight, tare=entry.tare, **common)
        return WeighingValues(net=entry.weight, tare=entry.tare,
                              tare_preset=None if entry.tare_kind is None else entry.tare_kind == "preset_tare",
                              **common)

    def _emit(self, values: WeighingValues, *, trigger: str, args: Mapping[str, Any] | None = None) -> str:
        self.weighings += 1
        serial = self.last_values.get("serial_number")
        record = weighing_record(self.device_id, values, scale_serial=str(serial) if serial else None,
                                 trigger=trigger, args=args)
        self.sink.emit("business", [record])
        log.info("device %s: weighing %s %s (%s)", self.device_id, values.gross or f"net {values.net}", values.unit,
                 trigger, extra={"device": self.device_id})
        return record.record_id

    async def _write_registers(self, address: int, values: list[int]) -> int:
        """FC06 (one register) / FC16; 0 when done, else the Modbus exception code the device answered."""
        client = self.conn.client
        if client is None:
            raise DeviceIOError(self.device_id, "bus not connected")
        unit = self.options.unit_id
        self.conn.begin_request()
        try:
            if len(values) == 1:
                rr = await client.write_register(address, values[0], device_id=unit)
            else:
                rr = await client.write_registers(address, values, device_id=unit)
        except ConnectionException as exc:
            raise DeviceIOError(self.device_id, f"connection lost: {exc}") from exc
        except ModbusException as exc:
            kind, reason = self.conn.classify_silence(unit)
            raise ExchangeError(kind, f"{reason} (write {address})") from exc
        return int(getattr(rr, "exception_code", 0) or 0) if rr.isError() else 0


class _NotTaken(Exception):
    def __init__(self, reason: str, *, answer: str) -> None:
        super().__init__(reason)
        self.answer = answer


__all__ = ["TERMINALS", "TerminalSpec", "WeighingTerminalDriver", "is_weighing_terminal"]
