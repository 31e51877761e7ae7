"""Verification reports: a list of named checks, each valid, invalid or not checked, with the reason.

    ok    signature   verifies with the public key in the QR code (P-256)
    FAIL  times       start 2021-08-23T14:36:33Z is after end 2021-08-23T14:36:27Z
    -     signature   not checked: the public key cannot be used

A report is valid when no check failed and every ``required`` check passed (a required check that could not be run
— the signature when the key is broken — makes the whole report invalid, never silently valid).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """One check: ``ok`` True (valid), False (invalid) or None (not checked / for information)."""

    name: str
    ok: bool | None
    detail: str

    @property
    def mark(self) -> str:
        return {True: "ok", False: "FAIL", None: "-"}[self.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def all_valid(checks: Iterable[Check], *, required: Iterable[str] = ()) -> bool:
    """No check failed and every check named in ``required`` is there and passed."""
    listed = list(checks)
    passed = {c.name for c in listed if c.ok is True}
    return all(c.ok is not False for c in listed) and all(name in passed for name in required)


def format_checks(checks: Iterable[Check], *, indent: str = "  ") -> list[str]:
    """One aligned line per check."""
    listed = list(checks)
    width = max((len(c.name) for c in listed), default=0)
    return [f"{indent}{c.mark:<4}  {c.name:<{width}}  {c.detail}" for c in listed]


__all__ = ["Check", "all_valid", "format_checks"]
