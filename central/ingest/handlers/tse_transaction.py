"""``tse_transaction`` records → a ``TseTransaction`` row (``central.fiscal.records``), verified together with the
rows it affects in the batch's transaction (``central.fiscal.verify``) against the key the TSE registry pinned —
a TSE seen for the first time is pinned then (``central.fiscal.registry``, with the registry ``central.runner``
hands the sessions). Payload: ``sync.records.tse_transaction.TseTransactionPayload``.
"""

from __future__ import annotations

from central.fiscal.records import BadTseRecord, tse_row
from central.fiscal.verify import store_transaction
from central.ingest.handlers.base import Context, RecordRejected
from sync.envelope import Record


def apply_tse_transaction(ctx: Context, record: Record) -> None:
    try:
        store_transaction(ctx.session, tse_row(node=ctx.batch.node, record=record, received_at=ctx.now), now=ctx.now)
    except BadTseRecord as exc:  # unusable as it came, or another transaction under the same TSE and number
        raise RecordRejected(record, exc.reason) from None


__all__ = ["apply_tse_transaction"]
