"""Sync problems central can see from the nodes' heartbeats, for ``GET /health`` and ``/metrics``.

A **stuck stream**: the node's last heartbeat says it holds a stream acknowledged up to ``acked``, but central's
contiguous mark for that node, epoch and stream (``ingest_marks``) is lower. Central never acknowledged those
records — or it did and lost them (restored from a backup). The node no longer has them (an ack lets it delete), so
central's replay request cannot fill the gap: the mark cannot move past it on its own and every later record of
the stream waits behind it. An operator must look (restore the records from another copy, or accept the loss).

**Downlink refusals**: nodes report in their heartbeat how many acks, replay requests and commands they refused
(``downlink_rejected``: forged, replayed, misdirected, malformed — ``sync.downlink``); any at all means someone
other than central talks to the node, or central's key is not the one the node trusts.

Computed from the node rows and ``ingest_marks`` at each call; no state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Node, StreamMark


@dataclass(frozen=True)
class StuckStream:
    node: str
    epoch: str
    stream: str
    mark: int  # central's contiguous mark
    node_acked: int  # what the node believes central acknowledged

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "epoch": self.epoch, "stream": self.stream, "mark": self.mark,
                "node_acked": self.node_acked, "missing": self.node_acked - self.mark}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stuck_streams(session: Session) -> list[StuckStream]:
    """Every stream whose node reports an acked mark beyond central's (see the module doc)."""
    nodes = session.execute(select(Node.node_id, Node.heartbeat).where(Node.heartbeat.is_not(None))).all()
    reported: dict[tuple[str, str], dict[str, int]] = {}
    for node_id, hb in nodes:
        if not isinstance(hb, dict) or not isinstance(hb.get("epoch"), str) or not isinstance(hb.get("streams"),
                                                                                                dict):
            continue
        acked = {s: a for s, b in hb["streams"].items() if isinstance(b, dict) and (a := _int(b.get("acked")))}
        if acked:
            reported[(node_id, hb["epoch"])] = acked
    if not reported:
        return []
    marks = {(m.node_id, m.epoch, m.stream): int(m.acked_seq or 0) for m in session.execute(
        select(StreamMark).where(StreamMark.node_id.in_({n for n, _ in reported}))).scalars()}
    out = []
    for (node_id, epoch), streams in sorted(reported.items()):
        for stream, node_acked in sorted(streams.items()):
            mark = marks.get((node_id, epoch, stream), 0)
            if node_acked > mark:
                out.append(StuckStream(node_id, epoch, stream, mark, node_acked))
    return out


def downlink_refusals(session: Session) -> dict[str, dict[str, int]]:
    """node → {reason: count} of the downlink messages each node refused (nodes with none left out)."""
    out: dict[str, dict[str, int]] = {}
    for node_id, hb in session.execute(select(Node.node_id, Node.heartbeat).where(Node.heartbeat.is_not(None))):
        counts = hb.get("downlink_rejected") if isinstance(hb, dict) else None
        if isinstance(counts, dict):
            nonzero = {str(r): c for r, n in counts.items() if (c := _int(n))}
            if nonzero:
                out[node_id] = nonzero
    return out
