"""floorgate's MQTT client (``sync.runtime.mqtt``), as the agent and central build it (``make_client``), MQTT 5 and
3.1.1: connecting to a broker that drops the connection before its CONNACK — a broker restarting or stopping at that
moment — fails at once with an error that says so (aiomqtt alone waited for its whole connect timeout, 10 s, on every
such attempt, and an agent told to stop then took that long; seen in CI: ``test_agent_stop``, scenario "broker
restarts"); a connect cancelled while it waits for a CONNACK that never comes ends at once and closes its connection;
a lost connection fails a publish waiting for its PUBACK and ends the message iteration at once; QoS 1 works both ways
on mosquitto and on amqtt (the demo's MQTT 3.1.1 broker)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from central.config import BrokerSettings
from edge.config import BrokerConfig
from sync.runtime.mqtt import MqttClient, MqttError, make_client
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration

CONNACK = {"5": b"\x20\x03\x00\x00\x00", "3.1.1": b"\x20\x02\x00\x00"}  # session not present, accepted


class FakeBroker:
    """A TCP server on 127.0.0.1 that reads the first bytes of each connection and then does what ``script`` says:
    ``drop`` (close with a reset, as a killed broker does), ``silent`` (never answer, as a cut network), or a
    protocol name (send that CONNACK, then drop at the client's next packet). Keeps the first byte of every
    connection (``seen``) and whether the client closed it (``closed_by_client``)."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.05)  # so that the thread sees ``stop``
        self.url = f"mqtt://127.0.0.1:{self.srv.getsockname()[1]}"
        self.seen: list[bytes] = []
        self.closed_by_client = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.seen.append(conn.recv(1))
                    if self.script == "silent":
                        conn.settimeout(0.05)
                        while not self.stop.is_set():
                            try:
                                if not conn.recv(4096):
                                    self.closed_by_client.set()
                                    break
                            except TimeoutError:
                                continue
                    elif self.script in CONNACK:
                        conn.recv(4096)  # the rest of the CONNECT
                        conn.sendall(CONNACK[self.script])
                        conn.recv(4096)  # the next packet: the connection breaks now
                except OSError:
                    self.seen.append(b"")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.srv.close()


@pytest.fixture
def fake_broker() -> Iterator[Callable[[str], FakeBroker]]:
    made: list[FakeBroker] = []

    def make(script: str) -> FakeBroker:
        made.append(FakeBroker(script))
        return made[-1]

    yield make
    for broker in made:
        broker.close()


MAKERS: dict[str, Callable[[str, str], MqttClient]] = {
    # the agent's: durable session, its configured keepalive
    "edge 5": lambda url, cid: make_client(BrokerConfig(url=url, protocol="5"), client_id=cid, keepalive_s=30),
    "edge 3.1.1": lambda url, cid: make_client(BrokerConfig(url=url, protocol="3.1.1"), client_id=cid),
    # central's: a single durable consumer, or a member of a shared-subscription group (session ends with it)
    "central 5": lambda url, cid: make_client(BrokerSettings(url=url, protocol="5"), client_id=cid),
    "central 3.1.1": lambda url, cid: make_client(BrokerSettings(url=url, protocol="3.1.1"), client_id=cid),
    "central group 5": lambda url, cid: make_client(BrokerSettings(url=url, protocol="5"), client_id=cid,
                                                    durable=False, max_queued_incoming=10_000),
    "central group 3.1.1": lambda url, cid: make_client(BrokerSettings(url=url, protocol="3.1.1"), client_id=cid,
                                                        durable=False),
}


@pytest.mark.parametrize("which", MAKERS)
async def test_a_connection_dropped_before_connack_fails_the_connect_at_once(
        fake_broker: Callable[[str], FakeBroker], which: str) -> None:
    broker = fake_broker("drop")
    client = MAKERS[which](broker.url, "t-dropped")
    t0 = time.monotonic()
    with pytest.raises(MqttError) as err:
        async with client:
            pass
    # the client's own timeout is 10 s: its error would be "no CONNACK within 10 s"
    assert "closed the connection before accepting it" in str(err.value)
    assert time.monotonic() - t0 < 5
    assert broker.seen == [b"\x10"]  # it did send its CONNECT; the broker dropped it
    assert not client.connected


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_connect_cancelled_while_no_connack_comes_ends_at_once_and_closes_its_connection(
        fake_broker: Callable[[str], FakeBroker], protocol: str) -> None:
    broker = fake_broker("silent")
    client = make_client(BrokerConfig(url=broker.url, protocol=protocol), client_id="t-silent")
    ours = asyncio.all_tasks()

    async def connect() -> None:
        async with client:
            pass

    task = asyncio.create_task(connect())
    for _ in range(500):  # the CONNECT went out (and nobody will answer it)
        if broker.seen:
            break
        await asyncio.sleep(0.01)
    assert broker.seen == [b"\x10"]
    t0 = time.monotonic()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
    assert time.monotonic() - t0 < 1
    assert await asyncio.to_thread(broker.closed_by_client.wait, 5), "the abandoned connection was left open"
    assert not client.connected
    assert not [t for t in asyncio.all_tasks() - ours if t is not asyncio.current_task()]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_lost_connection_fails_a_waiting_publish_and_ends_the_messages_at_once(
        fake_broker: Callable[[str], FakeBroker], protocol: str) -> None:
    broker = fake_broker(protocol)  # accepts the session, then breaks the connection at the first publish
    client = make_client(BrokerSettings(url=broker.url, protocol=protocol), client_id="t-lost")
    async with client:
        assert client.connected
        messages = client.messages
        t0 = time.monotonic()
        with pytest.raises(MqttError, match=r"lost|closed"):
            await client.publish("floorgate/test/lost", b"x", qos=1, timeout_s=30)
        with pytest.raises(MqttError):
            await anext(messages)
        assert time.monotonic() - t0 < 5  # not the publish's timeout
        assert not client.connected
        with pytest.raises(MqttError):
            await client.publish("floorgate/test/lost", b"x", qos=1)


@pytest.mark.parametrize("which", MAKERS)
async def test_the_same_clients_connect_publish_and_receive_and_connect_again(
        mosquitto: MosquittoServer, unique_id: str, which: str) -> None:
    client = MAKERS[which](mosquitto.url, f"t-normal-{unique_id}")
    topic = f"floorgate/test/{unique_id}"
    async with client:
        granted = await client.subscribe(topic, qos=1)
        assert [c.value for c in granted] == [1]
        await client.publish(topic, b"x", qos=1)
        message = await asyncio.wait_for(anext(client.messages), 10)
        assert (message.topic, message.payload, message.qos) == (topic, b"x", 1)
    assert not client.connected
    # after a clean disconnect the client connects again (a new connection)
    async with client:
        await client.publish(topic, b"y", qos=1)


@pytest.fixture
async def amqtt_url() -> AsyncIterator[str]:
    """The demo's embedded broker (amqtt, MQTT 3.1.1) in this event loop."""
    from amqtt.broker import Broker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}})
    await broker.start()
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        await broker.shutdown()


async def test_qos_1_both_ways_over_mqtt_3_1_1_on_the_demos_amqtt_broker(amqtt_url: str, unique_id: str) -> None:
    topic = f"floorgate/test/{unique_id}"
    central = make_client(BrokerSettings(url=amqtt_url, protocol="3.1.1"), client_id=f"c-{unique_id}")
    node = make_client(BrokerConfig(url=amqtt_url, protocol="3.1.1"), client_id=f"n-{unique_id}")
    async with central, node:
        await central.subscribe(topic, qos=1)
        for i in range(3):
            await node.publish(topic, f"m{i}".encode(), qos=1)
        got = [await asyncio.wait_for(anext(central.messages), 10) for _ in range(3)]
    assert [m.payload for m in got] == [b"m0", b"m1", b"m2"]
