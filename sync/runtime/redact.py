"""Secrets never shown: one rule for URLs and one for configuration keys, used by every message that could echo one.

``mask_url`` is what an operator may see of a URL — in the API (alert channels), in logs and in errors::

    https://user:pw@hooks.example:8443/services/T0/B1/SECRET?token=x  →  https://hooks.example:8443/…?…

The rule: keep the scheme, host and port; drop the user-info (``user:password@``) always; replace a non-empty path
with ``/…`` and a query or fragment with ``?…`` / ``#…``. The whole path goes, not only "long" segments: webhook
services put their token in the path (Slack ``/services/T…/B…/<token>``, Discord ``/api/webhooks/<id>/<token>``,
Teams ``/webhookb2/<guid>@<guid>/IncomingWebhook/<hex>/<guid>``) and a short token looks like any other word, so no
segment rule can tell them apart. A channel is recognised by its name and host. ``keep_path=True`` keeps the path
for URLs whose path is not secret (a database URL's database name); the user-info and query still go.

``is_secret_key`` says whether a configuration key path names a secret (``auth.jwt_secret``, ``password``,
``headers.Authorization``, ``…token``, ``…key`` — not ``…key_file``): configuration errors never echo the value given
for such a key, only the key and the rule it breaks (``shown_value``). For a URL key (``…url``) they show the value
masked, and nothing when it does not parse as a URL (``hooks.example/<token>`` would be shown whole otherwise).
Stdlib only (``sync``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

_SECRET_KEY = re.compile(r"pass|secret|token|key|authorization|credential|cookie|header|private|signature",
                         re.IGNORECASE)
_URL_KEY = re.compile(r"url|dsn|uri|endpoint|webhook", re.IGNORECASE)
_PATH_KEY = re.compile(r"(file|dir|path)$", re.IGNORECASE)  # where a secret is kept is no secret
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_url(url: str, *, keep_path: bool = False) -> str:
    """``url`` without user-info, query and fragment, and (unless ``keep_path``) without its path."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # an unparseable port, a broken IPv6 literal
        return "<a URL that cannot be parsed>"
    if not parts.scheme or not host:
        return "<a URL without scheme or host>"
    if ":" in host:
        host = f"[{host}]"
    out = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    if parts.path:
        out += parts.path if keep_path or parts.path == "/" else "/…"
    if parts.query:
        out += "?…"
    if parts.fragment:
        out += "#…"
    return out


def mask_urls_in(text: str) -> str:
    """``text`` with every ``scheme://…`` in it masked (error texts of HTTP libraries quote the URL they used)."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)


def is_secret_key(loc: Iterable[Any]) -> bool:
    """Whether any part of a configuration key path (``("auth", "jwt_secret")``) names a secret: a password, token,
    key, header value, credential … — but not a file or directory holding one (``tls.key_file``)."""
    return any(isinstance(part, str) and _SECRET_KEY.search(part) and not _PATH_KEY.search(part) for part in loc)


def is_url_key(loc: Iterable[Any]) -> bool:
    """Whether a configuration key path names a URL (``broker.url``, ``channels.x.url``, ``database_url``)."""
    return any(isinstance(part, str) and _URL_KEY.search(part) for part in loc)


def shown_value(loc: Iterable[Any], value: object) -> str | None:
    """What a configuration error may say about the value given for ``loc``: ``repr`` of it with URLs masked; for a
    URL key only a value that parses as a URL (masked — one without a scheme could be a token in full); for a secret
    key nothing (None)."""
    loc = tuple(loc)
    if is_secret_key(loc):
        return None
    if is_url_key(loc) and isinstance(value, str):
        masked = mask_url(value)
        return None if masked.startswith("<") else repr(masked)
    return mask_urls_in(repr(value))
