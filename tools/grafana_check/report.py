"""What a check found: problems, the queries run, the alert rules evaluated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class QueryRun:
    """One query as run: where it comes from, the text sent (variables and macros expanded), what came back."""

    where: str
    dialect: str
    query: str
    mode: str  # "all" (variables as a user finds them) or "one" (the first value of each)
    rows: int = 0
    error: str | None = None
    columns: list[str] = field(default_factory=list)
    series: list[dict[str, str]] = field(default_factory=list)  # tags / labels of each series returned
    records: list[dict[str, Any]] = field(default_factory=list)  # the first rows (column → value, tags)


@dataclass
class AlertEvaluation:
    uid: str
    title: str
    state: str  # Normal / Alerting (condition met: Grafana goes Pending for `for`, then Firing) / NoData / Error
    values: dict[str, float] = field(default_factory=dict)  # condition value per series
    detail: str = ""


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    runs: list[QueryRun] = field(default_factory=list)
    alerts: list[AlertEvaluation] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)
    not_run: set[str] = field(default_factory=set)  # dialects without a connection

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def alert(self, uid: str) -> AlertEvaluation:
        return next(a for a in self.alerts if a.uid == uid)


class Unusable(Exception):
    """A file the checker cannot read at all (exit status 2)."""
