"""MT-SICS scale poller (a weighbridge terminal on a serial line or a serial device server).

Each poll sends ``SI`` (immediate weight) and feeds the answer to the weighing detector; a completed weighing is
a business record, committed (fsync) before anything else. At connect the scale's serial number is read with
``I4`` and kept with every weighing.
"""

from __future__ import annotations

import logging

from edge.config import ScaleDevice
from edge.devices.base import DevicePoller, RecordSink
from edge.devices.weighing import WeighingDetector
from edge.errors import DeviceIOError
from edge.outbox import NewRecord
from edge.transport import LineTransport
from protocols import mtsics
from protocols.errors import DeviceErrorResponse, FrameError

log = logging.getLogger(__name__)

_UNSOLICITED = (b"I4 A",)


class ScalePoller(DevicePoller):
    kind = "mtsics-scale"

    def __init__(self, cfg: ScaleDevice, sink: RecordSink) -> None:
        super().__init__(cfg.id, interval_s=cfg.interval_s, timeout_s=cfg.timeout_s, sink=sink)
        self.cfg = cfg
        self.transport = LineTransport(cfg.id, cfg.address, baudrate=cfg.baudrate)
        self.detector = WeighingDetector(threshold=cfg.weighing.threshold, empty_below=cfg.weighing.empty_below)
        self.serial_number: str | None = None
        self.weighings = 0
        self.overloads = 0

    def last_frames(self) -> list[bytes]:
        return self.transport.last_frames

    async def connect(self) -> None:
        await self.transport.open(timeout_s=self.timeout_s)
        resp = self._parse(await self.transport.request(mtsics.encode_command("I4"), timeout_s=self.timeout_s))
        if isinstance(resp, mtsics.IdentResponse):
            self.serial_number = resp.text
            log.info("device %s: scale serial number %s", self.device_id, resp.text)

    async def disconnect(self) -> None:
        await self.transport.close()

    def _parse(self, line: bytes) -> mtsics.Response:
        resp = mtsics.parse_response(line)
        if isinstance(resp, mtsics.ErrorResponse):
            raise DeviceErrorResponse(f"scale answered {resp.code}", code=resp.code, raw=line)
        return resp

    async def poll_once(self) -> None:
        line = await self.transport.request(mtsics.encode_command("SI"), timeout_s=self.timeout_s, skip=_UNSOLICITED)
        resp = self._parse(line)
        if isinstance(resp, mtsics.WeightResponse):
            done = self.detector.feed(value=resp.value, stable=resp.stable, unit=resp.unit, raw=line)
            if done is not None:
                self._emit_weighing(done.gross, done.unit, done.raw)
        elif isinstance(resp, mtsics.StatusResponse) and resp.status in ("+", "-"):
            self.overloads += 1
            self.detector.overload()
            log.warning("device %s: %s", self.device_id, "overload" if resp.status == "+" else "underload")
        elif isinstance(resp, mtsics.StatusResponse) and resp.status == "I":
            pass  # busy: no value this time
        else:
            raise FrameError(line, f"unexpected answer to SI: {resp!r}")

    def _emit_weighing(self, gross: object, unit: str, raw: bytes) -> None:
        self.weighings += 1
        record = NewRecord(
            kind="weighing",
            device=self.device_id,
            data={
                "gross": str(gross),
                "unit": unit,
                "stable": True,
                "scale_serial": self.serial_number,
                "raw": raw.decode("ascii", "replace"),
            },
        )
        self.sink.emit("business", [record])
        log.info("device %s: weighing %s %s", self.device_id, gross, unit, extra={"device": self.device_id})


__all__ = ["DeviceIOError", "ScalePoller"]
