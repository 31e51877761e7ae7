"""The ``loss`` record (readings and health streams): it stands for records the node gave up to its disk quota
(``edge.store.outbox``); its ``from_seq`` .. ``seq`` is the range given up, device empty::

    {"reason": "disk quota", "records": 120}

Central counts the numbers of the range it never received as lost (``central.ingest.apply``); it applies nothing of
it. A business record is never given up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from sync.records.base import text, whole

LOSS: Final = "loss"
REASON_QUOTA: Final = "disk quota"


@dataclass(frozen=True)
class LossPayload:
    """The ``data`` of a ``loss`` record (see the module)."""

    KIND: ClassVar[str] = LOSS

    reason: str = REASON_QUOTA
    records: int | None = None  # how many records the range held (a thinned range held fewer than its numbers)

    def to_payload(self) -> dict[str, Any]:
        return {"reason": self.reason, "records": self.records}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> LossPayload:
        return cls(reason=text(data, "reason") or REASON_QUOTA, records=whole(data, "records"))


__all__ = ["LOSS", "REASON_QUOTA", "LossPayload"]
