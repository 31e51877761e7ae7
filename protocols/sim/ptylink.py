"""A serial line between two pseudo-terminals that takes as long as a real one: a null-modem cable with a UART clock.

Two pseudo-terminals; an asyncio bridge reads what is written into either slave side (from its master) and delivers
it to the other one byte by byte at the pace of the line - ``bits_per_byte / baudrate`` seconds a byte, 1.04 ms at
9600 8N1, 0.52 ms at 19200 8N1, 1.15 ms at 9600 8E1 - so one end can be opened by a simulator and the other by the
agent, both with pyserial, and a Modbus request and its answer take their real wire time::

    simulator <-pyserial-> /dev/pts/A ~ master A --+                   +-- master B ~ /dev/pts/B <-pyserial-> agent
                                                   |  byte n written   |
                                                   |  at t0 arrives at |
                                                   +--> t0 + (n+1) x byte time (after the bytes before it) -->

    bits_per_byte = 1 start + bytesize + (1 if parity != "N") + stopbits        (8N1: 10, 8E1: 11, 8N2: 11)

What a real line does and this one too: bytes arrive no earlier than their wire time after the sender wrote them,
in order, a few at a time (as a UART's FIFO hands them over); bytes sent while the line is still busy queue behind
the ones in flight. Half duplex (RS-485, the default): both directions share the one line, so a reply cannot start
before the request has arrived - on a real bus an overlap would garble both; Modbus masters and slaves never overlap.
Bytes written into a side nobody has opened pile up in its terminal buffer (the opener's pyserial flushes them);
when that is full they are dropped and counted, as a UART would overrun. What this line does not do: parity and
baud-rate mismatches between the two ends (both sides' settings are ignored; the link's own decide the timing),
noise, and break conditions.

The link holds both slave sides open itself, so either end may be opened and closed any number of times.

Parity on a pseudo-terminal: Linux ptys keep no parity bit (the kernel drops PARENB), and recent kernels (seen on
6.18) answer EINVAL to a reconfiguration whose only change is even parity - which pyserial makes whenever a
timeout changes, so pymodbus's serial transport fails to open a pty with parity E. Open both ends with parity N
(8N1 or 8N2; odd parity happens to pass) and give the link the real line's format: its timing is what parity
changes on a real line. ``floorgate simulate ... --pty --parity E`` does exactly that.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal, Self

from protocols.sim.serve import open_raw_pty

log = logging.getLogger(__name__)

Parity = Literal["N", "E", "O", "M", "S"]

READ_CHUNK_BYTES: Final = 4096
MIN_DELIVERY_GAP_S: Final = 0.001  # deliver what is due at most every millisecond (a UART FIFO does similar)
PARITIES: Final = ("N", "E", "O", "M", "S")


def bits_per_byte(*, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> int:
    """Bits on the wire for one byte: start bit, data bits, parity bit (unless ``N``), stop bits."""
    if bytesize not in (5, 6, 7, 8):
        raise ValueError(f"bytesize {bytesize}: expected 5, 6, 7 or 8")
    if parity not in PARITIES:
        raise ValueError(f"parity {parity!r}: expected one of {', '.join(PARITIES)}")
    if stopbits not in (1, 2):
        raise ValueError(f"stopbits {stopbits}: expected 1 or 2")
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


@dataclass
class _Direction:
    """Bytes in flight one way: (arrival time of each byte, byte), oldest first."""

    name: str
    source: int
    target: int
    queue: deque[tuple[float, int]] = field(default_factory=deque)
    timer: asyncio.TimerHandle | None = None
    delivered: int = 0
    dropped: int = 0


class PtyLink:
    """Two pseudo-terminals joined by a serial line with real timing: ``path_a, path_b = await link.start()``."""

    def __init__(
        self, *, baudrate: int = 9600, bytesize: int = 8, parity: str = "N", stopbits: int = 1, half_duplex: bool = True
    ) -> None:
        if baudrate <= 0:
            raise ValueError(f"baudrate {baudrate}: must be > 0")
        self.baudrate = baudrate
        self.bits_per_byte = bits_per_byte(bytesize=bytesize, parity=parity, stopbits=stopbits)
        self.half_duplex = half_duplex
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds: list[int] = []
        self._paths: tuple[str, str] | None = None
        self._a_to_b: _Direction | None = None
        self._b_to_a: _Direction | None = None
        self._line_free_at = {"a_to_b": 0.0, "b_to_a": 0.0}

    @property
    def byte_time_s(self) -> float:
        """Seconds one byte takes on the wire."""
        return self.bits_per_byte / self.baudrate

    def wire_time_s(self, n_bytes: int) -> float:
        """Seconds ``n_bytes`` back to back take on the wire."""
        return n_bytes * self.byte_time_s

    @property
    def paths(self) -> tuple[str, str]:
        """(end A, end B) device paths."""
        if self._paths is None:
            raise RuntimeError("PtyLink not started")
        return self._paths

    @property
    def bytes_a_to_b(self) -> int:
        """Bytes delivered from end A to end B."""
        return self._a_to_b.delivered if self._a_to_b else 0

    @property
    def bytes_b_to_a(self) -> int:
        """Bytes delivered from end B to end A."""
        return self._b_to_a.delivered if self._b_to_a else 0

    @property
    def dropped_bytes(self) -> int:
        """Bytes lost because the receiving side's terminal buffer was full."""
        return sum(d.dropped for d in (self._a_to_b, self._b_to_a) if d is not None)

    async def start(self) -> tuple[str, str]:
        """Create both pseudo-terminals and start the line; returns (path A, path B)."""
        if self._paths is not None:
            raise RuntimeError(f"PtyLink already running between {self._paths[0]} and {self._paths[1]}")
        loop = asyncio.get_running_loop()
        master_a, slave_a, path_a = open_raw_pty()
        try:
            master_b, slave_b, path_b = open_raw_pty()
        except BaseException:
            os.close(master_a)
            os.close(slave_a)
            raise
        self._fds = [master_a, slave_a, master_b, slave_b]
        self._loop, self._paths = loop, (path_a, path_b)
        self._a_to_b = _Direction("a_to_b", master_a, master_b)
        self._b_to_a = _Direction("b_to_a", master_b, master_a)
        for direction in (self._a_to_b, self._b_to_a):
            loop.add_reader(direction.source, self._on_readable, direction)
        log.info("serial line %s <-> %s at %d baud, %d bits a byte", path_a, path_b, self.baudrate,
                 self.bits_per_byte)  # fmt: skip
        return path_a, path_b

    def _on_readable(self, direction: _Direction) -> None:
        assert self._loop is not None
        try:
            data = os.read(direction.source, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("serial line %s: read failed: %s", direction.name, exc)
            return
        now = self._loop.time()
        key = direction.name if not self.half_duplex else "a_to_b"  # half duplex: one shared line
        start = max(now, self._line_free_at[key])
        byte_time = self.byte_time_s
        for index, byte in enumerate(data):
            direction.queue.append((start + (index + 1) * byte_time, byte))
        self._line_free_at[key] = start + len(data) * byte_time
        self._schedule(direction)

    def _schedule(self, direction: _Direction) -> None:
        assert self._loop is not None
        if direction.timer is not None or not direction.queue:
            return
        due = max(direction.queue[0][0], self._loop.time() + MIN_DELIVERY_GAP_S / 10)
        direction.timer = self._loop.call_at(due, self._deliver, direction)

    def _deliver(self, direction: _Direction) -> None:
        assert self._loop is not None
        direction.timer = None
        now = self._loop.time()
        ready = bytearray()
        while direction.queue and direction.queue[0][0] <= now:
            ready.append(direction.queue.popleft()[1])
        if ready:
            try:
                written = os.write(direction.target, ready)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # the link is closing
                log.debug("serial line %s: write failed: %s", direction.name, exc)
                written = 0
            direction.delivered += written
            if written < len(ready):
                direction.dropped += len(ready) - written
                log.debug("serial line %s: receiver's buffer full, dropped %d bytes", direction.name,
                          len(ready) - written)  # fmt: skip
        if direction.queue:
            due = max(direction.queue[0][0], now + MIN_DELIVERY_GAP_S)
            direction.timer = self._loop.call_at(due, self._deliver, direction)

    def close(self) -> None:
        """Stop the line and remove both pseudo-terminals (programs still holding an end see a hang-up)."""
        if self._paths is None:
            return
        for direction in (self._a_to_b, self._b_to_a):
            if direction is None:
                continue
            if direction.timer is not None:
                direction.timer.cancel()
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(direction.source)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self._paths = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["Parity", "PtyLink", "bits_per_byte"]
