"""What an alert rule is: its kinds, the thresholds each compares, the globs that pick its subjects and the
message template it fills (``check_template``). The rules file that holds them is ``central.alerts.config``; what
each kind observes, ``central.alerts.conditions`` and ``central.alerts.tse``.

==================  =====================================================================================
``reading``         a reading beyond ``above`` / ``below`` for ``for_s`` (node / device / point globs)
``device_offline``  a device offline or unheard of for ``after_s``
``node_backlog``    the oldest record a node still holds for a stream older than ``older_than_s``
``node_silent``     no heartbeat from a node for ``after_s``
``ingest_lag``      central's own ingest lag above ``above_s``
``tse``             TSE transactions that fail verification, gaps in their numbers, sales without signature
``integrity``       what the records' trust rests on: a chain central lacks the end of (the node's signed heads),
                    a key the fleet CA did not bind, a TSE not confirmed in the registry
==================  =====================================================================================
"""

from __future__ import annotations

import fnmatch
import string
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from central.metrics.base import check_tag_value
from sync.runtime.config import ConfigModel

__all__ = [
    "INTEGRITY_CHECKS",
    "RULE_KINDS",
    "TSE_CHECKS",
    "AnyRule",
    "DeviceOfflineRule",
    "IngestLagRule",
    "IntegrityRule",
    "NodeBacklogRule",
    "NodeSilentRule",
    "ReadingRule",
    "Rule",
    "TseRule",
    "check_template",
    "is_glob",
    "matches",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RULE_KINDS = frozenset({"reading", "device_offline", "node_backlog", "node_silent", "ingest_lag", "tse",
                        "integrity"})
TEMPLATE_FIELDS = frozenset({"rule", "kind", "subject", "severity", "value", "threshold", "for_s", "node", "device",
                             "point", "stream", "unit", "detail"})
_GLOB_CHARS = frozenset("*?[")

Severity = Literal["info", "warning", "critical"]


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


class _RuleBase(ConfigModel):
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


IntegrityCheck = Literal["alibi_truncated", "tse_truncated", "untrusted_key", "tse_unconfirmed"]
INTEGRITY_CHECKS: tuple[IntegrityCheck, ...] = ("alibi_truncated", "tse_truncated", "untrusted_key", "tse_unconfirmed")


class IntegrityRule(_RuleBase):
    """What the legal and fiscal records' trust rests on (``central.alerts.integrity``): the end of a node's alibi
    chain (``alibi_truncated``) or of a TSE's transactions (``tse_truncated``) that the node's signed heads say
    central acknowledged but central lacks; a node key the fleet CA did not bind, or TSE transactions signed with a
    key that is not the TSE's pinned one (``untrusted_key``); a TSE in the registry not confirmed yet
    (``tse_unconfirmed``). Each holds while its finding does; no threshold."""

    kind: Literal["integrity"]
    node: Pattern = "*"
    tse: Pattern = Field("*", description="the TSE's serial (hex SHA-256 of its public key), or a glob")
    checks: list[IntegrityCheck] = Field(default_factory=lambda: list(INTEGRITY_CHECKS), min_length=1,
                                         description="which findings this rule alerts on")

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
        return 0.0


Rule = Annotated[ReadingRule | DeviceOfflineRule | NodeBacklogRule | NodeSilentRule | IngestLagRule | TseRule
                 | IntegrityRule, Field(discriminator="kind")]
AnyRule = (ReadingRule | DeviceOfflineRule | NodeBacklogRule | NodeSilentRule | IngestLagRule | TseRule
           | IntegrityRule)


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
