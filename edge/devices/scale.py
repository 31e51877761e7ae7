"""MT-SICS scale driver (a weighbridge terminal on a serial line or a serial device server).

Each poll sends ``SI`` (immediate weight) and feeds the answer to the weighing detector; a completed weighing is
a business record, committed (fsync) before anything else. After (re)connecting, the scale's serial number is
read with ``I4``; the power-up ``I4`` line a scale sends by itself is passed over. Commands: ``zero`` (``Z``),
``tare`` (``T``), ``weigh_now`` (``S``: a stable weight or ``S I`` — never a moving one).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from edge.bus.connection import LineConnection
from edge.bus.health import DeviceHealth, RecordSink
from edge.bus.scheduler import Driver, ExchangeError
from edge.devices.weighing import WeighingDetector
from edge.outbox import NewRecord
from protocols import mtsics
from protocols.errors import DeviceErrorResponse

log = logging.getLogger(__name__)

_UNSOLICITED = (b"I4 A",)


class MtSicsDriver(Driver):
    kind = "mtsics-scale"

    def __init__(self, device_id: str, conn: LineConnection, sink: RecordSink, *, interval_s: float,
                 timeout_s: float, threshold: Decimal, empty_below: Decimal | None) -> None:
        self.device_id = device_id
        self.conn = conn
        self.sink = sink
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.health = DeviceHealth(device_id, self.kind, sink)
        self.detector = WeighingDetector(threshold=threshold, empty_below=empty_below)
        self.serial_number: str | None = None
        self._identified_on = -1
        self.weighings = 0
        self.overloads = 0

    @property
    def groups(self) -> dict[str, float]:
        return {"weight": self.interval_s}

    def poll_timeout_s(self) -> float:
        return self.timeout_s * 3 + 1

    async def _ask(self, command: str, *args: str) -> mtsics.Response:
        transport = self.conn.transport
        line = await transport.request(mtsics.encode_command(command, *args), timeout_s=self.timeout_s,
                                       skip=() if command in ("I4", "@") else _UNSOLICITED)
        resp = mtsics.parse_response(line)
        if isinstance(resp, mtsics.ErrorResponse):
            raise DeviceErrorResponse(f"scale answered {resp.code} to {command}", code=resp.code, raw=line)
        return resp

    async def _identify(self) -> None:
        if self._identified_on == self.conn.transport.generation:
            return
        resp = await self._ask("I4")
        if isinstance(resp, mtsics.IdentResponse):
            if resp.text != self.serial_number:
                log.info("device %s: scale serial number %s", self.device_id, resp.text)
            self.serial_number = resp.text
        self._identified_on = self.conn.transport.generation

    async def poll(self, group: str) -> None:
        await self._identify()
        resp = await self._ask("SI")
        if isinstance(resp, mtsics.WeightResponse):
            done = self.detector.feed(value=resp.value, stable=resp.stable, unit=resp.unit, raw=resp.raw)
            if done is not None:
                self._emit_weighing(done.gross, done.unit, done.raw, trigger="automatic")
        elif isinstance(resp, mtsics.StatusResponse) and resp.status in ("+", "-"):
            self.overloads += 1
            self.detector.overload()
            log.warning("device %s: %s", self.device_id, "overload" if resp.status == "+" else "underload")
        elif isinstance(resp, mtsics.StatusResponse) and resp.status == "I":
            pass  # busy: no value this time
        else:
            raise ExchangeError("framing", f"unexpected answer to SI: {resp!r}")

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        await self._identify()
        if name in ("zero", "tare"):
            resp = await self._ask("Z" if name == "zero" else "T")
            if isinstance(resp, mtsics.WeightResponse):
                return {"status": "done", "tare": str(resp.value), "unit": resp.unit}
            assert isinstance(resp, mtsics.StatusResponse | mtsics.IdentResponse)
            done = resp.status == "A"
            return {"status": "done" if done else "refused", "answer": resp.raw.decode("ascii", "replace")}
        if name == "weigh_now":
            resp = await self._ask("S")
            if isinstance(resp, mtsics.WeightResponse) and resp.stable:
                self._emit_weighing(resp.value, resp.unit, resp.raw, trigger="command",
                                    reference=args.get("reference"))
                return {"status": "done", "gross": str(resp.value), "unit": resp.unit}
            return {"status": "refused", "answer": getattr(resp, "raw", b"").decode("ascii", "replace")}
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")

    def _emit_weighing(self, gross: Decimal, unit: str, raw: bytes, *, trigger: str,
                       reference: str | None = None) -> None:
        self.weighings += 1
        data: dict[str, Any] = {"gross": str(gross), "unit": unit, "stable": True,
                                "scale_serial": self.serial_number, "raw": raw.decode("ascii", "replace"),
                                "trigger": trigger}
        if reference:
            data["reference"] = reference
        self.sink.emit("business", [NewRecord(kind="weighing", device=self.device_id, data=data)])
        log.info("device %s: weighing %s %s", self.device_id, gross, unit, extra={"device": self.device_id})


__all__ = ["DeviceHealth", "MtSicsDriver"]
