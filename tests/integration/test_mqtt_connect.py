"""Connecting to a broker that drops the connection before its CONNACK — a broker restarting or stopping at that
moment — fails at once with an error that says so, for the agent's and central's clients alike; aiomqtt alone
waited for its whole connect timeout (10 s) on every such attempt, and an agent told to stop then took that long
(seen in CI: ``test_agent_stop``, scenario "broker restarts")."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import aiomqtt
import pytest

from central.config import BrokerSettings
from central.ingest.mqtt import make_client as central_client
from edge.config import BrokerConfig
from edge.uplink.mqtt import make_client as edge_client
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration


@pytest.fixture
def dropping_broker() -> Iterator[tuple[str, list[bytes]]]:
    """A TCP server on 127.0.0.1 that reads the client's CONNECT and closes the connection (with a reset, as a
    killed broker does); yields its URL and the first bytes of every connection it dropped."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)  # so that the thread sees ``stop``
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    seen.append(conn.recv(1))
                except OSError:
                    seen.append(b"")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"mqtt://127.0.0.1:{srv.getsockname()[1]}", seen
    stop.set()
    thread.join(5)
    srv.close()


MAKERS: dict[str, Callable[[str, str], aiomqtt.Client]] = {
    "edge 5": lambda url, cid: edge_client(BrokerConfig(url=url, protocol="5"), client_id=cid),
    "edge 3.1.1": lambda url, cid: edge_client(BrokerConfig(url=url, protocol="3.1.1"), client_id=cid),
    "central 5": lambda url, cid: central_client(BrokerSettings(url=url, protocol="5"), client_id=cid),
    "central 3.1.1": lambda url, cid: central_client(BrokerSettings(url=url, protocol="3.1.1"), client_id=cid),
}


@pytest.mark.parametrize("which", MAKERS)
async def test_a_connection_dropped_before_connack_fails_the_connect_at_once(
        dropping_broker: tuple[str, list[bytes]], which: str) -> None:
    url, seen = dropping_broker
    client = MAKERS[which](url, "t-dropped")
    with pytest.raises(aiomqtt.MqttError) as err:
        async with client:
            pass
    # the client's own timeout is 10 s: its error would be "Operation timed out"
    assert "closed the connection before accepting it" in str(err.value)
    assert seen == [b"\x10"]  # it did send its CONNECT; the broker dropped it


@pytest.mark.parametrize("which", MAKERS)
async def test_the_same_clients_connect_normally_and_again(
        mosquitto: MosquittoServer, which: str) -> None:
    client = MAKERS[which](mosquitto.url, f"t-normal-{which.replace(' ', '-')}")
    async with client:
        await client.publish("floorgate/test/connect", b"x", qos=1)
    # after a clean disconnect nothing of ours fails it: the client connects again (aiomqtt's clients are reusable)
    async with client:
        pass

