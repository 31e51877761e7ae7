"""What an alert rule of kind ``tse`` observes, from the ``tse_transactions`` table that ``central.fiscal`` fills and
verifies (``central.alerts.engine`` evaluates it).

=========================== ====================================== ==================================================
check                       subject                                beyond (fires) while
=========================== ====================================== ==================================================
``invalid``                 ``<node>/<serial>/tx/<number>``        that transaction is ``invalid`` (one alert each:
                                                                   every tampered or broken sale is its own finding)
``gap``                     ``<node>/<serial>/gaps``               a gap in the TSE's numbers has been open longer
                                                                   than ``gap_after_s`` (value: its age in seconds)
``tse_failed``              ``<node>/<device>/tse_failed``         a sale without signature ("TSE ausgefallen")
                                                                   reached central within ``failed_window_s``
                                                                   (value: how many)
=========================== ====================================== ==================================================

A firing subject that is no longer seen — the transaction re-verified valid, the gap closed by a late record, no
failure within the window — is reported back within (``beyond=False``), so its alert resolves with a notification.
The queries use the indexes on ``verified`` and ``gap_before``; nothing here is kept between evaluations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.alerts.observation import SUBJECT_MAX, Observation
from central.alerts.rules import TseRule, matches
from central.db.models import TseTransaction

MAX_DETAIL_NUMBERS = 20


def _ranges(gaps: list[tuple[int, int]]) -> str:
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in gaps[:MAX_DETAIL_NUMBERS]]
    return ", ".join(shown) + (f" (+{len(gaps) - MAX_DETAIL_NUMBERS} more)" if len(gaps) > MAX_DETAIL_NUMBERS else "")


def observe_tse(rule: TseRule, session: Session, now: datetime, firing: Collection[str]) -> list[Observation]:
    """Every subject of ``rule`` and whether it is beyond at ``now``; ``firing``: its subjects with a firing alert."""

    def wanted(row: Any) -> bool:
        return matches(rule.node, row.node_id) and matches(rule.tse, row.tse_serial or "")

    t = TseTransaction
    out: list[Observation] = []
    if "invalid" in rule.checks:
        for bad in session.execute(select(t.node_id, t.device_id, t.tse_serial, t.tx_number, t.client_id,
                                          t.verify_error, t.finished_at).where(t.verified == "invalid")):
            if not wanted(bad):
                continue
            subject = f"{bad.node_id}/{bad.tse_serial}/tx/{bad.tx_number}"[:SUBJECT_MAX]
            detail = (f"TSE transaction {bad.tx_number} of register {bad.client_id} on node {bad.node_id} fails "
                      f"verification: {bad.verify_error}")
            out.append(Observation(subject, True, None, since=bad.finished_at,
                                   context={"node": bad.node_id, "device": bad.device_id or "", "detail": detail},
                                   details={"tse_serial": bad.tse_serial, "tx_number": bad.tx_number,
                                            "verify_error": bad.verify_error}))  # fmt: skip
    if "gap" in rule.checks:
        gaps: dict[str, list[Any]] = defaultdict(list)
        for above in session.execute(select(t.node_id, t.device_id, t.tse_serial, t.tx_number, t.gap_before,
                                            t.gap_since).where(t.gap_before.is_not(None)).order_by(t.tx_number)):
            if wanted(above) and above.tse_serial is not None:
                gaps[above.tse_serial].append(above)
        for serial, rows in gaps.items():
            node = rows[-1].node_id
            since = min(r.gap_since or now for r in rows)
            age = max(0.0, (now - since).total_seconds())
            spans = [(r.tx_number - r.gap_before, r.tx_number - 1) for r in rows]
            missing = sum(r.gap_before for r in rows)
            detail = (f"TSE {serial} on node {node}: {missing} transaction number(s) missing ({_ranges(spans)}), "
                      f"the oldest gap open for {age:.0f} s (limit {rule.gap_after_s:g} s)")
            out.append(Observation(f"{node}/{serial}/gaps"[:SUBJECT_MAX], age >= rule.gap_after_s, round(age, 3),
                                   since=since, context={"node": node, "device": rows[-1].device_id or "",
                                                         "detail": detail},
                                   details={"tse_serial": serial, "missing": missing,
                                            "gaps": [list(s) for s in spans[:MAX_DETAIL_NUMBERS]]}))  # fmt: skip
    if "tse_failed" in rule.checks:
        cutoff = now - timedelta(seconds=rule.failed_window_s)
        failed: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for sale in session.execute(select(t.node_id, t.device_id, t.tse_serial, t.client_id, t.tse_error,
                                           t.received_at, t.finished_at)
                                    .where(t.verified == "tse_failed", t.received_at >= cutoff)
                                    .order_by(t.received_at)):  # fmt: skip
            if wanted(sale):
                failed[(sale.node_id, sale.device_id or sale.tse_serial or "?")].append(sale)
        for (node, device), rows in failed.items():
            last = rows[-1]
            detail = (f"TSE {device} on node {node} failed: {len(rows)} sale(s) without signature (TSE ausgefallen) "
                      f"reached central within {rule.failed_window_s:g} s, the last of register {last.client_id} "
                      f"at {last.finished_at.isoformat()}: {last.tse_error}")
            out.append(Observation(f"{node}/{device}/tse_failed"[:SUBJECT_MAX], True, float(len(rows)),
                                   since=rows[0].received_at,
                                   context={"node": node, "device": device, "detail": detail},
                                   details={"failed_sales": len(rows), "last_error": last.tse_error}))  # fmt: skip
    seen = {o.subject for o in out}
    for subject in firing:  # gone from the table: back within, so the alert resolves with its notification
        if subject not in seen:
            out.append(Observation(subject, False, None, context={"detail": f"{subject}: resolved"}))
    return out


__all__ = ["observe_tse"]
