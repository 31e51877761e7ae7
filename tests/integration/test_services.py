"""Smoke tests of the throwaway servers (``tools.devservers``, re-exported by ``tests/services.py``) and the fixtures
in ``tests/conftest.py``, including what fault-injection tests rely on: stop, kill and start again on the same port
with the data kept.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.services import InfluxServer, MosquittoServer, PostgresServer, free_port, require_binary

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0


def test_require_binary_names_the_debian_package() -> None:
    with pytest.raises(RuntimeError, match=r"install the Debian package `floorgate-nothing`"):
        require_binary("floorgate-no-such-program", "floorgate-nothing")


def test_require_binary_finds_postgres_outside_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    server = PostgresServer()  # raises if initdb / pg_ctl / postgres are not found in /usr/lib/postgresql/*/bin
    server.close()


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_postgres_database_per_test(pg_url: str, postgres_server: PostgresServer) -> None:
    assert pg_url.startswith(f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/")
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.dsn(database)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.execute("select current_database()").fetchone() == (database,)


def test_postgres_create_and_drop(postgres_server: PostgresServer, unique_id: str) -> None:
    def exists() -> bool:
        with psycopg.connect(postgres_server.admin_url) as conn:
            row = conn.execute("select count(*) from pg_database where datname = %s", (unique_id,)).fetchone()
            return row == (1,)

    postgres_server.create_database(unique_id)
    assert exists()
    postgres_server.drop_database(unique_id)
    assert not exists()
    with pytest.raises(ValueError, match="must match"):
        postgres_server.create_database('x"; drop database postgres; --')


@contextmanager
def _mqtt_client(broker: MosquittoServer, client_id: str) -> Iterator[mqtt.Client]:
    """A connected paho 2.x MQTT 5 client with its network loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.set() if not reason.is_failure else None
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT_S), f"no CONNACK from {broker.url}"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def _round_trip(broker: MosquittoServer, topic: str, payload: bytes) -> mqtt.MQTTMessage:
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    with _mqtt_client(broker, f"{topic}-sub".replace("/", "-")) as sub:
        sub.on_message = lambda _c, _u, message: received.put(message)
        sub.on_subscribe = lambda _c, _u, _mid, codes, _p: subscribed.set()
        sub.subscribe(topic, qos=1)
        assert subscribed.wait(TIMEOUT_S), "no SUBACK"
        with _mqtt_client(broker, f"{topic}-pub".replace("/", "-")) as pub:
            info = pub.publish(topic, payload, qos=1)
            info.wait_for_publish(TIMEOUT_S)
            assert info.is_published()
        return received.get(timeout=TIMEOUT_S)


def test_mosquitto_qos1_and_restart_on_same_port(mosquitto: MosquittoServer, unique_id: str) -> None:
    topic = f"floorgate/test/{unique_id}"
    message = _round_trip(mosquitto, topic, b"before")
    assert (message.topic, message.payload, message.qos) == (topic, b"before", 1)

    port = mosquitto.port
    mosquitto.restart(kill=True)
    assert mosquitto.is_running
    assert mosquitto.port == port
    assert mosquitto.url == f"mqtt://127.0.0.1:{port}"
    assert _round_trip(mosquitto, topic, b"after").payload == b"after"
    mosquitto.kill()  # the next test must get a running broker from the fixture again
    assert not mosquitto.is_running


def test_mosquitto_fixture_restarts_a_killed_broker(mosquitto: MosquittoServer, unique_id: str) -> None:
    assert mosquitto.is_running
    assert _round_trip(mosquitto, f"floorgate/test/{unique_id}", b"x").payload == b"x"


def test_influx_write_and_query(influx_server: InfluxServer, influx_db: str) -> None:
    influx_server.write(influx_db, "weight,scale=bridge kg=23410.5,stable=true 1700000000000000000")
    body = influx_server.query(influx_db, 'SELECT * FROM "weight"')
    series = body["results"][0]["series"][0]
    assert series["columns"] == ["time", "kg", "scale", "stable"]
    assert series["values"] == [[1700000000000000000, 23410.5, "bridge", True]]
    with pytest.raises(RuntimeError, match="database not found"):
        influx_server.write(influx_db + "_missing", "weight kg=1")


def _shm_ids() -> set[int]:
    """Ids of the System V shared memory segments that exist now."""
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {int(line.split()[1]) for line in lines}


def test_postgres_keeps_committed_data_and_port_across_sigkill(unique_id: str) -> None:
    with PostgresServer() as pg:
        port = pg.port
        with psycopg.connect(pg.admin_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE weighing (id int PRIMARY KEY, kg numeric)")
            conn.execute("INSERT INTO weighing VALUES (1, 23410.5), (2, 8120)")
        in_flight = psycopg.connect(pg.admin_url)  # a session with an open, uncommitted transaction
        in_flight.execute("INSERT INTO weighing VALUES (3, 1)")
        old_pid = pg.postmaster_pid

        pg.restart(kill=True)  # SIGKILL of the postmaster and every backend, then crash recovery

        assert pg.is_running
        assert pg.port == port
        assert pg.admin_url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert pg.postmaster_pid != old_pid
        with pytest.raises(psycopg.OperationalError):
            in_flight.execute("SELECT 1")  # its backend died with the server
        in_flight.close()
        with psycopg.connect(pg.admin_url) as conn:
            assert conn.execute("SELECT id, kg FROM weighing ORDER BY id").fetchall() == [(1, 23410.5), (2, 8120)]
            conn.execute("INSERT INTO weighing VALUES (4, 42)")

        pg.kill()
        assert not pg.is_running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.admin_url, connect_timeout=2).close()
        pg.start()
        for mode in ("immediate", "fast", "immediate"):  # stop / start repeatedly, every time on the same port
            pg.stop(mode)
            assert not pg.is_running
            pg.start()
            assert pg.port == port
        pg.restart()
        url = pg.create_database(unique_id)
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{port}/{unique_id}"
        with psycopg.connect(pg.admin_url) as conn:
            assert conn.execute("SELECT id FROM weighing ORDER BY id").fetchall() == [(1,), (2,), (4,)]


def test_postgres_kill_without_restart_leaves_no_shared_memory() -> None:
    with PostgresServer() as pg:
        shmid = int((pg.data_dir / "postmaster.pid").read_text().splitlines()[6].split()[1])
        assert shmid in _shm_ids()
        pg.kill()
        assert shmid not in _shm_ids()  # a power cut ends it too; close() could not remove it any more


def _points(influx: InfluxServer, database: str) -> list[list[object]]:
    body = influx.query(database, 'SELECT "kg" FROM "weight"')
    return [list(row) for row in body["results"][0]["series"][0]["values"]]


def test_influx_keeps_points_and_port_across_stop_and_kill() -> None:
    t0 = 1_700_000_000_000_000_000
    with InfluxServer() as influx:
        port = influx.port
        influx.create_database("metrics")
        influx.write("metrics", f"weight,scale=bridge kg=1 {t0}\nweight,scale=bridge kg=2 {t0 + 1}")

        influx.stop()
        assert not influx.is_running
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2)
        influx.start()
        assert influx.is_running
        assert influx.port == port
        assert influx.url == f"http://127.0.0.1:{port}"
        assert _points(influx, "metrics") == [[t0, 1], [t0 + 1, 2]]

        influx.write("metrics", f"weight,scale=bridge kg=3 {t0 + 2}")
        influx.restart(kill=True)  # acknowledged writes are in the WAL, replayed on start
        assert influx.port == port
        assert _points(influx, "metrics") == [[t0, 1], [t0 + 1, 2], [t0 + 2, 3]]

        influx.restart()
        influx.kill()
        assert not influx.is_running
        influx.start()
        assert influx.port == port
        assert _points(influx, "metrics") == [[t0, 1], [t0 + 1, 2], [t0 + 2, 3]]


def test_mosquitto_keeps_port_and_persistence_across_a_clean_restart(
    mosquitto: MosquittoServer, unique_id: str
) -> None:
    topic = f"floorgate/test/{unique_id}/retained"
    port, persistence_dir = mosquitto.port, mosquitto.persistence_dir
    with _mqtt_client(mosquitto, f"{unique_id}-pub") as pub:
        info = pub.publish(topic, b"kept", qos=1, retain=True)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published()

    mosquitto.restart()  # SIGTERM: the snapshot is written into the persistence directory, read back on start

    assert (mosquitto.port, mosquitto.persistence_dir) == (port, persistence_dir)
    assert (persistence_dir / "mosquitto.db").is_file()
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    with _mqtt_client(mosquitto, f"{unique_id}-sub") as sub:
        sub.on_message = lambda _c, _u, message: received.put(message)
        sub.subscribe(topic, qos=1)
        message = received.get(timeout=TIMEOUT_S)
        assert (message.payload, message.retain) == (b"kept", True)
        sub.publish(topic, b"", qos=1, retain=True).wait_for_publish(TIMEOUT_S)  # clear it for later tests
