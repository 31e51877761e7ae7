"""Configuration errors in the one shape every floorgate component reports them.

The contract (ARCHITECTURE.md): an error names the file, the key path and what was expected::

    node.yaml: devices[1].interval_s: Input should be greater than 0 (got -5)

Both edge and central validate their YAML with pydantic; this module turns the list from
``ValidationError.errors()`` into that shape without importing pydantic (sync stays stdlib-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sync.runtime.redact import shown_value


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
    """One line per error of ``pydantic.ValidationError.errors()``: key path, message, and the value given.

    The value is never shown for a key that names a secret (``sync.runtime.redact.shown_value``: ``auth.jwt_secret``,
    passwords, tokens, header values; a URL that does not parse as one) — the line names the key and the rule only;
    a URL in any other value is masked (``mask_url``). The messages are our rules' texts and name no value."""
    lines = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        path = key_path(loc, tags=tags)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling; see the example config)"
        given = err.get("input")
        if err.get("type") not in ("missing", "extra_forbidden") and not isinstance(given, dict | list):
            shown = shown_value(loc, given)
            msg += " (the value given is not shown: it may be a secret)" if shown is None else f" (got {shown})"
        lines.append(f"{path}: {msg}")
    return lines


def yaml_problem(exc: BaseException) -> str:
    """A YAML syntax error without the excerpt of the file that PyYAML puts into its text (the line could hold a
    secret): ``while scanning a quoted scalar, found unexpected end of stream (line 3, column 12)``. Duck-typed on
    ``yaml.MarkedYAMLError`` (``sync`` does not import PyYAML)."""
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem is None and context is None:
        return type(exc).__name__
    text = ", ".join(str(t) for t in (context, problem) if t)
    line, column = getattr(mark, "line", None), getattr(mark, "column", None)
    if isinstance(line, int) and isinstance(column, int):
        text += f" (line {line + 1}, column {column + 1})"
    return text
