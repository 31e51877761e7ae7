"""Exceptions of the edge agent.

    EdgeError               base
    ├── DeviceIOError       a device did not answer, answered garbage or refused; ``device`` names it
    └── OutboxError         the outbox database cannot take a record (disk full, corrupt)

Configuration problems raise ``sync.runtime.config.ConfigError`` (file, key path, expected value).
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of all edge errors."""


class DeviceIOError(EdgeError):
    def __init__(self, device: str, reason: str, *, raw: bytes = b"") -> None:
        self.device = device
        self.reason = reason
        self.raw = raw
        detail = f" (last frame {raw!r})" if raw else ""
        super().__init__(f"device {device}: {reason}{detail}")


class OutboxError(EdgeError):
    pass


class OutboxFull(OutboxError):
    """A business record could not be stored (disk quota full of records that may not be given up, or the disk
    itself full): the producing device is stopped and an alarm raised."""
