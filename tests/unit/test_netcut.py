"""``tests/netcut.py``: the proxy forwards, a cut swallows everything silently, a restore resets what lived through it.

The target is a plain echo server in threads on 127.0.0.1; the clients are blocking sockets with short timeouts.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import pytest

from tests.netcut import NetCut

QUIET_S = 0.3  # how long "nothing arrives" is watched
TIMEOUT_S = 5.0


class EchoServer:
    """Echo server on 127.0.0.1: records what arrives, echoes it, counts connections and their ends.

    ``connections`` hands the test the server side of every accepted connection (to send unasked, like a broker).
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.connections: queue.Queue[socket.socket] = queue.Queue()
        self.received = bytearray()
        self.accepted = 0
        self.ended: list[str] = []  # "eof" or "reset", one per connection whose client side went away
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept_loop, name="echo-accept")]
        self._threads[0].start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._sockets.append(conn)
            self.connections.put(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), name="echo-conn")
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                end = "reset"
                break
            if not data:
                end = "eof"
                break
            with self._lock:
                self.received += data
            try:
                conn.sendall(data)
            except OSError:
                end = "reset"
                break
        with self._lock:
            self.ended.append(end)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)  # echo the close as well

    def snapshot(self) -> tuple[int, bytes, list[str]]:
        with self._lock:
            return self.accepted, bytes(self.received), list(self.ended)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            sockets = list(self._sockets)
        for conn in sockets:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the recv of its thread
        for thread in self._threads:
            thread.join(TIMEOUT_S)
        for conn in sockets:
            conn.close()
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def net(echo: EchoServer) -> Iterator[NetCut]:
    with NetCut("127.0.0.1", echo.port) as proxy:
        yield proxy


@contextlib.contextmanager
def client(proxy: NetCut) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S) as sock:
        yield sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def assert_silent(sock: socket.socket) -> None:
    """Nothing arrives and the connection is not closed either: the recv times out."""
    sock.settimeout(QUIET_S)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    sock.settimeout(TIMEOUT_S)


def assert_reset(sock: socket.socket) -> None:
    """The connection is dead: the recv fails with a reset (or sees the end, should an RST arrive as EOF)."""
    sock.settimeout(TIMEOUT_S)
    try:
        data = sock.recv(100)
    except ConnectionResetError:
        return
    assert data == b"", f"expected a dead connection, got {data!r}"


def wait_for(what: str, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_forwards_both_ways_and_counts(net: NetCut, echo: EchoServer) -> None:
    assert net.url_for("mqtt") == f"mqtt://127.0.0.1:{net.port}"
    assert net.port != echo.port
    payload = bytes(range(256)) * 12_000  # 3 MB: more than the proxy buffers, so flow control is exercised
    with client(net) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert recv_exactly(sock, len(payload)) == payload
        sender.join(TIMEOUT_S)
        stats = net.stats()
        assert stats.connections_accepted == 1
        assert stats.connections_open == 1
        assert stats.bytes_to_target == stats.bytes_to_client == 5 + len(payload)
        assert stats.bytes_dropped == stats.connect_failures == 0
    assert echo.snapshot()[:2] == (1, b"hello" + payload)


def test_a_close_is_passed_on_outside_a_cut(net: NetCut, echo: EchoServer) -> None:
    with client(net) as sock:
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 3) == b"bye"
        assert sock.recv(100) == b""  # the echo server saw our FIN and closed its side, which came back
    wait_for("the server to see the end", lambda: echo.snapshot()[2] == ["eof"])
    wait_for("the proxy to drop the connection", lambda: net.stats().connections_open == 0)


def test_cut_discards_silently_and_restore_resets(net: NetCut, echo: EchoServer) -> None:
    with client(net) as old:
        old.sendall(b"ping")
        assert recv_exactly(old, 4) == b"ping"
        server_side = echo.connections.get(timeout=TIMEOUT_S)

        net.cut()
        assert net.is_cut
        old.sendall(b"lost")  # client → target: swallowed
        assert_silent(old)
        server_side.sendall(b"down")  # target → client: swallowed as well
        assert_silent(old)

        with client(net) as during:  # the kernel accepts; nothing goes on to the target, nothing comes back
            during.sendall(b"new")
            assert_silent(during)
            old.shutdown(socket.SHUT_WR)  # a close is not passed on either: no FIN reaches the server
            time.sleep(QUIET_S)
            assert echo.snapshot() == (1, b"ping", [])
            stats = net.stats()
            assert (stats.connections_accepted, stats.connections_open) == (2, 2)
            assert stats.bytes_dropped == len(b"lost" + b"down" + b"new")
            assert (stats.bytes_to_target, stats.bytes_to_client) == (4, 4)

            net.restore()
            assert not net.is_cut
            assert_reset(old)  # both connections that lived through the cut are dead
            assert_reset(during)
        wait_for("the server side to be reset", lambda: echo.snapshot()[2] == ["reset"])
        assert net.stats().connections_open == 0

    with client(net) as new:  # and the network works again
        new.sendall(b"again")
        assert recv_exactly(new, 5) == b"again"
    accepted, received, _ended = echo.snapshot()
    assert (accepted, received) == (2, b"pingagain")
    assert net.connections_accepted == 3


def test_cut_and_restore_are_idempotent(net: NetCut) -> None:
    net.restore()
    net.cut()
    net.cut()
    net.restore()
    net.restore()
    with client(net) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"


def test_target_down_resets_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead_port = placeholder.getsockname()[1]
    with NetCut("127.0.0.1", dead_port) as proxy:
        try:
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S)
        except ConnectionResetError:
            pass  # on loopback the proxy's RST may overtake the return of our connect()
        else:
            with sock:
                assert_reset(sock)
        wait_for("the failed connect to be counted", lambda: proxy.stats().connect_failures == 1)
        assert proxy.stats().connections_open == 0


def test_close_stops_the_thread_and_the_listener(echo: EchoServer) -> None:
    proxy = NetCut("127.0.0.1", echo.port)
    port = proxy.port
    with client(proxy) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        proxy.close()
        assert sock.recv(100) == b""  # the proxy's connections end with a plain close
    assert not [t for t in threading.enumerate() if t.name == f"netcut-{port}"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S).close()
    proxy.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        proxy.cut()
