"""One handler per record kind: what central does with a record of that kind, inside the batch's transaction.

    kind              handler                  stores
    weighing          weighing.py              Weighing, AlibiEntry, its ticket (central.tickets)
    tse_transaction   tse_transaction.py       TseTransaction, verified (central.fiscal)
    device_status     device.py                Device.status / status_reason / status_changed_at
    device_health     device.py                Device.counters
    point_event       device.py                nothing: kept in the inbox
    reading           reading.py               points in the metrics store

``HANDLERS`` maps the kind names of ``sync.records`` to them; ``central.ingest.apply`` looks a record's kind up here
(a ``loss`` record is the envelope's business: apply counts it, no handler). Each handler checks the record's
``data`` with the kind's payload model (``sync.records``) and raises ``RecordRejected`` for a record it cannot use.
To add a kind: its payload model in ``sync.records``, a handler module here, its entry below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from central.ingest.handlers.base import Handler
from central.ingest.handlers.device import apply_device_health, apply_device_status, apply_point_event
from central.ingest.handlers.reading import apply_reading
from central.ingest.handlers.tse_transaction import apply_tse_transaction
from central.ingest.handlers.weighing import apply_weighing
from sync.records import DEVICE_HEALTH, DEVICE_STATUS, POINT_EVENT, READING, TSE_TRANSACTION, WEIGHING

HANDLERS: Final[Mapping[str, Handler]] = {
    WEIGHING: apply_weighing,
    TSE_TRANSACTION: apply_tse_transaction,
    DEVICE_STATUS: apply_device_status,
    DEVICE_HEALTH: apply_device_health,
    POINT_EVENT: apply_point_event,
    READING: apply_reading,
}

__all__ = ["HANDLERS"]
