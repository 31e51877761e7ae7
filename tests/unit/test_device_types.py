"""Devices given by type (``mtsics-scale``, ``sdm630``, ``th-probe``) are their shipped profiles on a bus of their own,
driven as the built-in types always were; every protocol a profile may name has a driver in the registry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edge.bus.connection import LineConnection, ModbusConnection
from edge.config import DEVICE_TYPE_PROFILES, ModbusDevice, NodeConfig, ScaleDevice, parse_config
from edge.devices.modbus import ModbusDriver
from edge.devices.profile_model import PROTOCOLS
from edge.devices.profiles import DEFAULT_PROFILES_DIR, SCHEMA_PATH, load_profile
from edge.devices.registry import DRIVERS, build_buses, plan_buses
from edge.devices.scale import MtSicsDriver
from edge.store.outbox import NewRecord
from protocols.mtsics import LineFramer
from protocols.sim.modbus_devices import SDM630_POINTS, TH_PROBE_POINTS
from sync.runtime.config import ConfigError


class Collector:
    def __init__(self) -> None:
        self.records: list[tuple[str, NewRecord]] = []

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        self.records += [(stream, r) for r in records]


def _config(*devices: dict[str, Any], **extra: Any) -> NodeConfig:
    return parse_config({"node_id": "n1", "broker": {"url": "mqtt://h"}, "devices": list(devices), **extra},
                        source="node.yaml")


def _names_units(points: Any) -> list[tuple[str, str]]:
    return [(p.name, p.unit) for p in points]


def test_every_device_type_is_a_shipped_profile_with_one_poll_group() -> None:
    assert set(DEVICE_TYPE_PROFILES) == {"mtsics-scale", "sdm630", "th-probe"}
    for profile_name in DEVICE_TYPE_PROFILES.values():
        profile = load_profile(profile_name)
        assert [g.name for g in profile.poll_groups] == ["default"]


def test_sdm630_is_driven_as_the_built_in_type_was() -> None:
    cfg = _config({"id": "meter-1", "type": "sdm630", "address": "tcp://127.0.0.1:5020", "unit_id": 3,
                   "interval_s": 0.5, "timeout_s": 1.5})
    sink = Collector()
    (bus,) = build_buses(cfg, sink, source="node.yaml")
    assert bus.bus_id == "meter-1"  # a bus of its own, named after the device
    assert isinstance(bus.conn, ModbusConnection)
    assert (bus.conn.kind, bus.conn.address, bus.conn.timeout_s) == ("tcp", "tcp://127.0.0.1:5020", 1.5)
    driver = bus.drivers["meter-1"]
    assert type(driver) is ModbusDriver
    assert (driver.kind, driver.health.kind) == ("sdm630", "sdm630")  # device_kind in its health records
    assert _names_units(driver.points.values()) == _names_units(SDM630_POINTS)
    assert driver.groups == {"default": 0.5}
    assert [b.label for b in driver.blocks["default"]] == [
        "input 0x0000-0x0011", "input 0x0034-0x0035", "input 0x0046-0x004B", "input 0x0156-0x0157"]
    o = driver.options
    assert (o.unit_id, o.retries, o.max_gap, o.max_registers, o.report_every_s) == (3, 1, 8, 100, 0.0)
    # every poll is one reading with every point and its unit, also when nothing moved
    values = {p.name: 1.0 for p in SDM630_POINTS}
    driver._report(values)
    driver._report(values)
    assert [stream for stream, _ in sink.records] == ["readings", "readings"]
    record = sink.records[1][1]
    assert (record.kind, record.device) == ("reading", "meter-1")
    assert record.data == {"values": values, "units": {p.name: p.unit for p in SDM630_POINTS}}


def test_th_probe_is_driven_as_the_built_in_type_was() -> None:
    cfg = _config({"id": "probe-1", "type": "th-probe", "address": "tcp://127.0.0.1:5021", "interval_s": 2})
    (bus,) = build_buses(cfg, Collector(), source="node.yaml")
    driver = bus.drivers["probe-1"]
    assert type(driver) is ModbusDriver
    assert driver.kind == "th-probe"
    assert _names_units(driver.points.values()) == _names_units(TH_PROBE_POINTS) == [
        ("temperature", "°C"), ("humidity", "%RH")]
    assert [(p.address, p.data_type, p.scale) for p in driver.points.values()] == [
        (p.address, p.data_type, p.scale) for p in TH_PROBE_POINTS]
    assert driver.groups == {"default": 2.0}
    assert [b.label for b in driver.blocks["default"]] == ["input 0x0001-0x0002"]
    assert (driver.options.unit_id, driver.options.report_every_s) == (1, 0.0)
    assert isinstance(bus.conn, ModbusConnection)
    assert bus.conn.timeout_s == 2.0  # the type's default


def test_mtsics_scale_is_driven_as_the_built_in_type_was() -> None:
    cfg = _config({"id": "bridge-1", "type": "mtsics-scale", "address": "serial:///dev/ttyUSB0", "baudrate": 19200,
                   "interval_s": 0.2, "timeout_s": 1.0, "weighing": {"threshold": 500, "auto": False}})
    (bus,) = build_buses(cfg, Collector(), source="node.yaml")
    assert bus.bus_id == "bridge-1"
    assert isinstance(bus.conn, LineConnection)
    assert (bus.conn.address, bus.conn.serial.baudrate, bus.conn.timeout_s) == ("serial:///dev/ttyUSB0", 19200, 1.0)
    assert type(bus.conn.transport._framer) is LineFramer  # CR LF lines
    driver = bus.drivers["bridge-1"]
    assert type(driver) is MtSicsDriver
    assert (driver.kind, driver.interval_s, driver.timeout_s, driver.auto) == ("mtsics-scale", 0.2, 1.0, False)
    assert driver.detector.threshold == Decimal(500)
    default = build_buses(_config({"id": "b", "type": "mtsics-scale", "address": "tcp://h:1"}), Collector())
    assert default[0].drivers["b"].interval_s == 0.5  # type: ignore[attr-defined]


def test_a_device_type_is_its_shipped_profile_whatever_the_profiles_dir(tmp_path: Path) -> None:
    """A node's own profiles (``profiles_dir``) serve the devices that name them; a type stays what it was."""
    (tmp_path / "th-probe.yaml").write_text("profile: th-probe\n")  # broken: would fail if looked up
    cfg = _config({"id": "probe-1", "type": "th-probe", "address": "tcp://127.0.0.1:5021", "interval_s": 2},
                  profiles_dir=str(tmp_path))
    (plan,) = plan_buses(cfg)
    ((_, setup),) = plan.devices
    assert setup.profile.source == DEFAULT_PROFILES_DIR / "th-probe.yaml"
    cfg = _config({"id": "probe-2", "profile": "th-probe", "bus": "b"},
                  buses=[{"id": "b", "kind": "tcp", "address": "tcp://127.0.0.1:5021"}], profiles_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"th-probe\.yaml"):
        plan_buses(cfg)


@pytest.mark.parametrize("model", [ScaleDevice, ModbusDevice])
def test_a_typed_device_placement(model: type[ScaleDevice | ModbusDevice]) -> None:
    device_type = "mtsics-scale" if model is ScaleDevice else "sdm630"
    dev = model.model_validate({"id": "d1", "type": device_type, "address": "tcp://h:1", "interval_s": 3})
    profile_device, bus = dev.placement({})
    assert (profile_device.id, profile_device.bus, bus.id) == ("d1", "d1", "d1")
    assert profile_device.poll_groups == {"default": 3}
    assert Path(profile_device.profile) == DEFAULT_PROFILES_DIR / f"{DEVICE_TYPE_PROFILES[device_type]}.yaml"
    assert bus.kind == ("line" if model is ScaleDevice else "tcp")


def test_a_typed_device_may_not_take_the_name_of_a_bus() -> None:
    cfg = _config({"id": "line-1", "type": "th-probe", "address": "tcp://h:1", "interval_s": 1},
                  buses=[{"id": "line-1", "kind": "tcp", "address": "tcp://h:2"}])
    with pytest.raises(ConfigError, match=r"devices\[line-1\]\.id: 'line-1' is also the id of a bus"):
        plan_buses(cfg, source="node.yaml")


def test_a_profile_on_the_wrong_kind_of_bus() -> None:
    cfg = _config({"id": "meter-1", "profile": "eastron-sdm630", "bus": "scales"},
                  buses=[{"id": "scales", "kind": "line", "address": "tcp://h:1"}])
    with pytest.raises(ConfigError) as info:
        plan_buses(cfg, source="node.yaml")
    assert info.value.problems == ["devices[meter-1].bus: profile 'eastron-sdm630' speaks modbus, which needs a bus "
                                   "of kind rtu or tcp or rtu-over-tcp; bus 'scales' is line"]
    cfg = _config({"id": "bridge-1", "profile": "mettler-toledo-mtsics", "bus": "rs485"},
                  buses=[{"id": "rs485", "kind": "rtu", "address": "serial:///dev/ttyS0"}])
    with pytest.raises(ConfigError, match="speaks mtsics, which needs a bus of kind line; bus 'rs485' is rtu"):
        plan_buses(cfg, source="node.yaml")


def test_a_streaming_indicator_needs_a_line_of_its_own() -> None:
    line = {"id": "l1", "kind": "line", "address": "tcp://h:1"}
    for first, second in (("toledo-continuous", "mettler-toledo-mtsics"), ("sartorius-sbi", "toledo-continuous")):
        cfg = _config({"id": "a", "profile": first, "bus": "l1"}, {"id": "b", "profile": second, "bus": "l1"},
                      buses=[line])
        with pytest.raises(ConfigError, match=r"devices\[b\]\.bus: 'l1' carries a device that streams "
                                              r"\(toledo-continuous\), which needs a line of its own"):
            plan_buses(cfg)


def test_every_protocol_a_profile_may_name_has_a_driver() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(DRIVERS) == set(PROTOCOLS) == set(schema["properties"]["protocol"]["enum"])


def test_a_plan_checks_everything_before_any_driver_exists() -> None:
    cfg = _config({"id": "meter-1", "type": "sdm630", "address": "tcp://h:1", "interval_s": 1},
                  {"id": "bridge-1", "type": "mtsics-scale", "address": "tcp://h:2"})
    plans = plan_buses(cfg)
    assert [p.bus.id for p in plans] == ["meter-1", "bridge-1"]
    sink = Collector()
    schedulers = [p.build(sink) for p in plans]
    assert [list(s.drivers) for s in schedulers] == [["meter-1"], ["bridge-1"]]
    assert all(d.health.sink is sink for s in schedulers for d in s.drivers.values())
