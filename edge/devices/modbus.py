"""Modbus driver: a register-mapped device on a bus (RTU line, TCP gateway or device, RTU over TCP).

Each poll group's points are planned once into as few reads as the device allows (``max_gap``, ``max_registers``,
``one_request_per_point``). A poll reads every block of the group; values are reported on change — a numeric
point only when it moved by at least its ``deadband`` since the last report, and every point at least every
``report_every_s`` — as one ``reading`` record; ``event`` points (status bits) report every change as a
``point_event`` health record. A Modbus exception is a device error; silence, a bad CRC, a truncated frame or an
answer from another unit id are classified from the raw bytes and never turned into a value.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException

from edge.bus.connection import ModbusConnection
from edge.bus.health import DeviceHealth
from edge.bus.scheduler import Driver, ExchangeError
from edge.bus.sink import RecordSink
from edge.errors import DeviceIOError
from edge.store.outbox import NewRecord
from protocols.errors import FrameError
from protocols.modbus import Point, ReadBlock, decode_block, plan_reads, write_request
from sync.records import POINT_EVENT, READING, PointEventPayload, ReadingPayload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModbusOptions:
    unit_id: int = 1
    max_gap: int = 8
    max_registers: int = 100
    one_request_per_point: bool = False
    close_after_poll: bool = False
    pause_between_requests_s: float = 0.0
    retries: int = 1
    retry_backoff_s: float = 0.05
    report_every_s: float = 300.0


class ModbusDriver(Driver):
    commands = frozenset({"poll_now", "write"})

    def __init__(self, device_id: str, kind: str, conn: ModbusConnection, points: Sequence[Point],
                 groups: dict[str, float], sink: RecordSink, *, options: ModbusOptions,
                 writable: Sequence[Point] = ()) -> None:
        self.device_id = device_id
        self.kind = kind
        self.conn = conn
        self.sink = sink
        self.options = options
        self.close_after_poll = options.close_after_poll
        self.health = DeviceHealth(device_id, kind, sink)
        self.points = {p.name: p for p in points}
        self.writable = {p.name: p for p in writable}
        self._groups = dict(groups)
        self.blocks: dict[str, list[ReadBlock]] = {}
        for group in self._groups:
            members = [p for p in points if getattr(p, "poll_group", "default") == group]
            self.blocks[group] = plan_reads(members, max_gap=options.max_gap, max_count=options.max_registers,
                                            **({"one_request_per_point": True} if options.one_request_per_point
                                               else {}))
        self._last_value: dict[str, Any] = {}
        self._last_report: dict[str, float] = {}
        self.last_values: dict[str, Any] = {}  # every point the last poll of each group read

    @property
    def groups(self) -> dict[str, float]:
        return {g: iv for g, iv in self._groups.items() if self.blocks.get(g)}

    def poll_timeout_s(self) -> float:
        per_request = self.conn.timeout_s * (1 + self.options.retries) + self.options.pause_between_requests_s
        return max(per_request * max((len(b) for b in self.blocks.values()), default=1), 1.0) + 1.0

    async def _read(self, block: ReadBlock) -> list[int] | list[bool]:
        client = self.conn.client
        if client is None:
            raise DeviceIOError(self.device_id, "bus not connected")
        read = {
            "holding": client.read_holding_registers, "input": client.read_input_registers,
            "coil": client.read_coils, "discrete": client.read_discrete_inputs,
        }[block.register_type]
        unit = self.options.unit_id
        last: ExchangeError | None = None
        for attempt in range(1 + self.options.retries):
            if attempt:
                await asyncio.sleep(self.options.retry_backoff_s * 2 ** (attempt - 1))
            self.conn.begin_request()
            try:
                rr = await read(block.address, count=block.count, device_id=unit)
            except ConnectionException as exc:
                raise DeviceIOError(self.device_id, f"connection lost: {exc}") from exc
            except ModbusException as exc:
                kind, reason = self.conn.classify_silence(unit)
                if last is not None:
                    self.health.glitch(last.kind, last.reason, frames=self.conn.last_frames())
                last = ExchangeError(kind, f"{reason} (unit {unit}, {block.register_type} {block.address}"
                                           f"+{block.count})")
                if not self.conn.is_open:
                    raise DeviceIOError(self.device_id, f"connection lost: {exc}") from exc
                continue
            if rr.isError():
                code = getattr(rr, "exception_code", 0)
                raise ExchangeError(
                    f"exception_{code}",
                    f"Modbus exception {code} reading {block.register_type} registers {block.address}.."
                    f"{block.address + block.count - 1} (unit {unit})")
            if last is not None:  # an earlier attempt failed, this one made it good
                self.health.glitch(last.kind, last.reason, frames=self.conn.last_frames())
            return rr.bits[: block.count] if block.register_type in ("coil", "discrete") else rr.registers
        assert last is not None
        raise last

    async def poll(self, group: str) -> None:
        values: dict[str, Any] = {}
        for i, block in enumerate(self.blocks[group]):
            if i and self.options.pause_between_requests_s:
                await asyncio.sleep(self.options.pause_between_requests_s)
            data = await self._read(block)
            try:
                values.update(decode_block(block, data))  # type: ignore[arg-type]
            except FrameError as exc:
                raise ExchangeError("framing", str(exc)) from exc
        self.last_values.update(values)
        self._report(values)

    def _report(self, values: dict[str, Any]) -> None:
        now = time.monotonic()
        metrics: dict[str, Any] = {}
        events = []
        for name, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                # a meter's "no value" (float NaN / ±inf): JSON has no such number and central refuses it, so it is
                # left out rather than stalling the stream
                continue
            point = self.points[name]
            last = self._last_value.get(name)
            if getattr(point, "kind", "metric") == "event" or isinstance(value, str):
                if last is None or value != last:
                    events.append(NewRecord(kind=POINT_EVENT, device=self.device_id, data=PointEventPayload(
                        point=name, value=value, previous=last, device_kind=self.kind).to_payload()))
                self._last_value[name] = value
                continue
            deadband = getattr(point, "deadband", None)
            stale = now - self._last_report.get(name, -1e18) >= self.options.report_every_s
            moved = last is None or deadband is None or not isinstance(value, int | float) or \
                abs(value - last) >= deadband
            if moved or stale:
                metrics[name] = float(value) if isinstance(value, bool) else value
                self._last_value[name] = value
                self._last_report[name] = now
        if metrics:
            units = {n: self.points[n].unit for n in metrics if self.points[n].unit}
            self.sink.emit("readings", [NewRecord(kind=READING, device=self.device_id,
                                                  data=ReadingPayload(values=metrics, units=units).to_payload())])
        if events:
            self.sink.emit("health", events)

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == "poll_now":
            values: dict[str, Any] = {}
            for group in self.groups:
                await self.poll(group)
                values.update({p.name: self.last_values[p.name] for block in self.blocks[group]
                               for p in block.points if p.name in self.last_values})
            units = {n: self.points[n].unit for n in values if self.points[n].unit}
            return {"status": "done", "polled": sorted(self.groups), "values": values, "units": units}
        if name == "write":
            return await self._write(args)
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")

    async def _write(self, args: dict[str, Any]) -> dict[str, Any]:
        """``write`` {point, value}: FC05 / FC06 / FC16 (or FC22 for part of a register) to a writable point."""
        point = self.writable.get(str(args.get("point")))
        if point is None:
            raise ExchangeError("command", f"device {self.device_id}: {args.get('point')!r} is not a writable point "
                                           f"(writable: {', '.join(sorted(self.writable)) or 'none'})")
        try:
            fc, address, payload = write_request(point, args.get("value"))  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise ExchangeError("command", f"device {self.device_id}: {exc}") from exc
        client = self.conn.client
        if client is None:
            raise DeviceIOError(self.device_id, "bus not connected")
        unit = self.options.unit_id
        self.conn.begin_request()
        try:
            if fc == 5:
                rr = await client.write_coil(address, bool(payload), device_id=unit)
            elif fc == 6:
                rr = await client.write_register(address, int(payload), device_id=unit)  # type: ignore[arg-type]
            elif fc == 15:
                rr = await client.write_coils(address, list(payload), device_id=unit)  # type: ignore[arg-type]
            elif fc == 16:
                rr = await client.write_registers(address, list(payload), device_id=unit)  # type: ignore[arg-type]
            else:  # 22
                and_mask, or_mask = payload  # type: ignore[misc]
                rr = await client.mask_write_register(address=address, and_mask=and_mask, or_mask=or_mask,
                                                      device_id=unit)
        except ConnectionException as exc:
            raise DeviceIOError(self.device_id, f"connection lost: {exc}") from exc
        except ModbusException as exc:
            kind, reason = self.conn.classify_silence(unit)
            raise ExchangeError(kind, f"{reason} (write {point.name}, FC{fc:02d})") from exc
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            raise ExchangeError(f"exception_{code}", f"Modbus exception {code} writing {point.name} (FC{fc:02d}, "
                                                     f"unit {unit})")
        log.info("device %s: wrote %s = %r (FC%02d)", self.device_id, point.name, args.get("value"), fc,
                 extra={"device": self.device_id})
        return {"status": "done", "point": point.name, "function_code": fc}


__all__ = ["DeviceHealth", "ModbusDriver", "ModbusOptions"]
