"""Serve a simulated byte-stream device (a scale on a serial line) over TCP and on a pseudo-terminal.

A device is anything with ``power_up()`` (bytes sent unasked when it starts: MT-SICS ``I4 A "…"``, or nothing) and
``open_session(peer)``; a session turns what one host sends into replies and, for an indicator that streams
(Toledo Continuous), produces the next output every ``output_interval_s`` seconds::

    host --bytes--> session.received(data) --replies--> host
                    session.next_output()  --every output_interval_s--> host      (streaming devices only)

``serve_device_tcp``: one session per TCP client, which first receives the power-up bytes. ``DevicePty``: one
session for the pseudo-terminal; the slave side is raw (CR LF pass unchanged, no echo) and held open by the server,
so hosts may open and close the port any number of times. The master side is read in packet mode, which also
reports when the host flushes its input: serial libraries do when they open a port (pyserial does), so the power-up
bytes are written once more after the first such flush - the first program to open the port reads them, as from a
device switched on together with the host. Output a host does not read piles up in the terminal's buffer; when it
is full it is dropped (``dropped_bytes``), as a UART would overrun.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import termios
import tty
from typing import Final, Protocol, Self

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
READ_CHUNK_BYTES: Final = 4096
MAX_BEHIND_INTERVALS: Final = 10  # a streaming output this far behind its schedule restarts from now


class Session(Protocol):
    """One host's conversation with the device."""

    @property
    def output_interval_s(self) -> float | None:
        """Seconds between two unasked outputs (``None``: the device only answers)."""
        ...

    def received(self, data: bytes) -> bytes:
        """Replies to ``data`` (any slice of the byte stream; keep partial commands between calls)."""
        ...

    def next_output(self) -> bytes:
        """The next unasked output of a streaming device (called every ``output_interval_s``)."""
        ...


class StreamDevice(Protocol):
    """A simulated device on a byte stream."""

    @property
    def name(self) -> str: ...

    def power_up(self) -> bytes:
        """Bytes sent unasked when the device starts (``b""`` for none)."""
        ...

    def open_session(self, peer: str) -> Session: ...


def open_raw_pty() -> tuple[int, int, str]:
    """A new pseudo-terminal: ``(master fd, slave fd, slave path)``, slave raw, master non-blocking."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        os.set_blocking(master, False)
        path = os.ttyname(slave)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave, path


async def _stream(session: Session, write: _Writer, interval_s: float) -> None:
    """Write ``session.next_output()`` every ``interval_s``, on an absolute schedule (no drift)."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        await write(session.next_output())
        due += interval_s
        now = loop.time()
        if due < now - MAX_BEHIND_INTERVALS * interval_s:
            due = now  # the loop was stalled: do not burst to catch up
        await asyncio.sleep(max(0.0, due - now))


class _Writer(Protocol):
    async def __call__(self, data: bytes) -> None: ...


# --------------------------------------------------------------------------------------------------------------
# TCP
# --------------------------------------------------------------------------------------------------------------
async def serve_device_tcp(device: StreamDevice, *, host: str = DEFAULT_HOST, port: int = 0) -> asyncio.Server:
    """Serve ``device`` over TCP; several clients share the one device, each with its own session.

    ``port=0`` binds a free port: read it from ``server.sockets[0].getsockname()[1]``. Close with
    ``server.close(); await server.wait_closed()``.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "tcp client {}".format(writer.get_extra_info("peername"))
        session = device.open_session(peer)
        streamer: asyncio.Task[None] | None = None

        async def write(data: bytes) -> None:
            if data:
                writer.write(data)
                await writer.drain()

        try:
            await write(device.power_up())
            if session.output_interval_s is not None:
                streamer = asyncio.create_task(_stream(session, write, session.output_interval_s))
            while data := await reader.read(READ_CHUNK_BYTES):
                await write(session.received(data))
                if streamer is not None and streamer.done():
                    streamer.result()  # a lost connection ends the client here too
        except ConnectionError as exc:
            log.debug("%s simulator, %s: connection lost: %s", device.name, peer, exc)
        except asyncio.CancelledError:
            # the server is shutting down. Ending quietly is deliberate: Python 3.11's start_server callback
            # calls task.exception() on a cancelled handler and logs a spurious traceback (fixed in 3.12).
            log.debug("%s simulator, %s: closed at shutdown", device.name, peer)
        finally:
            if streamer is not None:
                streamer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await streamer
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)


# --------------------------------------------------------------------------------------------------------------
# Pseudo-terminal
# --------------------------------------------------------------------------------------------------------------
class DevicePty:
    """Serve ``device`` on a pseudo-terminal: ``path = await server.start()``, then ``serial.Serial(path, 9600)``."""

    def __init__(self, device: StreamDevice) -> None:
        self.device = device
        self.dropped_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._session: Session | None = None
        self._streamer: asyncio.Task[None] | None = None
        self._power_up_resent = False
        self._overrun_logged = False

    @property
    def path(self) -> str:
        if self._path is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._path

    async def start(self) -> str:
        """Create the pseudo-terminal and start answering; returns the slave path (``/dev/pts/N``)."""
        if self._master is not None:
            raise RuntimeError(f"{type(self).__name__} already serving {self._path}")
        loop = asyncio.get_running_loop()
        master, slave, path = open_raw_pty()  # setraw flushes: before packet mode, so it is not taken for a host's
        try:
            fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
            loop.add_reader(master, self._on_readable)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._loop, self._master, self._slave, self._path = loop, master, slave, path
        self._session = session = self.device.open_session(f"pty {path}")
        self.write(self.device.power_up())
        if session.output_interval_s is not None:
            self._streamer = loop.create_task(self._stream(session, session.output_interval_s))
        log.info("%s simulator on %s", self.device.name, path)
        return path

    async def _stream(self, session: Session, interval_s: float) -> None:
        async def write(data: bytes) -> None:
            self.write(data)

        await _stream(session, write, interval_s)

    def _on_readable(self) -> None:
        assert self._master is not None
        assert self._session is not None
        try:
            packet = os.read(self._master, READ_CHUNK_BYTES + 1)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO cannot happen while we hold the slave; log anything else once per read
            log.warning("%s simulator on %s: read failed: %s", self.device.name, self._path, exc)
            return
        if not packet:
            return
        control, data = packet[0], packet[1:]
        if control == termios.TIOCPKT_DATA:
            self.write(self._session.received(data))
        elif control & termios.TIOCPKT_FLUSHREAD and not self._power_up_resent:
            self._power_up_resent = True  # a host opened the port and discarded the power-up bytes
            self.write(self.device.power_up())

    def write(self, data: bytes) -> None:
        """Write to the host; what does not fit the terminal's buffer is dropped and counted."""
        if self._master is None or not data:
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                self.dropped_bytes += len(view)
                # once at warning level; a streaming device overruns whenever nobody listens, which is normal
                quiet = self._overrun_logged or self._streamer is not None
                level = logging.DEBUG if quiet else logging.WARNING
                log.log(level, "%s simulator on %s: host not reading, dropped %r", self.device.name, self._path,
                        bytes(view))  # fmt: skip
                self._overrun_logged = True
                return
            view = view[written:]

    def close(self) -> None:
        """Stop answering and remove the pseudo-terminal (hosts still holding it see a hang-up)."""
        if self._master is None:
            return
        if self._streamer is not None:
            self._streamer.cancel()
            self._streamer = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["DevicePty", "Session", "StreamDevice", "open_raw_pty", "serve_device_tcp"]
