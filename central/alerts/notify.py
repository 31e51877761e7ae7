"""Sending one notification through one channel: a webhook (JSON over HTTP POST) or an e-mail (SMTP).

Webhook body (``Content-Type: application/json``)::

    {"alert_id": 12, "rule": "silo-hot-spot", "subject": "mill-01/silo-3/temperature_5", "severity": "critical",
     "state": "firing", "message": "…", "value": 41.3, "started_at": "2025-01-07T10:00:00+00:00",
     "resolved_at": null}

``state`` is the event notified (``firing`` / ``resolved``); ``value`` the value at that event. Any 2xx answer is
success; everything else raises ``NotifyError``.

E-mail: plain text, subject ``[FIRING] critical silo-hot-spot: mill-01/silo-3/temperature_5`` or
``[RESOLVED] …``; STARTTLS and a login when the channel asks for them. ``smtplib`` is blocking: the evaluator calls
these functions from its worker thread.

Secrets — the SMTP password, webhook header values, the path and query of a webhook URL (which often carry a
token) — never appear in a log line or in a ``NotifyError`` message (those are stored in ``alert_notifications``).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import httpx

from central.alerts.config import EmailChannel, WebhookChannel
from sync.runtime.redact import mask_urls_in

__all__ = ["Notice", "NotifyError", "email_message", "post_json", "send", "send_email", "send_message",
           "send_webhook", "webhook_body"]

USER_AGENT = "floorgate-alerts"
_MAX_ERROR = 500


class NotifyError(Exception):
    """A notification was not delivered; the message is safe to log and store (no secrets)."""


@dataclass(frozen=True)
class Notice:
    """One event of one alert, as notified."""

    alert_id: int
    rule: str
    subject: str
    severity: str
    state: str  # firing / resolved
    message: str
    value: float | None
    started_at: datetime
    resolved_at: datetime | None


def webhook_body(n: Notice) -> dict[str, Any]:
    return {
        "alert_id": n.alert_id, "rule": n.rule, "subject": n.subject, "severity": n.severity, "state": n.state,
        "message": n.message, "value": n.value, "started_at": n.started_at.isoformat(),
        "resolved_at": n.resolved_at.isoformat() if n.resolved_at else None,
    }


def _safe(text: str, channel: WebhookChannel) -> str:
    """An error text without the channel's secrets: its URL (also as httpx re-quotes it: every URL is masked) and
    its header values."""
    text = mask_urls_in(text.replace(channel.url, channel.masked_url))
    for value in channel.headers.values():
        secret = value.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return text[:_MAX_ERROR]


def send_webhook(client: httpx.Client, channel: WebhookChannel, n: Notice) -> None:
    post_json(client, channel, webhook_body(n))


def post_json(client: httpx.Client, channel: WebhookChannel, body: dict[str, Any]) -> None:
    """POST ``body`` as JSON to the channel (an alert's event, or a checkpoint: ``central.fleet.checkpoint_out``)."""
    headers = {"User-Agent": USER_AGENT} | {k: v.get_secret_value() for k, v in channel.headers.items()}
    try:
        response = client.post(channel.url, json=body, headers=headers, timeout=channel.timeout_s)
    except httpx.HTTPError as exc:
        raise NotifyError(_safe(f"POST {channel.masked_url}: {type(exc).__name__}: {exc}", channel)) from None
    if not 200 <= response.status_code < 300:
        raise NotifyError(_safe(f"POST {channel.masked_url}: HTTP {response.status_code} "
                                f"{response.text[:200]!r}", channel))


def email_message(channel: EmailChannel, n: Notice) -> EmailMessage:
    msg = EmailMessage()
    tag = "[FIRING]" if n.state == "firing" else "[RESOLVED]"
    msg["Subject"] = f"{tag} {n.severity} {n.rule}: {n.subject}"
    msg["From"] = channel.from_
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = format_datetime(n.resolved_at if n.state == "resolved" and n.resolved_at else n.started_at)
    msg["Message-ID"] = make_msgid(idstring=f"alert{n.alert_id}.{n.state}", domain="floorgate")
    msg["X-Floorgate-Alert"] = f"{n.alert_id} {n.state}"
    value = "-" if n.value is None else f"{n.value:g}"
    lines = [
        f"{n.state.upper()}: {n.message}",
        "",
        f"rule:      {n.rule} ({n.severity})",
        f"subject:   {n.subject}",
        f"value:     {value}",
        f"started:   {n.started_at.isoformat()}",
    ]
    if n.resolved_at is not None:
        lines.append(f"resolved:  {n.resolved_at.isoformat()}")
    lines += [f"alert id:  {n.alert_id}", "", "-- floorgate central"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_email(channel: EmailChannel, n: Notice) -> None:
    send_message(channel, email_message(channel, n))


def send_message(channel: EmailChannel, msg: EmailMessage) -> None:
    """Send ``msg`` through the channel's SMTP server (an alert's e-mail, or a checkpoint's)."""
    where = f"SMTP {channel.host}:{channel.port}"
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s) as smtp:
            smtp.ehlo()
            if channel.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if channel.username is not None and channel.password is not None:
                smtp.login(channel.username, channel.password.get_secret_value())
            refused = smtp.send_message(msg)
    except smtplib.SMTPException as exc:
        raise NotifyError(_smtp_error(where, exc, channel)) from None
    except (TimeoutError, OSError) as exc:
        raise NotifyError(f"{where}: {type(exc).__name__}: {exc}"[:_MAX_ERROR]) from None
    if refused:
        raise NotifyError(f"{where}: recipients refused: {', '.join(sorted(refused))}"[:_MAX_ERROR])


def _smtp_error(where: str, exc: smtplib.SMTPException, channel: EmailChannel) -> str:
    text = f"{where}: {type(exc).__name__}: {exc}"
    if channel.password is not None and channel.password.get_secret_value():
        text = text.replace(channel.password.get_secret_value(), "***")
    return text[:_MAX_ERROR]


def send(channel: WebhookChannel | EmailChannel, n: Notice, *, http: httpx.Client) -> None:
    """Deliver ``n`` through ``channel`` or raise ``NotifyError``."""
    if isinstance(channel, WebhookChannel):
        send_webhook(http, channel, n)
    else:
        send_email(channel, n)
