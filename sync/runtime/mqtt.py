"""floorgate's MQTT client — the edge uplink's and central ingest's — a small asyncio client on paho-mqtt's public
API. ``make_client`` builds it from a ``broker`` section (``sync.runtime.broker.BrokerBase``).

It drives paho from the event loop the way paho documents for an external loop (its ``examples/loop_asyncio.py``):
``on_socket_open`` / ``on_socket_close`` / ``on_socket_(un)register_write`` add and remove the socket's reader and
writer, which call ``loop_read()`` / ``loop_write()``, and a timer calls ``loop_misc()`` every second (keepalive).
Only paho's ``connect()`` — TCP and TLS handshakes, then the CONNECT — runs in a worker thread, as it blocks.

    async with make_client(broker, client_id="…") as client:     # connected: the CONNACK accepted the session
        await client.subscribe(topic, qos=1)                     # waits for the SUBACK
        await client.publish(topic, payload, qos=1)              # waits for the PUBACK
        async for message in client.messages:                    # ends with MqttError when the connection does
            ...

What it does that the aiomqtt client it replaces did not (aiomqtt offered no public way to, and reaching into its
privates broke with every release):

* **A connection the broker closes before its CONNACK fails the connect at once** with an ``MqttError`` that says
  so, instead of waiting for the whole connect timeout (10 s): a broker restarting, stopping, or refusing the TLS
  session late. A node reconnecting to a restarting broker lost those seconds each time.
* **A cancelled connect ends at once and leaves nothing open.** Cancelled while the CONNACK is awaited (a cut
  network never answers), it sends a DISCONNECT and closes the socket; cancelled while paho's ``connect()`` is still
  in the worker thread (a thread cannot be stopped; bounded by paho's connect timeout), it waits for the thread and
  then closes what it opened — a second cancellation stops the waiting, the connection is closed when the thread
  ends all the same.
* **A lost connection fails every pending publish and subscribe at once** (not after their timeouts) and ends the
  message iteration; nothing is left as a "Future exception was never retrieved".
* **Leaving the ``async with`` never raises over the error that ended the block**: it sends a DISCONNECT, waits at
  most ``CLOSE_TIMEOUT_S`` for it to be written, then closes the socket itself.

Each ``async with`` is a new network connection and a new paho client: an ``MqttClient`` can be entered again once
it has exited (not while inside). QoS 1 messages still in flight when a connection ends are not resent by the
client: the uplink resends from central's last ack, and central's acks and commands are idempotent. MQTT 5 and MQTT
3.1.1 both work (the demo's amqtt broker speaks 3.1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sync.runtime.broker import BrokerBase, tls_context

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # a durable session outlives its connection this long (MQTT 5)
TIMEOUT_S = 10.0  # CONNACK, PUBACK, SUBACK, unless the call says otherwise
CLOSE_TIMEOUT_S = 2.0  # for the DISCONNECT to be written before the socket is closed anyway
MISC_INTERVAL_S = 1.0  # paho's loop_misc: keepalive PINGREQ, and the connection closed when no PINGRESP comes

T = TypeVar("T")


class MqttError(Exception):
    """The connection could not be made, was lost, or the broker did not confirm an operation in time."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


def make_client(broker: BrokerBase, *, client_id: str, durable: bool = True, keepalive_s: int = 30,
                max_queued_incoming: int = 0) -> MqttClient:
    """The client for a ``broker`` section: MQTT 5 or 3.1.1 as configured; over TLS with the configured client
    certificate for ``mqtts://`` (``tls_context``; the broker takes the certificate's CN as user name).

    ``durable``: a persistent session — never Clean Start, MQTT 5 session expiry ``SESSION_EXPIRY_S`` — so the broker
    queues what arrives for the client while it is away (``shared/reference/mqtt-and-sync.md``): the edge agent
    and a single central consumer. Not durable: the session ends with its connection (Clean Start, expiry 0), for a
    member of a shared-subscription group (``central.ingest.service``). ``max_queued_incoming``: messages received
    and not yet taken from ``messages`` beyond which new ones are dropped with a warning (0: no limit)."""
    return MqttClient(
        broker.host, broker.port, client_id=client_id, protocol=broker.protocol, username=broker.username,
        password=broker.password, keepalive_s=keepalive_s, tls=tls_context(broker), clean_start=not durable,
        session_expiry_s=SESSION_EXPIRY_S if durable else 0, max_queued_incoming=max_queued_incoming)


class MqttClient:
    """An MQTT connection for ``async with`` (see the module's doc). ``clean_start``: MQTT 5 Clean Start, or MQTT
    3.1.1 Clean Session; ``session_expiry_s``: MQTT 5 only."""

    def __init__(self, host: str, port: int = 1883, *, client_id: str, protocol: Literal["5", "3.1.1"] = "5",
                 username: str | None = None, password: str | None = None, keepalive_s: int = 60,
                 timeout_s: float = TIMEOUT_S, tls: ssl.SSLContext | None = None, clean_start: bool = True,
                 session_expiry_s: int = 0, max_queued_incoming: int = 0) -> None:
        self.host, self.port, self.client_id, self.protocol = host, port, client_id, protocol
        self.username, self.password, self.keepalive_s, self.timeout_s = username, password, keepalive_s, timeout_s
        self.tls, self.clean_start, self.session_expiry_s = tls, clean_start, session_expiry_s
        self.max_queued_incoming = max_queued_incoming
        self._conn: _Connection | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.accepted and not self._conn.ended.is_set()

    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise MqttError("the client is connected already (an MqttClient can be entered again, not nested)")
        conn = _Connection(self._new_paho(), asyncio.get_running_loop(), self.max_queued_incoming)
        self._conn = conn
        try:
            await conn.open(self._connect_in_thread(conn.paho), self.timeout_s)
        except BaseException:
            self._conn = None
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()  # never raises: it cannot replace the error that ended the block

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      timeout_s: float | None = None) -> None:
        """Publish; with QoS 1, return once the broker's PUBACK came (``MqttError`` after ``timeout_s``)."""
        conn = self._live()
        info = conn.paho.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish on {topic} failed: {paho.error_string(info.rc)}")
        if info.is_published():
            return
        await conn.answer(conn.publishes, info.mid, self.timeout_s if timeout_s is None else timeout_s,
                          f"publish on {topic}")

    async def subscribe(self, topic: str, *, qos: int = 1, timeout_s: float | None = None) -> list[ReasonCode]:
        """Subscribe and return the broker's SUBACK reason codes (the QoS granted, or a refusal)."""
        conn = self._live()
        rc, mid = conn.paho.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe to {topic} failed: {paho.error_string(rc)}")
        return await conn.answer(conn.subscribes, mid, self.timeout_s if timeout_s is None else timeout_s,
                                 f"subscribe to {topic}")

    @property
    def messages(self) -> _Messages:
        """The messages received, in order, for ``async for``; it raises ``MqttError`` once the connection has
        ended and every message received before has been taken."""
        return _Messages(self._live())

    def _live(self) -> _Connection:
        conn = self._conn
        if conn is None:
            raise MqttError("not connected")
        if conn.ended.is_set():
            raise MqttError(str(conn.error))
        return conn

    def _new_paho(self) -> paho.Client:
        v5 = self.protocol == "5"
        client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
                             clean_session=None if v5 else self.clean_start, reconnect_on_failure=False)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls is not None:
            client.tls_set_context(self.tls)
        return client

    def _connect_in_thread(self, client: paho.Client) -> Callable[[], MQTTErrorCode]:
        if self.protocol != "5":
            return lambda: client.connect(self.host, self.port, self.keepalive_s)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        props.SessionExpiryInterval = self.session_expiry_s
        return lambda: client.connect(self.host, self.port, self.keepalive_s, clean_start=self.clean_start,
                                      properties=props)


class _Messages:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        conn = self._conn
        while True:
            with contextlib.suppress(asyncio.QueueEmpty):
                return conn.queue.get_nowait()
            if conn.ended.is_set():
                raise MqttError(str(conn.error))
            conn.news.clear()
            await conn.news.wait()


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """A done callback: the exception of a future nobody awaits any more counts as seen (no "never retrieved")."""
    if not fut.cancelled():
        fut.exception()


class _Connection:
    """One network connection: a paho client driven from the event loop. Every method runs in the loop's thread;
    paho calls ``_on_socket_open`` and ``_on_register_write`` from the connect's worker thread too, so those hand
    their work to the loop."""

    def __init__(self, client: paho.Client, loop: asyncio.AbstractEventLoop, max_queued: int) -> None:
        self.paho, self.loop = client, loop
        self.thread = threading.get_ident()
        self.connack: asyncio.Future[None] = loop.create_future()
        self.connack.add_done_callback(_retrieved)
        self.accepted = False
        self.closing = False  # we disconnect: what ends the connection now is no loss
        self.ended = asyncio.Event()
        self.error = MqttError("not connected")  # why it ended
        self.news = asyncio.Event()  # a message arrived or the connection ended
        self.queue: asyncio.Queue[Message] = asyncio.Queue(max(max_queued, 0))
        self.dropped = 0  # messages dropped because the queue was full (said in the log at most once a second)
        self._dropped_said = (0, float("-inf"))  # (dropped, loop time) when last logged
        self.publishes: dict[int, asyncio.Future[None]] = {}
        self.subscribes: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self.fd: int | None = None
        self.misc: asyncio.TimerHandle | None = None
        self.give_up: asyncio.TimerHandle | None = None  # closes the socket if the DISCONNECT cannot be written
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    # -- connecting and closing ---------------------------------------------------------------------------------------
    async def open(self, connect: Callable[[], MQTTErrorCode], timeout_s: float) -> None:
        worker = self.loop.run_in_executor(None, connect)
        worker.add_done_callback(_retrieved)
        try:
            rc = await asyncio.shield(worker)
        except asyncio.CancelledError:
            # the TCP and TLS handshakes cannot be stopped: close what they open once they are done
            worker.add_done_callback(lambda _: self.abandon("connect abandoned: the client is being stopped"))
            await asyncio.wait([worker])  # a second cancellation stops waiting
            raise
        except (OSError, ValueError, paho.WebsocketConnectionError) as exc:
            self.abandon(str(exc))
            raise MqttError(str(exc) or type(exc).__name__) from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.abandon(paho.error_string(rc))
            raise MqttError(f"connect failed: {paho.error_string(rc)}")
        try:
            await asyncio.wait([self.connack], timeout=timeout_s)
        except asyncio.CancelledError:
            self.abandon("connect abandoned: the client is being stopped")  # a cut network never answers
            raise
        if not self.connack.done():
            self.abandon(f"no CONNACK within {timeout_s:g} s")
        error = self.connack.exception()
        if error is not None:
            self.abandon(str(error))
            raise MqttError(str(error))
        self.accepted = True

    def abandon(self, reason: str) -> None:
        """End the connection: fail a connect still waiting for its CONNACK with ``reason``, send a DISCONNECT
        (paho closes the socket once it is written) and close the socket after ``CLOSE_TIMEOUT_S`` if it is not."""
        if not self.connack.done():
            self.connack.set_exception(MqttError(reason))
        if self.closing:
            return
        self.closing = True
        if self.paho.socket() is None:
            self._end(MqttError("disconnected"))
            return
        self.paho.disconnect()
        if self.paho.socket() is not None:
            self.give_up = self.loop.call_later(CLOSE_TIMEOUT_S, self._close_socket, MqttError("disconnected"))

    async def close(self) -> None:
        if not self.ended.is_set():
            self.abandon("disconnected")
            await self.ended.wait()  # bounded: the socket is closed after CLOSE_TIMEOUT_S at the latest

    def _close_socket(self, error: MqttError) -> None:
        """Close the socket without paho (it could not write the DISCONNECT, or failed unexpectedly); this paho
        client is not used again."""
        self._unwatch()
        sock = self.paho.socket()
        if sock is not None:
            sock.close()
        self._end(error)

    def _end(self, error: MqttError) -> None:
        if self.ended.is_set():
            return
        self.error = error
        self.ended.set()
        self.news.set()
        if not self.connack.done():
            self.connack.set_exception(error)
        for pending in (self.publishes, self.subscribes):
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(MqttError(str(error)))

    # -- waiting for the broker's answer ------------------------------------------------------------------------------
    async def answer(self, pending: dict[int, asyncio.Future[T]], mid: int, timeout_s: float, what: str) -> T:
        if self.ended.is_set():
            raise MqttError(str(self.error))
        fut: asyncio.Future[T] = self.loop.create_future()
        fut.add_done_callback(_retrieved)
        pending[mid] = fut
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            raise MqttError(f"{what}: no answer from the broker within {timeout_s:g} s") from None
        finally:
            if pending.get(mid) is fut:
                del pending[mid]

    # -- paho's callbacks ---------------------------------------------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if self.connack.done():
            return
        if reason_code.is_failure:
            self.connack.set_exception(MqttError(f"the broker refused the connection: {reason_code}"))
        else:
            self.connack.set_result(None)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        if self.closing:
            self._end(MqttError("disconnected"))
        elif not self.connack.done():
            self._end(MqttError("the broker closed the connection before accepting it (no CONNACK)"))
        elif flags.is_disconnect_packet_from_server:
            self._end(MqttError(f"the broker ended the connection: {reason_code}"))
        else:
            self._end(MqttError(f"the connection to the broker was lost: {reason_code}"))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        fut = self.publishes.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        fut = self.subscribes.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(list(reason_codes))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("MQTT: a message whose topic is not UTF-8 was dropped")
            return
        try:
            self.queue.put_nowait(Message(topic, bytes(message.payload), message.qos, bool(message.retain)))
        except asyncio.QueueFull:
            self.dropped += 1
            said, at = self._dropped_said
            if self.loop.time() - at >= 1.0:  # a flood must not turn into a flood of log lines
                log.warning("MQTT: %d messages are waiting to be handled; %d dropped since the last warning (%d in "
                            "all), the latest on %s", self.queue.qsize(), self.dropped - said, self.dropped,
                            topic[:200])
                self._dropped_said = (self.dropped, self.loop.time())
        self.news.set()

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
        self._in_loop(self._watch, sock.fileno())

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
        self._unwatch()
        # paho reports the disconnect right after this; if not, the connection has ended all the same (and paho
        # closing a socket we closed already, when it is garbage-collected, changes nothing)
        if not self.ended.is_set() and not self.loop.is_closed():
            self.loop.call_soon(self._end, MqttError("the connection to the broker was closed"))

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
        self._in_loop(self._want_write, sock.fileno())

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
        self._in_loop(self._no_write, sock.fileno())

    # -- the socket in the event loop ---------------------------------------------------------------------------------
    def _in_loop(self, fn: Callable[[int], None], fd: int) -> None:
        if threading.get_ident() == self.thread:
            fn(fd)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, fd)

    def _watch(self, fd: int) -> None:
        if self.paho.socket() is None or self.fd is not None:
            return
        self.fd = fd
        self.loop.add_reader(fd, self._readable)
        self.misc = self.loop.call_later(MISC_INTERVAL_S, self._tick)

    def _unwatch(self) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
            self.fd = None
        for timer in (self.misc, self.give_up):
            if timer is not None:
                timer.cancel()
        self.misc = self.give_up = None

    def _want_write(self, fd: int) -> None:
        if fd == self.fd:
            self.loop.add_writer(fd, self._writable)

    def _no_write(self, fd: int) -> None:
        if fd == self.fd:
            self.loop.remove_writer(fd)

    def _readable(self) -> None:
        try:
            while True:
                self.paho.loop_read()
                sock = self.paho.socket()
                # TLS: bytes already decrypted wait in the SSL object, not in the socket the loop watches
                if not isinstance(sock, ssl.SSLSocket) or sock.pending() == 0:
                    break
        except Exception as exc:  # whatever paho raises, the connection is unusable
            self._close_socket(MqttError(f"the connection to the broker failed: {exc!r}"))

    def _writable(self) -> None:
        try:
            self.paho.loop_write()
        except Exception as exc:
            self._close_socket(MqttError(f"the connection to the broker failed: {exc!r}"))

    def _tick(self) -> None:
        self.misc = None
        try:
            if self.paho.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS and self.fd is not None:
                self.misc = self.loop.call_later(MISC_INTERVAL_S, self._tick)
        except Exception as exc:
            self._close_socket(MqttError(f"the connection to the broker failed: {exc!r}"))


__all__ = ["CLOSE_TIMEOUT_S", "SESSION_EXPIRY_S", "Message", "MqttClient", "MqttError", "make_client"]
