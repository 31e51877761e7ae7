"""Line-oriented transports for serial scales: TCP (a serial device server or the simulator) and a real serial
line (``serial:///dev/ttyUSB0``, pseudo-terminals included).

Both feed received bytes through a framer (``protocols.mtsics.LineFramer`` for CR LF lines, or e.g.
``protocols.toledo.ToledoFramer`` for a stream of fixed frames) into a queue; ``request`` discards stale lines
(a scale sends ``I4 A "…"`` at power-up), writes the command and waits for the next line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import serial

from edge.errors import DeviceIOError
from edge.runtime.aio import cancel_and_wait, wait_for
from protocols.mtsics import LineFramer


class Framer(Protocol):
    def feed(self, data: bytes) -> list[bytes]: ...


class LineTransport:
    """One connection to one line-based device. ``request`` is not re-entrant: one bus task owns it."""

    def __init__(self, device: str, address: str, *, baudrate: int = 9600,
                 framer_factory: Callable[[], Framer] = LineFramer) -> None:
        self.device = device
        self.address = address
        self.baudrate = baudrate
        self._lines: asyncio.Queue[bytes | DeviceIOError] = asyncio.Queue()
        self._eof = False
        self.generation = 0  # counts successful opens: a new connection may be a rebooted device
        self._framer_factory = framer_factory
        self._framer = framer_factory()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._serial: serial.Serial | None = None
        self.last_frames: list[bytes] = []

    @property
    def is_open(self) -> bool:
        return (self._writer is not None or self._serial is not None) and not self._eof

    async def open(self, *, timeout_s: float) -> None:
        parts = urlsplit(self.address)
        try:
            if parts.scheme == "tcp":
                reader, self._writer = await wait_for(
                    asyncio.open_connection(parts.hostname, parts.port), timeout_s
                )
                self._reader_task = asyncio.create_task(self._read_tcp(reader))
            else:
                query = parse_qs(parts.query)
                baud = int(query.get("baudrate", [self.baudrate])[0])
                self._serial = serial.Serial(parts.path, baudrate=baud, timeout=0, write_timeout=timeout_s)
                asyncio.get_running_loop().add_reader(self._serial.fileno(), self._read_serial)
            self.generation += 1
        except (OSError, TimeoutError, serial.SerialException, ValueError) as exc:
            await self.close()
            raise DeviceIOError(self.device, f"cannot open {self.address}: {exc or type(exc).__name__}") from exc

    def _feed(self, data: bytes) -> None:
        # an overlong line comes back as mtsics.OverlongLine; parse_response turns it into a FrameError
        for line in self._framer.feed(data):
            self._lines.put_nowait(line)

    async def _read_tcp(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(4096)
            if not data:  # the device (or a serial server after a reboot / idle timeout) closed the connection
                self._eof = True
                self._lines.put_nowait(DeviceIOError(self.device, f"{self.address} closed the connection"))
                return
            self._feed(data)

    def _read_serial(self) -> None:
        assert self._serial is not None
        try:
            data = self._serial.read(self._serial.in_waiting or 1)
        except (OSError, serial.SerialException) as exc:
            self._eof = True
            self._lines.put_nowait(DeviceIOError(self.device, f"serial read failed: {exc}"))
            return
        if data:
            self._feed(data)

    async def next_frame(self, *, timeout_s: float) -> bytes:
        """For devices that stream (Toledo Continuous): drop what is queued and return the next frame."""
        if not self.is_open:
            raise DeviceIOError(self.device, "not connected")
        while not self._lines.empty():
            self._lines.get_nowait()
        try:
            frame = await wait_for(self._lines.get(), timeout_s)
        except TimeoutError:
            raise DeviceIOError(self.device, f"no frame within {timeout_s} s") from None
        if isinstance(frame, DeviceIOError):
            raise frame
        self.last_frames = [*self.last_frames[-19:], frame]
        return frame

    async def write(self, command: bytes) -> None:
        """Send ``command`` without waiting for an answer (devices that acknowledge nothing)."""
        if not self.is_open:
            raise DeviceIOError(self.device, "not connected")
        try:
            if self._writer is not None:
                self._writer.write(command)
                await self._writer.drain()
            else:
                assert self._serial is not None
                await asyncio.to_thread(self._serial.write, command)
        except (OSError, serial.SerialException) as exc:
            raise DeviceIOError(self.device, f"write failed: {exc}") from exc

    async def request(self, command: bytes, *, timeout_s: float, skip: tuple[bytes, ...] = ()) -> bytes:
        """Send ``command`` and return the next complete line (DeviceIOError when the connection is gone).

        Lines starting with one of ``skip`` are unsolicited (a power-up identification) and passed over."""
        if not self.is_open:
            raise DeviceIOError(self.device, "not connected")
        while not self._lines.empty():  # stale output (power-up identification, late answers)
            self._lines.get_nowait()
        await self.write(command)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                line = await wait_for(self._lines.get(), max(remaining, 0))
            except TimeoutError:
                raise DeviceIOError(self.device, f"no answer to {command!r} within {timeout_s} s") from None
            if isinstance(line, DeviceIOError):
                raise line
            if not (skip and line.startswith(skip)):
                break
        self.last_frames = [*self.last_frames[-19:], line]
        return line

    async def next_line(self, *, timeout_s: float) -> bytes | None:
        """The next line of a multi-line answer (after ``request``), without flushing; None if none came in time."""
        if not self.is_open:
            raise DeviceIOError(self.device, "not connected")
        try:
            line = await wait_for(self._lines.get(), timeout_s)
        except TimeoutError:
            return None
        if isinstance(line, DeviceIOError):
            raise line
        self.last_frames = [*self.last_frames[-19:], line]
        return line

    async def close(self) -> None:
        reader_task, self._reader_task = self._reader_task, None
        writer, self._writer = self._writer, None
        try:
            if reader_task is not None:  # a cancellation of the caller meanwhile is raised, not lost
                await cancel_and_wait([reader_task])
        finally:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(self._serial.fileno())
                self._serial.close()
                self._serial = None
            self._framer = self._framer_factory()
            self._lines = asyncio.Queue()
            self._eof = False
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
