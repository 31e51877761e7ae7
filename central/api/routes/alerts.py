"""``/api/v1/alerts`` (alert history, newest first, with each alert's notifications) and ``/api/v1/alert-rules``
(the rules central evaluates, secrets masked)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from central.alerts.config import EmailChannel, WebhookChannel, rules_loader
from central.alerts.rules import Rule
from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, sorted_page
from central.api.params import MAX_ID
from central.api.security import CanRead
from central.db.models import Alert, Notification

router = APIRouter(tags=["alerts"])
_TEXT = r"^[^\x00]*$"  # Postgres text cannot hold NUL


class AlertOut(BaseModel):
    id: int
    rule: str = Field(description="name of the rule in the rules file", examples=["silo-hot-spot"])
    subject: str = Field(description="what the rule fired for: node/device/point, node/device, node/stream, "
                                     "node, or central", examples=["mill-01/silo-3/temperature_5"])
    severity: Literal["info", "warning", "critical"]
    state: Literal["firing", "resolved"]
    message: str = Field(examples=["silo-3 sensor temperature_5 at 41.3 °C (above 35 °C for 1800 s)"])
    value: float | None = Field(description="the value when it fired", examples=[41.3])
    started_at: datetime = Field(description="when it fired")
    resolved_at: datetime | None
    notified_firing_at: datetime | None = Field(
        description="when the firing notification was settled on every channel (sent, suppressed or given up)")
    notified_resolved_at: datetime | None = Field(description="the same for the resolved notification")
    details: dict[str, Any] | None = Field(
        description="kind, threshold, since (when the condition began), resolved_value, resolve_reason, …",
        examples=[{"kind": "reading", "threshold": 35.0, "since": "2025-01-07T09:30:00+00:00"}])


class NotificationOut(BaseModel):
    id: int
    channel: str = Field(examples=["email:silo-team"])
    event: Literal["firing", "resolved"]
    status: Literal["sent", "failed", "suppressed"]
    error: str | None = Field(description="why it failed or was suppressed (never a secret)")
    at: datetime


class AlertDetail(AlertOut):
    notifications: list[NotificationOut] = Field(description="every attempt, oldest first")


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _out(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id, "rule": a.rule, "subject": a.subject, "severity": a.severity, "state": a.state,
        "message": a.message, "value": a.value, "started_at": a.started_at, "resolved_at": a.resolved_at,
        "notified_firing_at": a.notified_firing_at, "notified_resolved_at": a.notified_resolved_at,
        "details": a.details if isinstance(a.details, dict) else None,
    }


Sort = Literal["started_at", "-started_at", "id", "-id"]


@router.get("/api/v1/alerts", response_model=AlertPage, responses=ERROR_RESPONSES,
            summary="Alert history, newest first")
def list_alerts(
    session: SessionDep,
    principal: CanRead,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=2000, description="`next_cursor` of the previous page")] = None,
    sort: Annotated[Sort, Query(description="started_at or id; - for descending")] = "-started_at",
    state: Literal["firing", "resolved"] | None = None,
    rule: Annotated[str | None, Query(max_length=64, pattern=_TEXT)] = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    subject: Annotated[str | None, Query(max_length=200, pattern=_TEXT, description="exact subject")] = None,
) -> AlertPage:
    q = select(Alert)
    if state:
        q = q.where(Alert.state == state)
    if rule:
        q = q.where(Alert.rule == rule)
    if severity:
        q = q.where(Alert.severity == severity)
    if subject:
        q = q.where(Alert.subject == subject)
    rows, next_cursor = sorted_page(session, q, {"started_at": Alert.started_at, "id": Alert.id}, Alert.id,
                                    sort=sort, limit=limit, cursor=cursor)
    return AlertPage(items=[AlertOut(**_out(a)) for a in rows], next_cursor=next_cursor)


@router.get("/api/v1/alerts/{alert_id}", response_model=AlertDetail, responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="One alert with its notifications")
def get_alert(alert_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep, principal: CanRead
              ) -> AlertDetail:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise ApiError(404, "not_found", f"no alert with id {alert_id}", field="alert_id")
    notes = session.execute(select(Notification).where(Notification.alert_id == alert_id)
                            .order_by(Notification.id)).scalars()
    return AlertDetail(**_out(alert), notifications=[
        NotificationOut(id=n.id, channel=n.channel, event=n.event, status=n.status, error=n.error,
                        at=n.at)
        for n in notes
    ])


# --- rules -------------------------------------------------------------------------------------------------------


class RateLimitOut(BaseModel):
    max_notifications: int
    window_s: float


class WebhookChannelOut(BaseModel):
    name: str
    kind: Literal["webhook"]
    url: str = Field(description="scheme, host and port only (`sync.runtime.redact.mask_url`): user-info, path and "
                                 "query are shown as `…`, they may carry a token",
                     examples=["https://hooks.example.com/…"])
    headers: list[str] = Field(description="names of the extra headers (their values are secret)")
    timeout_s: float
    rate_limit: RateLimitOut
    max_attempts: int


class EmailChannelOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    kind: Literal["email"]
    host: str
    port: int
    starttls: bool
    username: str | None
    password_set: bool = Field(description="whether a password is configured (it is never shown)")
    from_: str = Field(alias="from")
    to: list[str]
    timeout_s: float
    rate_limit: RateLimitOut
    max_attempts: int


ChannelOut = Annotated[WebhookChannelOut | EmailChannelOut, Field(discriminator="kind")]
RuleOut = Rule  # every kind of the rules file, as loaded


class AlertRulesOut(BaseModel):
    rules_file: str | None = Field(description="the file central reads (alerts.rules_file); null: no alerts")
    loaded_at: datetime | None = Field(description="when its current rules were loaded")
    error: str | None = Field(description="why the file as it is now cannot be used (the rules loaded before "
                                          "stay in force)")
    evaluate_every_s: float
    channels: list[ChannelOut]
    rules: list[RuleOut]


def _channel_out(name: str, ch: WebhookChannel | EmailChannel) -> WebhookChannelOut | EmailChannelOut:
    limit = RateLimitOut(max_notifications=ch.rate_limit.max_notifications, window_s=ch.rate_limit.window_s)
    if isinstance(ch, WebhookChannel):
        return WebhookChannelOut(name=name, kind="webhook", url=ch.masked_url, headers=sorted(ch.headers),
                                 timeout_s=ch.timeout_s, rate_limit=limit, max_attempts=ch.max_attempts)
    return EmailChannelOut(name=name, kind="email", host=ch.host, port=ch.port, starttls=ch.starttls,
                           username=ch.username, password_set=ch.password is not None, from_=ch.from_,
                           to=list(ch.to), timeout_s=ch.timeout_s, rate_limit=limit, max_attempts=ch.max_attempts)


@router.get("/api/v1/alert-rules", response_model=AlertRulesOut, responses=ERROR_RESPONSES,
            summary="The alert rules and channels central evaluates (secrets masked)")
def get_alert_rules(state: StateDep, principal: CanRead) -> AlertRulesOut:
    settings = state.settings.alerts
    if settings.rules_file is None:
        return AlertRulesOut(rules_file=None, loaded_at=None, error=None, evaluate_every_s=settings.evaluate_every_s,
                             channels=[], rules=[])
    loaded = rules_loader(settings.rules_file).get()
    rules = loaded.rules
    return AlertRulesOut(
        rules_file=str(settings.rules_file),
        loaded_at=datetime.fromtimestamp(loaded.loaded_at, UTC) if loaded.loaded_at else None,
        error=loaded.error, evaluate_every_s=settings.evaluate_every_s,
        channels=[_channel_out(n, c) for n, c in sorted(rules.channels.items())] if rules else [],
        rules=list(rules.rules) if rules else [],
    )
