"""Toledo Continuous driver: an indicator (weighbridge terminal) that streams 18-byte frames without being asked.

A poll takes the next frame from the stream (checksum verified, status bits decoded by ``protocols.toledo``):
motion and out-of-range values are never stable, so never a weighing. Garbage between frames is skipped by the
framer (resync on STX) and a frame with a wrong checksum is a framing error. Commands are single bytes:
``print`` (``P``), ``tare`` (``T``), ``zero`` (``Z``), ``clear`` (``C``); ``weigh_now`` takes the next stable frame,
``poll_now`` the next frame. The indicator does not confirm a command byte: those answer ``sent``; it takes no
preset tare.

What a weighing holds (values exactly as the frame carries them, devices.md §4): the weight field is the displayed
weight - the net when SWB bit 0 is set, else the gross - and the tare field the tare::

    gross frame, tare field 0       → gross
    gross frame, tare field t > 0   → gross, tare           (the display shows gross while a tare is set)
    net frame                       → net, tare             (no gross: net + tare was not delivered)

The protocol does not say whether a tare was keyed in (preset) or weighed: ``tare_preset`` stays out. Toledo
Continuous carries no alibi id either, and no serial number.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from edge.bus.connection import LineConnection
from edge.bus.scheduler import ExchangeError
from edge.bus.sink import RecordSink
from edge.devices.scale import MtSicsDriver
from protocols import toledo
from sync.records.weighing import TRIGGER_AUTO, TRIGGER_COMMAND, WeighingValues

_COMMANDS = {"print": b"P", "tare": b"T", "zero": b"Z", "clear": b"C"}


class ToledoDriver(MtSicsDriver):
    kind = "toledo-continuous"
    commands = frozenset({*_COMMANDS, "weigh_now", "poll_now"})

    def __init__(self, device_id: str, conn: LineConnection, sink: RecordSink, *, interval_s: float,
                 timeout_s: float, threshold: Decimal, empty_below: Decimal | None, auto: bool = True) -> None:
        super().__init__(device_id, conn, sink, interval_s=interval_s, timeout_s=timeout_s, threshold=threshold,
                         empty_below=empty_below, auto=auto)
        self.serial_number = None  # the stream carries no identification

    async def _frame(self) -> toledo.ToledoFrame:
        return toledo.decode_frame(await self.conn.transport.next_frame(timeout_s=self.timeout_s))

    async def poll(self, group: str) -> None:
        frame = await self._frame()
        self.last_reading = {"weight": str(frame.gross), "unit": frame.unit, "stable": frame.stable,
                             "motion": frame.motion, "out_of_range": frame.out_of_range}
        if frame.out_of_range:
            self.overloads += 1
            if self.auto:  # command mode: a refused weigh command says it (no event)
                self.detector.overload()
            return
        if not self.auto:
            return
        done = self.detector.feed(value=frame.gross, stable=frame.stable, unit=frame.unit, raw=frame.raw)
        if done is not None:
            self._emit(delivered(frame), trigger=TRIGGER_AUTO)

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == "tare" and args.get("preset_tare") is not None:
            raise ExchangeError("command", f"device {self.device_id} (Toledo Continuous) has no preset tare")
        if name in _COMMANDS:
            await self.conn.transport.write(_COMMANDS[name])
            return {"status": "sent"}
        if name == "weigh_now":
            frame = await self._frame()
            if frame.stable:
                values = delivered(frame)
                record_id = self._emit(values, trigger=TRIGGER_COMMAND, args=args)
                return {"status": "done", **values.as_dict(), "record_id": record_id}
            why = "no stable weight: the scale is in motion" if frame.motion else "overload: out of range"
            return {"status": "refused", "error": why, "answer": "motion" if frame.motion else "out of range"}
        if name == "poll_now":
            return await self.poll_now()
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")


def delivered(frame: toledo.ToledoFrame) -> WeighingValues:
    """The values a stable frame delivers (see the module docstring); ``raw`` is the frame in hex."""
    raw = frame.raw.hex(" ")
    tare = str(frame.tare) if frame.is_net or frame.tare != 0 else None
    if frame.is_net:
        return WeighingValues(unit=frame.unit, raw=raw, net=str(frame.weight), tare=tare)
    return WeighingValues(unit=frame.unit, raw=raw, gross=str(frame.weight), tare=tare)
