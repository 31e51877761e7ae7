"""systemd's service notification protocol (``sd_notify(3)``) for the edge agent — no library needed.

Under a unit with ``Type=notify`` systemd hands the service ``$NOTIFY_SOCKET``: a unix **datagram** socket, either a
path (``/run/systemd/notify``) or an abstract name written with a leading ``@``. Each datagram is one or more
``KEY=VALUE`` lines::

    READY=1            the agent is up: outbox open, local /health listening (systemd marks the unit active)
    STATUS=…           one line shown by ``systemctl status``
    WATCHDOG=1         "still alive"; with ``WatchdogSec=`` systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``)
                       and kills and restarts the service when a ping is missing that long
    STOPPING=1         the agent is shutting down

The pings come from a task on the agent's asyncio event loop, every ``WATCHDOG_USEC / 2`` as systemd recommends: a
loop that hangs (a blocking call, a deadlock) stops pinging and systemd restarts the agent. ``$WATCHDOG_PID`` names
the process the watchdog is meant for; another process (a child that inherited the environment) does not ping.

Without ``$NOTIFY_SOCKET`` every call is a no-op, so the agent runs the same by hand, under another supervisor or
in the tests. A send that fails is logged once and never stops the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0  # without a watchdog, STATUS is refreshed this often


def socket_address(value: str | None) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` → an address for ``sendto``: a path, or the abstract name (``@name`` → ``b"\\0name"``).
    ``None`` for an unset, empty or unusable value (systemd only uses absolute paths and abstract names)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_s(environ: Mapping[str, str], *, pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``$WATCHDOG_USEC``; ``None`` when there is no watchdog for this
    process (unset or invalid ``$WATCHDOG_USEC``, or ``$WATCHDOG_PID`` naming another process)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    wd_pid = environ.get("WATCHDOG_PID")
    if wd_pid:
        try:
            if int(wd_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2 / 1e6


class Notifier:
    """Sends notifications to the service manager; does nothing when not started by one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET"))
        self.watchdog_s = watchdog_interval_s(env) if self.address is not None else None
        self._sock: socket.socket | None = None
        self._failed = False
        self._last_status: str | None = None
        self.sent = 0  # datagrams sent (for the tests and /metrics, should one want it)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE`` each) as one datagram. False when disabled or the send failed."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode("utf-8", errors="replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # never stall the event loop on a full queue: drop the datagram
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
                self._failed = True
            return False
        if self._failed:
            log.info("notifying the service manager works again")
            self._failed = False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
            self._last_status = status
        return self.notify(*lines)

    def status(self, text: str) -> bool:
        """``STATUS=text``; sent only when it changed."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = "stopping") -> bool:
        lines = ["STOPPING=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
            self._last_status = status
        return self.notify(*lines)

    async def keepalive(self, status: Callable[[], str] | None = None) -> None:
        """Runs on the event loop until cancelled: ``WATCHDOG=1`` every ``watchdog_s`` (when systemd asked for a
        watchdog) and ``STATUS`` from ``status()`` whenever it changed. Returns at once when disabled."""
        if self.address is None:
            return
        interval = self.watchdog_s if self.watchdog_s is not None else STATUS_EVERY_S
        while True:
            if self.watchdog_s is not None:
                self.watchdog()
            if status is not None:
                try:
                    self.status(status())
                except Exception:  # a status text is never worth stopping the pings for
                    log.debug("cannot build the status line", exc_info=True)
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
