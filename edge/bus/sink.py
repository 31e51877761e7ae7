"""Where a device's records go: the ``RecordSink`` drivers and device health emit into, and the node's one, over the
outbox.

A driver (``edge.devices``) and its ``DeviceHealth`` know one call, ``emit(stream, records)``. The agent gives them an
``OutboxSink``, which also takes the counter's sales (``edge.pos``) and the agent's periodic health records:

- **business** records (a weighing, a signed TSE transaction) are committed at once, with fsync, before ``emit``
  returns, so the device, the operator or the cash register is told only once the record is safe. What cannot be
  stored raises (``OutboxFull`` / ``OutboxError``) to the caller: the bus stops the device, the counter answers an
  error. A POS answer (``receipt``) is committed in the transaction of its sale's record;
- **readings** and **health** records are collected and committed together every ``commit_ms`` (one transaction for
  many; ``0``: each at once), or as soon as ``MAX_BUFFERED`` of a stream wait (``run`` does the periodic commit).

After every commit ``on_stored`` runs (the agent wakes the uplink there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from edge.errors import OutboxError
from edge.runtime.aio import wait_for
from edge.store.outbox import NewRecord, Outbox
from edge.store.receipts import Receipt

log = logging.getLogger(__name__)

MAX_BUFFERED = 2000  # readings / health records collected before a commit is forced
GROUPED_STREAMS = ("health", "readings")


class RecordSink(Protocol):
    """What a driver and its health need: hand over records of one stream (business, readings, health)."""

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None: ...


class OutboxSink:
    """The node's sink: business records committed at once, readings and health records in grouped commits."""

    def __init__(self, outbox: Outbox, *, commit_ms: float, on_stored: Callable[[], None]) -> None:
        self.outbox = outbox
        self.commit_ms = commit_ms
        self.on_stored = on_stored
        self.failures = 0  # commits that failed (logged; a business record's caller got the error)
        self._buffer: dict[str, list[NewRecord]] = {stream: [] for stream in GROUPED_STREAMS}
        self._flush_now = asyncio.Event()

    def emit(self, stream: str, records: Sequence[NewRecord], *, receipt: Receipt | None = None) -> None:
        """Business: commit now (raises ``OutboxFull`` / ``OutboxError`` if it cannot be stored), with ``receipt``
        (a POS answer) in the same transaction. Readings and health: collect for the next grouped commit."""
        if receipt is None and stream in self._buffer and self.commit_ms > 0:
            buf = self._buffer[stream]
            buf.extend(records)
            if len(buf) >= MAX_BUFFERED:
                self._flush_now.set()
            return
        self._store(stream, records, receipt=receipt)

    def _store(self, stream: str, records: Sequence[NewRecord], *, receipt: Receipt | None = None) -> None:
        try:
            self.outbox.append(stream, records, receipt=receipt)
        except OutboxError:
            self.failures += 1
            log.exception("cannot store %d %s record(s)", len(records), stream)
            raise
        self.on_stored()

    def flush(self) -> None:
        """Commit the collected readings and health records (one transaction per stream)."""
        for stream, buf in self._buffer.items():
            if buf:
                records, self._buffer[stream] = buf, []
                with contextlib.suppress(OutboxError):  # logged and counted in _store; never worth stopping for
                    self._store(stream, records)

    async def run(self) -> None:
        """Commit what was collected every ``commit_ms`` (sooner when a stream has ``MAX_BUFFERED``), until
        cancelled; with ``commit_ms`` 0 there is nothing to wait for."""
        if self.commit_ms <= 0:
            return
        while True:
            with contextlib.suppress(TimeoutError):
                await wait_for(self._flush_now.wait(), self.commit_ms / 1000)
            self._flush_now.clear()
            self.flush()


__all__ = ["MAX_BUFFERED", "OutboxSink", "RecordSink"]
