"""Central's time-series store: one interface (``MetricsStore``), one small module per backend.

    base.py          Point, MetricsStore, MetricsStoreError   the contract every backend passes (write, query,
                                                              latest, aggregate)
    lineprotocol.py  Point -> InfluxDB line protocol          pure encoding and escaping
    influxql.py      InfluxQL over /query + HTTP errors       shared by both InfluxDB stores
    influx_v1.py     InfluxV1Store                            InfluxDB 1.x (/write, /query)
    influx_v2.py     InfluxV2Store                            InfluxDB 2.x/3.x (influxdb-client writes, InfluxQL reads)
    sqlite_store.py  SQLiteMetricsStore                       the demo, no server
    config.py        MetricsSettings, open_store              configuration -> store

Use::

    store = open_store(MetricsSettings(kind="sqlite", path=Path("var/metrics.sqlite")))
    store.ensure_ready()
    store.write([Point("silo_level", {"node": "mill-1", "silo": "3"}, {"level_pct": 71.5}, time.time_ns())])

``InfluxV2Store`` is imported on first use, so that the demo does not load ``influxdb-client``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from central.metrics.base import (
    AGGREGATE_FUNCTIONS,
    MAX_BUCKETS,
    MAX_TIME_NS,
    MIN_TIME_NS,
    AggregatedSeries,
    FieldValue,
    MetricsStore,
    MetricsStoreError,
    Point,
)
from central.metrics.config import MetricsKind, MetricsSettings, open_store
from central.metrics.influx_v1 import InfluxV1Store
from central.metrics.lineprotocol import encode_point, encode_points
from central.metrics.sqlite_store import SQLiteMetricsStore

if TYPE_CHECKING:
    from central.metrics.influx_v2 import InfluxV2Store

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "MAX_BUCKETS",
    "MAX_TIME_NS",
    "MIN_TIME_NS",
    "AggregatedSeries",
    "FieldValue",
    "InfluxV1Store",
    "InfluxV2Store",
    "MetricsKind",
    "MetricsSettings",
    "MetricsStore",
    "MetricsStoreError",
    "Point",
    "SQLiteMetricsStore",
    "encode_point",
    "encode_points",
    "open_store",
]


def __getattr__(name: str) -> object:
    if name == "InfluxV2Store":
        from central.metrics.influx_v2 import InfluxV2Store

        return InfluxV2Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
