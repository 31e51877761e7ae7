"""Sartorius SBI scale driver (16- or 22-character print format) on a serial line or serial device server.

Each poll sends ``ESC P`` (print) and reads one line: a stable weight carries a unit, an unstable one none;
``High`` / ``Low`` is overload / underload; ``Err nnn`` is a device error. The serial number is read with
``ESC x2_`` after each (re)connect. Commands: ``zero`` (``ESC V``), ``tare`` (``ESC U``; SBI has no preset tare),
``weigh_now`` (a print that counts only when stable), ``poll_now`` (one print outside the schedule). SBI does not
confirm zero and tare: they answer ``sent``.

What a weighing holds (values exactly as printed, devices.md §4):

    22 characters, untared   G#    +  24560 kg            → gross
    22 characters, tared     G#    +  24560 kg            → gross, tare (tare_preset: true for PT2, false for T),
                             T     +  14960 kg  (or PT2)     net - all three as the scale printed them
                             N     +   9600 kg
    16 characters            +  24560 kg                  → gross: the line carries no id, so the driver cannot
                                                            tell a net from a gross; scales that are tared should
                                                            print the 22-character form (profile ``form: 22``)

A tared print's lines come one after the other; the driver reads the first for the detector and, when it takes a
weighing, the ones that follow (waiting about two line times at the line's baud rate). SBI has no alibi id.
"""

from __future__ import annotations

from typing import Any

from edge.bus.scheduler import ExchangeError
from edge.devices.scale import MtSicsDriver
from protocols import sartorius
from sync.records.weighing import TRIGGER_AUTO, TRIGGER_COMMAND, WeighingValues

LINE_BITS = 24 * 10  # one 22-character line with CR LF, 10 bits a character (start, 7 or 8 data, parity, stop)


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
            if self.auto:  # command mode: a refused weigh command says it (no event)
                self.detector.overload()
            self.last_reading = {"out_of_range": True, "stable": False, "answer": answer}
            return
        self.last_reading = {"weight": str(reading.value), "unit": reading.unit or None,
                             "stable": reading.stable, "answer": answer}
        if not self.auto:
            return
        done = self.detector.feed(value=reading.value, stable=reading.stable, unit=reading.unit or "",
                                  raw=reading.raw)
        if done is not None:
            self._emit(await self._delivered_print(reading), trigger=TRIGGER_AUTO)

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        await self._identify()
        if name == "tare" and args.get("preset_tare") is not None:
            raise ExchangeError("command", f"device {self.device_id} (Sartorius SBI) has no preset tare")
        if name in ("zero", "tare"):
            await self.conn.transport.write(sartorius.ZERO if name == "zero" else sartorius.TARE)
            return {"status": "sent"}
        if name == "weigh_now":
            reading = await self._print()
            if isinstance(reading, sartorius.SbiWeight) and reading.stable and reading.unit:
                values = await self._delivered_print(reading)
                record_id = self._emit(values, trigger=TRIGGER_COMMAND, args=args)
                return {"status": "done", **values.as_dict(), "answer": values.raw, "record_id": record_id}
            answer = reading.raw.decode("ascii", "replace").strip()
            if isinstance(reading, sartorius.SbiStatus):
                if reading.overload:
                    self.overloads += 1
                why = "overload" if reading.overload else "underload"
            else:
                why = "no stable weight"
            return {"status": "refused", "error": f"{why}: the scale printed {answer!r}", "answer": answer}
        if name == "poll_now":
            return await self.poll_now()
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")

    async def _delivered_print(self, first: sartorius.SbiWeight) -> WeighingValues:
        """The values of one stable print: its first line and, in the 22-character form, the T / PT2 and N lines
        that follow a tared print's G# line."""
        unit = first.unit or ""
        if first.id is None:  # 16 characters: no id
            return WeighingValues(unit=unit, raw=_text(first.raw), gross=str(first.value))
        lines = [first]
        gap_s = 0.05 + 2 * LINE_BITS / max(self.conn.serial.baudrate, 1)
        while lines[-1].id != "N" and len(lines) < 3:
            raw = await self.conn.transport.next_line(timeout_s=gap_s)
            if raw is None:
                break
            more = sartorius.parse_sbi(raw)
            if not isinstance(more, sartorius.SbiWeight) or more.id is None or not more.stable:
                raise ExchangeError("framing", f"unexpected line in a print: {raw!r}")
            lines.append(more)
        by_kind = {line.kind: line for line in lines}
        raw_text = " | ".join(_text(line.raw) for line in lines)
        if any(line.unit != unit for line in lines):
            raise ExchangeError("framing", f"the lines of one print disagree on the unit: {raw_text!r}")
        tare = by_kind.get("tare") or by_kind.get("preset_tare")
        gross, net = by_kind.get("gross"), by_kind.get("net")
        if (tare is None) != (net is None) or (gross is None and net is None):
            raise ExchangeError("framing", f"a print with gross {gross is not None}, tare {tare is not None}, net "
                                           f"{net is not None}: {raw_text!r}")
        return WeighingValues(
            unit=unit, raw=raw_text,
            gross=str(gross.value) if gross is not None else None,
            net=str(net.value) if net is not None else None,
            tare=str(tare.value) if tare is not None else None,
            tare_preset=(tare.kind == "preset_tare") if tare is not None else None,
        )


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\r\n")
