"""Modbus TCP poller for register-mapped sensors (Eastron SDM630 energy meter, temperature/humidity probe).

The device's map (``protocols.modbus_maps``) is planned once into as few reads as possible; one poll reads every
block and yields one ``reading`` record with all values. A Modbus exception answer is a device error (counted,
the device stays connected); no answer is an I/O error (reconnect on the next poll).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.config import ModbusDevice
from edge.devices.base import DevicePoller, RecordSink
from edge.errors import DeviceIOError
from edge.outbox import NewRecord
from protocols.errors import DeviceErrorResponse
from protocols.modbus_maps import DEVICE_MAPS, decode_block, plan_reads

log = logging.getLogger(__name__)


class ModbusPoller(DevicePoller):
    def __init__(self, cfg: ModbusDevice, sink: RecordSink) -> None:
        super().__init__(cfg.id, interval_s=cfg.interval_s, timeout_s=cfg.timeout_s, sink=sink)
        self.kind = cfg.type
        self.cfg = cfg
        self.points = DEVICE_MAPS[cfg.type]
        self.blocks = plan_reads(self.points)
        parts = urlsplit(cfg.address)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 502
        self._client: AsyncModbusTcpClient | None = None

    async def connect(self) -> None:
        self._client = AsyncModbusTcpClient(self._host, port=self._port, timeout=self.timeout_s, retries=0)
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise DeviceIOError(self.device_id, f"cannot connect to {self.cfg.address}: {exc}") from exc
        if not ok:
            raise DeviceIOError(self.device_id, f"cannot connect to {self.cfg.address}")

    async def disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def poll_once(self) -> None:
        assert self._client is not None
        values: dict[str, float] = {}
        for block in self.blocks:
            read = (
                self._client.read_input_registers
                if block.register_type == "input"
                else self._client.read_holding_registers
            )
            try:
                rr = await read(block.address, count=block.count, device_id=self.cfg.unit_id)
            except ModbusException as exc:
                raise DeviceIOError(
                    self.device_id, f"no answer reading {block.count} register(s) at {block.address}: {exc}"
                ) from exc
            if rr.isError():
                code = getattr(rr, "exception_code", None)
                raise DeviceErrorResponse(
                    f"Modbus exception {code} reading {block.register_type} registers "
                    f"{block.address}..{block.address + block.count - 1} (unit {self.cfg.unit_id})",
                    code=f"modbus-exception-{code}",
                    raw=repr(rr).encode(),
                )
            values.update(decode_block(block, rr.registers))
        units = {p.name: p.unit for p in self.points}
        self.sink.emit(
            "readings",
            [NewRecord(kind="reading", device=self.device_id, data={"values": values, "units": units})],
        )
