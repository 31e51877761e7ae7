"""Record kinds and their payload models: what a record's ``data`` holds, one module per kind.

The envelope (``sync.envelope.Record``) carries ``kind`` and ``data``; the model of the kind says what ``data`` is.
The edge builds ``data`` with the model's ``to_payload()``; central checks it with ``from_payload()`` (a
``DecodeError`` naming ``data.<field>`` quarantines the record) and hands it to its handler for the kind
(``central.ingest.handlers``).

    kind              stream     model                    module
    weighing          business   WeighingPayload          weighing.py         a scale's weighing (legal values)
    tse_transaction   business   TseTransactionPayload    tse_transaction.py  a sale signed by the node's TSE
    device_status     health     DeviceStatusPayload      device_status.py    online / offline / stopped
    device_health     health     DeviceHealthPayload      device_health.py    a device's counters
    point_event       health     PointEventPayload        point_event.py      an event point changed
    reading           readings   ReadingPayload           reading.py          numeric values (measurements)
    loss              readings, health  LossPayload       loss.py             records given up to the disk quota

To add a kind: a module here with its name constant and a frozen dataclass (``KIND``, ``to_payload``, a strict
``from_payload`` using the checks of ``sync.records.base``), its entry in ``KINDS``, the edge producer building it,
and central's handler (``central.ingest.handlers``). A node sends only kinds central knows: central keeps a record of
an unknown kind in its inbox only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sync.records.base import Payload
from sync.records.device_health import DEVICE_HEALTH, DeviceHealthPayload
from sync.records.device_status import DEVICE_STATUS, DeviceStatusPayload
from sync.records.loss import LOSS, LossPayload
from sync.records.point_event import POINT_EVENT, PointEventPayload
from sync.records.reading import READING, ReadingPayload
from sync.records.tse_transaction import TSE_TRANSACTION, TseTransactionPayload
from sync.records.weighing import WEIGHING, WeighingPayload

KINDS: Final[Mapping[str, type[Payload]]] = {
    model.KIND: model
    for model in (WeighingPayload, TseTransactionPayload, DeviceStatusPayload, DeviceHealthPayload,
                  PointEventPayload, ReadingPayload, LossPayload)
}

__all__ = [
    "DEVICE_HEALTH",
    "DEVICE_STATUS",
    "KINDS",
    "LOSS",
    "POINT_EVENT",
    "READING",
    "TSE_TRANSACTION",
    "WEIGHING",
    "DeviceHealthPayload",
    "DeviceStatusPayload",
    "LossPayload",
    "Payload",
    "PointEventPayload",
    "ReadingPayload",
    "TseTransactionPayload",
    "WeighingPayload",
]
