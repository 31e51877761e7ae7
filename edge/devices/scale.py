"""MT-SICS scale driver (a weighbridge terminal on a serial line or a serial device server).

Each poll sends ``SI`` (immediate weight) and feeds the answer to the weighing detector; a completed weighing is
a business record, committed (fsync) before anything else. After (re)connecting, the scale's serial number is
read with ``I4``; the power-up ``I4`` line a scale sends by itself is passed over. Commands: ``zero`` (``Z``),
``tare`` (``T``), ``weigh_now`` (``S``: a stable weight or ``S I`` — never a moving one; a stable one is also a
weighing record, ``trigger: command``) and ``poll_now`` (one ``SI`` poll outside the schedule).

A command answers a dict: ``status`` ``done`` with the values, or ``refused`` with ``error`` saying why in words
and ``answer`` the scale's line (``Z I``, ``T +``, ``S +`` overload, ``S I`` no stable weight).
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
# why a scale did not execute zero / tare / weigh, by its status (MT-SICS reference: Z, T, S)
_REFUSALS = {
    ("Z", "I"): "scale refused zero: Z I (not executable now)",
    ("Z", "+"): "scale refused zero: Z + (upper limit of the zero setting range exceeded)",
    ("Z", "-"): "scale refused zero: Z - (lower limit of the zero setting range exceeded)",
    ("T", "I"): "scale refused tare: T I (not executable now)",
    ("T", "+"): "scale refused tare: T + (upper limit of the taring range exceeded)",
    ("T", "-"): "scale refused tare: T - (lower limit of the taring range exceeded)",
    ("S", "I"): "no stable weight: S I (busy, or not stable within the scale's timeout)",
    ("S", "+"): "overload: the scale answered S +",
    ("S", "-"): "underload: the scale answered S -",
}


class MtSicsDriver(Driver):
    kind = "mtsics-scale"
    commands = frozenset({"zero", "tare", "weigh_now", "poll_now"})

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
        self.last_reading: dict[str, Any] = {}  # what the last poll saw (``poll_now`` answers it)

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
        answer = _text(resp.raw)
        if isinstance(resp, mtsics.WeightResponse):
            self.last_reading = {"weight": str(resp.value), "unit": resp.unit, "stable": resp.stable,
                                 "answer": answer}
            done = self.detector.feed(value=resp.value, stable=resp.stable, unit=resp.unit, raw=resp.raw)
            if done is not None:
                self._emit_weighing(done.gross, done.unit, done.raw, trigger="automatic")
        elif isinstance(resp, mtsics.StatusResponse) and resp.status in ("+", "-"):
            self.overloads += 1
            self.detector.overload()
            state = "overload" if resp.status == "+" else "underload"
            if self.last_reading.get(state) is not True:  # once when it starts, not on every poll while it lasts
                log.warning("device %s: %s", self.device_id, state)
            self.last_reading = {state: True, "stable": False, "answer": answer}
        elif isinstance(resp, mtsics.StatusResponse) and resp.status == "I":
            self.last_reading = {"busy": True, "stable": False, "answer": answer}  # no value this time
        else:
            raise ExchangeError("framing", f"unexpected answer to SI: {resp!r}")

    async def poll_now(self) -> dict[str, Any]:
        """One poll outside the schedule (it feeds the weighing detector like any poll); what it saw."""
        self.last_reading = {}
        await self.poll(next(iter(self.groups)))
        return {"status": "done", **self.last_reading}

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        await self._identify()
        if name == "zero":
            resp = await self._ask("Z")
            if isinstance(resp, mtsics.StatusResponse) and resp.status == "A":
                return {"status": "done", "answer": _text(resp.raw)}
            return self._refused("zero", resp)
        if name == "tare":
            resp = await self._ask("T")
            if isinstance(resp, mtsics.WeightResponse):  # T S <tare> <unit>
                return {"status": "done", "tare": str(resp.value), "unit": resp.unit, "answer": _text(resp.raw)}
            return self._refused("tare", resp)
        if name == "weigh_now":
            resp = await self._ask("S")
            if isinstance(resp, mtsics.WeightResponse) and resp.stable:
                record_id = self._emit_weighing(resp.value, resp.unit, resp.raw, trigger="command",
                                                reference=args.get("reference"))
                return {"status": "done", "gross": str(resp.value), "unit": resp.unit, "stable": True,
                        "answer": _text(resp.raw), "record_id": record_id}
            if isinstance(resp, mtsics.StatusResponse) and resp.status == "+":
                self.overloads += 1
            return self._refused("weigh", resp)
        if name == "poll_now":
            return await self.poll_now()
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")

    def _refused(self, what: str, resp: mtsics.Response) -> dict[str, Any]:
        status = getattr(resp, "status", "")
        command = getattr(resp, "command", "")
        error = _REFUSALS.get((command, status)) or f"scale did not {what}: it answered {_text(resp.raw)!r}"
        return {"status": "refused", "error": error, "answer": _text(resp.raw)}

    def _emit_weighing(self, gross: Decimal, unit: str, raw: bytes, *, trigger: str,
                       reference: str | None = None) -> str:
        """Commit a weighing record (business stream: on disk before this returns); returns its record id."""
        self.weighings += 1
        data: dict[str, Any] = {"gross": str(gross), "unit": unit, "stable": True,
                                "scale_serial": self.serial_number, "raw": raw.decode("ascii", "replace"),
                                "trigger": trigger}
        if reference:
            data["reference"] = reference
        record = NewRecord(kind="weighing", device=self.device_id, data=data)
        self.sink.emit("business", [record])
        log.info("device %s: weighing %s %s", self.device_id, gross, unit, extra={"device": self.device_id})
        return record.record_id


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\r\n")


__all__ = ["DeviceHealth", "MtSicsDriver"]
