"""MT-SICS scale driver (a weighbridge terminal on a serial line or a serial device server).

Each poll sends ``SI`` (immediate weight); in automatic mode (``weighing.auto``, the default) the answer goes to
the weighing detector, and a completed weighing is a business record, committed (fsync) before anything else.
After (re)connecting, the scale's serial number is read with ``I4``; the power-up ``I4`` line a scale sends by
itself is passed over. Commands::

    zero       Z                     Z A done | Z I, Z +, Z - refused
    tare       T                     T S <tare> <unit> done | T I, T +, T - refused
    tare with preset_tare            TA (for the unit), then TA <value> <unit>: TA A <tare> <unit> | TA I, TA L refused
    weigh_now  S, then TA            S S a stable weight: a weighing record (trigger command, the command's codes)
                                     S I (no stable weight), S + (overload), S - (underload): refused, no record
    poll_now   one SI poll outside the schedule

A weighing is only ever taken from a stable value: ``S`` (which never answers a moving weight) or an ``SI`` answer
``S S`` the detector accepted - never an ``S D``.

What a weighing holds (devices.md §4: never recompute or round a legal value). ``S`` gives the *displayed* weight:
the gross while no tare is set, the net while one is. MT-SICS has no command for the gross under a tare, so after
every stable weight the driver reads the tare memory with ``TA``:

    TA A 0 <unit>       no tare: the weight is the gross        → gross
    TA A <t> <unit>     a tare: the weight is the net           → net, tare (and tare_preset), no gross

``gross`` is then *not* net + tare: that sum was never shown or verified by the instrument, so it is left out (a
ticket built from a preset-tare weighing works from the net and the tare; §4.4). ``tare_preset`` is true when this
driver set that tare with ``TA <value>``, false when it took it with ``T``, and left out when the tare in memory is
not one the driver set (keyed in at the terminal, or changed since): MT-SICS does not say. A scale that does not
know ``TA`` (answers ``ES``) shows no tare state: its weight is recorded as the gross, with a warning once.
MT-SICS carries no alibi id: ``instrument_alibi`` stays out.

A command answers a dict: ``status`` ``done`` with the values, or ``refused`` with ``error`` saying why in words
and ``answer`` the scale's line (``Z I``, ``T I``, ``TA L``, ``S +`` overload, ``S I`` no stable weight).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from edge.bus.connection import LineConnection
from edge.bus.health import DeviceHealth
from edge.bus.scheduler import Driver, ExchangeError
from edge.bus.sink import RecordSink
from edge.devices.weighing import WeighingDetector, weighing_record
from protocols import mtsics
from protocols.errors import DeviceErrorResponse
from sync.records.weighing import TRIGGER_AUTO, TRIGGER_COMMAND, WeighingValues

log = logging.getLogger(__name__)

_UNSOLICITED = (b"I4 A",)
# why a scale did not execute zero / tare / weigh, by its status (MT-SICS reference: Z, T, TA, S)
_REFUSALS = {
    ("Z", "I"): "scale refused zero: Z I (not executable now)",
    ("Z", "+"): "scale refused zero: Z + (upper limit of the zero setting range exceeded)",
    ("Z", "-"): "scale refused zero: Z - (lower limit of the zero setting range exceeded)",
    ("T", "I"): "scale refused tare: T I (not executable now)",
    ("T", "+"): "scale refused tare: T + (upper limit of the taring range exceeded)",
    ("T", "-"): "scale refused tare: T - (lower limit of the taring range exceeded)",
    ("TA", "I"): "scale refused the preset tare: TA I (not executable now)",
    ("TA", "L"): "scale refused the preset tare: TA L (outside the taring range)",
    ("S", "I"): "no stable weight: S I (busy, or not stable within the scale's timeout)",
    ("S", "+"): "overload: the scale answered S +",
    ("S", "-"): "underload: the scale answered S -",
}


class MtSicsDriver(Driver):
    kind = "mtsics-scale"
    commands = frozenset({"zero", "tare", "weigh_now", "poll_now"})

    def __init__(self, device_id: str, conn: LineConnection, sink: RecordSink, *, interval_s: float,
                 timeout_s: float, threshold: Decimal, empty_below: Decimal | None, auto: bool = True) -> None:
        self.device_id = device_id
        self.conn = conn
        self.sink = sink
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.health = DeviceHealth(device_id, self.kind, sink)
        self.detector = WeighingDetector(threshold=threshold, empty_below=empty_below, on_event=self.health.event)
        self.auto = auto  # False: weighings only when a weigh command asks
        self.serial_number: str | None = None
        self._identified_on = -1
        self.weighings = 0
        self.overloads = 0
        self.last_reading: dict[str, Any] = {}  # what the last poll saw (``poll_now`` answers it)
        self._tare_set: tuple[Decimal, bool] | None = None  # the tare this driver set last, and whether preset
        self._warned_no_ta = False

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
            if not self.auto:
                return
            done = self.detector.feed(value=resp.value, stable=resp.stable, unit=resp.unit, raw=resp.raw)
            if done is not None:  # an S S answer: stable by the scale's own judgement
                self._emit(await self._delivered(resp), trigger=TRIGGER_AUTO)
        elif isinstance(resp, mtsics.StatusResponse) and resp.status in ("+", "-"):
            self.overloads += 1
            if self.auto:  # command mode: a refused weigh command says it (no event)
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
        if name == "tare" and args.get("preset_tare") is not None:
            return await self._preset_tare(str(args["preset_tare"]))
        if name == "tare":
            resp = await self._ask("T")
            if isinstance(resp, mtsics.WeightResponse):  # T S <tare> <unit>
                self._tare_set = (resp.value, False)
                return {"status": "done", "tare": str(resp.value), "unit": resp.unit, "answer": _text(resp.raw)}
            return self._refused("tare", resp)
        if name == "weigh_now":
            resp = await self._ask("S")
            if isinstance(resp, mtsics.WeightResponse) and resp.stable:
                values = await self._delivered(resp)
                record_id = self._emit(values, trigger=TRIGGER_COMMAND, args=args)
                return {"status": "done", **values.as_dict(), "answer": _text(resp.raw), "record_id": record_id}
            if isinstance(resp, mtsics.StatusResponse) and resp.status == "+":
                self.overloads += 1
            return self._refused("weigh", resp)
        if name == "poll_now":
            return await self.poll_now()
        raise ExchangeError("command", f"device {self.device_id} does not support the command {name!r}")

    async def _preset_tare(self, value: str) -> dict[str, Any]:
        """``TA <value> <unit>`` in the unit the tare memory reports (a preset tare: the truck's known tare)."""
        memory = await self._ask("TA")
        if not isinstance(memory, mtsics.WeightResponse):
            return self._refused("preset the tare", memory)
        resp = await self._ask("TA", value, memory.unit)
        if isinstance(resp, mtsics.WeightResponse) and resp.command == "TA":  # TA A <tare> <unit>
            self._tare_set = (resp.value, True)
            return {"status": "done", "tare": str(resp.value), "unit": resp.unit, "tare_preset": True,
                    "answer": _text(resp.raw)}
        return self._refused("preset the tare", resp)

    async def _delivered(self, weight: mtsics.WeightResponse) -> WeighingValues:
        """The values of a weighing from a stable ``S S`` answer and the tare memory (``TA``) read right after."""
        shown = str(weight.value)
        try:
            tare = await self._ask("TA")
        except DeviceErrorResponse as exc:
            if not self._warned_no_ta:
                log.warning("device %s: the scale does not answer TA (%s): it shows no tare, weights are recorded "
                            "as gross", self.device_id, exc.code)
                self._warned_no_ta = True
            return WeighingValues(unit=weight.unit, raw=_text(weight.raw), gross=shown)
        if not isinstance(tare, mtsics.WeightResponse) or tare.command != "TA":
            raise ExchangeError("framing", f"unexpected answer to TA: {tare!r}")
        raw = f"{_text(weight.raw)} | {_text(tare.raw)}"
        if tare.value == 0:
            return WeighingValues(unit=weight.unit, raw=raw, gross=shown)
        if tare.unit != weight.unit:
            raise ExchangeError("device_error", f"the tare is in {tare.unit}, the weight in {weight.unit}: "
                                                f"{raw!r}")
        known = self._tare_set
        preset = known[1] if known is not None and known[0] == tare.value else None
        return WeighingValues(unit=weight.unit, raw=raw, net=shown, tare=str(tare.value), tare_preset=preset)

    def _refused(self, what: str, resp: mtsics.Response) -> dict[str, Any]:
        status = getattr(resp, "status", "")
        command = getattr(resp, "command", "")
        error = _REFUSALS.get((command, status)) or f"scale did not {what}: it answered {_text(resp.raw)!r}"
        return {"status": "refused", "error": error, "answer": _text(resp.raw)}

    def _emit(self, values: WeighingValues, *, trigger: str, args: Mapping[str, Any] | None = None) -> str:
        """Commit a weighing record (business stream: on disk before this returns); returns its record id."""
        self.weighings += 1
        record = weighing_record(self.device_id, values, scale_serial=self.serial_number, trigger=trigger,
                                 args=args)
        self.sink.emit("business", [record])
        log.info("device %s: weighing %s %s (%s)", self.device_id, values.gross or f"net {values.net}", values.unit,
                 trigger, extra={"device": self.device_id})
        return record.record_id


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\r\n")


__all__ = ["DeviceHealth", "MtSicsDriver"]
