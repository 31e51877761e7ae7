"""Devices described by profiles, several unit ids on one real serial line (pty link at the baud rate's timing):
the node config names profiles, the agent's wiring builds one bus with a driver per device, values decode as
the profiles say, writes reach the device, and an invalid profile stops the agent before any I/O."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from edge.bus.scheduler import BusScheduler
from edge.config import parse_config
from edge.devices.registry import build_buses
from edge.store.outbox import NewRecord
from floorgate_cli import main
from protocols.sim.modbus_devices import LaumasTluModel, Sdm630Model, SiloCableModel, ThProbeModel
from protocols.sim.modbus_rtu import start_modbus_rtu
from protocols.sim.ptylink import PtyLink
from sync.runtime.config import ConfigError

pytestmark = pytest.mark.integration

BAUD = 19200


class Collector:
    def __init__(self) -> None:
        self.records: list[tuple[str, NewRecord]] = []

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        self.records.extend((stream, r) for r in records)

    def values(self, device: str) -> dict[str, object]:
        out: dict[str, object] = {}
        for _, r in self.records:
            if r.kind == "reading" and r.device == device:
                out.update(r.data["values"])
        return out

    def events(self, device: str, point: str) -> list[object]:
        return [r.data["value"] for _, r in self.records
                if r.kind == "point_event" and r.device == device and r.data["point"] == point]


async def test_profile_devices_share_one_rtu_line_and_decode_as_their_profiles_say() -> None:
    async with PtyLink(baudrate=BAUD) as link:
        sim_end, agent_end = link.paths
        sim = await start_modbus_rtu(
            {1: Sdm630Model(seed=1), 2: ThProbeModel(seed=2), 3: SiloCableModel(8, seed=3),
             4: LaumasTluModel(loads=[2500], time_scale=0.05)},
            port_path=sim_end, baudrate=BAUD)
        cfg = parse_config({
            "node_id": "n1", "broker": {"url": "mqtt://127.0.0.1:1"},
            "buses": [{"id": "rs485-1", "kind": "rtu", "address": f"serial://{agent_end}", "baudrate": BAUD,
                       "timeout_s": 0.3}],
            "devices": [
                {"id": "meter-1", "profile": "eastron-sdm630", "bus": "rs485-1", "unit_id": 1,
                 "poll_groups": {"fast": 0.5}},
                {"id": "probe-1", "profile": "th-probe", "bus": "rs485-1", "unit_id": 2},
                {"id": "silo-1", "profile": "silo-cable-8", "bus": "rs485-1", "unit_id": 3},
                {"id": "hopper-1", "profile": "laumas-tlu", "bus": "rs485-1", "unit_id": 4},
            ],
        }, source="node.yaml")
        sink = Collector()
        (bus,) = build_buses(cfg, sink, source="node.yaml")
        assert sorted(bus.drivers) == ["hopper-1", "meter-1", "probe-1", "silo-1"]
        task = asyncio.create_task(bus.run())
        try:
            deadline = time.monotonic() + 20
            while not (sink.values("silo-1") and sink.values("probe-1") and "voltage_l1" in sink.values("meter-1")
                       and True in sink.events("hopper-1", "stable")):
                assert time.monotonic() < deadline, {d: sorted(sink.values(d)) for d in bus.drivers}
                await asyncio.sleep(0.1)
            assert 220 < sink.values("meter-1")["voltage_l1"] < 240  # type: ignore[operator]
            silo = sink.values("silo-1")
            assert len(silo) == 8
            assert all(-20 < v < 80 for v in silo.values())  # type: ignore[operator]
            answer = await asyncio.wait_for(bus.submit("hopper-1", "write", {"point": "command", "value": 2}), 5)
            assert answer == {"status": "done", "point": "command", "function_code": 6}
            deadline = time.monotonic() + 10
            while True not in sink.events("hopper-1", "net_displayed"):  # the tare took effect on the device
                assert time.monotonic() < deadline, sink.events("hopper-1", "net_displayed")
                await asyncio.sleep(0.05)
            with pytest.raises(Exception, match="'gross' is not a writable point"):
                await asyncio.wait_for(bus.submit("hopper-1", "write", {"point": "gross", "value": 1}), 5)
            assert all(d.health.online for d in bus.drivers.values())
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()


def test_an_invalid_profile_stops_the_agent_before_any_io(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    good = (Path(__file__).resolve().parents[2] / "firmware-config/profiles/th-probe.yaml").read_text()
    (profiles / "th-probe.yaml").write_text(good.replace("data_type: int16", "data_type: int61"))
    node = tmp_path / "node.yaml"
    node.write_text(f"node_id: n1\nprofiles_dir: {profiles}\nbroker: {{url: 'mqtt://127.0.0.1:1'}}\n"
                    "buses: [{id: b1, kind: tcp, address: 'tcp://127.0.0.1:1'}]\n"
                    "devices: [{id: p1, profile: th-probe, bus: b1}]\n")
    assert main(["edge", "run", "--config", str(node)]) == 2
    err = capsys.readouterr().err
    assert f"{profiles / 'th-probe.yaml'}: points[0].data_type: 'int61' is not one of" in err
    assert not (tmp_path / "var").exists()  # no outbox was created
    cfg = parse_config({"node_id": "n1", "broker": {"url": "mqtt://h"},
                        "buses": [{"id": "b1", "kind": "tcp", "address": "tcp://127.0.0.1:1"}],
                        "devices": [{"id": "p1", "profile": "th-probe", "bus": "b1",
                                     "poll_groups": {"turbo": 1}}]}, source="node.yaml")
    with pytest.raises(ConfigError, match="has no poll group 'turbo'"):
        build_buses(cfg, Collector(), source="node.yaml")


@contextlib.asynccontextmanager
async def scale_on_a_line(port: int, profile: str, device_id: str, threshold: int,
                          weighings: int = 2) -> AsyncIterator[tuple[BusScheduler, list[dict[str, object]]]]:
    """A line bus to a scale simulator on ``port``, running until ``weighings`` were taken; yields the bus and them."""
    cfg = parse_config({
        "node_id": "n1", "broker": {"url": "mqtt://127.0.0.1:1"},
        "buses": [{"id": "line-1", "kind": "line", "address": f"tcp://127.0.0.1:{port}", "timeout_s": 0.5}],
        "devices": [{"id": device_id, "profile": profile, "bus": "line-1", "poll_groups": {"default": 0.03},
                     "weighing": {"threshold": threshold}}],
    }, source="node.yaml")
    sink = Collector()
    (bus,) = build_buses(cfg, sink, source="node.yaml")
    task = asyncio.create_task(bus.run())
    try:
        deadline = time.monotonic() + 20
        while len(taken := [dict(r.data) for _, r in sink.records if r.kind == "weighing"]) < weighings:
            assert time.monotonic() < deadline, sink.records[-3:]
            await asyncio.sleep(0.05)
        yield bus, taken
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("form", [16, 22])
async def test_sartorius_scale_by_profile_weighs_each_load_once(form: int) -> None:
    from protocols.sim.sartorius import SartoriusScale
    from protocols.sim.sartorius import serve_tcp as serve_sbi

    server = await serve_sbi(SartoriusScale(loads=[25, 40, 33], form=form, time_scale=0.05, capacity_kg=150), port=0)
    try:
        async with scale_on_a_line(server.sockets[0].getsockname()[1], "sartorius-sbi", "counter-scale", 5) as (
                bus, weighings):
            assert [Decimal(str(w["gross"])) for w in weighings[:2]] == [25, 40], weighings
            assert all(w["unit"] == "kg" and w["scale_serial"] for w in weighings)
            assert bus.drivers["counter-scale"].health.online is True
    finally:
        server.close()


async def test_toledo_continuous_stream_by_profile_weighs_each_truck_once() -> None:
    from protocols.sim.toledo import ToledoIndicator
    from protocols.sim.toledo import serve_tcp as serve_toledo

    indicator = ToledoIndicator(trucks=[24560, 18420, 30000], time_scale=0.05, garbage_every=40)
    server = await serve_toledo(indicator, port=0)
    try:
        async with scale_on_a_line(server.sockets[0].getsockname()[1], "toledo-continuous", "bridge-2", 500) as (
                bus, weighings):
            grosses = [int(Decimal(str(w["gross"]))) for w in weighings[:2]]
            # the first truck may already be rolling when the line opens: then it is (rightly) not taken
            assert grosses in ([24560, 18420], [18420, 30000]), grosses
            assert await asyncio.wait_for(bus.submit("bridge-2", "print"), 5) == {"status": "sent"}
    finally:
        server.close()


async def test_rtu_over_tcp_bus_through_a_serial_device_server() -> None:
    from protocols.sim.modbus_rtu import start_modbus_rtu_over_tcp

    sim = await start_modbus_rtu_over_tcp({1: ThProbeModel(seed=1), 7: SiloCableModel(8, seed=7)})
    cfg = parse_config({
        "node_id": "n1", "broker": {"url": "mqtt://127.0.0.1:1"},
        "buses": [{"id": "moxa-1", "kind": "rtu-over-tcp", "address": f"tcp://127.0.0.1:{sim.port}",
                   "timeout_s": 0.3}],
        "devices": [{"id": "probe-1", "profile": "th-probe", "bus": "moxa-1", "unit_id": 1},
                    {"id": "silo-7", "profile": "silo-cable-8", "bus": "moxa-1", "unit_id": 7}],
    }, source="node.yaml")
    sink = Collector()
    (bus,) = build_buses(cfg, sink, source="node.yaml")
    task = asyncio.create_task(bus.run())
    try:
        deadline = time.monotonic() + 10
        while not (sink.values("probe-1") and len(sink.values("silo-7")) == 8):
            assert time.monotonic() < deadline, (sink.values("silo-7"), dict(bus.drivers["silo-7"].health.errors))
            await asyncio.sleep(0.05)
        assert 15 <= sink.values("probe-1")["temperature"] <= 30  # type: ignore[operator]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
