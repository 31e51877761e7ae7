"""The backlog of ``floorgate bench sync``: readings and weighings as the drivers make them, written into a node's
outbox; progress lines on stderr; the size of an MQTT PUBLISH packet."""

from __future__ import annotations

import random
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILL_CHUNK = 5000  # records per outbox transaction while the backlog is made
PROGRESS_EVERY_S = 2.0

# (point, unit, mean, spread); meters decode float32 registers, the others int16 × 0.1
_METER = (("voltage_l1", "V", 230.0, 4.0), ("current_l1", "A", 14.0, 6.0), ("total_power", "W", 3200.0, 1200.0),
          ("frequency", "Hz", 50.0, 0.05), ("import_energy", "kWh", 48210.0, 50.0))
_PROBE = (("temperature", "°C", 21.0, 3.0), ("humidity", "%", 50.0, 8.0), ("dew_point", "°C", 10.0, 3.0))
_SILO = (("level", "%", 60.0, 30.0), ("distance", "m", 4.0, 2.0), ("temperature", "°C", 18.0, 4.0),
         ("signal", "dB", 40.0, 5.0))
DEVICES: tuple[tuple[str, tuple[tuple[str, str, float, float], ...], bool], ...] = (
    *((f"meter-{i}", _METER, True) for i in range(1, 7)),
    *((f"probe-{i}", _PROBE, False) for i in range(1, 7)),
    *((f"silo-{i}", _SILO, False) for i in range(1, 5)),
)
READING_STEP_NS = 1_000_000_000 // len(DEVICES)  # every device reports once a second
WEIGHING_STEP_NS = 90_000_000_000  # a truck every 90 s


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def reading_items(n: int, *, seed: int = 1) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
    """(kind, device, ts_ns, data) of ``n`` readings as the Modbus drivers make them, one device after the other."""
    rnd = random.Random(seed)
    start = time.time_ns() - n * READING_STEP_NS
    for i in range(n):
        device, points, float32 = DEVICES[i % len(DEVICES)]
        values = {name: _f32(mean + rnd.uniform(-spread, spread)) if float32
                  else round(mean + rnd.uniform(-spread, spread), 1) for name, _, mean, spread in points}
        yield "reading", device, start + i * READING_STEP_NS, {"values": values,
                                                               "units": {name: unit for name, unit, _, _ in points}}


def weighing_items(n: int, *, seed: int = 2) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
    rnd = random.Random(seed)
    start = time.time_ns() - n * WEIGHING_STEP_NS
    for i in range(n):
        yield ("weighing", f"bridge-{i % 3 + 1}", start + i * WEIGHING_STEP_NS,
               {"gross": str(rnd.randrange(8000, 44000, 20)), "unit": "kg"})


def stream_items(stream: str, n: int) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
    return reading_items(n) if stream == "readings" else weighing_items(n)


def fill_outbox(path: Path, node: str, stream: str, n: int) -> int:
    """Append ``n`` records to ``stream`` of a new outbox, ``FILL_CHUNK`` a transaction. Returns the points
    (values) of readings, else ``n``."""
    from edge.store.outbox import NewRecord, Outbox

    box = Outbox(path, node_id=node)
    points = 0
    progress = Progress(f"filling the {stream} outbox", n, "records")
    try:
        chunk: list[NewRecord] = []
        for kind, device, ts_ns, data in stream_items(stream, n):
            points += len(data["values"]) if kind == "reading" else 1
            chunk.append(NewRecord(kind=kind, device=device, data=data, ts_ns=ts_ns))
            if len(chunk) >= FILL_CHUNK:
                box.append(stream, chunk)
                chunk = []
                progress.update(box.stats()[stream].produced)
        if chunk:
            box.append(stream, chunk)
        progress.update(box.stats()[stream].produced, force=True)
    finally:
        box.close()
    return points


class Progress:
    """A progress line on stderr (``what: done/total unit (rate/s)``) at most every ``PROGRESS_EVERY_S``."""

    def __init__(self, what: str, total: int, unit: str) -> None:
        self.what, self.total, self.unit = what, total, unit
        self._last = 0.0
        self._t0 = time.monotonic()

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            rate = done / max(now - self._t0, 1e-9)
            log(f"{self.what}: {done}/{self.total} {self.unit} ({rate:,.0f}/s)")


def publish_packet_bytes(topic: str, payload_len: int) -> int:
    """Size of an MQTT 5 PUBLISH packet, QoS 1, no properties: fixed header, topic, packet id, property length."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + payload_len
    length_bytes = 1
    while remaining >= 128 ** length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining
