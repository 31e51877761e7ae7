"""Report-on-change: a metric is reported when it moved by its deadband (or went stale), an event on every change."""

from __future__ import annotations

from collections.abc import Sequence

from edge.bus.connection import ModbusConnection, SerialParams
from edge.devices.modbus import ModbusDriver, ModbusOptions
from edge.store.outbox import NewRecord
from protocols.modbus import Point


class Collector:
    def __init__(self) -> None:
        self.records: list[tuple[str, NewRecord]] = []

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        self.records.extend((stream, r) for r in records)


def driver(points: list[Point], *, report_every_s: float = 3600.0) -> tuple[ModbusDriver, Collector]:
    sink = Collector()
    conn = ModbusConnection("b", "tcp", "tcp://127.0.0.1:1", serial=SerialParams(), timeout_s=1)
    d = ModbusDriver("dev", "test", conn, points, {"default": 1.0}, sink,
                     options=ModbusOptions(report_every_s=report_every_s))
    return d, sink


def test_deadband_suppresses_small_moves_but_not_drift() -> None:
    d, sink = driver([Point("t", 0, "input", "int16", scale=0.1, unit="°C", deadband=0.5)])
    for v in (20.0, 20.2, 20.4, 20.5, 20.6, 21.1, 21.1):
        d._report({"t": v})
    reported = [r.data["values"]["t"] for s, r in sink.records if s == "readings"]
    assert reported == [20.0, 20.5, 21.1]  # 20.2/20.4 < 0.5 from 20.0; 20.6 < 0.5 from 20.5; 21.1 = 20.5 + 0.6
    assert all(r.data["units"] == {"t": "°C"} for _, r in sink.records)


def test_without_deadband_every_poll_reports_and_stale_points_are_refreshed() -> None:
    d, sink = driver([Point("v", 0, "input", "uint16")])
    for v in (1, 1, 1):
        d._report({"v": v})
    assert len(sink.records) == 3
    d2, sink2 = driver([Point("v", 0, "input", "uint16", deadband=5.0)], report_every_s=0.0)
    for v in (1, 1, 1):
        d2._report({"v": v})
    assert len(sink2.records) == 3  # unchanged, but older than report_every_s: reported again


def test_event_points_report_each_change_once_as_health_events() -> None:
    d, sink = driver([Point("stable", 0, "holding", "bit", bit=11, kind="event"),
                      Point("gross", 1, "holding", "uint32", deadband=1.0)])
    for stable, gross in ((False, 100), (False, 100), (True, 24560), (True, 24560), (False, 0)):
        d._report({"stable": stable, "gross": gross})
    events = [(r.data["previous"], r.data["value"]) for s, r in sink.records if r.kind == "point_event"]
    assert events == [(None, False), (False, True), (True, False)]
    assert all(s == "health" for s, r in sink.records if r.kind == "point_event")
    grosses = [r.data["values"]["gross"] for s, r in sink.records if s == "readings"]
    assert grosses == [100, 24560, 0]
