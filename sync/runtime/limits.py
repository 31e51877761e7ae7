"""Reading a configuration file within bounds: size, nesting and alias expansion are checked before YAML builds
anything.

A YAML file is read by people's tools and by ours; a broken or hostile one must end in ``ConfigError`` naming the
file, never in ``MemoryError``, ``RecursionError`` or minutes of CPU:

* ``read_yaml``: the one way floorgate reads a YAML file (node and central configuration, alert rules, device
  profiles): ``read_config_text``, then ``check_yaml_events``, then the document built by a safe loader; a syntax
  error is ``ConfigError`` too (``not valid YAML: …``, without the file's text: a line could hold a secret).
  ``sync.runtime.config.parse_model`` validates what it returns.
* ``read_config_text``: at most ``MAX_CONFIG_BYTES``, UTF-8 — else ``ConfigError``.
* ``check_yaml_events``: walks the *event stream* of the parser (``yaml.parse``, which does not recurse) and refuses
  nesting deeper than ``MAX_YAML_DEPTH`` (the composer recurses per level), more than ``MAX_YAML_NODES`` nodes once
  every alias is expanded (the "billion laughs": ten aliases of ten aliases of … build a huge tree from a few
  lines) and an alias inside its own anchor (a recursive structure validation would never finish).

``check_yaml_events`` takes the events duck-typed (by class name and ``anchor``); ``read_yaml`` gives it those of
the loader it builds the document with, so a custom loader (the profiles' refuse duplicate keys) is bounded alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

import yaml  # type: ignore[import-untyped]  # PyYAML ships no annotations (types-PyYAML is not a dependency)

from sync.runtime.config import ConfigError, yaml_problem

MAX_CONFIG_BYTES: Final = 1024 * 1024
MAX_YAML_DEPTH: Final = 64
MAX_YAML_NODES: Final = 100_000

_OPEN: Final = frozenset({"MappingStartEvent", "SequenceStartEvent"})
_CLOSE: Final = frozenset({"MappingEndEvent", "SequenceEndEvent"})


def read_yaml(path: str | Path, *, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> object:
    """The YAML document in ``path`` built by ``loader`` (``yaml.SafeLoader`` or a subclass of it), within the bounds
    of this module; ``ConfigError(path, …)`` when the file cannot be read, is too large, is not UTF-8, is nested too
    deep, expands too far or is not valid YAML. An empty file is ``None``."""
    source = str(Path(path))
    text = read_config_text(path)
    try:
        check_yaml_events(yaml.parse(text, Loader=loader), source=source)
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader or a subclass of it
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {yaml_problem(exc)}"]) from None
    except (ValueError, OverflowError) as exc:  # a scalar YAML cannot build, e.g. the date 2024-02-30
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None


def read_config_text(path: str | Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a configuration file; ``ConfigError`` when it cannot be read, is larger than ``max_bytes`` or
    is not UTF-8."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror or exc}"]) from None
    if len(data) > max_bytes:
        raise ConfigError(str(p), [f"(top level): the file is larger than {max_bytes} bytes (a configuration file "
                                   "is a few KiB)"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None


def check_yaml_events(events: Iterable[object], *, source: str, max_depth: int = MAX_YAML_DEPTH,
                      max_nodes: int = MAX_YAML_NODES) -> None:
    """Raise ``ConfigError`` for a document nested deeper than ``max_depth``, larger than ``max_nodes`` nodes with
    its aliases expanded, or with an alias inside its own anchor. Errors of the parser itself (``yaml.YAMLError``)
    pass through for the caller to report."""
    sizes: dict[str, int] = {}  # anchor → nodes of its expanded subtree
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, expanded nodes before it opened)
    nodes = 0
    for event in events:
        kind = type(event).__name__
        anchor = getattr(event, "anchor", None)
        if kind in _OPEN:
            if len(stack) >= max_depth:
                raise ConfigError(source, [f"(top level): nested deeper than {max_depth} levels"])
            stack.append((anchor, nodes))
            nodes += 1
        elif kind in _CLOSE and stack:
            opened_anchor, before = stack.pop()
            if opened_anchor is not None:
                sizes[opened_anchor] = nodes - before
        elif kind == "ScalarEvent":
            nodes += 1
            if anchor is not None:
                sizes[anchor] = 1
        elif kind == "AliasEvent":
            if anchor is not None and any(a == anchor for a, _ in stack):
                raise ConfigError(source, [f"(top level): the alias *{anchor} is inside its own anchor &{anchor} "
                                           "(a recursive structure)"])
            nodes += sizes.get(anchor or "", 1)
        if nodes > max_nodes:
            raise ConfigError(source, [f"(top level): more than {max_nodes} values once aliases are expanded "
                                       "(YAML aliases nested in aliases?)"])


__all__ = ["MAX_CONFIG_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "check_yaml_events", "read_config_text",
           "read_yaml"]
