"""Device commands on a real edge agent (in-process) against a real broker, a simulated MT-SICS weighbridge and a
simulated SDM630 meter, with the weighbridge's clock in the test's hand: tare, zero, weigh and poll reach the scale
through its bus scheduler, refusals (``Z I``) and overload come back as ``failed`` with the reason, a redelivered
command is executed once (also across an agent restart), an expired one never, and a reload swaps a valid config
in and keeps the running one when the new one is invalid. Every result is signed with the node key."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from edge.agent import Agent
from edge.config import load_config
from edge.uplink.commands import COMMAND_DB, CommandLog
from protocols.sim.modbus_devices import Sdm630Model, start_modbus_tcp
from protocols.sim.weighbridge import Weighbridge, serve_tcp
from sync.commands import Command, CommandResult, decode_result, encode_result
from sync.signing import sign, verify
from sync.topics import command_result_topic, command_topic
from tests.downlink_support import TRUST, signed_command
from tests.services import MosquittoServer

pytestmark = pytest.mark.integration

# the weighbridge's load cycle (time_scale 1): empty 0-3 s, truck drives on 3-5 s, stands 5-9 s, drives off 9-11 s
EMPTY, DRIVING_ON, SETTLED = 1.0, 4.0, 7.0
SECOND_TRUCK_SETTLED = 11.0 + SETTLED  # the second truck (70 t) is over the 60 t capacity: S +
TRUCKS = [24560, 70000]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Node:
    node_id: str
    config_path: Path
    client: aiomqtt.Client
    clock: Clock
    agent: Agent | None = None
    task: asyncio.Task[None] | None = None
    results: dict[str, list[bytes]] = field(default_factory=dict)

    async def start(self) -> None:
        self.agent = Agent(load_config(self.config_path), source=str(self.config_path), config_path=self.config_path)
        self.task = asyncio.create_task(self.agent.run())
        deadline = time.monotonic() + 15
        while self.agent.uplink.client is None:  # connected and subscribed to its command topic
            assert time.monotonic() < deadline, "the agent did not connect to the broker"
            assert not self.task.done(), self.task
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def command(self, name: str, device: str | None = "bridge-1", *, expires_in_s: float = 30,
                **args: str) -> Command:
        now = time.time_ns()
        return Command(command_id=str(uuid.uuid4()), node=self.node_id, command=name, device=device, args=args,
                       issued_at_ns=now, expires_at_ns=now + int(expires_in_s * 1e9))

    async def publish(self, cmd: Command) -> None:
        await self.client.publish(command_topic(self.node_id), signed_command(cmd), qos=1)

    async def answers(self, command_id: str, n: int = 1, timeout_s: float = 15) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while len(self.results.get(command_id, [])) < n:
            assert time.monotonic() < deadline, f"no {n} answer(s) to {command_id}: {self.results}"
            await asyncio.sleep(0.02)
        return self.results[command_id]

    async def send(self, name: str, device: str | None = "bridge-1", **args: str) -> CommandResult:
        cmd = self.command(name, device, **args)
        await self.publish(cmd)
        (payload,) = await self.answers(cmd.command_id)
        res = decode_result(payload)
        assert self.agent is not None
        assert verify(self.agent.key.public_key(), res.signed_body, res.sig) is None
        assert (res.command_id, res.node, res.command, res.device) == (cmd.command_id, self.node_id, name, device)
        return res


async def _collect(client: aiomqtt.Client, node: Node) -> None:
    async for msg in client.messages:
        payload = msg.payload
        assert isinstance(payload, bytes)
        node.results.setdefault(decode_result(payload).command_id, []).append(payload)


def _node_config(tmp_path: Path, node_id: str, mosquitto: MosquittoServer, bridge: str, meter: str,
                 **extra: Any) -> dict[str, Any]:
    return {
        "node_id": node_id, "data_dir": str(tmp_path / "edge"), "broker": {"url": mosquitto.url}, **TRUST,
        "http": {"listen": None}, "heartbeat_interval_s": 60, "health_interval_s": 60,
        "outbox": {"readings_commit_ms": 50},
        "devices": [
            {"id": "bridge-1", "type": "mtsics-scale", "address": bridge, "interval_s": 0.1,
             "weighing": {"threshold": 500}},
            {"id": "meter-1", "type": "sdm630", "address": meter, "interval_s": 1},
        ],
        **extra,
    }


@pytest.fixture
async def node(tmp_path: Path, mosquitto: MosquittoServer, unique_id: str) -> AsyncIterator[Node]:
    clock = Clock()
    bridge = Weighbridge(trucks=TRUCKS, seed=1, clock=clock)
    clock.t = EMPTY
    scale_server = await serve_tcp(bridge)
    meter = await start_modbus_tcp({1: Sdm630Model(seed=1)})
    config_path = tmp_path / "node.yaml"
    config = _node_config(tmp_path, unique_id, mosquitto,
                          f"tcp://127.0.0.1:{scale_server.sockets[0].getsockname()[1]}", meter.url)
    config_path.write_text(yaml.safe_dump(config))
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"central-side-{unique_id}") as client:
        await client.subscribe(command_result_topic(unique_id), qos=1)
        n = Node(unique_id, config_path, client, clock)
        collector = asyncio.create_task(_collect(client, n))
        await n.start()
        try:
            yield n
        finally:
            await n.stop()
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            scale_server.close()
            await scale_server.wait_closed()
            await meter.stop()


def _business(node: Node) -> list[dict[str, Any]]:
    assert node.agent is not None
    return [dict(r.data, record_id=r.record_id) for r in node.agent.outbox.pending("business", after_seq=0,
                                                                                    limit=1000)]


async def test_tare_zero_weigh_and_poll_reach_the_scale_and_refusals_come_back_failed(node: Node) -> None:
    # empty bridge: zero and tare are done
    zero = await node.send("zero")
    assert (zero.status, zero.error, zero.result) == ("succeeded", None, {"answer": "Z A"})
    tare = await node.send("tare")
    assert (tare.status, dict(tare.result)) == ("succeeded", {"tare": "0", "unit": "kg", "answer": "T S          0 kg"})

    # a truck driving on: the scale refuses zero (Z I) and has no stable weight (S I)
    node.clock.t = DRIVING_ON
    refused = await node.send("zero")
    assert (refused.status, refused.error) == ("failed", "scale refused zero: Z I (not executable now)")
    assert refused.result["answer"] == "Z I"
    moving = await node.send("weigh")
    assert moving.status == "failed"
    assert moving.error is not None
    assert moving.error.startswith("no stable weight: S I")

    # the truck stands: weigh gives its stable weight and a weighing record; poll reads it too
    node.clock.t = SETTLED
    weigh = await node.send("weigh", reference="DN-4711")
    assert weigh.status == "succeeded"
    assert {k: weigh.result[k] for k in ("gross", "unit", "stable", "answer")} == {
        "gross": "24560", "unit": "kg", "stable": True, "answer": "S S      24560 kg"}
    record = next(r for r in _business(node) if r["record_id"] == weigh.result["record_id"])
    assert (record["gross"], record["trigger"], record["reference"]) == ("24560", "command", "DN-4711")
    poll = await node.send("poll")
    assert (poll.status, poll.result["weight"], poll.result["stable"]) == ("succeeded", "24560", True)

    # tare the truck: the scale shows net 0 afterwards
    tared = await node.send("tare")
    assert (tared.status, tared.result["tare"]) == ("succeeded", "24560")
    assert (await node.send("poll")).result["weight"] == "0"

    # the 70 t truck overloads the 60 t bridge: weigh fails with the reason, poll reports the overload
    node.clock.t = SECOND_TRUCK_SETTLED
    over = await node.send("weigh")
    assert (over.status, over.error, over.result["answer"]) == ("failed", "overload: the scale answered S +", "S +")
    polled = await node.send("poll")
    assert (polled.status, polled.result["overload"]) == ("succeeded", True)

    # the meter: poll returns its values; it cannot tare; an unknown device is rejected
    meter = await node.send("poll", "meter-1")
    assert meter.status == "succeeded"
    assert 200 < meter.result["values"]["voltage_l1"] < 260
    assert meter.result["units"]["voltage_l1"] == "V"
    cannot = await node.send("tare", "meter-1")
    assert (cannot.status, cannot.error) == ("rejected", "device meter-1 (type sdm630) cannot tare")
    unknown = await node.send("zero", "bridge-9")
    assert unknown.status == "rejected"
    assert unknown.error == f"node {node.node_id} has no device 'bridge-9' (its devices: bridge-1, meter-1)"


async def test_a_redelivered_command_is_executed_once_even_after_a_restart(node: Node) -> None:
    assert node.agent is not None
    node.clock.t = SETTLED
    cmd = node.command("weigh", reference="once")
    await node.publish(cmd)
    await node.publish(cmd)  # the broker delivers it again (QoS 1 is at least once)
    first, second = await node.answers(cmd.command_id, 2)
    assert first == second  # the stored result, byte for byte (same signature, same finish time)
    assert decode_result(first).status == "succeeded"
    assert [r["reference"] for r in _business(node) if r.get("reference") == "once"] == ["once"]

    await node.stop()  # the agent restarts; the command log is on disk
    await node.start()
    await node.publish(cmd)
    third = (await node.answers(cmd.command_id, 3))[2]
    assert third == first
    assert [r["reference"] for r in _business(node) if r.get("reference") == "once"] == ["once"]
    assert node.agent.commands is not None
    assert node.agent.commands.counters.duplicates == 1


async def test_an_expired_command_is_not_executed_and_an_interrupted_one_not_retried(node: Node) -> None:
    node.clock.t = SETTLED
    expired = node.command("weigh", expires_in_s=-1)
    expired = Command(**{**expired.__dict__, "issued_at_ns": expired.expires_at_ns - 10**9})
    await node.publish(expired)
    res = decode_result((await node.answers(expired.command_id))[0])
    assert res.status == "rejected"
    assert res.error is not None
    assert res.error.startswith("expired: the command expired at ")
    assert not [r for r in _business(node) if r.get("trigger") == "command"]

    # a command the agent took (its id is on disk) but did not finish before it died: answered, never re-run
    await node.stop()
    assert node.agent is not None
    interrupted = node.command("weigh")
    log = CommandLog(node.agent.cfg.data_dir / COMMAND_DB)
    log.begin(interrupted, now_ns=time.time_ns())
    log.close()
    await node.start()
    await node.publish(interrupted)
    res = decode_result((await node.answers(interrupted.command_id))[0])
    assert res.status == "failed"
    assert res.error is not None
    assert res.error.startswith("interrupted: the agent stopped while executing")
    assert not [r for r in _business(node) if r.get("trigger") == "command"]


async def test_reload_swaps_a_valid_config_in_and_keeps_the_running_one_otherwise(node: Node) -> None:
    assert node.agent is not None
    config = yaml.safe_load(node.config_path.read_text())
    config["devices"][1]["interval_s"] = 2  # the meter polled less often
    node.config_path.write_text(yaml.safe_dump(config))
    done = await node.send("reload", None)
    assert done.status == "succeeded"
    assert (done.result["changed"], done.result["added"], done.result["removed"]) == (["meter-1"], [], [])
    assert node.agent.reloads == 1
    assert (await node.send("poll")).status == "succeeded"  # the new buses run

    bad = dict(config, devices=[dict(config["devices"][0], interval_s=-1), config["devices"][1]])
    node.config_path.write_text(yaml.safe_dump(bad))
    refused = await node.send("reload", None)
    assert refused.status == "rejected"
    assert refused.error is not None
    assert "config not reloaded, the running one stays" in refused.error
    assert "devices[0].interval_s: Input should be greater than 0" in refused.error

    node.config_path.write_text(yaml.safe_dump(dict(config, broker={"url": "mqtt://127.0.0.1:1"})))
    restart = await node.send("reload", None)
    assert restart.status == "rejected"
    assert restart.error is not None
    assert "broker: changed; this takes a restart of the agent" in restart.error

    node.config_path.write_text("devices: [")  # not even YAML
    assert (await node.send("reload", None)).status == "rejected"
    assert node.agent.reloads == 1
    poll = await node.send("poll")  # still the config of the first reload
    assert poll.status == "succeeded"
    assert [d.interval_s for d in node.agent.cfg.devices] == [0.1, 2]


async def test_a_result_the_broker_did_not_take_goes_out_when_the_agent_connects(node: Node) -> None:
    await node.stop()
    assert node.agent is not None
    cmd = node.command("tare")
    res = CommandResult(command_id=cmd.command_id, node=node.node_id, command="tare", device="bridge-1",
                        status="succeeded", result={"tare": "0", "unit": "kg"}, finished_at_ns=time.time_ns())
    payload = encode_result(res, signer=lambda body: sign(node.agent.key, body))  # type: ignore[union-attr]
    log = CommandLog(node.agent.cfg.data_dir / COMMAND_DB)  # executed, answered, but never published
    log.begin(cmd, now_ns=time.time_ns())
    log.finish(cmd.command_id, payload)
    assert log.unpublished() == [(cmd.command_id, payload)]
    log.close()
    await node.start()
    assert await node.answers(cmd.command_id) == [payload]
    await node.stop()
    log = CommandLog(node.agent.cfg.data_dir / COMMAND_DB)
    assert log.unpublished() == []
    log.close()
    await node.start()
