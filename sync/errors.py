"""Exceptions of the sync contract.

    SyncError                 base of everything raised by ``sync``
    └── DecodeError           a payload or topic that does not follow the contract;
                              ``field`` names the offending field (``records[3].seq``), ``reason`` says why
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of all sync errors."""


class DecodeError(SyncError):
    """A message that cannot be decoded; carries the field path and the reason."""

    def __init__(self, reason: str, *, field: str = "") -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)
