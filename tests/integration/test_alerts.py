"""The alert evaluator against real servers: Postgres + InfluxDB 1.x (and SQLite + the embedded metrics store, the
demo's backends), a real HTTP webhook receiver and a real SMTP server (aiosmtpd), all on 127.0.0.1.

Time is the evaluator's ``now`` argument (points are written at known times around the real clock), never a sleep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.alerts.config import AlertSettings
from central.alerts.engine import AlertEvaluator, Evaluation, firing_counts
from central.config import BrokerSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Alert, Device, InboxEntry, Node, Notification, StreamMark
from central.ingest.service import IngestService
from central.metrics import InfluxV1Store, MetricsStore, Point, SQLiteMetricsStore
from tests.alert_receivers import SmtpSink, WebhookReceiver
from tests.services import InfluxServer
from tools.devservers import free_port

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # far enough back for every window
HOOK_AUTH = "Bearer hook-secret-4711"
SMTP_PASSWORD = "smtp-secret-0815"  # noqa: S105 — a throwaway test server


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Env:
    tmp: Path
    sessions: sessionmaker[Session]
    store: MetricsStore
    hook: WebhookReceiver
    smtp: SmtpSink
    backend: str

    def rules_file(self, rules: list[dict[str, Any]], channels: dict[str, Any] | None = None,
                   name: str = "rules.yaml") -> Path:
        if channels is None:
            channels = {
                "hook": {"kind": "webhook", "url": self.hook.url, "headers": {"Authorization": "${TEST_HOOK_AUTH}"}},
                "mail": {"kind": "email", "host": "127.0.0.1", "port": self.smtp.port, "from": "floorgate@test.example",
                         "to": ["silo-team@test.example"]},
            }
        path = self.tmp / name
        path.write_text(yaml.safe_dump({"channels": channels, "rules": rules}, sort_keys=False), encoding="utf-8")
        return path

    def evaluator(self, rules: Path, *, ingest: IngestService | None = None) -> AlertEvaluator:
        return AlertEvaluator(AlertSettings(rules_file=rules), self.sessions, self.store, ingest=ingest)

    def reading(self, seconds: float, value: float, *, device: str = "silo-3", point: str = "temperature_5") -> None:
        tags = {"node": "mill-01", "device": device, "point": point, "unit": "°C"}
        self.store.write([Point("readings", tags, {"value": float(value)}, int(at(seconds).timestamp() * 1e9))])

    def alerts(self) -> list[Alert]:
        with self.sessions() as s:
            return list(s.execute(select(Alert).order_by(Alert.id)).scalars())

    def notifications(self, alert_id: int | None = None) -> list[tuple[str, str, str]]:
        with self.sessions() as s:
            q = select(Notification).order_by(Notification.id)
            if alert_id is not None:
                q = q.where(Notification.alert_id == alert_id)
            return [(n.channel, n.event, n.status) for n in s.execute(q).scalars()]

    def errors(self) -> list[str]:
        with self.sessions() as s:
            return [n.error for n in s.execute(select(Notification)).scalars() if n.error]


@pytest.fixture(params=["postgres", "sqlite"])
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("TEST_HOOK_AUTH", HOOK_AUTH)
    store: MetricsStore
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        influx: InfluxServer = request.getfixturevalue("influx_server")
        store = InfluxV1Store(influx.url, request.getfixturevalue("influx_db"))
    else:
        url = f"sqlite:///{tmp_path / 'central.db'}"
        store = SQLiteMetricsStore(tmp_path / "metrics.db")
    store.ensure_ready()
    engine = make_engine(url)
    migrate.upgrade(engine)
    with WebhookReceiver() as hook, SmtpSink() as smtp:
        yield Env(tmp_path, make_session_factory(engine), store, hook, smtp, request.param)
    store.close()
    engine.dispose()


def silo_rule(**extra: Any) -> dict[str, Any]:
    return {"name": "silo-hot-spot", "kind": "reading", "device": "silo-*", "point": "temperature_*", "above": 35,
            "for_s": 60, "max_gap_s": 30, "severity": "critical", "channels": ["hook", "mail"], **extra}


def test_reading_rule_fires_after_for_s_and_resolves_with_one_message_per_channel(env: Env) -> None:
    ev = env.evaluator(env.rules_file([silo_rule(
        message="{device} sensor {point} at {value:.1f} {unit} (above {threshold:g} {unit} for {for_s:g} s)")]))
    try:
        for s in range(-120, 1, 10):
            env.reading(s, 20.0)
        assert ev.evaluate_once(at(0)) == Evaluation()
        for s in range(10, 31, 10):
            env.reading(s, 40.0 + s / 100)
        assert ev.evaluate_once(at(30)).fired == 0  # type: ignore[union-attr]  # beyond for 20 s of 60
        for s in range(40, 61, 10):
            env.reading(s, 40.0 + s / 100)
        assert ev.evaluate_once(at(65)).fired == 0  # type: ignore[union-attr]  # 55 s
        env.reading(70, 40.7)
        fired = ev.evaluate_once(at(75))  # the last point at or before 15 s is the 10 s one: beyond since then
        assert fired is not None
        assert (fired.fired, fired.sent) == (1, 2)
        env.reading(80, 40.8)
        for s in (80, 85):
            assert ev.evaluate_once(at(s)) == Evaluation()  # no repeat while it keeps firing
        [alert] = env.alerts()
        assert (alert.rule, alert.subject, alert.severity, alert.state) == (
            "silo-hot-spot", "mill-01/silo-3/temperature_5", "critical", "firing")
        assert alert.message == "silo-3 sensor temperature_5 at 40.7 °C (above 35 °C for 60 s)"
        assert alert.value == pytest.approx(40.7)
        assert alert.details["since"] == at(10).isoformat()
        with env.sessions() as s:
            assert firing_counts(s) == {"info": 0, "warning": 0, "critical": 1}

        env.reading(90, 30.0)
        resolved = ev.evaluate_once(at(95))
        assert resolved is not None
        assert (resolved.resolved, resolved.sent) == (1, 2)
        assert ev.evaluate_once(at(100)) == Evaluation()
    finally:
        ev.close()

    [alert] = env.alerts()
    assert alert.state == "resolved"
    assert alert.resolved_at is not None
    assert alert.details["resolved_value"] == 30.0
    assert alert.notified_firing_at is not None
    assert alert.notified_resolved_at is not None
    assert env.notifications() == [("webhook:hook", "firing", "sent"), ("email:mail", "firing", "sent"),
                                   ("webhook:hook", "resolved", "sent"), ("email:mail", "resolved", "sent")]
    bodies = env.hook.bodies()
    assert [b["state"] for b in bodies] == ["firing", "resolved"]
    assert bodies[0] == {
        "alert_id": alert.id, "rule": "silo-hot-spot", "subject": "mill-01/silo-3/temperature_5",
        "severity": "critical", "state": "firing", "message": "silo-3 sensor temperature_5 at 40.7 °C (above 35 °C "
        "for 60 s)", "value": pytest.approx(40.7), "started_at": at(75).isoformat(), "resolved_at": None,
    }
    assert bodies[1]["value"] == 30.0
    assert bodies[1]["resolved_at"] == at(95).isoformat()
    assert bodies[1]["message"].startswith("resolved (back within the threshold): silo-3 sensor")
    assert all(h["Authorization"] == HOOK_AUTH for h in env.hook.headers())
    subjects = env.smtp.subjects()
    assert subjects == ["[FIRING] critical silo-hot-spot: mill-01/silo-3/temperature_5",
                        "[RESOLVED] critical silo-hot-spot: mill-01/silo-3/temperature_5"]
    first = env.smtp.messages()[0]
    assert first["From"] == "floorgate@test.example"
    assert first["To"] == "silo-team@test.example"
    assert "FIRING: silo-3 sensor temperature_5 at 40.7 °C" in first.get_content()
    assert env.smtp.envelopes()[0].rcpt_tos == ["silo-team@test.example"]


def test_below_threshold_and_for_s_zero(env: Env) -> None:
    ev = env.evaluator(env.rules_file([{"name": "too-cold", "kind": "reading", "point": "temperature_1",
                                        "below": 5, "channels": ["hook"]}]))
    try:
        env.reading(0, 4.5, point="temperature_1")
        env.reading(0, 4.5, point="temperature_2")  # another point: not matched
        assert ev.evaluate_once(at(1)).fired == 1  # type: ignore[union-attr]
        [alert] = env.alerts()
        assert alert.message == "mill-01/silo-3/temperature_1 is 4.5°C, below 5°C"
    finally:
        ev.close()


def test_gaps_are_missing_data_not_a_reason_to_fire_or_resolve(env: Env) -> None:
    ev = env.evaluator(env.rules_file([silo_rule()]))
    try:
        for s in (0, 10, 50, 60, 70):  # 40 s between 10 and 50: longer than max_gap_s
            env.reading(s, 41.0)
        assert ev.evaluate_once(at(75)).fired == 0  # type: ignore[union-attr]
        for s in (80, 90, 100, 110, 120):
            env.reading(s, 41.0)
        assert ev.evaluate_once(at(115)).fired == 1  # type: ignore[union-attr]  # 50..115 without a gap
        # the probe stops reporting: the newest point gets older than max_gap_s - the alert stays as it is
        assert ev.evaluate_once(at(400)) == Evaluation()
        assert [a.state for a in env.alerts()] == ["firing"]
        env.reading(410, 20.0)
        assert ev.evaluate_once(at(411)).resolved == 1  # type: ignore[union-attr]
    finally:
        ev.close()


def test_rate_limit_suppresses_and_records(env: Env) -> None:
    channels = {"hook": {"kind": "webhook", "url": env.hook.url, "rate_limit": {"max_notifications": 2,
                                                                                "window_s": 600}}}
    ev = env.evaluator(env.rules_file([silo_rule(for_s=0, channels=["hook"])], channels))
    try:
        for point in ("temperature_1", "temperature_2", "temperature_3"):
            env.reading(0, 50.0, point=point)
        result = ev.evaluate_once(at(1))
        assert result is not None
        assert (result.fired, result.sent, result.suppressed) == (3, 2, 1)
        for point in ("temperature_1", "temperature_2", "temperature_3"):
            env.reading(10, 20.0, point=point)
        result = ev.evaluate_once(at(11))
        assert result is not None
        assert (result.resolved, result.sent, result.suppressed) == (3, 0, 3)
        assert ev.evaluate_once(at(12)) == Evaluation()  # suppressed is final: not tried again
        # after the window: notifications flow again
        env.reading(700, 50.0, point="temperature_1")
        result = ev.evaluate_once(at(701))
        assert result is not None
        assert (result.fired, result.sent) == (1, 1)
    finally:
        ev.close()
    assert [b["state"] for b in env.hook.bodies()] == ["firing", "firing", "firing"]
    statuses = env.notifications()
    assert statuses.count(("webhook:hook", "firing", "suppressed")) == 1
    assert statuses.count(("webhook:hook", "resolved", "suppressed")) == 3
    errors = env.errors()
    assert any(e.startswith("rate limit: 2 per 600 s") for e in errors)
    assert "the firing notification was suppressed" in errors
    assert all(a.notified_firing_at is not None for a in env.alerts())


def test_failed_sends_are_retried_a_bounded_number_of_times(env: Env) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens?token=dead-secret"
    channels = {"hook": {"kind": "webhook", "url": env.hook.url, "max_attempts": 5},
                "dead": {"kind": "webhook", "url": dead, "max_attempts": 2, "timeout_s": 2}}
    ev = env.evaluator(env.rules_file([silo_rule(for_s=0, channels=["hook", "dead"])], channels))
    env.hook.fail_next(2)
    try:
        env.reading(0, 50.0)
        assert ev.evaluate_once(at(1)).failed == 2  # type: ignore[union-attr]
        assert ev.evaluate_once(at(2)).failed == 2  # type: ignore[union-attr]  # dead has given up now
        assert env.alerts()[0].notified_firing_at is None
        third = ev.evaluate_once(at(3))
        assert third is not None
        assert (third.sent, third.failed) == (1, 0)
        assert env.alerts()[0].notified_firing_at is not None
        assert ev.evaluate_once(at(4)) == Evaluation()
        env.reading(5, 20.0)
        fourth = ev.evaluate_once(at(6))
        assert fourth is not None
        assert (fourth.resolved, fourth.sent, fourth.failed) == (1, 1, 1)
        assert ev.evaluate_once(at(7)).failed == 1  # type: ignore[union-attr]
        assert ev.evaluate_once(at(8)) == Evaluation()
    finally:
        ev.close()
    assert [b["state"] for b in env.hook.bodies()] == ["firing", "resolved"]
    assert env.notifications() == [
        ("webhook:hook", "firing", "failed"), ("webhook:dead", "firing", "failed"),
        ("webhook:hook", "firing", "failed"), ("webhook:dead", "firing", "failed"),
        ("webhook:hook", "firing", "sent"),
        ("webhook:hook", "resolved", "sent"), ("webhook:dead", "resolved", "failed"),
        ("webhook:dead", "resolved", "failed"),
    ]
    errors = env.errors()
    assert any("HTTP 500" in e for e in errors)
    assert any("ConnectError" in e for e in errors)
    assert not any("secret" in e or "nobody-listens" in e for e in errors), errors
    assert env.alerts()[0].notified_resolved_at is not None


def test_devices_and_nodes(env: Env) -> None:
    now = at(0)
    with env.sessions.begin() as s:
        s.add_all([
            Node(node_id="n1", last_heartbeat_at=now - timedelta(seconds=300)),
            Node(node_id="n2", last_heartbeat_at=now - timedelta(seconds=5), heartbeat={"streams": {
                "business": {"head": 9, "acked": 6, "pending": 3, "oldest_age_s": 100.0, "lost": 0},
                "readings": {"head": 9, "acked": 9, "pending": 0, "oldest_age_s": None, "lost": 0}}}),
            Node(node_id="n3", enrolled_at=now - timedelta(seconds=1000)),
            Node(node_id="x9", last_heartbeat_at=now - timedelta(seconds=999)),  # not matched by n*
            Device(node_id="n1", device_id="d1", status="offline", status_reason="timeout",
                   status_changed_at=now - timedelta(seconds=400), last_seen=now - timedelta(seconds=1)),
            Device(node_id="n1", device_id="d2", status="online", last_seen=now - timedelta(seconds=10)),
            Device(node_id="n1", device_id="d3", status="online", last_seen=now - timedelta(seconds=1000)),
            Device(node_id="n2", device_id="d1", status="offline", status_changed_at=now - timedelta(seconds=30)),
        ])
    rules = [
        {"name": "silent", "kind": "node_silent", "node": "n*", "after_s": 120, "channels": ["hook"]},
        {"name": "backlog", "kind": "node_backlog", "older_than_s": 60, "channels": ["hook"]},
        {"name": "offline", "kind": "device_offline", "node": "n1", "after_s": 300, "severity": "info"},
    ]
    ev = env.evaluator(env.rules_file(rules))
    try:
        assert ev.evaluate_once(now).fired == 5  # type: ignore[union-attr]
        firing = {(a.rule, a.subject): a for a in env.alerts()}
        assert set(firing) == {("silent", "n1"), ("silent", "n3"), ("backlog", "n2/business"),
                               ("offline", "n1/d1"), ("offline", "n1/d3")}
        assert firing[("silent", "n1")].value == 300
        assert firing[("silent", "n1")].message == "node n1: no heartbeat for 300 s (limit 120 s)"
        assert firing[("backlog", "n2/business")].value == 105  # 100 s reported, 5 s ago
        assert firing[("offline", "n1/d1")].message == "device d1 on node n1 offline for 400 s (limit 300 s)"
        assert firing[("offline", "n1/d1")].details["why"] == "reported offline: timeout"
        with env.sessions.begin() as s:
            n1 = s.get(Node, "n1")
            n2 = s.get(Node, "n2")
            assert n1 is not None
            assert n2 is not None
            n1.last_heartbeat_at = now
            n2.heartbeat = {"streams": {"business": {"pending": 0, "oldest_age_s": None}}}
            n2.last_heartbeat_at = now
            d1 = s.get(Device, ("n1", "d1"))
            assert d1 is not None
            d1.status, d1.status_changed_at = "online", now
            s.delete(s.get(Device, ("n1", "d3")))  # gone: no longer matched → resolved
        result = ev.evaluate_once(now + timedelta(seconds=1))
        assert result is not None
        assert result.resolved == 4
        states = {(a.rule, a.subject): (a.state, (a.details or {}).get("resolve_reason")) for a in env.alerts()}
        assert states[("silent", "n3")] == ("firing", None)
        assert states[("offline", "n1/d3")] == ("resolved", "no longer matched by the rule")
        assert states[("silent", "n1")] == ("resolved", "back within the threshold")
    finally:
        ev.close()
    assert len(env.hook.bodies()) == 3 + 2  # silent ×2 and backlog fired, silent n1 and backlog resolved


def test_ingest_lag_from_the_database_and_from_the_process(env: Env) -> None:
    now = at(0)
    with env.sessions.begin() as s:
        s.add(StreamMark(node_id="mill-01", epoch="e1", stream="business", acked_seq=5, records=5,
                         last_batch_at=now - timedelta(seconds=10)))
        s.add(InboxEntry(node_id="mill-01", epoch="e1", stream="business", seq=5, record_id="r5", kind="weighing",
                         digest="0" * 64, received_at=now - timedelta(seconds=10),
                         device_time=now - timedelta(seconds=70)))
    path = env.rules_file([{"name": "lag", "kind": "ingest_lag", "above_s": 30, "window_s": 60}])
    ev = env.evaluator(path)
    try:
        assert ev.evaluate_once(now).fired == 1  # type: ignore[union-attr]
        [alert] = env.alerts()
        assert (alert.subject, alert.value, alert.details["source"]) == ("central", 60.0, "database")
        assert ev.evaluate_once(now + timedelta(seconds=100)) == Evaluation()  # no batch in the window: no data
    finally:
        ev.close()
    ingest = IngestService(BrokerSettings(), env.sessions, env.store)  # not running: only its counters are read
    ev = env.evaluator(path, ingest=ingest)
    try:
        ingest.counters.last_batch_at, ingest.counters.last_lag_s = now.timestamp(), 0.4
        assert ev.evaluate_once(now).resolved == 1  # type: ignore[union-attr]
        ingest.counters.last_lag_s = 45.0
        assert ev.evaluate_once(now).fired == 1  # type: ignore[union-attr]
        assert env.alerts()[-1].details["source"] == "process"
    finally:
        ev.close()


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_only_one_evaluator_at_a_time_on_postgres(env: Env) -> None:
    pg_env = env
    path = pg_env.rules_file([{"name": "silent", "kind": "node_silent", "after_s": 60}])
    first, second = pg_env.evaluator(path), pg_env.evaluator(path)
    try:
        assert first.evaluate_once(at(0)) is not None
        assert second.evaluate_once(at(0)) is None
        assert first.evaluate_once(at(1)) is not None  # still its own
        first.close()
        assert second.evaluate_once(at(2)) is not None  # taken over
    finally:
        first.close()
        second.close()


def test_rules_file_reloaded_removed_rule_resolves_bad_file_keeps_rules(env: Env, caplog: pytest.LogCaptureFixture
                                                                      ) -> None:
    with env.sessions.begin() as s:
        s.add(Node(node_id="n1", last_heartbeat_at=at(-500)))
    silent = {"name": "silent", "kind": "node_silent", "after_s": 60, "channels": ["hook"]}
    other = {"name": "silent-long", "kind": "node_silent", "after_s": 3600, "channels": ["hook"]}
    path = env.rules_file([silent, other])
    ev = env.evaluator(path)
    try:
        assert ev.evaluate_once(at(0)).fired == 1  # type: ignore[union-attr]
        env.rules_file([other])
        result = ev.evaluate_once(at(1))
        assert result is not None
        assert (result.resolved, result.sent) == (1, 0)
        [alert] = env.alerts()
        assert alert.details["resolve_reason"] == "rule removed from the rules file"
        assert alert.notified_resolved_at is not None
        path.write_text("rules: [{name: broken, kind: nonsense}]\n", encoding="utf-8")
        with caplog.at_level(logging.ERROR, logger="central.alerts.engine"):
            assert ev.evaluate_once(at(4000)).fired == 1  # type: ignore[union-attr]  # silent-long still on
        assert "the rules file cannot be used" in caplog.text
        assert "rules[0]" in caplog.text
        assert ev.loader.get().error is not None
    finally:
        ev.close()
    assert [b["state"] for b in env.hook.bodies()] == ["firing", "firing"]


def test_smtp_login_and_secrets_never_logged(env: Env, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    with SmtpSink(login=("floorgate", SMTP_PASSWORD)) as smtp:
        channels = {
            "mail": {"kind": "email", "host": "127.0.0.1", "port": smtp.port, "username": "floorgate",
                     "password": "${TEST_SMTP_PASSWORD}", "from": "a@test.example", "to": ["b@test.example"]},
            "bad-mail": {"kind": "email", "host": "127.0.0.1", "port": smtp.port, "username": "floorgate",
                         "password": "wrong-" + SMTP_PASSWORD, "from": "a@test.example", "to": ["b@test.example"],
                         "timeout_s": 3, "max_attempts": 1},
            "hook": {"kind": "webhook", "url": env.hook.url, "headers": {"X-Token": "${TEST_HOOK_AUTH}"}},
        }
        env.hook.fail_next(1, status=403)
        ev = env.evaluator(env.rules_file([silo_rule(for_s=0, channels=["mail", "bad-mail", "hook"])], channels))
        try:
            # every level of our own loggers; httpx logs request URLs at INFO (the CLI keeps it at WARNING)
            with caplog.at_level(logging.DEBUG, logger="central"):
                env.reading(0, 50.0)
                ev.evaluate_once(at(1))
                ev.evaluate_once(at(2))
        finally:
            ev.close()
        assert smtp.subjects() == ["[FIRING] critical silo-hot-spot: mill-01/silo-3/temperature_5"]
        assert smtp.authenticated() == [True]
    statuses = env.notifications()
    assert ("email:mail", "firing", "sent") in statuses
    assert ("email:bad-mail", "firing", "failed") in statuses
    assert ("webhook:hook", "firing", "sent") in statuses
    assert any(r.name.startswith("central.alerts") for r in caplog.records)
    text = caplog.text + " ".join(env.errors())
    for secret in (SMTP_PASSWORD, HOOK_AUTH, "hook-secret", "s3cret-token"):
        assert secret not in text


async def test_run_loop_evaluates_until_cancelled_and_releases_the_lock(env: Env) -> None:
    with env.sessions.begin() as s:
        s.add(Node(node_id="n1", last_heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    path = env.rules_file([{"name": "silent", "kind": "node_silent", "after_s": 60, "channels": ["hook"]}])
    ev = AlertEvaluator(AlertSettings(rules_file=path, evaluate_every_s=0.1), env.sessions, env.store)
    task = asyncio.create_task(ev.run())
    for _ in range(200):
        if ev.evaluations >= 3:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ev.evaluations >= 3
    assert [a.state for a in env.alerts()] == ["firing"]
    assert len(env.hook.bodies()) == 1
    other = env.evaluator(path)
    try:
        assert other.evaluate_once() is not None  # the lock (Postgres) was given back
    finally:
        other.close()
