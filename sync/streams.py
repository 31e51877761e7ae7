"""The record streams of a node, in the order the uplink serves them.

Each stream has its own gap-free sequence: ``business`` (weighings, fiscal transactions — never dropped),
``health`` (device status changes and counters) and ``readings`` (numeric time series).
A lower ``priority`` number goes out first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stream:
    name: str
    priority: int
    durable: bool  # fsync before the producer is told the record was taken


STREAMS: dict[str, Stream] = {
    s.name: s
    for s in (
        Stream("business", 0, durable=True),
        Stream("health", 1, durable=False),
        Stream("readings", 2, durable=False),
    )
}
