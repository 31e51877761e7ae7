"""InfluxDB line protocol encoding of ``Point`` (what ``/write`` and ``/api/v2/write`` take).

One line per point, timestamps in nanoseconds::

    measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] time_ns
    weighing,node=mill\\ 1,scale=bridge weight_kg=23410.5,stable=true,ticket="T-17 \\"A\\"",count=3i 1700000000000000000

Escaping (InfluxDB 1.x/2.x):

    measurement            ,  and space        ->  \\,  \\␠
    tag key / value,       ,  =  and space     ->  \\,  \\=  \\␠
    field key
    string field value     "  and backslash    ->  \\"  \\\\      (inside double quotes)

Other backslashes in names are literal, which is why ``Point`` refuses a name or tag value ending in a backslash
or with a backslash in front of ``,``, ``=``, space or ``"``. Integers get an ``i`` suffix, booleans are ``true`` /
``false`` and floats use Python's shortest round-tripping ``repr`` (``1e+300`` is fine for InfluxDB). Tags are
sorted by key, as InfluxDB recommends. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from central.metrics.base import FieldValue, Point

__all__ = [
    "encode_point",
    "encode_points",
    "escape_key",
    "escape_measurement",
    "format_field_value",
    "quote_string",
]

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\"})


def escape_measurement(name: str) -> str:
    """Escape commas and spaces in a measurement name."""
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """Escape commas, equals signs and spaces in a tag key, tag value or field key."""
    return text.translate(_KEY_ESCAPES)


def quote_string(text: str) -> str:
    """A string field value: in double quotes, with double quotes and backslashes escaped."""
    return '"' + text.translate(_STRING_ESCAPES) + '"'


def format_field_value(value: FieldValue) -> str:
    """``true`` / ``false``, ``123i``, ``1.5`` or a quoted string."""
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return quote_string(value)


def encode_point(point: Point) -> str:
    """One line (without the newline) for ``point``."""
    parts = [escape_measurement(point.measurement)]
    for key in sorted(point.tags):
        parts.append(f",{escape_key(key)}={escape_key(point.tags[key])}")
    parts.append(" ")
    parts.append(",".join(f"{escape_key(k)}={format_field_value(v)}" for k, v in point.fields.items()))
    parts.append(f" {point.time_ns}")
    return "".join(parts)


def encode_points(points: Iterable[Point]) -> str:
    """Lines for ``points`` joined by newlines (a ``/write`` request body)."""
    return "\n".join(encode_point(point) for point in points)
