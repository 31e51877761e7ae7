"""What a bus scheduler opens, closes and reopens: a Modbus client (RTU on a serial line, TCP, RTU over TCP) or a
line transport for serial scales.

The connection keeps the last raw frames that crossed it (pymodbus ``trace_packet``) so that a failed exchange
can be classified — bad CRC, truncated frame, answer from another unit id, or silence — and so that error logs
carry the bytes involved.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from edge.bus.transport import Framer, LineTransport
from edge.errors import DeviceIOError
from protocols.crc import check_crc
from protocols.mtsics import LineFramer

BusKind = Literal["rtu", "tcp", "rtu-over-tcp", "line"]
FRAME_HISTORY = 20


@dataclass(frozen=True)
class SerialParams:
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def bits_per_char(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    def char_time_s(self) -> float:
        return self.bits_per_char / self.baudrate

    def inter_frame_gap_s(self) -> float:
        """Modbus RTU t3.5: 3.5 character times, 1.75 ms above 19200 baud (Modbus over serial line §2.5.1.1)."""
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.char_time_s()


class ModbusConnection:
    """One pymodbus client for a whole bus; the scheduler guarantees one request at a time."""

    def __init__(self, bus_id: str, kind: BusKind, address: str, *, serial: SerialParams, timeout_s: float) -> None:
        self.bus_id = bus_id
        self.kind = kind
        self.address = address
        self.serial = serial
        self.timeout_s = timeout_s
        self.frames: deque[tuple[bool, bytes]] = deque(maxlen=FRAME_HISTORY)  # (sent?, bytes)
        self.current: list[tuple[bool, bytes]] = []  # what crossed the line during the current request
        self.last_rx_at = 0.0  # monotonic time of the last bytes received: the line is quiet since then
        self.client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self.last_rx_at = time.monotonic()
        self.frames.append((sending, bytes(data)))
        self.current.append((sending, bytes(data)))
        return data

    @property
    def is_open(self) -> bool:
        return self.client is not None and self.client.connected

    def inter_frame_gap_s(self) -> float:
        return self.serial.inter_frame_gap_s() if self.kind == "rtu" else 0.0

    async def open(self) -> None:
        await self.close()
        parts = urlsplit(self.address)
        common = {"timeout": self.timeout_s, "retries": 0, "trace_packet": self._trace,
                  "reconnect_delay": 0, "reconnect_delay_max": 0}
        if self.kind == "rtu":
            q = parse_qs(parts.query)
            self.client = AsyncModbusSerialClient(
                parts.path or self.address, framer=FramerType.RTU,
                baudrate=int(q.get("baudrate", [self.serial.baudrate])[0]), parity=self.serial.parity,
                stopbits=self.serial.stopbits, bytesize=self.serial.bytesize, **common)  # type: ignore[arg-type]
        else:
            self.client = AsyncModbusTcpClient(
                parts.hostname or "127.0.0.1", port=parts.port or 502,
                framer=FramerType.RTU if self.kind == "rtu-over-tcp" else FramerType.SOCKET,
                **common)  # type: ignore[arg-type]
        try:
            ok = await self.client.connect()
        except Exception as exc:
            await self.close()
            raise DeviceIOError(self.bus_id, f"cannot open {self.address}: {exc}") from exc
        if not ok:
            await self.close()
            raise DeviceIOError(self.bus_id, f"cannot open {self.address}")

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None

    def begin_request(self) -> None:
        self.current = []

    def classify_silence(self, unit_id: int) -> tuple[str, str]:
        """Why the current request got no usable answer: look at the bytes received during it."""
        # pymodbus traces its whole receive buffer each time bytes arrive: the last trace is what it holds
        received = next((data for sending, data in reversed(self.current) if not sending), b"")
        if not received:
            return "timeout", "no answer"
        if self.kind == "tcp":
            return "framing", f"unusable answer {received[:64]!r}"
        if len(received) < 5:
            return "framing", f"truncated frame {received!r}"
        fc = received[1]
        if fc in (1, 2, 3, 4) and len(received) < 5 + received[2]:  # [uid][fc][byte count][data…][crc]
            return "framing", f"truncated frame: {len(received)} of {5 + received[2]} bytes {received[:64]!r}"
        if received[0] != unit_id:
            return "wrong_unit", f"answer from unit {received[0]} to a request for unit {unit_id}"
        if not check_crc(received):
            return "crc", f"bad CRC in {received[:64]!r}"
        return "framing", f"unusable frame {received[:64]!r}"

    def last_frames(self) -> list[bytes]:
        return [data for _, data in self.frames]


class LineConnection:
    """A serial scale's line (serial port or TCP serial server) wrapped as a bus connection."""

    def __init__(self, bus_id: str, address: str, *, serial: SerialParams, timeout_s: float,
                 framer_factory: Callable[[], Framer] = LineFramer) -> None:
        self.bus_id = bus_id
        self.address = address
        self.serial = serial
        self.timeout_s = timeout_s
        self.transport = LineTransport(bus_id, address, baudrate=serial.baudrate, framer_factory=framer_factory)

    @property
    def is_open(self) -> bool:
        return self.transport.is_open

    def inter_frame_gap_s(self) -> float:
        return 0.0

    async def open(self) -> None:
        await self.transport.close()
        await self.transport.open(timeout_s=self.timeout_s)

    async def close(self) -> None:
        await self.transport.close()

    def last_frames(self) -> list[bytes]:
        return list(self.transport.last_frames)


BusConnection = ModbusConnection | LineConnection
