"""The alert rules file (channels and rules) and ``AlertSettings``, validated on load; what a rule is and how it
matches its subjects is ``central.alerts.rules``.

Example (``firmware-config/examples/alert-rules.yaml``)::

    channels:
      ops-webhook: {kind: webhook, url: "https://hooks.example/floorgate", headers: {Authorization: "${HOOK_AUTH}"}}
      ops-mail:
        kind: email
        host: smtp.example.com
        port: 587
        starttls: true
        username: floorgate
        password: "${SMTP_PASSWORD}"       # ${NAME}: taken from the environment when the file is loaded
        from: floorgate@example.com
        to: [silo-team@example.com]
        rate_limit: {max_notifications: 20, window_s: 3600}
    rules:
      - name: silo-hot-spot
        kind: reading                      # reading / device_offline / node_backlog / node_silent / ingest_lag / tse
        point: "temperature_*"             # globs on the tags node, device, point
        above: 35
        for_s: 600
        severity: critical
        channels: [ops-webhook, ops-mail]

A mistake names the file, the key path and what was expected, like every floorgate configuration::

    alert-rules.yaml: rules[0].above: Input should be a valid number (got 'hot')
    alert-rules.yaml: rules[1].channels[0]: 'pager' is not a channel of this file (defined: ops-mail, ops-webhook)

``rules_loader(path)`` keeps the last good rules of a file per process and loads it again when it changes (the
evaluator and ``GET /api/v1/alert-rules`` share it); a changed file with a mistake keeps the last good rules and
reports the error.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from central.alerts.rules import RULE_KINDS, AnyRule, Rule
from sync.runtime.config import ConfigError, ConfigModel, parse_model
from sync.runtime.limits import read_yaml
from sync.runtime.redact import mask_url

__all__ = [
    "AlertRules",
    "AlertSettings",
    "Channel",
    "EmailChannel",
    "LoadedRules",
    "RateLimit",
    "WebhookChannel",
    "load_rules",
    "parse_rules",
    "rules_loader",
]

CHANNEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$"  # stored as "webhook:<name>" in 64 characters
CHANNEL_KINDS = frozenset({"webhook", "email"})
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


# --- settings in central.yaml ------------------------------------------------------------------------------------


class AlertSettings(ConfigModel):
    """``alerts:`` in central.yaml: where the rules are and how often they are evaluated."""

    rules_file: Path | None = Field(
        None, description="the alert rules file (YAML); a relative path is relative to the working directory; "
                          "none: no alerts are evaluated")
    evaluate_every_s: float = Field(10.0, ge=0.1, le=3600, description="evaluate every rule this often")


# --- channels ----------------------------------------------------------------------------------------------------


def _from_env(value: object) -> object:
    """``${NAME}`` → the environment variable NAME (secrets need not be written into the file)."""
    if isinstance(value, str) and (m := _ENV_REF.match(value)):
        name = m.group(1)
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    return value


class RateLimit(ConfigModel):
    max_notifications: int = Field(30, ge=1, description="at most this many notifications sent on the channel …")
    window_s: float = Field(3600.0, gt=0, description="… within this many seconds; more are suppressed (recorded)")


class _ChannelBase(ConfigModel):
    rate_limit: RateLimit = RateLimit()
    max_attempts: int = Field(5, ge=1, le=100, description="a failed send is tried again on the next evaluations, "
                                                           "this many times in all")


class WebhookChannel(_ChannelBase):
    """POST a JSON object per notification to ``url``."""

    kind: Literal["webhook"]
    url: str = Field(description="http:// or https:// URL")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra request headers (secret)")
    timeout_s: float = Field(5.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = str(_from_env(v))
        m = re.match(r"^https?://[^/\s?#]+", v)
        if m is None or any(c.isspace() for c in v):
            raise ValueError("expected an http:// or https:// URL with a host")
        return v

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out: dict[object, object] = {}
        for name, value in v.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r}: expected letters, digits and -")
            value = _from_env(value)
            if isinstance(value, str) and ("\n" in value or "\r" in value):
                raise ValueError(f"header {name}: a value must not contain a line break")
            out[name] = value
        return out

    @property
    def masked_url(self) -> str:
        """``scheme://host[:port]/…?…`` (``sync.runtime.redact.mask_url``): webhook URLs carry a token in the
        user-info, the
        path or the query."""
        return mask_url(self.url)


class EmailChannel(_ChannelBase):
    """A plain-text e-mail per notification through an SMTP server."""

    kind: Literal["email"]
    host: str = Field(min_length=1, description="SMTP server")
    port: int = Field(25, ge=1, le=65535, description="25, or 587 with starttls")
    starttls: bool = Field(False, description="upgrade the connection with STARTTLS (required before a login on "
                                              "anything but a loopback server)")
    username: str | None = None
    password: SecretStr | None = Field(None, description="with username; write ${NAME} to take it from the "
                                                         "environment")
    from_: str = Field(alias="from", description="sender address")
    to: list[str] = Field(min_length=1, description="recipient addresses")
    timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("password", mode="before")
    @classmethod
    def _password(cls, v: object) -> object:
        return _from_env(v)

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        return _address(v)

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @model_validator(mode="after")
    def _login(self) -> EmailChannel:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        if self.username is not None and not self.starttls and self.host not in _LOOPBACK:
            raise ValueError("a login needs starttls: true, or the password crosses the network in clear "
                             "(only a server on 127.0.0.1 / ::1 / localhost may do without)")
        return self


def _address(v: str) -> str:
    if not re.match(r"^[^@\s<>,;]+@[^@\s<>,;]+$", v):
        raise ValueError("expected an e-mail address such as alerts@example.com")
    return v


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="kind")]


# --- the file ----------------------------------------------------------------------------------------------------


class AlertRules(ConfigModel):
    """The whole rules file."""

    channels: dict[Annotated[str, Field(pattern=CHANNEL_NAME_PATTERN)], Channel] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    def rule(self, name: str) -> AnyRule | None:
        return next((r for r in self.rules if r.name == name), None)


# --- loading -----------------------------------------------------------------------------------------------------


def _cross_check(rules: AlertRules) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules.rules):
        if rule.name in seen:
            problems.append(f"rules[{i}].name: {rule.name!r} is already the name of rules[{seen[rule.name]}]")
        seen.setdefault(rule.name, i)
        for j, channel in enumerate(rule.channels):
            if channel not in rules.channels:
                known = ", ".join(sorted(rules.channels)) or "none"
                problems.append(f"rules[{i}].channels[{j}]: {channel!r} is not a channel of this file "
                                f"(defined: {known})")
    return problems


def parse_rules(data: object, *, source: str) -> AlertRules:
    """``data`` (the file's document; an empty file has no rules) validated, its rules' names and channels checked."""
    rules = parse_model(AlertRules, {} if data is None else data, source=source,
                        expected="a mapping with channels and rules", tags=RULE_KINDS | CHANNEL_KINDS)
    problems = _cross_check(rules)
    if problems:
        raise ConfigError(source, problems)
    return rules


def load_rules(path: str | Path) -> AlertRules:
    """Read (``sync.runtime.limits.read_yaml``) and validate a rules file."""
    return parse_rules(read_yaml(path), source=str(Path(path)))


@dataclass(frozen=True)
class LoadedRules:
    path: Path
    rules: AlertRules | None  # the last good rules; None if the file never loaded
    loaded_at: float | None  # time.time() of the last good load
    error: str | None  # why the file as it is now cannot be used


class RulesLoader:
    """The rules of one file, loaded again when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._state = LoadedRules(path, None, None, None)

    def get(self) -> LoadedRules:
        with self._lock:
            try:
                st = self.path.stat()
                stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = None
            if stamp is not None and stamp == self._stamp:
                return self._state
            try:
                rules = load_rules(self.path)
            except ConfigError as exc:
                self._stamp = stamp
                self._state = LoadedRules(self.path, self._state.rules, self._state.loaded_at, str(exc))
                return self._state
            self._stamp = stamp
            self._state = LoadedRules(self.path, rules, time.time(), None)
            return self._state


_loaders: dict[Path, RulesLoader] = {}
_loaders_lock = threading.Lock()


def rules_loader(path: str | Path) -> RulesLoader:
    """The process's loader of ``path`` (one per file, shared by the evaluator and the API)."""
    key = Path(path).absolute()
    with _loaders_lock:
        loader = _loaders.get(key)
        if loader is None:
            loader = _loaders[key] = RulesLoader(key)
        return loader
