"""Configuration errors in the one shape every floorgate component reports them.

The contract (ARCHITECTURE.md): an error names the file, the key path and what was expected::

    node.yaml: devices[1].interval_s: Input should be greater than 0 (got -5)

Both edge and central validate their YAML with pydantic; this module turns the list from
``ValidationError.errors()`` into that shape without importing pydantic (sync stays stdlib-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class ConfigError(Exception):
    """A configuration file that cannot be used; ``problems`` holds one line per fault."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


def key_path(loc: Iterable[Any], *, tags: frozenset[str] = frozenset()) -> str:
    """``("devices", 1, "sdm630", "unit_id")`` → ``devices[1].unit_id`` (union tags in ``tags`` dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in tags:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def problems_from_pydantic(errors: Iterable[Mapping[str, Any]], *, tags: frozenset[str] = frozenset()) -> list[str]:
    """One line per error of ``pydantic.ValidationError.errors()``: key path, message, and the value given."""
    lines = []
    for err in errors:
        path = key_path(err.get("loc", ()), tags=tags)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling; see the example config)"
        given = err.get("input")
        if err.get("type") not in ("missing", "extra_forbidden") and not isinstance(given, dict | list):
            msg += f" (got {given!r})"
        lines.append(f"{path}: {msg}")
    return lines
