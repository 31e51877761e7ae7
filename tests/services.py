"""The throwaway test servers, re-exported from ``tools.devservers`` (where benchmarks can use them too).

Existing imports such as ``from tests.services import PostgresServer`` keep working; new code may import from
``tools.devservers`` directly. See that module for the servers and their lifecycle (``start`` / ``stop`` /
``kill`` / ``restart`` on the same port with the data kept, ``close``).
"""

from __future__ import annotations

from tools.devservers import free_port, require_binary
from tools.devservers.influx import InfluxServer
from tools.devservers.mosquitto import MosquittoServer
from tools.devservers.postgres import PostgresServer

__all__ = [
    "InfluxServer",
    "MosquittoServer",
    "PostgresServer",
    "free_port",
    "require_binary",
]
