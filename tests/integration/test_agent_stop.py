"""Stopping the edge agent: cancelling the task that runs ``Agent.run()`` (what SIGTERM does, ``run_until_signal``)
ends it within seconds whatever it is doing — sending and resending batches nobody acknowledges, heartbeats,
polling a scale and a meter, executing commands, publishing the command results kept while the broker was away
(the reconnect hook), connecting to a broker that is down, or losing one that goes away — and leaves no task of its
own behind. A cancellation lost on the way (``asyncio.wait_for`` before Python 3.12 drops one that comes in the same
loop iteration as the result: the bus scheduler and the uplink used it, aiomqtt does for every publish) made
``floorgate edge run`` ignore SIGTERM and a test teardown hang for 300 s. Random moments: a failure names its seed."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.config import parse_config
from edge.uplink.commands import COMMAND_DB, CommandLog
from protocols.sim.modbus_devices import Sdm630Model, start_modbus_tcp
from protocols.sim.weighbridge import Weighbridge, serve_tcp
from sync.commands import Command, CommandResult, encode_result
from sync.runtime.mqtt import MqttClient, MqttError
from sync.signing import sign
from sync.topics import command_topic
from tests.downlink_support import TRUST, signed_command
from tests.netcut import NetCut
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration

ROUNDS = 30
SCENARIOS = ("anytime", "anytime", "just connected", "broker stops", "broker restarts", "broker down at start")
STOP_WITHIN_S = 5.0
KEPT_RESULTS = 100  # results "not taken by the broker" before each start: the reconnect hook publishes them


def _stack(task: asyncio.Task[object]) -> str:
    frames = task.get_stack()
    return f"{task!r}\n" + "".join(traceback.format_list(traceback.extract_stack(frames[-1]) if frames else []))


def _keep_unpublished(agent: Agent, node_id: str) -> set[str]:
    """Command results the broker did not take, as after an outage: the reconnect hook sends them. Returns the ids
    of every kept result not published yet."""
    log = CommandLog(agent.cfg.data_dir / COMMAND_DB)
    try:
        now = time.time_ns()
        for _ in range(KEPT_RESULTS):
            cmd = Command(command_id=str(uuid.uuid4()), node=node_id, command="tare", device="bridge-1",
                          issued_at_ns=now, expires_at_ns=now + 60 * 10**9)
            res = CommandResult(command_id=cmd.command_id, node=node_id, command="tare", device="bridge-1",
                                status="succeeded", result={"tare": "0"}, finished_at_ns=now)
            log.begin(cmd, now_ns=now)
            log.finish(cmd.command_id, encode_result(res, signer=lambda body: sign(agent.key, body)))
        return {command_id for command_id, _ in log.unpublished()}
    finally:
        log.close()


def _unpublished(agent: Agent) -> set[str]:
    log = CommandLog(agent.cfg.data_dir / COMMAND_DB)
    try:
        return {command_id for command_id, _ in log.unpublished()}
    finally:
        log.close()


async def _commands(mosquitto: MosquittoServer, node_id: str, stop: threading.Event) -> None:
    """Central's side: a tare or a poll for the node every 50 ms, whether the broker is there or not. In a thread
    of its own, with its own event loop: every task in the test's loop is the test's or the agent's."""
    n = 0
    while not stop.is_set():
        try:
            # floorgate's client: no 10 s connect timeouts while the broker restarts, no "never retrieved" at exit
            async with MqttClient(mosquitto.host, mosquitto.port, client_id=f"central-{node_id}") as client:
                while not stop.is_set():
                    now = time.time_ns()
                    n += 1
                    cmd = Command(command_id=str(uuid.uuid4()), node=node_id, command=("tare", "poll")[n % 2],
                                  device="bridge-1", issued_at_ns=now, expires_at_ns=now + 30 * 10**9)
                    await client.publish(command_topic(node_id), signed_command(cmd), qos=1)
                    await asyncio.sleep(0.05)
        except MqttError:
            await asyncio.sleep(0.2)


@pytest.fixture
async def devices() -> AsyncIterator[tuple[str, str]]:
    bridge = Weighbridge(trucks=[24560], seed=1)
    scale_server = await serve_tcp(bridge)
    meter = await start_modbus_tcp({1: Sdm630Model(seed=1)})
    try:
        yield f"tcp://127.0.0.1:{scale_server.sockets[0].getsockname()[1]}", meter.url
    finally:
        scale_server.close()
        await scale_server.wait_closed()
        await meter.stop()


async def test_a_cancelled_agent_stops_at_once_whatever_it_is_doing(
        tmp_path: Path, mosquitto: MosquittoServer, unique_id: str, devices: tuple[str, str]) -> None:
    scale, meter = devices
    cfg = parse_config({
        "node_id": unique_id, "data_dir": str(tmp_path / "edge"), "broker": {"url": mosquitto.url}, **TRUST,
        "http": {"listen": None}, "heartbeat_interval_s": 0.05, "health_interval_s": 0.1,
        "outbox": {"readings_commit_ms": 5},
        # nobody acknowledges: every batch is sent again after 0.2 s, for ever
        "uplink": {"ack_timeout_s": 0.2, "retry_min_s": 0.05, "retry_max_s": 0.2, "batch_max_records": 5,
                   "max_in_flight": 2},
        "devices": [
            {"id": "bridge-1", "type": "mtsics-scale", "address": scale, "interval_s": 0.01},
            {"id": "meter-1", "type": "sdm630", "address": meter, "interval_s": 0.02},
        ],
    }, source="test")
    seed = random.randrange(10**6)
    rnd = random.Random(seed)
    scenarios = [*SCENARIOS] * (ROUNDS // len(SCENARIOS))
    rnd.shuffle(scenarios)
    hooks_cut_short = 0
    stop_central = threading.Event()
    central = threading.Thread(target=asyncio.run, args=(_commands(mosquitto, unique_id, stop_central),))
    central.start()
    ours = asyncio.all_tasks()  # the test's own
    broker_down = False
    try:
        for round_no, what in enumerate(scenarios):
            if what == "broker down at start":
                await asyncio.to_thread(mosquitto.stop)
                broker_down = True
            agent = Agent(cfg)
            kept = _keep_unpublished(agent, unique_id)
            task = asyncio.create_task(agent.run(), name=f"agent round {round_no}")
            if what == "just connected":  # the reconnect hook is publishing the kept results right now
                for _ in range(5000):
                    if agent.uplink.client is not None:
                        break
                    await asyncio.sleep(0.001)
                await asyncio.sleep(rnd.uniform(0, 0.05))
            else:
                await asyncio.sleep(rnd.uniform(0, 1.5))
            if what in ("broker stops", "broker restarts"):  # while sending, heartbeating, answering commands
                await asyncio.to_thread(mosquitto.kill if rnd.random() < 0.5 else mosquitto.stop)
                broker_down = True
                await asyncio.sleep(rnd.uniform(0, 0.3))
            if what == "broker restarts":  # the agent reconnects and its hook publishes the kept results
                await asyncio.to_thread(mosquitto.start)
                broker_down = False
                await asyncio.sleep(rnd.uniform(0, 0.5))

            task.cancel()
            t0 = time.monotonic()
            await asyncio.wait([task], timeout=STOP_WITHIN_S)
            left = [t for t in asyncio.all_tasks() - ours if t is not asyncio.current_task()]
            assert task.done(), (
                f"round {round_no} ({what}, seed {seed}): the agent did not stop within {STOP_WITHIN_S} s; "
                "its tasks:\n" + "\n".join(_stack(t) for t in left))
            assert task.cancelled(), f"round {round_no} ({what}, seed {seed}): ended with {task.exception()!r}"
            elapsed = time.monotonic() - t0
            deadline = time.monotonic() + 1  # a task whose cancellation is under way may take a loop iteration
            while left and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                left = [t for t in left if not t.done()]
            assert not left, (f"round {round_no} ({what}, seed {seed}): tasks of the agent outlive it:\n"
                              + "\n".join(_stack(t) for t in left))
            assert elapsed < STOP_WITHIN_S
            still_kept = _unpublished(agent) & kept
            hooks_cut_short += what == "just connected" and 0 < len(still_kept) < len(kept)
            with pytest.raises(sqlite3.ProgrammingError):  # the agent closed its outbox
                agent.outbox.acked_seq("business")
            if broker_down:
                await asyncio.to_thread(mosquitto.start)
                broker_down = False
        assert hooks_cut_short > 0, "no round stopped the agent while its reconnect hook was publishing"
    finally:
        stop_central.set()
        await asyncio.to_thread(central.join)
        if not mosquitto.is_running:
            await asyncio.to_thread(mosquitto.start)


async def test_an_agent_stops_at_once_while_its_connect_waits_for_an_answer_that_never_comes(
        tmp_path: Path, mosquitto: MosquittoServer, unique_id: str) -> None:
    """The network is cut in the middle of the connect: the TCP connection is up, the CONNECT sent, and no CONNACK
    ever comes (no RST either). A stop must not wait for the client's connect timeout (10 s); once the network is
    back the next agent connects as usual."""
    with NetCut(mosquitto.host, mosquitto.port) as net:
        cfg = parse_config({"node_id": unique_id, "data_dir": str(tmp_path / "edge"),
                            "broker": {"url": net.url_for("mqtt")}, "http": {"listen": None},
                            "heartbeat_interval_s": 0.2, **TRUST}, source="test")
        net.cut()
        ours = asyncio.all_tasks()
        agent = Agent(cfg)
        task = asyncio.create_task(agent.run(), name="agent, network cut")
        for _ in range(500):  # the CONNECT went out (and was swallowed by the cut)
            if net.bytes_dropped > 0:
                break
            await asyncio.sleep(0.01)
        assert net.bytes_dropped > 0, net
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.wait([task], timeout=STOP_WITHIN_S)
        left = [t for t in asyncio.all_tasks() - ours if t is not asyncio.current_task()]
        assert task.done(), f"the agent did not stop within {STOP_WITHIN_S} s:\n" + "\n".join(_stack(t) for t in left)
        assert task.cancelled(), task.exception()
        for _ in range(100):
            left = [t for t in left if not t.done()]
            if not left:
                break
            await asyncio.sleep(0.01)
        assert not left, "\n".join(_stack(t) for t in left)

        net.restore()
        again = Agent(cfg)
        task = asyncio.create_task(again.run(), name="agent, network back")
        try:
            for _ in range(500):
                if again.uplink.client is not None:
                    break
                await asyncio.sleep(0.01)
            assert again.uplink.client is not None, "no connection once the network was back"
        finally:
            task.cancel()
            await asyncio.wait([task], timeout=STOP_WITHIN_S)
        assert task.cancelled()
