"""What a weighing record holds, per driver, against the simulators on real sockets (clocks in the test's hand):
exact strings as the instrument delivered them, the preset-tare flag, the Sartorius ids, Toledo net and tare, the
Laumas registers, the SIWAREX alibi log; the weigh command's codes copied; nothing from a moving or an overloaded
scale, in automatic mode or by command."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import pytest

from edge.bus.scheduler import BusScheduler, ExchangeError
from edge.config import parse_config
from edge.devices.registry import build_buses
from edge.store.outbox import NewRecord
from protocols.sim.load import Phase
from protocols.sim.modbus_devices import LaumasTluModel, SiwarexWpModel, start_modbus_tcp
from protocols.sim.sartorius import SartoriusScale
from protocols.sim.sartorius import serve_tcp as serve_sbi
from protocols.sim.toledo import ToledoIndicator
from protocols.sim.toledo import serve_tcp as serve_toledo
from protocols.sim.weighbridge import Weighbridge
from protocols.sim.weighbridge import serve_tcp as serve_bridge

pytestmark = pytest.mark.integration

CODES = {"reference": "T-2025-000123", "vehicle": "STD-AB 123", "partner": "FARM-1", "article": "WHEAT",
         "lot": "L-2025-0042", "delivery_note": "LS-88812"}
SETTLED, DRIVING_ON, CYCLE = 7.0, 4.0, 11.0  # the default load cycle: empty 3 s, on 2 s, settled 4 s, off 2 s


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Sink:
    def __init__(self) -> None:
        self.records: list[NewRecord] = []

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        self.records.extend(r for r in records if stream == "business")

    def weighings(self) -> list[dict[str, Any]]:
        return [dict(r.data) for r in self.records if r.kind == "weighing"]

    def made_by(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The weighing record a weigh command made (``record_id`` of its answer)."""
        assert answer["status"] == "done", answer
        (record,) = [dict(r.data) for r in self.records if r.record_id == answer["record_id"]]
        return record


@contextlib.asynccontextmanager
async def agent_bus(bus: dict[str, Any], *devices: dict[str, Any]) -> AsyncIterator[tuple[BusScheduler, Sink]]:
    cfg = parse_config({"node_id": "n1", "broker": {"url": "mqtt://127.0.0.1:1"}, "buses": [bus],
                        "devices": list(devices)}, source="node.yaml")
    sink = Sink()
    (scheduler,) = build_buses(cfg, sink, source="node.yaml")
    task = asyncio.create_task(scheduler.run())
    try:
        yield scheduler, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def ask(bus: BusScheduler, device: str, command: str, **args: str) -> dict[str, Any]:
    return await asyncio.wait_for(bus.submit(device, command, args), 10)


async def settle(seconds: float = 0.15) -> None:
    """Let the bus poll a few times at the clock the test set."""
    await asyncio.sleep(seconds)




# ------------------------------------------------------------------------------------------------------ MT-SICS
async def test_mtsics_records_what_the_scale_delivered_and_the_preset_flag() -> None:
    clock = Clock()
    bridge = Weighbridge(trucks=[24560, 31000, 30000], clock=clock)
    server = await serve_bridge(bridge)
    port = server.sockets[0].getsockname()[1]
    try:
        async with agent_bus({"id": "line", "kind": "line", "address": f"tcp://127.0.0.1:{port}", "timeout_s": 1},
                             {"id": "bridge-1", "profile": "mettler-toledo-mtsics", "bus": "line",
                              "poll_groups": {"default": 0.05}, "weighing": {"auto": False}}) as (bus, sink):
            clock.t = bridge.time_of(0, Phase.SETTLED)
            answer = await ask(bus, "bridge-1", "weigh_now", **CODES)
            record = sink.made_by(answer)
            assert record == {"gross": "24560", "unit": "kg", "stable": True, "scale_serial": "0123456789",
                              "raw": "S S      24560 kg | TA A          0 kg", "trigger": "command", **CODES}
            assert {k: answer[k] for k in ("gross", "unit", "stable", "answer")} == {
                "gross": "24560", "unit": "kg", "stable": True, "answer": "S S      24560 kg"}

            # a truck with a known tare: TA <tare> kg, then the scale weighs net; no gross is invented
            clock.t = bridge.time_of(1, Phase.SETTLED)
            preset = await ask(bus, "bridge-1", "tare", preset_tare="14960")
            assert preset == {"status": "done", "tare": "14960", "unit": "kg", "tare_preset": True,
                              "answer": "TA A      14960 kg"}
            record = sink.made_by(await ask(bus, "bridge-1", "weigh_now", vehicle="PT-1"))
            assert {k: v for k, v in record.items() if k not in ("scale_serial", "trigger")} == {
                "net": "16040", "tare": "14960", "tare_preset": True, "unit": "kg", "stable": True,
                "raw": "S S      16040 kg | TA A      14960 kg", "vehicle": "PT-1"}

            # a weighed tare (T): tare_preset false
            tared = await ask(bus, "bridge-1", "tare")
            assert (tared["tare"], tared["answer"]) == ("31000", "T S      31000 kg")
            record = sink.made_by(await ask(bus, "bridge-1", "weigh_now"))
            assert (record["net"], record["tare"], record["tare_preset"], "gross" in record) == (
                "0", "31000", False, False)

            # a tare the driver did not set (keyed in at the terminal): its origin is unknown, no flag
            assert bridge.handle_line(b"TA 500 kg") == [b"TA A        500 kg\r\n"]
            clock.t = bridge.time_of(2, Phase.SETTLED)
            record = sink.made_by(await ask(bus, "bridge-1", "weigh_now"))
            assert (record["net"], record["tare"], "tare_preset" in record) == ("29500", "500", False)

            # a preset beyond the taring range: TA L, refused; the tare memory stays
            refused = await ask(bus, "bridge-1", "tare", preset_tare="70000")
            assert refused == {"status": "refused", "answer": "TA L",
                               "error": "scale refused the preset tare: TA L (outside the taring range)"}
            cleared = await ask(bus, "bridge-1", "tare", preset_tare="0")
            assert cleared["tare"] == "0"

            # rolling on: S I, no record; T I and Z I refused
            clock.t = bridge.time_of(2, Phase.DRIVE_ON)
            before = len(sink.weighings())
            moving = await ask(bus, "bridge-1", "weigh_now")
            assert (moving["status"], moving["answer"]) == ("refused", "S I")
            assert (await ask(bus, "bridge-1", "tare"))["error"] == "scale refused tare: T I (not executable now)"
            assert (await ask(bus, "bridge-1", "zero"))["error"] == "scale refused zero: Z I (not executable now)"
            assert len(sink.weighings()) == before
            assert all(w["trigger"] == "command" for w in sink.weighings())  # auto off: nothing else was taken
    finally:
        server.close()


async def test_mtsics_auto_mode_takes_each_truck_once_only_when_stable() -> None:
    clock = Clock()
    bridge = Weighbridge(trucks=[24560, 64000, 18420], clock=clock)
    server = await serve_bridge(bridge)
    port = server.sockets[0].getsockname()[1]
    try:
        async with agent_bus({"id": "line", "kind": "line", "address": f"tcp://127.0.0.1:{port}", "timeout_s": 1},
                             {"id": "bridge-1", "type": "mtsics-scale", "address": f"tcp://127.0.0.1:{port}",
                              "interval_s": 0.03, "weighing": {"threshold": 500}}) as (bus, sink):
            clock.t = bridge.time_of(0, Phase.EMPTY)
            await settle()
            clock.t = bridge.time_of(0, Phase.DRIVE_ON)  # the unstable moment: held for many polls
            await settle(0.3)
            assert sink.weighings() == []
            t = clock.t
            while t < 3 * bridge.cycle_s:  # then the rest of the three visits, half a second at a time
                t += 0.5
                clock.t = t
                await settle(0.08)
            weighings = sink.weighings()
            assert [(w["gross"], w["trigger"]) for w in weighings] == [("24560", "auto"), ("18420", "auto")]
            assert all(w["raw"].startswith("S S ") and w["raw"].endswith("| TA A          0 kg")
                       and "vehicle" not in w for w in weighings)
            assert bus.drivers["bridge-1"].overloads > 0  # the 64 t truck was seen, and not taken
    finally:
        server.close()


# ------------------------------------------------------------------------------------------------------ Sartorius
async def test_sartorius_22_characters_give_gross_tare_net_with_their_ids() -> None:
    clock = Clock()
    preset = SartoriusScale(loads=[25, 40], form=22, preset_tare_kg=Decimal("5.5"), clock=clock)
    plain = SartoriusScale(loads=[25], form=16, clock=clock)
    servers = [await serve_sbi(preset), await serve_sbi(plain)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    try:
        async with agent_bus({"id": "sbi", "kind": "line", "address": f"tcp://127.0.0.1:{ports[0]}",
                              "timeout_s": 1},
                             {"id": "counter", "profile": "sartorius-sbi", "bus": "sbi",
                              "weighing": {"auto": False}}) as (bus, sink):
            clock.t = SETTLED
            record = sink.made_by(await ask(bus, "counter", "weigh_now", lot="L-7"))
            assert {k: record[k] for k in ("gross", "tare", "tare_preset", "net", "unit", "raw", "lot")} == {
                "gross": "25.00", "tare": "5.50", "tare_preset": True, "net": "19.50", "unit": "kg", "lot": "L-7",
                "raw": "G#    +    25.00 kg  | PT2   +     5.50 kg  | N     +    19.50 kg "}
            assert record["scale_serial"] == "91234567"
            assert await ask(bus, "counter", "tare") == {"status": "sent"}  # ESC U: a weighed tare (T)
            record = sink.made_by(await ask(bus, "counter", "weigh_now"))
            assert {k: record[k] for k in ("gross", "tare", "tare_preset", "net")} == {
                "gross": "25.00", "tare": "25.00", "tare_preset": False, "net": "0.00"}
            with pytest.raises(ExchangeError, match="has no preset tare"):
                await ask(bus, "counter", "tare", preset_tare="5")
            clock.t = DRIVING_ON + CYCLE
            moving = await ask(bus, "counter", "weigh_now")
            assert moving["status"] == "refused"
            assert moving["error"].startswith("no stable weight")
        async with agent_bus({"id": "sbi", "kind": "line", "address": f"tcp://127.0.0.1:{ports[1]}",
                              "timeout_s": 1},
                             {"id": "plain", "profile": "sartorius-sbi", "bus": "sbi",
                              "weighing": {"auto": False}}) as (bus, sink):
            clock.t = SETTLED
            record = sink.made_by(await ask(bus, "plain", "weigh_now"))
            assert (record["gross"], record["raw"], "net" in record) == ("25.00", "+    25.00 kg ", False)
    finally:
        for s in servers:
            s.close()


# ------------------------------------------------------------------------------------------------------ Toledo
async def test_toledo_records_gross_or_net_and_tare_from_the_frame() -> None:
    clock = Clock()
    indicator = ToledoIndicator(trucks=[24560, 30000], clock=clock)
    server = await serve_toledo(indicator)
    port = server.sockets[0].getsockname()[1]
    try:
        async with agent_bus({"id": "line", "kind": "line", "address": f"tcp://127.0.0.1:{port}", "timeout_s": 1},
                             {"id": "bridge-2", "profile": "toledo-continuous", "bus": "line",
                              "weighing": {"auto": False}}) as (bus, sink):
            clock.t = SETTLED
            record = sink.made_by(await ask(bus, "bridge-2", "weigh_now", vehicle="B-X 1"))
            assert {k: v for k, v in record.items() if k != "raw"} == {
                "gross": "24560", "unit": "kg", "stable": True, "scale_serial": None, "trigger": "command",
                "vehicle": "B-X 1"}
            assert record["raw"] == "02 2a 30 20 30 32 34 35 36 30 30 30 30 30 30 30 0d 26"  # the reference vector
            assert await ask(bus, "bridge-2", "tare") == {"status": "sent"}
            await settle(0.1)  # the indicator takes the T byte (unconfirmed) on this truck
            clock.t = SETTLED + CYCLE  # the next truck on the tared indicator: net frames
            await settle(0.1)
            record = sink.made_by(await ask(bus, "bridge-2", "weigh_now"))
            assert (record["net"], record["tare"], "gross" in record, "tare_preset" in record) == (
                "5440", "24560", False, False)
            with pytest.raises(ExchangeError, match="has no preset tare"):
                await ask(bus, "bridge-2", "tare", preset_tare="5")
            clock.t = DRIVING_ON + CYCLE
            await settle(0.1)
            moving = await ask(bus, "bridge-2", "weigh_now")
            assert (moving["status"], moving["error"]) == ("refused", "no stable weight: the scale is in motion")
    finally:
        server.close()


# ------------------------------------------------------------------------------------------------------ Modbus
async def test_laumas_records_its_gross_and_net_registers() -> None:
    clock = Clock()
    sim = await start_modbus_tcp({1: LaumasTluModel(loads=[2500, 3000, 6000], epoch_s=0.0)}, clock=clock)
    try:
        async with agent_bus({"id": "tcp", "kind": "tcp", "address": sim.url, "timeout_s": 1},
                             {"id": "hopper", "profile": "laumas-tlu", "bus": "tcp",
                              "poll_groups": {"fast": 0.05}, "weighing": {"auto": False}}) as (bus, sink):
            clock.t = SETTLED
            record = sink.made_by(await ask(bus, "hopper", "weigh_now", article="WHEAT"))
            assert {k: v for k, v in record.items() if k != "raw"} == {
                "gross": "2500", "unit": "kg", "stable": True, "scale_serial": None, "trigger": "command",
                "article": "WHEAT"}
            assert record["raw"] == "holding 6: 0800 0000 09C4 0000 09C4 0000 09C4"  # 40007: stable; gross, net, peak
            assert await ask(bus, "hopper", "tare") == {"status": "sent", "command_code": 2}
            clock.t = SETTLED + CYCLE
            record = sink.made_by(await ask(bus, "hopper", "weigh_now"))
            assert (record["gross"], record["net"], "tare" in record) == ("3000", "500", False)
            clock.t = DRIVING_ON + CYCLE
            moving = await ask(bus, "hopper", "weigh_now")
            assert (moving["status"], moving["error"]) == ("refused", "no stable weight: the terminal reports motion")
            clock.t = SETTLED + 2 * CYCLE
            over = await ask(bus, "hopper", "weigh_now")
            assert (over["status"], over["error"]) == ("refused", "overload: the terminal reports out of range")
            assert len(sink.weighings()) == 2
    finally:
        await sim.stop()


async def test_siwarex_weighings_come_from_its_alibi_log() -> None:
    clock = Clock()
    plain = SiwarexWpModel(loads=[8000, 4000], epoch_s=0.0)
    preset = SiwarexWpModel(loads=[8000], preset_tare_kg=500, epoch_s=0.0)
    sim = await start_modbus_tcp({1: plain, 2: preset}, clock=clock)
    try:
        async with agent_bus({"id": "tcp", "kind": "tcp", "address": sim.url, "timeout_s": 1},
                             {"id": "bin-1", "profile": "siemens-siwarex-wp", "bus": "tcp", "unit_id": 1,
                              "poll_groups": {"fast": 0.05}, "weighing": {"auto": False}},
                             {"id": "bin-2", "profile": "siemens-siwarex-wp", "bus": "tcp", "unit_id": 2,
                              "poll_groups": {"fast": 0.05}, "weighing": {"auto": False}}) as (bus, sink):
            clock.t = SETTLED
            record = sink.made_by(await ask(bus, "bin-1", "weigh_now", lot="L-1"))
            crc = plain.log[0][1]
            assert record == {"gross": "8000", "unit": "kg", "stable": True, "scale_serial": None,
                              "instrument_alibi": "1", "raw": f"DR46 protocol 1: G ;    8000;kg  ;  ; CRC {crc}",
                              "trigger": "command", "lot": "L-1"}
            record = sink.made_by(await ask(bus, "bin-2", "weigh_now"))
            assert {k: record[k] for k in ("net", "tare", "tare_preset", "instrument_alibi")} == {
                "net": "7500", "tare": "500", "tare_preset": True, "instrument_alibi": "1"}
            assert "gross" not in record  # the log holds the net: no gross is made up
            assert (await ask(bus, "bin-1", "tare"))["status"] == "sent"
            await settle()
            record = sink.made_by(await ask(bus, "bin-1", "weigh_now"))
            assert {k: record[k] for k in ("net", "tare", "tare_preset", "instrument_alibi")} == {
                "net": "0", "tare": "8000", "tare_preset": False, "instrument_alibi": "2"}
            clock.t = DRIVING_ON + CYCLE
            moving = await ask(bus, "bin-1", "weigh_now")
            assert (moving["status"], moving["error"]) == ("refused", "no stable weight: the terminal reports motion")
            assert [text for text, _ in plain.log] == ["G ;    8000;kg  ;  ;        ",
                                                       "N ;       0;kg  ;T ;    8000"]
    finally:
        await sim.stop()


async def test_siwarex_auto_mode_logs_each_load_once() -> None:
    clock = Clock()
    model = SiwarexWpModel(loads=[8000, 13000, 4000], epoch_s=0.0)  # 13 t: beyond the 12 t capacity
    sim = await start_modbus_tcp({1: model}, clock=clock)
    try:
        async with agent_bus({"id": "tcp", "kind": "tcp", "address": sim.url, "timeout_s": 1},
                             {"id": "bin-1", "profile": "siemens-siwarex-wp", "bus": "tcp",
                              "poll_groups": {"fast": 0.03}, "weighing": {"threshold": 100}}) as (_, sink):
            t = 0.0
            deadline = time.monotonic() + 20
            while t < 3 * CYCLE:
                t += 0.5
                clock.t = t
                await settle(0.08)
                assert time.monotonic() < deadline
            weighings = sink.weighings()
            assert [(w["gross"], w["instrument_alibi"], w["trigger"]) for w in weighings] == [
                ("8000", "1", "auto"), ("4000", "2", "auto")]
            assert len(model.log) == 2
    finally:
        await sim.stop()
