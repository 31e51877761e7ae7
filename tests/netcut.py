"""A TCP proxy that can pull the network cable: ``NetCut`` for "the network is gone" faults in tests.

Put it between a client and a server, point the client at the proxy, and cut the network when the test wants::

    with MosquittoServer() as broker, NetCut(broker.host, broker.port) as net:
        agent = Proc("edge", [..., "--broker", net.url_for("mqtt")], tmp_path).start()
        ...
        net.cut()       # pulled cable: nothing passes, nobody is told
        ...
        net.restore()   # cable back: connections from before are dead, new ones work

* ``cut()``: bytes in both directions on existing connections are read and silently discarded, and closes are not
  passed on: no FIN, no RST reaches either side, like a pulled cable. New connections are accepted (the kernel
  completes the handshake) but never connected to the target, so clients time out waiting for an answer.
* ``restore()``: every connection that existed during the cut (including those accepted during it) is closed
  abruptly with an RST on both sides, as after a real outage in which both ends gave up; clients must reconnect.
  New connections are forwarded normally.
* Outside a cut it is a plain forwarder: a close (FIN) or reset on one side is passed on to the other side, a target
  that refuses the connection makes the proxy reset the client's connection.

It is thread-based (one I/O thread with a selector, non-blocking sockets), so it works from plain synchronous
pytest tests that drive subprocesses. ``cut()`` and ``restore()`` are synchronous: when they return, the I/O thread
has switched, and no byte is forwarded after ``cut()`` returns. ``close()`` stops the thread and closes every socket.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

__all__ = ["NetCut", "NetCutStats"]

LOCALHOST = "127.0.0.1"
_CHUNK = 65536
_MAX_BUFFERED = 1 << 20  # per direction: stop reading a side while this much waits for the other side
_COMMAND_TIMEOUT_S = 10.0

Side = Literal["client", "target"]
_CLIENT: Side = "client"
_TARGET: Side = "target"


@dataclass(frozen=True)
class NetCutStats:
    """A consistent snapshot of the proxy's counters."""

    connections_accepted: int  # every accepted client connection, also those accepted during a cut
    connections_open: int  # client connections the proxy holds now
    connect_failures: int  # connections to the target that failed (target down): the client got an RST
    bytes_to_target: int  # client → target, forwarded
    bytes_to_client: int  # target → client, forwarded
    bytes_dropped: int  # discarded because of a cut (both directions, including what was buffered at the cut)


class _Link:
    """One client connection and its connection to the target."""

    __slots__ = (
        "client",
        "client_eof",
        "client_shut",
        "closed",
        "connected",
        "doomed",
        "target",
        "target_eof",
        "target_shut",
        "to_client",
        "to_target",
    )

    def __init__(self, client: socket.socket, *, doomed: bool) -> None:
        self.client = client
        self.target: socket.socket | None = None
        self.connected = False  # the connection to the target is established
        self.doomed = doomed  # existed during a cut: discard everything, reset on restore
        self.to_target = bytearray()
        self.to_client = bytearray()
        self.client_eof = False  # the client closed its side (or reset)
        self.target_eof = False
        self.client_shut = False  # we passed an EOF on to the client (shutdown SHUT_WR)
        self.target_shut = False
        self.closed = False


class NetCut:
    """TCP proxy on 127.0.0.1 (random free port) to ``(target_host, target_port)`` that can cut the network."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = LOCALHOST) -> None:
        infos = socket.getaddrinfo(target_host, target_port, type=socket.SOCK_STREAM)
        self._target_family, _type, _proto, _name, self._target_addr = infos[0]
        self.target = (target_host, target_port)
        self._cut = False
        self._links: set[_Link] = set()
        self._interest: dict[socket.socket, int] = {}
        self._commands: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._lock = threading.Lock()  # held by the I/O thread while it works, so stats() sees whole steps
        self._error: BaseException | None = None
        self._closed = False
        self._accepted = self._open = self._connect_failures = 0
        self._bytes_to_target = self._bytes_to_client = self._bytes_dropped = 0

        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((listen_host, 0))
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._wake_r.setblocking(False)
            self._selector.register(self._listener, selectors.EVENT_READ, "listener")
            self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        except BaseException:
            self._close_sockets()
            raise
        self.host: str = listen_host
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"netcut-{self.port}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API

    def url_for(self, scheme: str) -> str:
        """``scheme://127.0.0.1:PORT`` of the proxy, e.g. ``url_for("mqtt")``."""
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Pull the cable: from now on nothing passes in either direction, and nobody is told. Idempotent."""
        self._call("cut")

    def restore(self) -> None:
        """Plug the cable back in: reset every connection that lived through the cut; new ones forward. Idempotent."""
        self._call("restore")

    def stats(self) -> NetCutStats:
        with self._lock:
            return NetCutStats(
                connections_accepted=self._accepted,
                connections_open=self._open,
                connect_failures=self._connect_failures,
                bytes_to_target=self._bytes_to_target,
                bytes_to_client=self._bytes_to_client,
                bytes_dropped=self._bytes_dropped,
            )

    @property
    def connections_accepted(self) -> int:
        return self.stats().connections_accepted

    @property
    def bytes_to_target(self) -> int:
        return self.stats().bytes_to_target

    @property
    def bytes_to_client(self) -> int:
        return self.stats().bytes_to_client

    @property
    def bytes_dropped(self) -> int:
        return self.stats().bytes_dropped

    def close(self) -> None:
        """Stop the I/O thread and close every socket (the proxy's connections end with a plain close).

        Idempotent. Raises the I/O thread's exception if it died of one.
        """
        if not self._closed:
            self._closed = True
            if self._thread.is_alive():
                self._commands.put(("stop", threading.Event()))
                self._wake()
            self._thread.join(_COMMAND_TIMEOUT_S)
            if self._thread.is_alive():
                raise RuntimeError(f"netcut I/O thread for port {self.port} did not stop")
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"netcut I/O thread for port {self.port} failed") from error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "cut" if self._cut else "forwarding"
        return f"<NetCut {self.host}:{self.port} -> {self.target[0]}:{self.target[1]} {state}>"

    # ------------------------------------------------------------------ commands to the I/O thread

    def _call(self, command: str) -> None:
        if self._closed:
            raise RuntimeError("NetCut is closed")
        done = threading.Event()
        self._commands.put((command, done))
        self._wake()
        while not done.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError(f"netcut I/O thread for port {self.port} has ended") from self._error

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe already wakes the thread
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        try:
            while True:
                events = self._selector.select()
                with self._lock:
                    for key, mask in events:
                        if key.data == "listener":
                            self._accept()
                        elif key.data == "wake":
                            if self._commands_pending():
                                return
                        else:
                            link, side = key.data
                            if not link.closed:
                                self._service(link, side, mask)
        except BaseException as exc:  # re-raised by close() / _call(); a thread must not die with an exception
            self._error = exc
        finally:
            with self._lock:
                self._close_sockets()

    def _commands_pending(self) -> bool:
        """Run queued commands; True when the thread must stop."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return False
            try:
                if command == "stop":
                    return True
                if command == "cut":
                    self._do_cut()
                elif command == "restore":
                    self._do_restore()
            finally:
                done.set()

    def _do_cut(self) -> None:
        self._cut = True
        for link in list(self._links):
            if not link.doomed:
                link.doomed = True
                self._bytes_dropped += len(link.to_target) + len(link.to_client)
                link.to_target.clear()
                link.to_client.clear()
            self._update(link)

    def _do_restore(self) -> None:
        self._cut = False
        for link in list(self._links):
            if link.doomed:
                self._close_link(link, reset=True)

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            client.setblocking(False)
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._accepted += 1
            self._open += 1
            link = _Link(client, doomed=self._cut)
            self._links.add(link)
            if not link.doomed:
                self._connect(link)
            if not link.closed:
                self._update(link)

    def _connect(self, link: _Link) -> None:
        target = socket.socket(self._target_family, socket.SOCK_STREAM)
        link.target = target
        target.setblocking(False)
        with contextlib.suppress(OSError):
            target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = target.connect_ex(self._target_addr)
        if code == 0:
            link.connected = True
        elif code not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self._connect_failures += 1
            self._close_link(link, reset=True)

    def _service(self, link: _Link, side: Side, mask: int) -> None:
        if side == _TARGET and not link.connected:
            assert link.target is not None
            code = link.target.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                link.connected = True
            elif link.doomed:  # failed while the network is cut: nobody may hear of it until the restore
                self._unregister(link.target)
                link.target.close()
                link.target = None
            else:
                self._connect_failures += 1
                self._close_link(link, reset=True)
                return
        else:
            if mask & selectors.EVENT_READ:
                self._read(link, side)
            if not link.closed and mask & selectors.EVENT_WRITE:
                self._write(link, side)
        if not link.closed:
            self._update(link)

    def _read(self, link: _Link, side: Side) -> None:
        sock = link.client if side == _CLIENT else link.target
        assert sock is not None
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            if link.doomed:
                self._set_eof(link, side)  # not passed on during a cut
            else:
                self._close_link(link, reset=True)
            return
        if not data:
            self._set_eof(link, side)
        elif link.doomed:
            self._bytes_dropped += len(data)
        elif side == _CLIENT:
            link.to_target += data
        else:
            link.to_client += data

    def _write(self, link: _Link, side: Side) -> None:
        sock, buffer = (link.client, link.to_client) if side == _CLIENT else (link.target, link.to_target)
        assert sock is not None
        try:
            sent = sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_link(link, reset=True)
            return
        del buffer[:sent]
        if side == _CLIENT:
            self._bytes_to_client += sent
        else:
            self._bytes_to_target += sent

    @staticmethod
    def _set_eof(link: _Link, side: Side) -> None:
        if side == _CLIENT:
            link.client_eof = True
        else:
            link.target_eof = True

    def _update(self, link: _Link) -> None:
        """Pass on finished half-closes, close a finished link, and set what the selector watches."""
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        if link.doomed:  # read and discard until the restore; a side that closed is not watched any more
            self._watch(link, _CLIENT, 0 if link.client_eof else read)
            if link.target is not None:
                self._watch(link, _TARGET, (0 if link.target_eof else read) if link.connected else write)
            return
        assert link.target is not None
        if link.client_eof and not link.to_target and link.connected and not link.target_shut:
            with contextlib.suppress(OSError):
                link.target.shutdown(socket.SHUT_WR)
            link.target_shut = True
        if link.target_eof and not link.to_client and not link.client_shut:
            with contextlib.suppress(OSError):
                link.client.shutdown(socket.SHUT_WR)
            link.client_shut = True
        if link.client_shut and link.target_shut:
            self._close_link(link, reset=False)
            return
        client_events = read if not link.client_eof and len(link.to_target) < _MAX_BUFFERED else 0
        if link.to_client:
            client_events |= write
        self._watch(link, _CLIENT, client_events)
        if not link.connected:
            self._watch(link, _TARGET, write)
            return
        target_events = read if not link.target_eof and len(link.to_client) < _MAX_BUFFERED else 0
        if link.to_target:
            target_events |= write
        self._watch(link, _TARGET, target_events)

    def _watch(self, link: _Link, side: Side, events: int) -> None:
        sock = link.client if side == _CLIENT else link.target
        assert sock is not None
        current = self._interest.get(sock, 0)
        if events == current:
            return
        if events == 0:
            self._unregister(sock)
            return
        if current == 0:
            self._selector.register(sock, events, (link, side))
        else:
            self._selector.modify(sock, events, (link, side))
        self._interest[sock] = events

    def _unregister(self, sock: socket.socket) -> None:
        if self._interest.pop(sock, 0):
            self._selector.unregister(sock)

    def _close_link(self, link: _Link, *, reset: bool) -> None:
        """Close both sides; ``reset``: abruptly, with an RST (SO_LINGER 0) instead of a FIN."""
        if link.closed:
            return
        link.closed = True
        self._links.discard(link)
        self._open -= 1
        for sock in (link.client, link.target):
            if sock is None:
                continue
            self._unregister(sock)
            if reset:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def _close_sockets(self) -> None:
        for link in list(self._links):
            self._close_link(link, reset=False)
        self._interest.clear()
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
