"""Toledo Continuous driver: an indicator (weighbridge terminal) that streams 18-byte frames without being asked.

A poll takes the next frame from the stream (checksum verified, status bits decoded by ``protocols.toledo``):
motion and out-of-range values are never stable, so never a weighing. Garbage between frames is skipped by the
framer (resync on STX) and a frame with a wrong checksum is a framing error. Commands are single bytes:
``print`` (``P``), ``tare`` (``T``), ``zero`` (``Z``), ``clear`` (``C``); ``weigh_now`` takes the next stable frame,
``poll_now`` the next frame. The indicator does not confirm a command byte: those answer ``sent``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from edge.bus.connection import LineConnection
from edge.bus.health import RecordSink
from edge.bus.scheduler import ExchangeError
from edge.devices.scale import MtSicsDriver
from protocols import toledo

_COMMANDS = {"print": b"P", "tare": b"T", "zero": b"Z", "clear": b"C"}


class ToledoDriver(MtSicsDriver):
    kind = "toledo-continuous"
    commands = frozenset({*_COMMANDS, "weigh_now", "poll_now"})

    def __init__(self, device_id: str, conn: LineConnection, sink: RecordSink, *, interval_s: float,
                 timeout_s: float, threshold: Decimal, empty_below: Decimal | None) -> None:
        super().__init__(device_id, conn, sink, interval_s=interval_s, timeout_s=timeout_s, threshold=threshold,
                         empty_below=empty_below)
        self.serial_number = None  # the stream carries no identification

    async def _frame(self) -> toledo.ToledoFrame:
        return toledo.decode_frame(await self.conn.transport.next_frame(timeout_s=self.timeout_s))

    async def poll(self, group: str) -> None:
        frame = await self._frame()
        self.last_reading = {"weight": str(frame.gross), "unit": frame.unit, "stable": frame.stable,
                             "motion": frame.motion, "out_of_range": frame.out_of_range}
        if frame.out_of_range:
            self.overloads += 1
            self.detector.overload()
            return
        done = self.detector.feed(value=frame.gross, stable=frame.stable, unit=frame.unit, raw=frame.raw)
        if done is not None:
            self._emit_weighing(done.gross, done.unit, done.raw, trigger="automatic")

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name in _COMMANDS:
            await self.conn.transport.write(_COMMANDS[name])
            return {"status": "sent"}
        if name == "weigh_now":
            frame = await self._frame()
            if frame.stable:
                record_id = self._emit_weighing(frame.gross, frame.unit, frame.raw, trigger="command",
                                                reference=args.get("reference"))
                return {"status": "done", "gross": str(frame.gross), "unit": frame.unit, "stable": True,
                        "record_id": record_id}
            why = "no stable weight: the scale is in motion" if frame.motion else "overload: out of range"
            return {"status": "refused", "error": why, "answer": "motion" if frame.motion else "out of range"}
        if name == "poll_now":
            return await self.poll_now()
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")
