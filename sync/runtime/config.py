"""Configuration: one base for every section, one way to check a file's content, errors in one shape.

Every YAML file floorgate reads (``node.yaml``, ``central.yaml``, the alert rules, the device profiles) goes the same
way: ``sync.runtime.limits.read_yaml`` reads it within bounds (size, nesting, aliases; safe YAML only), and
``parse_model`` validates the document into a ``ConfigModel`` (unknown keys are errors, the result is frozen).
Whatever is wrong ends in one ``ConfigError`` that names the file, the key path and what was expected
(ARCHITECTURE.md)::

    node.yaml: devices[1].interval_s: Input should be greater than 0 (got -5)

A value given for a secret is never echoed: not for a key that names one (``sync.runtime.redact.shown_value``), and
not for a field of type ``SecretStr`` / ``SecretBytes`` whatever its name (``admin_pin``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr, ValidationError

from sync.runtime.redact import shown_value

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file that cannot be used; ``problems`` holds one line per fault."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


class ConfigModel(BaseModel):
    """The base of every configuration section: a key the model does not know is an error (a misspelt key must not
    be ignored silently), and a loaded configuration cannot be changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_model(model: type[M], data: object, *, source: str, expected: str,
                context: Mapping[str, Any] | None = None, tags: frozenset[str] = frozenset()) -> M:
    """``data`` (a YAML document) validated into ``model``, or ``ConfigError(source, …)`` with one line per fault.

    ``expected`` says what the top level should be when it is not a mapping (``"a mapping with channels and
    rules"``); ``context`` is pydantic's validation context (``base_dir`` for relative paths, …); ``tags`` are the
    tags of discriminated unions, left out of key paths (``devices[0].unit_id``, not ``devices[0].sdm630.unit_id``).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(source, [f"(top level): expected {expected}"])
    try:
        return model.model_validate(data if isinstance(data, dict) else dict(data), context=context)
    except ValidationError as exc:
        problems = problems_from_pydantic(exc.errors(), tags=tags, secrets=secret_fields(model))
        raise ConfigError(source, problems) from None


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


def problems_from_pydantic(errors: Iterable[Mapping[str, Any]], *, tags: frozenset[str] = frozenset(),
                           secrets: frozenset[str] = frozenset()) -> list[str]:
    """One line per error of ``pydantic.ValidationError.errors()``: key path, message, and the value given.

    The value is never shown for a key that names a secret (``sync.runtime.redact.shown_value``: ``auth.jwt_secret``,
    passwords, tokens, header values; a URL that does not parse as one) nor below a key in ``secrets`` (the secret
    fields of the model, ``secret_fields``) — the line names the key and the rule only; a URL in any other value is
    masked (``mask_url``). The messages are our rules' texts and name no value."""
    lines = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        path = key_path(loc, tags=tags)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling; see the example config)"
        given = err.get("input")
        if err.get("type") not in ("missing", "extra_forbidden") and not isinstance(given, dict | list):
            secret = any(isinstance(part, str) and part in secrets for part in loc)
            shown = None if secret else shown_value(loc, given)
            msg += " (the value given is not shown: it may be a secret)" if shown is None else f" (got {shown})"
        lines.append(f"{path}: {msg}")
    return lines


@functools.cache
def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names (and aliases) of every field of ``model`` and of the models in it whose type holds a ``SecretStr``
    or ``SecretBytes`` (``password: SecretStr | None``, ``headers: dict[str, SecretStr]``)."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def walk(m: type[BaseModel]) -> None:
        if m in seen:
            return
        seen.add(m)
        for name, field in m.model_fields.items():
            for tp in _types_in(field.annotation):
                if get_origin(tp) is not None or not isinstance(tp, type):
                    continue
                if issubclass(tp, SecretStr | SecretBytes):
                    names.update(n for n in (name, field.alias) if n)
                elif issubclass(tp, BaseModel):
                    walk(tp)

    walk(model)
    return frozenset(names)


def _types_in(tp: object) -> Iterator[object]:
    """``tp`` and every type argument in it, at any depth (``Annotated`` metadata too; the caller skips it)."""
    yield tp
    for arg in get_args(tp):
        yield from _types_in(arg)


def yaml_problem(exc: BaseException) -> str:
    """A YAML syntax error without the excerpt of the file that PyYAML puts into its text (the line could hold a
    secret): ``while scanning a quoted scalar, found unexpected end of stream (line 3, column 12)``. Duck-typed on
    ``yaml.MarkedYAMLError``."""
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


__all__ = ["ConfigError", "ConfigModel", "key_path", "parse_model", "problems_from_pydantic", "secret_fields",
           "yaml_problem"]
