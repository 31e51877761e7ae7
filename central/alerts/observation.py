"""What a rule sees of one subject at one moment: the value every kind of rule (``central.alerts.conditions``,
``central.alerts.tse``) hands to the engine (``central.alerts.engine``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SUBJECT_MAX = 200  # alerts.subject


@dataclass(frozen=True)
class Observation:
    subject: str
    beyond: bool | None  # None: no data, the alert stays as it is
    value: float | None
    since: datetime | None = None  # when the condition began (beyond only)
    context: dict[str, str] = field(default_factory=dict)  # node / device / point / stream / unit for messages
    details: dict[str, Any] = field(default_factory=dict)
