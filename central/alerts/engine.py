"""The alert evaluator: every ``evaluate_every_s`` each rule is evaluated over its subjects, alert instances fire and
resolve in the ``alerts`` table, and every transition is notified once per channel.

One evaluation::

    rules file ──(reloaded when changed)──> for each rule: observe(rule) ─> per subject: beyond / within / no data
        beyond, no firing alert     → INSERT alerts (state firing)
        within, firing alert        → state resolved, resolved_at
        subject gone, firing alert  → resolved ("no longer matched by the rule"); a rule removed from the file:
                                      its alerts resolve without notifications
    then every alert with a transition not yet notified ─> per channel of its rule:
        sent / suppressed already   → nothing (one firing and one resolved notification per alert instance)
        over the channel's rate limit (sent within window_s) → recorded "suppressed", not retried
        otherwise send              → recorded "sent", or "failed" and tried again next evaluation, up to
                                      max_attempts in all
        (resolved waits until the firing notification of that channel is settled; a suppressed firing
        suppresses its resolved)
    notified_firing_at / notified_resolved_at = when that event was settled on every channel

Several central processes: only the one holding a Postgres advisory lock (``pg_try_advisory_lock``, on a
connection kept open) evaluates; the others try again every interval and take over when it goes away. SQLite has
one process: it just runs. A crash between a send and its record can send that notification again (at least once);
everything else happens exactly once per transition.

Faults (database, metrics store) are logged once at error level and at debug level while they last; the rule is
skipped for that evaluation and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Connection, and_, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from central.alerts.conditions import observe
from central.alerts.config import AlertRules, AlertSettings, EmailChannel, WebhookChannel, load_rules, rules_loader
from central.alerts.integrity import observe_integrity
from central.alerts.notify import Notice, NotifyError, send
from central.alerts.observation import Observation
from central.alerts.rules import AnyRule, IntegrityRule
from central.db.models import Alert, Notification
from central.metrics import MetricsStore, MetricsStoreError

if TYPE_CHECKING:
    from central.ingest.service import IngestService

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")
# a fixed 64-bit key: the first 8 bytes of SHA-256("floorgate.alerts.evaluator"), signed
LOCK_KEY = int.from_bytes(hashlib.sha256(b"floorgate.alerts.evaluator").digest()[:8], "big", signed=True)
MESSAGE_MAX = 2000

DEFAULT_MESSAGES = {
    "reading": "{subject} is {value:g}{unit}, {direction} {threshold:g}{unit}{duration}",
    "device_offline": "device {device} on node {node} offline for {value:.0f} s (limit {threshold:g} s)",
    "node_backlog": "node {node}: the oldest {stream} record waiting there is {value:.0f} s old "
                    "(limit {threshold:g} s)",
    "node_silent": "node {node}: no heartbeat for {value:.0f} s (limit {threshold:g} s)",
    "ingest_lag": "central's ingest lag is {value:.1f} s (limit {threshold:g} s)",
    "tse": "{detail}",  # central.alerts.tse words each finding
    "integrity": "{detail}",  # central.alerts.integrity words each finding
}


def firing_counts(session: Session) -> dict[str, int]:
    """Firing alerts per severity (every severity present, 0 when none): the ``alerts_firing`` gauge."""
    counts = dict.fromkeys(SEVERITIES, 0)
    rows = session.execute(select(Alert.severity, func.count()).where(Alert.state == "firing")
                           .group_by(Alert.severity)).all()
    for severity, n in rows:
        counts[str(severity)] = counts.get(str(severity), 0) + int(n)
    return counts


def channel_key(channel: WebhookChannel | EmailChannel, name: str) -> str:
    return f"{channel.kind}:{name}"


def render_message(rule: AnyRule, ob: Observation) -> str:
    for_s = float(getattr(rule, "for_s", 0.0))
    ctx: dict[str, Any] = {
        "rule": rule.name, "kind": rule.kind, "subject": ob.subject, "severity": rule.severity,
        "value": ob.value if ob.value is not None else math.nan, "threshold": rule.threshold, "for_s": for_s,
        "node": "", "device": "", "point": "", "stream": "", "unit": "",
    } | ob.context
    ctx["direction"] = "above" if getattr(rule, "above", None) is not None else "below"
    ctx["duration"] = f" for {for_s:g} s" if for_s else ""
    default = DEFAULT_MESSAGES[rule.kind]
    try:
        return (rule.message or default).format_map(ctx)[:MESSAGE_MAX]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return default.format_map(ctx)[:MESSAGE_MAX]


@dataclass
class Evaluation:
    """What one evaluation did (for logs and tests)."""

    fired: int = 0
    resolved: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    errors: int = 0


class AlertEvaluator:
    def __init__(
        self, settings: AlertSettings, sessions: sessionmaker[Session], store: MetricsStore, *,
        ingest: IngestService | None = None, clock: Callable[[], float] = time.time, pki_dir: Path | None = None,
    ) -> None:
        """``pki_dir``: central's ``pki.dir``, whose ca.crt anchors the node keys (rules of kind ``integrity``)."""
        if settings.rules_file is None:
            raise ValueError("alerts.rules_file is not set")
        load_rules(settings.rules_file)  # a mistake stops central at start (ConfigError names file and key)
        self.settings = settings
        self.loader = rules_loader(settings.rules_file)
        self.sessions = sessions
        self.store = store
        self.ingest = ingest
        self.clock = clock
        self.pki_dir = pki_dir
        engine = sessions.kw.get("bind")
        self._engine = engine
        self._postgres = engine is not None and engine.dialect.name == "postgresql"
        self._lock_conn: Connection | None = None
        self._http = httpx.Client(follow_redirects=False)
        self._faults: set[str] = set()  # what is failing now: logged at error level once, then debug
        self._reported_file_error: str | None = None
        self.evaluations = 0

    # -- the loop -------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Evaluate until cancelled; a cancel during an evaluation lets it finish first."""
        every = self.settings.evaluate_every_s
        log.info("alerts: evaluating %s every %g s", self.settings.rules_file, every)
        try:
            while True:
                started = time.monotonic()
                current = asyncio.ensure_future(asyncio.to_thread(self._evaluate_logged))
                try:
                    await asyncio.shield(current)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await current  # finish the evaluation under way, then stop
                    raise
                await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
        finally:
            await asyncio.to_thread(self.close)

    def _evaluate_logged(self) -> None:
        try:
            self.evaluate_once()
        except Exception as exc:  # a bug or an unexpected fault must not end the loop
            self._fault("evaluation", f"alerts: evaluation failed: {type(exc).__name__}: {exc}", exc_info=True)
        else:
            self._clear("evaluation")

    def close(self) -> None:
        self._http.close()
        if self._lock_conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                self._lock_conn.commit()
            with contextlib.suppress(SQLAlchemyError):
                self._lock_conn.close()
            self._lock_conn = None

    # -- one evaluation -------------------------------------------------------------------------------------------
    def evaluate_once(self, now: datetime | None = None) -> Evaluation | None:
        """Evaluate every rule at ``now`` (default: the clock) and notify; None when another process evaluates."""
        if not self.holds_lock():
            return None
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        result = Evaluation()
        loaded = self.loader.get()
        if loaded.error != self._reported_file_error:
            if loaded.error:
                log.error("alerts: the rules file cannot be used, keeping the rules loaded before:\n%s", loaded.error)
            else:
                log.info("alerts: rules loaded from %s", loaded.path)
            self._reported_file_error = loaded.error
        rules = loaded.rules or AlertRules()
        for rule in rules.rules:
            try:
                self._evaluate_rule(rule, now, result)
            except (MetricsStoreError, SQLAlchemyError) as exc:
                result.errors += 1
                self._fault(f"rule:{rule.name}", f"alerts: rule {rule.name} not evaluated: {exc}")
            else:
                self._clear(f"rule:{rule.name}")
        self._resolve_removed(rules, now, result)
        self._notify_pending(rules, now, result)
        self.evaluations += 1
        if result.fired or result.resolved or result.sent or result.failed or result.suppressed:
            log.info("alerts: %d fired, %d resolved; notifications %d sent, %d failed, %d suppressed",
                     result.fired, result.resolved, result.sent, result.failed, result.suppressed)
        return result

    def holds_lock(self) -> bool:
        """Postgres: whether this process holds the evaluator's advisory lock (taking it if free)."""
        if not self._postgres or self._engine is None:
            return True
        if self._lock_conn is not None:
            try:
                self._lock_conn.execute(text("SELECT 1"))
                self._lock_conn.commit()
                return True
            except SQLAlchemyError as exc:
                log.warning("alerts: lost the evaluator lock's connection (%s); taking it again", exc)
                with contextlib.suppress(SQLAlchemyError):
                    self._lock_conn.invalidate()
                    self._lock_conn.close()
                self._lock_conn = None
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            self._fault("lock", f"alerts: cannot reach the database for the evaluator lock: {exc}")
            return False
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
            conn.commit()
        except SQLAlchemyError as exc:
            conn.close()
            self._fault("lock", f"alerts: cannot take the evaluator lock: {exc}")
            return False
        self._clear("lock")
        if not got:
            conn.close()
            log.debug("alerts: another central process evaluates the rules")
            return False
        self._lock_conn = conn
        log.info("alerts: this process evaluates the alert rules (advisory lock %d)", LOCK_KEY)
        return True

    # -- transitions ----------------------------------------------------------------------------------------------
    def _evaluate_rule(self, rule: AnyRule, now: datetime, result: Evaluation) -> None:
        with self.sessions() as session:
            firing = {a.subject: a.id for a in session.execute(
                select(Alert).where(Alert.rule == rule.name, Alert.state == "firing")).scalars()}
        if isinstance(rule, IntegrityRule):
            observations = observe_integrity(rule, self.sessions, now, firing.keys(), pki_dir=self.pki_dir)
        else:
            observations = observe(rule, now=now, sessions=self.sessions, store=self.store, firing=firing.keys(),
                                   ingest=self.ingest.counters if self.ingest is not None else None)
        seen = set()
        for ob in observations:
            seen.add(ob.subject)
            alert_id = firing.get(ob.subject)
            if ob.beyond and alert_id is None:
                self._fire(rule, ob, now)
                result.fired += 1
            elif ob.beyond is False and alert_id is not None:
                self._resolve(alert_id, now, ob.value, "back within the threshold", ob.details)
                result.resolved += 1
        for subject, alert_id in firing.items():
            if subject not in seen:
                self._resolve(alert_id, now, None, "no longer matched by the rule", {})
                result.resolved += 1

    def _fire(self, rule: AnyRule, ob: Observation, now: datetime) -> None:
        message = render_message(rule, ob)
        details: dict[str, Any] = {"kind": rule.kind, "threshold": rule.threshold, **ob.details}
        if ob.since is not None:
            details["since"] = ob.since.isoformat()
        with self.sessions.begin() as session:
            session.add(Alert(rule=rule.name, subject=ob.subject, severity=rule.severity, state="firing",
                              message=message, value=_finite(ob.value), started_at=now, details=details))
        log.warning("alerts: FIRING %s %s: %s", rule.severity, rule.name, message)

    def _resolve(self, alert_id: int, now: datetime, value: float | None, reason: str,
                 extra: dict[str, Any]) -> None:
        with self.sessions.begin() as session:
            alert = session.get(Alert, alert_id)
            if alert is None or alert.state != "firing":
                return
            alert.state = "resolved"
            alert.resolved_at = now
            alert.details = {**(alert.details or {}), "resolved_value": _finite(value), "resolve_reason": reason,
                             **{f"resolved_{k}": v for k, v in extra.items()}}
            log.warning("alerts: RESOLVED %s %s (%s)", alert.rule, alert.subject, reason)

    def _resolve_removed(self, rules: AlertRules, now: datetime, result: Evaluation) -> None:
        """Alerts of rules no longer in the file resolve, without notifications (their channels are unknown)."""
        names = [r.name for r in rules.rules]
        with self.sessions.begin() as session:
            q = select(Alert).where(or_(Alert.state == "firing", Alert.notified_firing_at.is_(None),
                                        Alert.notified_resolved_at.is_(None)))
            if names:
                q = q.where(Alert.rule.not_in(names))
            for alert in session.execute(q).scalars():
                if alert.state == "firing":
                    alert.state = "resolved"
                    alert.resolved_at = now
                    alert.details = {**(alert.details or {}), "resolve_reason": "rule removed from the rules file"}
                    result.resolved += 1
                    log.warning("alerts: RESOLVED %s %s (rule removed from the rules file)", alert.rule,
                                alert.subject)
                alert.notified_firing_at = alert.notified_firing_at or now
                alert.notified_resolved_at = alert.notified_resolved_at or now

    # -- notifications --------------------------------------------------------------------------------------------
    def _notify_pending(self, rules: AlertRules, now: datetime, result: Evaluation) -> None:
        with self.sessions() as session:
            pending = session.execute(select(Alert).where(or_(
                Alert.notified_firing_at.is_(None),
                and_(Alert.state == "resolved", Alert.notified_resolved_at.is_(None)),
            )).order_by(Alert.id)).scalars().all()
        for alert in pending:
            rule = rules.rule(alert.rule)
            if rule is None:
                continue  # settled by _resolve_removed
            events = []
            if alert.notified_firing_at is None:
                events.append("firing")
            if alert.state == "resolved" and alert.notified_resolved_at is None:
                events.append("resolved")
            for event in events:
                if self._notify(alert, event, rule, rules, now, result):
                    with self.sessions.begin() as session:
                        row = session.get(Alert, alert.id)
                        if row is not None:
                            setattr(row, f"notified_{event}_at", now)

    def _notify(self, alert: Alert, event: str, rule: AnyRule, rules: AlertRules, now: datetime,
                result: Evaluation) -> bool:
        """Notify ``event`` of ``alert`` on every channel of its rule that still needs it; True when settled."""
        settled = True
        for name in dict.fromkeys(rule.channels):
            channel = rules.channels[name]
            key = channel_key(channel, name)
            status = self._outcome(alert.id, key, event, channel.max_attempts)
            if status is not None:
                continue
            if event == "resolved":
                firing = self._outcome(alert.id, key, "firing", channel.max_attempts)
                if firing is None:
                    settled = False  # its firing notification goes first
                    continue
                if firing == "suppressed":
                    self._record(alert.id, key, event, "suppressed", "the firing notification was suppressed", now)
                    result.suppressed += 1
                    continue
            if self._over_rate_limit(key, channel, now):
                self._record(alert.id, key, event, "suppressed",
                             f"rate limit: {channel.rate_limit.max_notifications} per "
                             f"{channel.rate_limit.window_s:g} s on this channel", now)
                result.suppressed += 1
                log.warning("alerts: %s notification of %s %s suppressed on %s (rate limit)", event, alert.rule,
                            alert.subject, key)
                continue
            try:
                send(channel, self._notice(alert, event), http=self._http)
            except NotifyError as exc:
                self._record(alert.id, key, event, "failed", str(exc), now)
                result.failed += 1
                log.warning("alerts: %s notification of %s %s on %s failed: %s", event, alert.rule, alert.subject,
                            key, exc)
                if self._outcome(alert.id, key, event, channel.max_attempts) is None:
                    settled = False
                continue
            self._record(alert.id, key, event, "sent", None, now)
            result.sent += 1
        return settled

    def _outcome(self, alert_id: int, key: str, event: str, max_attempts: int) -> str | None:
        """sent / suppressed / gave_up, or None while it is still to be tried."""
        with self.sessions() as session:
            rows = session.execute(select(Notification.status, func.count()).where(
                Notification.alert_id == alert_id, Notification.channel == key, Notification.event == event,
            ).group_by(Notification.status)).all()
        counts = {str(status): int(n) for status, n in rows}
        if counts.get("sent"):
            return "sent"
        if counts.get("suppressed"):
            return "suppressed"
        if counts.get("failed", 0) >= max_attempts:
            return "gave_up"
        return None

    def _over_rate_limit(self, key: str, channel: WebhookChannel | EmailChannel, now: datetime) -> bool:
        since = now - timedelta(seconds=channel.rate_limit.window_s)
        with self.sessions() as session:
            sent = session.execute(select(func.count()).select_from(Notification).where(
                Notification.channel == key, Notification.status == "sent", Notification.at > since)).scalar_one()
        return int(sent) >= channel.rate_limit.max_notifications

    def _record(self, alert_id: int, key: str, event: str, status: str, error: str | None, now: datetime) -> None:
        with self.sessions.begin() as session:
            session.add(Notification(alert_id=alert_id, channel=key, event=event, status=status, error=error, at=now))

    @staticmethod
    def _notice(alert: Alert, event: str) -> Notice:
        details = alert.details or {}
        if event == "resolved":
            reason = details.get("resolve_reason", "resolved")
            value = details.get("resolved_value")
            message = f"resolved ({reason}): {alert.message}"
        else:
            value, message = alert.value, alert.message
        return Notice(
            alert_id=alert.id, rule=alert.rule, subject=alert.subject, severity=alert.severity, state=event,
            message=message, value=value if isinstance(value, int | float) else None,
            started_at=alert.started_at, resolved_at=alert.resolved_at if event == "resolved" else None,
        )

    # -- fault logging (once at error level, then debug while it lasts) -------------------------------------------
    def _fault(self, what: str, message: str, *, exc_info: bool = False) -> None:
        if what in self._faults:
            log.debug(message)
        else:
            self._faults.add(what)
            log.error(message, exc_info=exc_info)

    def _clear(self, what: str) -> None:
        if what in self._faults:
            self._faults.discard(what)
            log.info("alerts: %s works again", what)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
