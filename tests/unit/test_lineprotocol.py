"""Line protocol encoding (``central/metrics/lineprotocol.py``) and the ``Point`` rules it relies on.

The round trip through a real InfluxDB 1.6.7 is in ``tests/integration/test_metrics_stores.py``; here the
escaping is checked table by table and against a model of InfluxDB 1.x's scanner.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.metrics import MAX_TIME_NS, MIN_TIME_NS, Point, encode_point, encode_points
from central.metrics.base import check_tag_value
from central.metrics.lineprotocol import escape_key, escape_measurement, format_field_value, quote_string


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("weighing", "weighing"),
        ("silo level", "silo\\ level"),
        ("a,b", "a\\,b"),
        ("a=b", "a=b"),  # '=' needs no escape in a measurement
        ('q"uote', 'q"uote'),
        ("back\\slash", "back\\slash"),
        ("Füllstand", "Füllstand"),
    ],
)
def test_escape_measurement(name: str, escaped: str) -> None:
    assert escape_measurement(name) == escaped


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("node", "node"),
        ("mill 1", "mill\\ 1"),
        ("a,b", "a\\,b"),
        ("a=b", "a\\=b"),
        (" ,= ", "\\ \\,\\=\\ "),
        ('say "hi"', 'say\\ "hi"'),
        ("C:\\dir", "C:\\dir"),
        ("Waage Süd", "Waage\\ Süd"),
    ],
)
def test_escape_key(text: str, escaped: str) -> None:
    assert escape_key(text) == escaped


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", '""'),
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("trailing\\", '"trailing\\\\"'),
        ("\\\"", '"\\\\\\""'),
        ("line\nbreak, comma=equals", '"line\nbreak, comma=equals"'),
    ],
)
def test_quote_string(text: str, quoted: str) -> None:
    assert quote_string(text) == quoted


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0i"),
        (-(2**63), "-9223372036854775808i"),
        (2**63 - 1, "9223372036854775807i"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (-2.5e-300, "-2.5e-300"),
        (1e300, "1e+300"),
        ("x", '"x"'),
    ],
)
def test_format_field_value(value: float | int | bool | str, encoded: str) -> None:
    assert format_field_value(value) == encoded


def test_encode_point_sorts_tags_and_keeps_field_order() -> None:
    point = Point(
        "weighing",
        {"scale": "bridge 1", "node": "mill,2"},
        {"weight_kg": 23410.5, "stable": True, "count": 3, "ticket": 'T-17 "A"'},
        1_700_000_000_000_000_000,
    )
    assert encode_point(point) == (
        'weighing,node=mill\\,2,scale=bridge\\ 1 weight_kg=23410.5,stable=true,count=3i,ticket="T-17 \\"A\\"" '
        "1700000000000000000"
    )


def test_encode_points_one_line_each() -> None:
    points = [Point("m", {}, {"v": 1.0}, 1), Point("m", {}, {"v": 2.0}, 2)]
    assert encode_points(points) == "m v=1.0 1\nm v=2.0 2"
    assert encode_points([]) == ""


# --- model of InfluxDB 1.x's scanner: the escaped text must parse back to the original ---------------------


def _scan_and_unescape(escaped: str, specials: str) -> str:
    """Split like InfluxDB 1.x (a backslash protects the next character), then unescape ``\\<special>``."""
    index = 0
    while index < len(escaped):
        char = escaped[index]
        if char == "\\":
            index += 2
            continue
        assert char not in specials, f"unescaped {char!r} in {escaped!r} would end the element"
        index += 1
    assert index == len(escaped), f"{escaped!r} ends inside an escape"
    out, index = [], 0
    while index < len(escaped):
        if escaped[index] == "\\" and index + 1 < len(escaped) and escaped[index + 1] in specials:
            out.append(escaped[index + 1])
            index += 2
        else:
            out.append(escaped[index])
            index += 1
    return "".join(out)


_VALID_TEXT = st.text(alphabet=st.sampled_from(list(' ,="\'\\abäö😀')), min_size=1).filter(
    lambda text: _accepts(text)
)


def _accepts(text: str) -> bool:
    try:
        check_tag_value("text", text)
    except ValueError:
        return False
    return True


@given(_VALID_TEXT)
def test_escaped_keys_scan_back_to_the_original(text: str) -> None:
    assert _scan_and_unescape(escape_key(text), ", =") == text


@given(_VALID_TEXT)
def test_escaped_measurements_scan_back_to_the_original(text: str) -> None:
    assert _scan_and_unescape(escape_measurement(text), ", ") == text


# --- what a Point may contain ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"measurement": ""}, "must not be empty"),
        ({"measurement": "#comment"}, "must not start with '#'"),
        ({"measurement": "_internal"}, "must not start with '_'"),
        ({"measurement": "a\nb"}, "control characters"),
        ({"tags": {"node": ""}}, "must not be empty"),
        ({"tags": {"node": "a\\"}}, "backslash"),
        ({"tags": {"node": "a\\ b"}}, "backslash"),
        ({"tags": {"node": "a\\,b"}}, "backslash"),
        ({"tags": {"node": "a\\=b"}}, "backslash"),
        ({"tags": {"node": 'a\\"b'}}, "backslash"),
        ({"tags": {"node": "tab\there"}}, "control characters"),
        ({"tags": {"time": "x"}}, "reserved"),
        ({"tags": {"_node": "x"}}, "must not start with '_'"),
        ({"tags": {"node": 1}}, "must be a str"),
        ({"tags": {"v": "x"}}, "used as tag and as field"),
        ({"fields": {}}, "no fields"),
        ({"fields": {"time": 1.0}}, "reserved"),
        ({"fields": {"v": float("nan")}}, "not a finite float"),
        ({"fields": {"v": float("inf")}}, "not a finite float"),
        ({"fields": {"v": 2**63}}, "64 bits"),
        ({"fields": {"v": None}}, "is not float, int, bool or str"),
        ({"fields": {"v": b"bytes"}}, "is not float, int, bool or str"),
        ({"fields": {"v": "\ud800"}}, "not valid UTF-8"),
        ({"time_ns": MAX_TIME_NS + 1}, "outside InfluxDB's range"),
        ({"time_ns": MIN_TIME_NS - 1}, "outside InfluxDB's range"),
        ({"time_ns": 1.5}, "must be an int"),
        ({"time_ns": True}, "must be an int"),
    ],
)
def test_point_rejects(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"measurement": "m", "tags": {"node": "n"}, "fields": {"v": 1.0}, "time_ns": 0}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Point(**arguments)  # type: ignore[arg-type]


def test_point_accepts_awkward_but_representable_values() -> None:
    point = Point(
        "m a,b=c\\d",
        {"C:\\dir\\file": "_leading underscore is fine in a value", "k": "\\\\x"},
        {"s": "tab\tnewline\nnul\x00 \\ \"", "b": False, "i": -1, "f": 0.5},
        MIN_TIME_NS,
    )
    assert point.fields["b"] is False


def test_point_copies_its_mappings_and_hashes_by_identity() -> None:
    tags = {"node": "a"}
    fields: dict[str, float | int | bool | str] = {"v": 1.0}
    point = Point("m", tags, fields, 5)
    tags["node"] = "changed"
    fields["v"] = 2.0
    assert point.tags == {"node": "a"}
    assert point.fields == {"v": 1.0}
    same_series_and_time = Point("m", {"node": "a"}, {"other": "x"}, 5)
    assert hash(point) == hash(same_series_and_time)
    assert point != same_series_and_time
