"""The alert rules file (channels and rules) and ``AlertSettings``, validated on load.

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

import fnmatch
import os
import re
import string
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from central.metrics.base import check_tag_value
from sync.runtime.config import ConfigError, problems_from_pydantic, yaml_problem
from sync.runtime.limits import check_yaml_events, read_config_text
from sync.runtime.redact import mask_url

__all__ = [
    "AlertRules",
    "AlertSettings",
    "Channel",
    "EmailChannel",
    "LoadedRules",
    "RateLimit",
    "Rule",
    "TseRule",
    "WebhookChannel",
    "load_rules",
    "parse_rules",
    "rules_loader",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CHANNEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$"  # stored as "webhook:<name>" in 64 characters
RULE_KINDS = frozenset({"reading", "device_offline", "node_backlog", "node_silent", "ingest_lag", "tse"})
CHANNEL_KINDS = frozenset({"webhook", "email"})
TEMPLATE_FIELDS = frozenset({"rule", "kind", "subject", "severity", "value", "threshold", "for_s", "node", "device",
                             "point", "stream", "unit", "detail"})
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
_GLOB_CHARS = frozenset("*?[")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

Severity = Literal["info", "warning", "critical"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- settings in central.yaml ------------------------------------------------------------------------------------


class AlertSettings(_Model):
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


class RateLimit(_Model):
    max_notifications: int = Field(30, ge=1, description="at most this many notifications sent on the channel …")
    window_s: float = Field(3600.0, gt=0, description="… within this many seconds; more are suppressed (recorded)")


class _ChannelBase(_Model):
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


# --- rules -------------------------------------------------------------------------------------------------------


def _check_pattern(v: str) -> str:
    """A glob on a tag value or name; an exact one must be a value InfluxDB can store (it filters the query)."""
    if not v:
        raise ValueError("expected a name or a glob such as 'temperature_*'")
    if not is_glob(v):
        check_tag_value("pattern", v)
    elif any(ord(c) < 32 for c in v):
        raise ValueError("must not contain control characters")
    return v


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern) if is_glob(pattern) else value == pattern


Pattern = Annotated[str, Field(min_length=1, max_length=200)]


class _RuleBase(_Model):
    name: str = Field(pattern=NAME_PATTERN, description="unique in the file; alerts carry it")
    severity: Severity = "warning"
    message: str | None = Field(
        None, max_length=1000,
        description="template: {subject} {value} {threshold} {for_s} {node} {device} {point} {stream} {unit} "
                    "{rule} {severity} {kind}, with format specs such as {value:.1f}")
    description: str | None = Field(None, max_length=1000)
    channels: list[str] = Field(default_factory=list, description="names of channels of this file")

    @field_validator("message")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            check_template(v)
        return v

    @property
    def threshold(self) -> float:
        raise NotImplementedError


class ReadingRule(_RuleBase):
    """A reading beyond a threshold (``above`` or ``below``) for ``for_s`` seconds, per node/device/point."""

    kind: Literal["reading"]
    measurement: str = Field("readings", description="readings, or device_health for the agent's own counters")
    node: Pattern = "*"
    device: Pattern = "*"
    point: Pattern = "*"
    field: str = Field("value", description="the field compared")
    above: float | None = None
    below: float | None = None
    for_s: float = Field(0.0, ge=0, le=7 * 86400, description="the value stays beyond the threshold this long")
    max_gap_s: float = Field(
        900.0, gt=0, le=7 * 86400,
        description="points further apart than this (or a newest point older) are missing data: the rule waits. "
                    "Above the device's poll interval and report_every_s")

    @field_validator("node", "device", "point")
    @classmethod
    def _patterns(cls, v: str) -> str:
        return _check_pattern(v)

    @field_validator("measurement", "field")
    @classmethod
    def _name(cls, v: str) -> str:
        check_tag_value("name", v)
        if v.startswith("_"):
            raise ValueError("must not start with '_'")
        return v

    @model_validator(mode="after")
    def _one_threshold(self) -> ReadingRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above and below")
        return self

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    def beyond(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < self.below  # type: ignore[operator]


class DeviceOfflineRule(_RuleBase):
    """A device the node reports offline, or not heard of at all, for ``after_s`` seconds."""

    kind: Literal["device_offline"]
    node: Pattern = "*"
    device: Pattern = "*"
    after_s: float = Field(gt=0, le=30 * 86400)

    @field_validator("node", "device")
    @classmethod
    def _patterns(cls, v: str) -> str:
        return _check_pattern(v)

    @property
    def threshold(self) -> float:
        return self.after_s


class NodeBacklogRule(_RuleBase):
    """The oldest record a node still holds for a stream is older than ``older_than_s`` (from its heartbeats)."""

    kind: Literal["node_backlog"]
    node: Pattern = "*"
    stream: Pattern = "*"
    older_than_s: float = Field(gt=0, le=30 * 86400)

    @field_validator("node", "stream")
    @classmethod
    def _patterns(cls, v: str) -> str:
        return _check_pattern(v)

    @property
    def threshold(self) -> float:
        return self.older_than_s


class NodeSilentRule(_RuleBase):
    """No heartbeat from a node for ``after_s`` seconds (a node never heard of counts from its enrolment)."""

    kind: Literal["node_silent"]
    node: Pattern = "*"
    after_s: float = Field(gt=0, le=30 * 86400)

    @field_validator("node")
    @classmethod
    def _patterns(cls, v: str) -> str:
        return _check_pattern(v)

    @property
    def threshold(self) -> float:
        return self.after_s


class IngestLagRule(_RuleBase):
    """Central's own ingest lag (a batch's arrival after the node sent it) above ``above_s`` seconds."""

    kind: Literal["ingest_lag"]
    above_s: float = Field(gt=0, le=86400)
    window_s: float = Field(
        120.0, gt=0, le=86400,
        description="only batches applied within this window count (none: no data, the alert stays as it is)")

    @property
    def threshold(self) -> float:
        return self.above_s


TseCheck = Literal["invalid", "gap", "tse_failed"]
TSE_CHECKS: tuple[TseCheck, ...] = ("invalid", "gap", "tse_failed")


class TseRule(_RuleBase):
    """Fiscal TSE findings of central's verification (``central.fiscal``): a transaction that fails verification
    (``invalid``, one alert per transaction), a gap in a TSE's transaction numbers open longer than ``gap_after_s``
    (``gap``), sales without signature because the TSE failed on the node (``tse_failed``, per TSE while one arrived
    within ``failed_window_s``)."""

    kind: Literal["tse"]
    node: Pattern = "*"
    tse: Pattern = Field("*", description="the TSE's serial (hex SHA-256 of its public key), or a glob")
    checks: list[TseCheck] = Field(default_factory=lambda: list(TSE_CHECKS), min_length=1,
                                   description="which findings this rule alerts on")
    gap_after_s: float = Field(600.0, gt=0, le=30 * 86400,
                               description="a gap may close when a delayed record arrives: alert when it stays open "
                                           "this long")
    failed_window_s: float = Field(3600.0, gt=0, le=30 * 86400,
                                   description="a TSE failure alert holds while a failed sale arrived within this "
                                               "window")

    @field_validator("node", "tse")
    @classmethod
    def _patterns(cls, v: str) -> str:
        return _check_pattern(v)

    @field_validator("checks")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a check is named twice")
        return v

    @property
    def threshold(self) -> float:
        return self.gap_after_s


Rule = Annotated[ReadingRule | DeviceOfflineRule | NodeBacklogRule | NodeSilentRule | IngestLagRule | TseRule,
                 Field(discriminator="kind")]
AnyRule = ReadingRule | DeviceOfflineRule | NodeBacklogRule | NodeSilentRule | IngestLagRule | TseRule


class AlertRules(_Model):
    """The whole rules file."""

    channels: dict[Annotated[str, Field(pattern=CHANNEL_NAME_PATTERN)], Channel] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    def rule(self, name: str) -> AnyRule | None:
        return next((r for r in self.rules if r.name == name), None)


# --- message templates -------------------------------------------------------------------------------------------

_DUMMY = {"rule": "r", "kind": "reading", "subject": "n/d/p", "severity": "warning", "value": 1.5, "threshold": 1.0,
          "for_s": 60.0, "node": "n", "device": "d", "point": "p", "stream": "readings", "unit": "°C",
          "detail": "TSE transaction 7 fails verification"}


def check_template(template: str) -> None:
    """ValueError naming the problem when ``template`` uses an unknown field or a bad format spec."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown field {{{name}}} in the message (plain names only); known: "
                             f"{', '.join(sorted(TEMPLATE_FIELDS))}")
    try:
        template.format_map(_DUMMY)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"the message cannot be formatted: {exc}") from None


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


def _without_secret(err: Any) -> Any:
    """A password or header value given wrongly is not echoed in the error (``{}`` is never shown as "got")."""
    loc = [str(p) for p in err.get("loc", ())]
    if "password" in loc or ("headers" in loc and loc.index("headers") < len(loc) - 1):
        return {**err, "input": {}}
    return err


def parse_rules(data: object, *, source: str) -> AlertRules:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping with channels and rules"])
    try:
        rules = AlertRules.model_validate(data)
    except ValidationError as exc:
        errors = [_without_secret(e) for e in exc.errors()]
        raise ConfigError(source, problems_from_pydantic(errors, tags=RULE_KINDS | CHANNEL_KINDS)) from None
    problems = _cross_check(rules)
    if problems:
        raise ConfigError(source, problems)
    return rules


def load_rules(path: str | Path) -> AlertRules:
    p = Path(path)
    text = read_config_text(p)  # size and encoding bounded (sync.runtime.limits)
    try:
        check_yaml_events(yaml.parse(text, Loader=yaml.SafeLoader), source=str(p))  # depth, alias bombs
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [f"not valid YAML: {yaml_problem(exc)}"]) from None
    except (ValueError, OverflowError) as exc:  # a scalar YAML cannot build, e.g. the date 2024-02-30
        raise ConfigError(str(p), [f"not valid YAML: {exc}"]) from None
    return parse_rules(data, source=str(p))


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
