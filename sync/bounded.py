"""Bounded JSON decoding for bytes that come from the network: limits checked *before* the expensive work.

``json.loads`` recurses once per nesting level (a 52-byte zlib bomb of 5,000 nested brackets ends a process with
``RecursionError``), turns any digit string into an int (quadratic, and ``ValueError`` beyond Python's 4,300-digit
limit), accepts ``NaN`` / ``Infinity`` and keeps the last of duplicate keys. ``loads`` here:

1. refuses more than ``max_bytes`` and anything that is not UTF-8;
2. measures the nesting depth, the number of values and that every string is closed with a non-recursive scan of
   the text (regular expressions at C speed: escapes out, strings out, brackets paired off one level per pass) —
   a document deeper than ``max_depth`` never reaches the recursive parser;
3. parses with hooks that refuse integers of more than ``max_int_digits`` digits before converting them, floats
   that are not finite, ``NaN`` / ``Infinity`` and duplicate keys;
4. walks the result without recursion: every string (keys included) within its length, every container within
   ``max_items``, every integer within ``int_min`` .. ``int_max`` (int64 by default).

Every violation is a ``DecodeError`` naming the limit and, where it is known, the field (``records[3].data.raw``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from sync.errors import DecodeError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_ESCAPE: Final = re.compile(r"\\.", re.DOTALL)
_STRING: Final = re.compile(r'"[^"]*"')
_NOT_STRUCTURE: Final = re.compile(r"[^\[\]{},]+")
_PAIR: Final = re.compile(r"\[\]|\{\}")
_UNPAIRED: Final = re.compile(r"\[\}|\{\]")


@dataclass(frozen=True)
class JsonLimits:
    """What one JSON document may hold. The defaults fit the sync envelope (a batch of 10,000 records)."""

    max_bytes: int = 8 * 1024 * 1024
    max_depth: int = 32
    max_values: int = 500_000  # every value and container of the document, counted before parsing
    max_items: int = 100_000  # elements of one array / members of one object
    max_string_chars: int = 65_536
    max_key_chars: int = 256
    max_int_digits: int = 40  # checked on the digit string before int() converts it (range: by field, after)
    int_min: int = INT64_MIN
    int_max: int = INT64_MAX


DEFAULT_LIMITS: Final = JsonLimits()


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"{name} is not a number JSON allows", field="payload")


def _check_depth(text: str, limits: JsonLimits) -> None:
    """Nesting depth and value count without recursion: what is left of the text once escapes and strings are taken
    out is brackets and commas; each pass removes the innermost bracket pairs, so ``max_depth`` passes empty any
    document of that depth. Linear per pass (no backtracking: escapes go first, so strings hold no quote)."""
    bare = _ESCAPE.sub("", text)
    bare = _STRING.sub("0", bare)
    if '"' in bare:
        raise DecodeError("a string is not closed", field="payload")
    structure = _NOT_STRUCTURE.sub("", bare)
    values = structure.count(",") + structure.count("[") + structure.count("{") + 1
    if values > limits.max_values:
        raise DecodeError(f"more than {limits.max_values} values (limit max_values)", field="payload")
    brackets = structure.replace(",", "")
    for _ in range(limits.max_depth):
        if not brackets:
            return
        brackets = _PAIR.sub("", brackets)
    if not brackets:
        return
    opens = brackets.count("[") + brackets.count("{")
    if opens * 2 != len(brackets) or _UNPAIRED.search(brackets):
        raise DecodeError("not valid JSON: brackets are not paired", field="payload")
    raise DecodeError(f"nested deeper than {limits.max_depth} levels (limit max_depth)", field="payload")


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _check_values(obj: Any, limits: JsonLimits) -> None:
    """Strings, container sizes and integer range, walked with an explicit stack. This runs for every value of
    every message: a field's path is only spelt out for a container or when a check fails, and the parser gives
    exact types (``type(x) is int`` leaves booleans out)."""
    if type(obj) is not dict and type(obj) is not list:
        _check_scalar(obj, "payload", limits)
        return
    max_items, max_key, max_chars = limits.max_items, limits.max_key_chars, limits.max_string_chars
    int_min, int_max = limits.int_min, limits.int_max
    stack: list[tuple[Any, str]] = [(obj, "")]
    key: Any
    while stack:
        value, path = stack.pop()
        is_dict = type(value) is dict
        if len(value) > max_items:
            raise DecodeError(f"{len(value)} {'members' if is_dict else 'elements'} exceed {max_items} "
                              "(limit max_items)", field=path or "payload")
        for key, item in (value.items() if is_dict else enumerate(value)):
            if is_dict and len(key) > max_key:
                raise DecodeError(f"a key of {len(key)} characters exceeds {max_key} (limit max_key_chars)",
                                  field=path or "payload")
            kind = type(item)
            if kind is str:
                if len(item) > max_chars:
                    _check_scalar(item, _path(path, key), limits)
            elif kind is int:
                if not int_min <= item <= int_max:
                    _check_scalar(item, _path(path, key), limits)
            elif kind is dict or kind is list:
                stack.append((item, _path(path, key)))


def _check_scalar(value: Any, path: str, limits: JsonLimits) -> None:
    """Raise the DecodeError for a string or integer beyond its limit (``path`` names it)."""
    if isinstance(value, str):
        if len(value) > limits.max_string_chars:
            raise DecodeError(f"a string of {len(value)} characters exceeds {limits.max_string_chars} "
                              "(limit max_string_chars)", field=path)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and not limits.int_min <= value <= limits.int_max:
        raise DecodeError(f"integer out of range {limits.int_min} .. {limits.int_max}", field=path)


def loads(data: bytes | str, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Parse one JSON document within ``limits``; DecodeError for anything else (never another exception)."""
    if len(data) > limits.max_bytes:
        raise DecodeError(f"{len(data)} bytes exceed {limits.max_bytes} (limit max_bytes)", field="payload")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {exc.reason} at byte {exc.start}", field="payload") from None
    else:
        text = data
    _check_depth(text, limits)

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > limits.max_int_digits:
            raise DecodeError(f"an integer of {len(digits)} digits (limit max_int_digits {limits.max_int_digits})",
                              field="payload")
        return int(digits)

    def parse_float(digits: str) -> float:
        if len(digits) > limits.max_string_chars:
            raise DecodeError(f"a number of {len(digits)} characters", field="payload")
        number = float(digits)
        if not math.isfinite(number):
            raise DecodeError(f"{digits[:40]} is out of the range of a float", field="payload")
        return number

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    raise DecodeError(f"duplicate key {key[:40]!r}", field="payload")
                seen.add(key)
        return obj

    try:
        obj = json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=_reject_constant,
                         object_pairs_hook=pairs)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; RecursionError cannot happen
        raise DecodeError(f"not valid JSON: {str(exc)[:200]}", field="payload") from None
    _check_values(obj, limits)
    return obj


__all__ = ["DEFAULT_LIMITS", "INT64_MAX", "INT64_MIN", "JsonLimits", "loads"]
