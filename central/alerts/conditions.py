"""What each kind of rule sees, per subject: beyond its threshold (``beyond=True``), back within it (``False``), or
not known (``None``: no data — an alert keeps the state it has).

=============== ======================== =============================================================================
kind            subject                  condition (value)
=============== ======================== =============================================================================
reading         node/device/point        the value stayed beyond the threshold for ``for_s`` (the newest value)
device_offline  node/device              the node reports it offline, or nothing was heard of it, for ``after_s``
                                         (seconds since then)
node_backlog    node/stream              the oldest record the node still holds is older than ``older_than_s``
                                         (its age now: as reported in the last heartbeat + time since that heartbeat)
node_silent     node                     no heartbeat for ``after_s`` (seconds since the last one, or the enrolment)
ingest_lag      central                  central's ingest lag above ``above_s`` (seconds)
tse             node/serial/tx/n, …      a TSE transaction fails verification, a gap in a TSE's numbers stays open
                                         for ``gap_after_s``, sales without signature (``central.alerts.tse``)
=============== ======================== =============================================================================

Readings are a step function, as the edge reports on change (a value holds until the next point; an unchanged one
is repeated every ``report_every_s``). A ``reading`` rule holds when the last point at or before ``now - for_s``
and every later point are beyond the threshold and no two points (nor the newest and now) are further apart than
``max_gap_s``. This needs no state between evaluations, so a restarted or another central process decides the same.
Subjects are found with one ``latest`` query per rule; only a subject whose newest value is beyond the threshold and
that is not firing yet costs a second query (its window). A firing alert resolves when the newest value is back
within the threshold; while data is missing (newest point older than ``max_gap_s``) it stays as it is — a device
that stopped answering is the ``device_offline`` rule's business.

``ingest_lag``: when the evaluator runs in a process with an ingest consumer (``central run``, ``central ingest``),
the lag is that consumer's: the time between a node sending a batch and central applying it, for the newest batch,
if one was applied within ``window_s``. Without one, it comes from the database: for each stream with a batch
within ``window_s``, central's receive time minus the node's wall time of the newest record it holds (this also
counts time the record waited on the node).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.alerts.observation import SUBJECT_MAX, Observation
from central.alerts.rules import (
    AnyRule,
    DeviceOfflineRule,
    IngestLagRule,
    NodeBacklogRule,
    NodeSilentRule,
    ReadingRule,
    TseRule,
    is_glob,
    matches,
)
from central.alerts.tse import observe_tse
from central.db.models import Device, InboxEntry, Node, StreamMark
from central.metrics import MetricsStore

if TYPE_CHECKING:
    from central.ingest.service import IngestCounters


def _subject(*parts: str) -> str:
    return "/".join(parts)[:SUBJECT_MAX]


def observe(
    rule: AnyRule, *, now: datetime, sessions: sessionmaker[Session], store: MetricsStore,
    firing: Collection[str] = (), ingest: IngestCounters | None = None,
) -> list[Observation]:
    """Every subject of ``rule`` and whether its condition holds at ``now`` (``firing``: its subjects with a firing
    alert, which need no proof of duration again)."""
    if isinstance(rule, ReadingRule):
        return observe_readings(rule, now=now, store=store, firing=firing)
    with sessions() as session:
        if isinstance(rule, DeviceOfflineRule):
            return _devices_offline(rule, session, now)
        if isinstance(rule, NodeBacklogRule):
            return _node_backlog(rule, session, now)
        if isinstance(rule, NodeSilentRule):
            return _nodes_silent(rule, session, now)
        if isinstance(rule, TseRule):
            return observe_tse(rule, session, now, firing)
        assert isinstance(rule, IngestLagRule)
        return _ingest_lag(rule, session, now, ingest)


# --- readings ----------------------------------------------------------------------------------------------------

_SERIES_TAGS = ("node", "device", "point")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def observe_readings(rule: ReadingRule, *, now: datetime, store: MetricsStore, firing: Collection[str] = ()
                     ) -> list[Observation]:
    now_ns = int(now.timestamp() * 1e9)
    patterns = {"node": rule.node, "device": rule.device, "point": rule.point}
    exact = {k: v for k, v in patterns.items() if not is_glob(v)}
    out = []
    for newest in store.latest(rule.measurement, group_by=list(_SERIES_TAGS), tags=exact):
        tags = [newest.tags.get(k, "") for k in _SERIES_TAGS]
        if not all(tags) or not all(matches(patterns[k], v) for k, v in zip(_SERIES_TAGS, tags, strict=True)):
            continue
        value = _number(newest.fields.get(rule.field))
        if value is None:
            continue
        subject = _subject(*tags)
        context = dict(zip(_SERIES_TAGS, tags, strict=True)) | {"unit": newest.tags.get("unit", "")}
        age_s = (now_ns - newest.time_ns) / 1e9
        details = {"newest_at": datetime.fromtimestamp(newest.time_ns / 1e9, UTC).isoformat()}
        if age_s > rule.max_gap_s:
            out.append(Observation(subject, None, value, context=context,
                                   details=details | {"no_data": f"newest point is {age_s:.0f} s old"}))
        elif not rule.beyond(value):
            out.append(Observation(subject, False, value, context=context, details=details))
        elif subject in firing:
            out.append(Observation(subject, True, value, context=context, details=details))
        else:
            since = _beyond_since(rule, store, dict(zip(_SERIES_TAGS, tags, strict=True)), now_ns)
            out.append(Observation(subject, since is not None, value, since=since, context=context, details=details))
    return out


def _beyond_since(rule: ReadingRule, store: MetricsStore, tags: dict[str, str], now_ns: int) -> datetime | None:
    """When the series went beyond the threshold, if it has stayed there for ``for_s`` without a gap; else None."""
    gap_ns = int(rule.max_gap_s * 1e9)
    cut_ns = now_ns - int(rule.for_s * 1e9)
    points = store.query(rule.measurement, tags=tags, start_ns=cut_ns - gap_ns)
    series = [(p.time_ns, v) for p in points if (v := _number(p.fields.get(rule.field))) is not None]
    if not series or now_ns - series[-1][0] > gap_ns:
        return None
    before = [i for i, (t, _) in enumerate(series) if t <= cut_ns]
    if not before:
        return None  # the data does not reach back for_s yet
    first = before[-1]
    for i in range(first, len(series)):
        if not rule.beyond(series[i][1]) or (i > first and series[i][0] - series[i - 1][0] > gap_ns):
            return None
    while first > 0 and rule.beyond(series[first - 1][1]) and series[first][0] - series[first - 1][0] <= gap_ns:
        first -= 1  # back to the start of the run, as far as the window reaches
    return datetime.fromtimestamp(series[first][0] / 1e9, UTC)


# --- database-backed rules ---------------------------------------------------------------------------------------


def _devices_offline(rule: DeviceOfflineRule, session: Session, now: datetime) -> list[Observation]:
    q = select(Device)
    if not is_glob(rule.node):
        q = q.where(Device.node_id == rule.node)
    if not is_glob(rule.device):
        q = q.where(Device.device_id == rule.device)
    out = []
    for dev in session.execute(q).scalars():
        if not (matches(rule.node, dev.node_id) and matches(rule.device, dev.device_id)):
            continue
        last_seen = dev.last_seen
        if dev.status == "offline":
            since, why = dev.status_changed_at or last_seen, f"reported offline: {dev.status_reason or '?'}"
        else:
            since, why = last_seen, "not heard of"
        context = {"node": dev.node_id, "device": dev.device_id}
        subject = _subject(dev.node_id, dev.device_id)
        if since is None:
            out.append(Observation(subject, None, None, context=context))
            continue
        seconds = max(0.0, (now - since).total_seconds())
        out.append(Observation(subject, seconds >= rule.after_s, round(seconds, 3), since=since, context=context,
                               details={"status": dev.status, "why": why}))
    return out


def _nodes(session: Session, pattern: str) -> list[Node]:
    q = select(Node).order_by(Node.node_id)
    if not is_glob(pattern):
        q = q.where(Node.node_id == pattern)
    return [n for n in session.execute(q).scalars() if matches(pattern, n.node_id)]


def _node_backlog(rule: NodeBacklogRule, session: Session, now: datetime) -> list[Observation]:
    out = []
    for node in _nodes(session, rule.node):
        hb_at = node.last_heartbeat_at
        streams = (node.heartbeat or {}).get("streams") if isinstance(node.heartbeat, dict) else None
        if hb_at is None or not isinstance(streams, dict):
            continue
        since_hb = max(0.0, (now - hb_at).total_seconds())
        for stream, backlog in sorted(streams.items()):
            if not isinstance(backlog, dict) or not matches(rule.stream, str(stream)):
                continue
            pending = _number(backlog.get("pending")) or 0.0
            oldest = _number(backlog.get("oldest_age_s"))
            age = oldest + since_hb if pending > 0 and oldest is not None else 0.0
            out.append(Observation(
                _subject(node.node_id, str(stream)), age > rule.older_than_s, round(age, 3),
                since=now - timedelta(seconds=age) if age else None,
                context={"node": node.node_id, "stream": str(stream)},
                details={"pending": int(pending), "reported_oldest_age_s": oldest, "heartbeat_at": hb_at.isoformat()},
            ))
    return out


def _nodes_silent(rule: NodeSilentRule, session: Session, now: datetime) -> list[Observation]:
    out = []
    for node in _nodes(session, rule.node):
        last = node.last_heartbeat_at
        since = last or node.enrolled_at or node.first_seen
        context = {"node": node.node_id}
        if since is None:
            out.append(Observation(_subject(node.node_id), None, None, context=context))
            continue
        seconds = max(0.0, (now - since).total_seconds())
        out.append(Observation(_subject(node.node_id), seconds >= rule.after_s, round(seconds, 3), since=since,
                               context=context,
                               details={"last_heartbeat_at": last.isoformat() if last else None}))
    return out


def _ingest_lag(rule: IngestLagRule, session: Session, now: datetime, ingest: IngestCounters | None
                ) -> list[Observation]:
    if ingest is not None:
        at, lag = ingest.last_batch_at, ingest.last_lag_s
        if at is None or lag is None or now.timestamp() - at > rule.window_s:
            return [Observation("central", None, lag, details={"source": "process", "no_data": "no batch in window"})]
        return [Observation("central", lag > rule.above_s, round(lag, 3), details={"source": "process"})]
    window_start = now - timedelta(seconds=rule.window_s)
    marks = session.execute(select(StreamMark).where(StreamMark.last_batch_at >= window_start)).scalars().all()
    lags = []
    for mark in marks:
        row = session.get(InboxEntry, (mark.node_id, mark.epoch, mark.stream, mark.acked_seq))
        if row is None or row.device_time is None:
            continue
        lags.append(((row.received_at - row.device_time).total_seconds(),
                     f"{mark.node_id}/{mark.stream}"))
    if not lags:
        return [Observation("central", None, None, details={"source": "database", "no_data": "no batch in window"})]
    lag, worst = max(lags)
    lag = max(0.0, lag)
    return [Observation("central", lag > rule.above_s, round(lag, 3), details={"source": "database", "worst": worst})]
