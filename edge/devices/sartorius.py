"""Sartorius SBI scale driver (16- or 22-character print format) on a serial line or serial device server.

Each poll sends ``ESC P`` (print) and reads one line: a stable weight carries a unit, an unstable one none;
``High`` / ``Low`` is overload / underload; ``Err nnn`` is a device error. In the 22-character form a tared
print gives several lines (G#, T / PT2, N): the first (gross) is taken. The serial number is read with
``ESC x2_`` after each (re)connect. Commands: ``zero`` (``ESC V``), ``tare`` (``ESC U``), ``weigh_now``
(a print that counts only when stable), ``poll_now`` (one print outside the schedule). SBI does not confirm zero
and tare: they answer ``sent``.
"""

from __future__ import annotations

from typing import Any

from edge.bus.scheduler import ExchangeError
from edge.devices.scale import MtSicsDriver
from protocols import sartorius


class SbiDriver(MtSicsDriver):
    kind = "sartorius-sbi"
    commands = frozenset({"zero", "tare", "weigh_now", "poll_now"})

    async def _line(self, command: bytes) -> bytes:
        return await self.conn.transport.request(command, timeout_s=self.timeout_s)

    async def _identify(self) -> None:
        if self._identified_on == self.conn.transport.generation:
            return
        self.serial_number = sartorius.parse_sbi_text(await self._line(sartorius.SERIAL))
        self._identified_on = self.conn.transport.generation

    async def _print(self) -> sartorius.SbiWeight | sartorius.SbiStatus:
        return sartorius.parse_sbi(await self._line(sartorius.PRINT))

    async def poll(self, group: str) -> None:
        await self._identify()
        reading = await self._print()
        answer = reading.raw.decode("ascii", "replace").rstrip("\r\n")
        if isinstance(reading, sartorius.SbiStatus):
            self.overloads += 1
            self.detector.overload()
            self.last_reading = {"out_of_range": True, "stable": False, "answer": answer}
            return
        self.last_reading = {"weight": str(reading.value), "unit": reading.unit or None,
                             "stable": reading.stable, "answer": answer}
        done = self.detector.feed(value=reading.value, stable=reading.stable, unit=reading.unit or "",
                                  raw=reading.raw)
        if done is not None:
            self._emit_weighing(done.gross, done.unit, done.raw, trigger="automatic")

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        await self._identify()
        if name in ("zero", "tare"):
            await self.conn.transport.write(sartorius.ZERO if name == "zero" else sartorius.TARE)
            return {"status": "sent"}
        if name == "weigh_now":
            reading = await self._print()
            if isinstance(reading, sartorius.SbiWeight) and reading.stable and reading.unit:
                record_id = self._emit_weighing(reading.value, reading.unit, reading.raw, trigger="command",
                                                reference=args.get("reference"))
                return {"status": "done", "gross": str(reading.value), "unit": reading.unit, "stable": True,
                        "record_id": record_id}
            answer = reading.raw.decode("ascii", "replace").strip()
            why = "overload or underload" if isinstance(reading, sartorius.SbiStatus) else "no stable weight"
            return {"status": "refused", "error": f"{why}: the scale printed {answer!r}", "answer": answer}
        if name == "poll_now":
            return await self.poll_now()
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")
