"""What every record payload model is, and the field checks they share.

A payload model is a frozen dataclass with

    KIND                      the record kind it describes (a constant of its module, e.g. ``WEIGHING``)
    to_payload() -> dict      the record's ``data`` as the edge builds it
    from_payload(data)        the strict check central applies to a record's ``data``: a model, or a
                              ``DecodeError`` whose ``field`` names the field (``data.gross``) and ``reason`` says why

``from_payload`` checks every field the model knows (type, range, what central's columns can hold) and ignores fields
it does not know, so that a node one version ahead does not lose its records to the quarantine. Legal and fiscal
values (weights, totals) stay the strings the instrument or the register delivered: never floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol, Self

from sync.errors import DecodeError

MAX_WHOLE: Final = 2**63 - 1  # a counter central stores (BIGINT)


class Payload(Protocol):
    """A record kind's payload model (see the module)."""

    KIND: ClassVar[str]

    def to_payload(self) -> dict[str, Any]: ...

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Self: ...


def bad(name: str, reason: str) -> DecodeError:
    """The error for field ``data.<name>``."""
    return DecodeError(reason, field=f"data.{name}")


def text(data: Mapping[str, Any], name: str, *, limit: int | None = None, required: bool = False) -> str | None:
    """``data[name]``: text without NUL of at most ``limit`` characters (no limit: None), or None when absent."""
    value = data.get(name)
    if value is None:
        if required:
            raise bad(name, "missing")
        return None
    if not isinstance(value, str) or "\x00" in value or (limit is not None and len(value) > limit):
        expected = f"text of at most {limit} characters" if limit else "text"
        raise bad(name, f"expected {expected} without NUL, got {value!r:.80}")
    return value


def need_text(data: Mapping[str, Any], name: str, *, limit: int | None = None) -> str:
    """``data[name]``: text without NUL of at most ``limit`` characters; "missing" when absent."""
    value = text(data, name, limit=limit, required=True)
    if value is None:  # pragma: no cover - text(required=True) never returns None
        raise bad(name, "missing")
    return value


def flag(data: Mapping[str, Any], name: str) -> bool | None:
    """``data[name]``: true, false, or None when absent."""
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad(name, f"expected true or false, got {value!r:.40}")
    return value


def whole(data: Mapping[str, Any], name: str, *, required: bool = False) -> int | None:
    """``data[name]``: a whole number from 0 to 2**63-1 (a counter), or None when absent."""
    value = data.get(name)
    if value is None:
        if required:
            raise bad(name, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WHOLE:
        raise bad(name, f"expected a whole number from 0 to 2**63-1, got {value!r:.40}")
    return value


def number(data: Mapping[str, Any], name: str) -> float | int | None:
    """``data[name]``: a number (a measurement, never a legal value), or None when absent."""
    value = data.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise bad(name, f"expected a number, got {value!r:.40}")
    return value


def mapping(data: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """``data[name]``: a JSON object, or None when absent."""
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise bad(name, f"expected an object, got {value!r:.40}")
    return value


def drop_none(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without the fields that are None (a payload leaves out what it does not have)."""
    return {k: v for k, v in obj.items() if v is not None}


__all__ = ["MAX_WHOLE", "Payload", "bad", "drop_none", "flag", "mapping", "need_text", "number", "text",
           "whole"]
