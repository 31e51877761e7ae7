"""One conformance suite for every ``MetricsStore`` backend (as litestream runs one suite against every replica).

    influxdb-v1  ->  InfluxV1Store  ->  real influxd 1.6.7
    influxdb-v2  ->  InfluxV2Store  ->  influxdb-client  ->  tests/influx_v2_adapter.py  ->  real influxd 1.6.7
    sqlite       ->  SQLiteMetricsStore  ->  a file in tmp_path

Each test gets a fresh database / bucket / file. Values are compared together with their types, because
``1 == 1.0 == True`` in Python but not in InfluxDB.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.metrics import (
    InfluxV1Store,
    InfluxV2Store,
    MetricsStore,
    MetricsStoreError,
    Point,
    SQLiteMetricsStore,
)
from central.metrics.base import (
    AGGREGATE_FUNCTIONS,
    MAX_BUCKETS,
    MIN_TIME_NS,
    AggregatedSeries,
    check_key,
    check_name,
    check_tag_value,
)
from tests.influx_v2_adapter import InfluxV2Adapter
from tests.services import InfluxServer

pytestmark = pytest.mark.integration

BACKENDS = ["influxdb-v1", "influxdb-v2", "sqlite"]
T0 = 1_700_000_000_000_000_000  # 2023-11-14, nanoseconds
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def v2_adapter(influx_server: InfluxServer) -> Iterator[InfluxV2Adapter]:
    with InfluxV2Adapter(influx_server.url) as adapter:
        yield adapter


def _open(kind: str, request: pytest.FixtureRequest, name: str, tmp_path: Path) -> MetricsStore:
    """A store of ``kind`` for database / bucket / file ``name``; servers are started only when needed."""
    if kind == "influxdb-v1":
        server: InfluxServer = request.getfixturevalue("influx_server")
        return InfluxV1Store(server.url, name)
    if kind == "influxdb-v2":
        adapter: InfluxV2Adapter = request.getfixturevalue("v2_adapter")
        return InfluxV2Store(adapter.url, token=adapter.token, org=adapter.org, bucket=name)
    return SQLiteMetricsStore(tmp_path / f"{name}.sqlite")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, unique_id: str, tmp_path: Path) -> Iterator[MetricsStore]:
    with _open(request.param, request, unique_id, tmp_path) as opened:
        opened.ensure_ready()
        yield opened


def typed(points: Sequence[Point]) -> list[tuple[object, ...]]:
    """Points as comparable tuples that also carry every field's type."""
    return [
        (
            p.measurement,
            sorted(p.tags.items()),
            sorted((k, type(v).__name__, v) for k, v in p.fields.items()),
            p.time_ns,
        )
        for p in points
    ]


def by_time(points: Sequence[Point]) -> list[tuple[object, ...]]:
    return typed(sorted(points, key=lambda p: (p.time_ns, sorted(p.tags.items()))))


# --- round trip ---------------------------------------------------------------------------------------------


def test_round_trip_keeps_tags_field_types_and_ns_times(store: MetricsStore) -> None:
    points = [
        Point("weighing", {"node": "mill-1", "scale": "bridge"},
              {"weight_kg": 23410.5, "tare_kg": 1.0, "count": 3, "stable": True, "ticket": "T-17"}, T0 + 1),
        Point("weighing", {"node": "mill-1", "scale": "bridge"},
              {"weight_kg": -0.25, "tare_kg": 1e300, "count": -(2**63), "stable": False, "ticket": ""}, T0 + 2),
        Point("weighing", {"node": "mill-2"}, {"weight_kg": 0.1, "count": 2**63 - 1}, T0 + 3),
        Point("weighing", {"node": "mill-1", "scale": "platform"}, {"weight_kg": 12.0}, T0 - 1),
        Point("silo_level", {"node": "mill-1"}, {"level_pct": 71.5}, T0),  # another measurement
    ]
    shuffled = random.Random(7).sample(points, len(points))
    store.write(shuffled)

    assert typed(store.query("weighing")) == by_time(points[:4])
    assert typed(store.query("silo_level")) == typed(points[4:])
    assert store.query("no_such_measurement") == []


def test_rewrite_is_idempotent_and_merges_fields(store: MetricsStore) -> None:
    point = Point("energy", {"meter": "m1"}, {"kwh": 10.0, "status": "ok"}, T0)
    store.write([point])
    store.write([point])
    assert typed(store.query("energy")) == typed([point])

    store.write([Point("energy", {"meter": "m1"}, {"kwh": 11.0, "phase": 3}, T0)])
    merged = Point("energy", {"meter": "m1"}, {"kwh": 11.0, "status": "ok", "phase": 3}, T0)
    assert typed(store.query("energy")) == typed([merged])

    store.write([])  # nothing to do, no error


def test_tag_filter(store: MetricsStore) -> None:
    points = [
        Point("temp", {"node": "a", "sensor": "s1"}, {"c": 1.0}, T0),
        Point("temp", {"node": "a", "sensor": "s2"}, {"c": 2.0}, T0 + 1),
        Point("temp", {"node": "b", "sensor": "s1"}, {"c": 3.0}, T0 + 2),
        Point("temp", {"node": "b"}, {"c": 4.0}, T0 + 3),
    ]
    store.write(points)
    assert typed(store.query("temp", tags={"node": "a"})) == typed(points[:2])
    assert typed(store.query("temp", tags={"sensor": "s1"})) == typed([points[0], points[2]])
    assert typed(store.query("temp", tags={"node": "b", "sensor": "s1"})) == typed([points[2]])
    assert store.query("temp", tags={"node": "c"}) == []
    assert store.query("temp", tags={"no_such_tag": "a"}) == []


def test_time_range_is_half_open(store: MetricsStore) -> None:
    points = [Point("flow", {"pipe": "p1"}, {"l_min": float(i)}, T0 + i) for i in range(10)]
    store.write(points)
    assert typed(store.query("flow", start_ns=T0 + 2, end_ns=T0 + 5)) == typed(points[2:5])
    assert typed(store.query("flow", start_ns=T0 + 8)) == typed(points[8:])
    assert typed(store.query("flow", end_ns=T0 + 1)) == typed(points[:1])
    assert store.query("flow", start_ns=T0 + 5, end_ns=T0 + 5) == []


def test_limit(store: MetricsStore) -> None:
    points = [Point("flow", {"pipe": f"p{i % 2}"}, {"l_min": float(i)}, T0 + i) for i in range(10)]
    store.write(list(reversed(points)))
    assert typed(store.query("flow", limit=3)) == typed(points[:3])
    assert typed(store.query("flow", limit=2, start_ns=T0 + 4)) == typed(points[4:6])
    assert typed(store.query("flow", limit=2, tags={"pipe": "p1"})) == typed([points[1], points[3]])
    assert typed(store.query("flow", limit=100)) == typed(points)
    with pytest.raises(ValueError, match="limit"):
        store.query("flow", limit=0)


def test_latest_per_group(store: MetricsStore) -> None:
    def p(node: str, scale: str | None, t: int, kg: float) -> Point:
        tags = {"node": node} if scale is None else {"node": node, "scale": scale}
        return Point("weight", tags, {"kg": kg, "seq": t}, T0 + t)

    points = [
        p("n1", "bridge", 1, 1.0), p("n1", "bridge", 5, 5.0), p("n1", "platform", 7, 7.0),
        p("n2", "bridge", 2, 2.0), p("n2", "bridge", 3, 3.0),
        p("n3", None, 4, 4.0),
    ]
    store.write(points)

    assert typed(store.latest("weight", group_by=["node"])) == typed([points[2], points[4], points[5]])
    assert typed(store.latest("weight", group_by=["node", "scale"])) == typed(
        [points[1], points[2], points[4], points[5]]
    )
    # Points without the group's tag form their own group ("" sorts first).
    assert typed(store.latest("weight", group_by=["scale"])) == typed([points[5], points[1], points[2]])
    assert typed(store.latest("weight", group_by=[])) == typed([points[2]])
    assert typed(store.latest("weight", group_by=["scale"], tags={"node": "n2"})) == typed([points[4]])
    assert store.latest("weight", group_by=["node"], tags={"node": "n9"}) == []
    assert store.latest("no_such_measurement", group_by=["node"]) == []


AWKWARD = [
    "with space", "comma,here", "equals=sign", 'double"quote', "single'quote", "back\\slash", "C:\\dir\\x",
    "ÄÖÜäöüß", "emoji 😀", " leading space", "trailing space ", "multi  =,  mixed\\x", "#hash", "_under",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_characters(store: MetricsStore, text: str) -> None:
    measurement = "m " + text
    key = "k " + text
    point = Point(
        measurement,
        {key: text, "plain": "x"},
        {"f " + text: text + '\\ \\\\ \\" "\n\ttab\x00nul', "n": 1.5},
        T0,
    )
    other = Point(measurement, {key: text + "2", "plain": "x"}, {"n": 2.5}, T0 + 1)
    store.write([point, other])
    assert typed(store.query(measurement)) == typed([point, other])
    assert typed(store.query(measurement, tags={key: text})) == typed([point])
    assert typed(store.latest(measurement, group_by=[key])) == typed([point, other])


# --- errors ---------------------------------------------------------------------------------------------------


def test_field_type_conflict_is_not_retryable(store: MetricsStore) -> None:
    store.write([Point("pressure", {"node": "a"}, {"bar": 1.5}, T0)])
    with pytest.raises(MetricsStoreError, match="conflict") as caught:
        store.write([Point("pressure", {"node": "a"}, {"bar": 2}, T0 + 1)])
    assert caught.value.retryable is False
    assert str(caught.value).startswith(f"{store.kind}: ")
    assert typed(store.query("pressure")) == typed([Point("pressure", {"node": "a"}, {"bar": 1.5}, T0)])


def test_ping_reports_latency(store: MetricsStore) -> None:
    latency = store.ping()
    assert 0 < latency < 5


def test_concurrent_writes_from_threads(store: MetricsStore) -> None:
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            for i in range(20):
                store.write([Point("load", {"thread": str(thread)}, {"i": i}, T0 + i)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.query("load")) == 80
    assert [p.fields["i"] for p in store.latest("load", group_by=["thread"])] == [19, 19, 19, 19]


@pytest.fixture
def unavailable(
    request: pytest.FixtureRequest, unique_id: str, tmp_path: Path
) -> Iterator[tuple[MetricsStore, bool]]:
    """A ready store whose server then went away; the flag says whether reads fail too.

    v1: its influxd is stopped. v2: the server (adapter) stops listening, a closed port. SQLite has no server: the
    database stays locked by another connection, so writes and the write-lock check of ``ping`` fail.
    """
    kind: str = request.param
    if kind == "influxdb-v1":
        with InfluxServer() as server, InfluxV1Store(server.url, unique_id, timeout_s=2.0) as v1:
            v1.ensure_ready()
            server.stop()
            yield v1, True
    elif kind == "influxdb-v2":
        influx: InfluxServer = request.getfixturevalue("influx_server")
        with InfluxV2Adapter(influx.url) as adapter, InfluxV2Store(
            adapter.url, token=adapter.token, org=adapter.org, bucket=unique_id, timeout_s=2.0
        ) as v2:
            v2.ensure_ready()
            adapter.stop()
            yield v2, True
    else:
        path = tmp_path / "locked.sqlite"
        with SQLiteMetricsStore(path, busy_timeout_s=0.05) as lite:
            lite.ensure_ready()
            locker = sqlite3.connect(path, isolation_level=None)
            try:
                locker.execute("BEGIN EXCLUSIVE")
                yield lite, False
            finally:
                locker.close()


@pytest.mark.parametrize("unavailable", BACKENDS, indirect=True)
def test_unavailable_store_raises_retryable(unavailable: tuple[MetricsStore, bool]) -> None:
    store, reads_fail = unavailable
    calls: list[Callable[[], object]] = [
        lambda: store.write([Point("m", {"a": "b"}, {"v": 1.0}, T0)]),
        store.ping,
    ]
    if reads_fail:
        calls += [
            lambda: store.query("m"),
            lambda: store.latest("m", group_by=["a"]),
            lambda: store.aggregate("m", start_ns=T0, end_ns=T0 + 60 * SECOND, every_s=60, fn="mean"),
        ]
    for call in calls:
        with pytest.raises(MetricsStoreError) as caught:
            call()
        assert caught.value.retryable is True, str(caught.value)
        assert str(caught.value).startswith(f"{store.kind}: ")


def test_v2_server_error_is_retryable(unique_id: str) -> None:
    """InfluxDB (behind the v2 API) answers 503 while its storage is down."""
    with (
        InfluxServer() as influx,
        InfluxV2Adapter(influx.url) as adapter,
        InfluxV2Store(adapter.url, token=adapter.token, org=adapter.org, bucket=unique_id) as v2,
    ):
        v2.ensure_ready()
        influx.stop()
        with pytest.raises(MetricsStoreError, match="HTTP 503") as caught:
            v2.write([Point("m", {}, {"v": 1.0}, T0)])
        assert caught.value.retryable is True
        assert caught.value.status_code == 503


@pytest.mark.parametrize(
    ("kind", "message"), [("influxdb-v1", "database not found"), ("influxdb-v2", "bucket .* not found")]
)
def test_influx_client_errors_carry_the_server_text(
    request: pytest.FixtureRequest, tmp_path: Path, unique_id: str, kind: str, message: str
) -> None:
    with _open(kind, request, unique_id, tmp_path) as influx:  # ensure_ready not called: no database
        with pytest.raises(MetricsStoreError, match=message) as caught:
            influx.write([Point("m", {}, {"v": 1.0}, T0)])
        assert caught.value.retryable is False
        assert caught.value.status_code == 404


def test_v2_writes_go_through_the_v2_api_gzipped(
    request: pytest.FixtureRequest, v2_adapter: InfluxV2Adapter, tmp_path: Path, unique_id: str
) -> None:
    before, gzipped_before = v2_adapter.writes, v2_adapter.gzip_writes
    with _open("influxdb-v2", request, unique_id, tmp_path) as v2:
        v2.ensure_ready()
        v2.ensure_ready()  # the bucket exists now: found, not created again
        v2.write([Point("m", {}, {"v": 1.0}, T0)])
    assert (v2_adapter.writes - before, v2_adapter.gzip_writes - gzipped_before) == (1, 1)


# --- property: whatever Point accepts comes back unchanged from every backend ---------------------------------

_AWKWARD_CHARS = st.sampled_from(list(' ,="\'\\#_äöüß€😀\t\n'))
_TEXT = st.text(alphabet=st.one_of(_AWKWARD_CHARS, st.characters(codec="utf-8")), min_size=1, max_size=10)


def _valid(check: Callable[[str, object], str]) -> Callable[[str], bool]:
    def accept(text: str) -> bool:
        try:
            check("x", text)
        except ValueError:
            return False
        return True

    return accept


_NAMES = _TEXT.filter(_valid(check_name))
_KEYS = _TEXT.filter(_valid(check_key))
_TAG_VALUES = _TEXT.filter(_valid(check_tag_value))
_FIELD_VALUES: dict[str, st.SearchStrategy[float | int | bool | str]] = {
    "float": st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f + 0.0),  # -0.0 reads back as 0.0
    "integer": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "boolean": st.booleans(),
    "string": st.text(max_size=20),
}
_counter = itertools.count()


@st.composite
def _batches(draw: st.DrawFn) -> list[Point]:
    """1-5 points of one measurement; each field key keeps one type, as InfluxDB demands."""
    measurement = f"h{next(_counter)}|{draw(_NAMES)}"
    tag_keys = draw(st.lists(_KEYS, max_size=3, unique=True))
    field_types = draw(
        st.dictionaries(_KEYS.filter(lambda k: k not in tag_keys), st.sampled_from(list(_FIELD_VALUES)),
                        min_size=1, max_size=4)
    )
    times = draw(st.lists(st.integers(0, 10**12), min_size=1, max_size=5, unique=True))
    points = []
    for offset in times:
        tags = {k: draw(_TAG_VALUES) for k in tag_keys if draw(st.booleans())}
        keys = draw(st.lists(st.sampled_from(sorted(field_types)), min_size=1, unique=True))
        fields = {k: draw(_FIELD_VALUES[field_types[k]]) for k in keys}
        points.append(Point(measurement, tags, fields, T0 + offset))
    return points


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=_batches())
def test_property_any_valid_point_round_trips(store: MetricsStore, points: list[Point]) -> None:
    # Each example has its own measurement, so the store fixture may be shared between examples.
    store.write(points)
    measurement = points[0].measurement
    assert typed(store.query(measurement)) == by_time(points)
    if points[0].tags:
        assert typed(store.query(measurement, tags=points[0].tags)) == by_time(
            [p for p in points if p.tags.items() >= points[0].tags.items()]
        )


# --- aggregate: buckets of every backend match what the points say ----------------------------------------------

GROUP = ("node", "device", "point")


def model_aggregate(
    points: Sequence[Point], *, start_ns: int, end_ns: int, every_ns: int, fn: str, field: str = "value",
    group_by: Sequence[str] = GROUP, tags: dict[str, str] | None = None,
) -> list[AggregatedSeries]:
    """What ``aggregate`` must return, computed here from the written points (times unique per group)."""
    groups: dict[tuple[str, ...], dict[int, list[tuple[int, float | int]]]] = {}
    for p in points:
        if not start_ns <= p.time_ns < end_ns or field not in p.fields:
            continue
        if tags and not p.tags.items() >= tags.items():
            continue
        key = tuple(p.tags.get(k, "") for k in group_by)
        bucket = p.time_ns - p.time_ns % every_ns  # Python's % floors: epoch-aligned before 1970 too
        value = p.fields[field]
        assert isinstance(value, int | float)
        groups.setdefault(key, {}).setdefault(bucket, []).append((p.time_ns, value))
    out = []
    for key in sorted(groups):
        buckets: list[tuple[int, float | int]] = []
        for bucket, timed in sorted(groups[key].items()):
            values = [v for _, v in sorted(timed)]
            result = {
                "mean": sum(values) / len(values), "min": min(values), "max": max(values), "first": values[0],
                "last": values[-1], "sum": sum(values), "count": len(values),
            }[fn]
            buckets.append((bucket, int(result) if fn == "count" else float(result)))
        out.append(AggregatedSeries(dict(zip(group_by, key, strict=True)), buckets))
    return out


def typed_series(series: Sequence[AggregatedSeries]) -> list[tuple[object, ...]]:
    return [(sorted(s.tags.items()), [(t, type(v).__name__, v) for t, v in s.buckets]) for s in series]


def _reading(node: str, device: str, point: str | None, value: float, time_ns: int) -> Point:
    tags = {"node": node, "device": device, "unit": "kg"}
    if point is not None:
        tags["point"] = point
    return Point("readings", tags, {"value": value}, time_ns)


def _readings(seed: int = 11) -> list[Point]:
    """Readings of a few devices over ~10 minutes; values are multiples of 1/4, so sums and means are exact."""
    rng = random.Random(seed)
    points = []
    for node, device, point in [("n1", "d1", "p1"), ("n1", "d1", "p2"), ("n1", "d2", "p1"), ("n2", "d1", "p1"),
                                ("n2", "d1", None)]:
        for time_ns in sorted(rng.sample(range(T0 - 30 * SECOND, T0 + 600 * SECOND, 997_000_001), 40)):
            points.append(_reading(node, device, point, rng.randrange(-4000, 4000) / 4, time_ns))
    return points


@pytest.mark.parametrize("fn", ["mean", "min", "max", "first", "last", "count", "sum"])
def test_aggregate_matches_the_points(store: MetricsStore, fn: str) -> None:
    points = _readings()
    store.write(points)
    store.write([Point("other", {"node": "n1", "device": "d1", "point": "p1"}, {"value": 1.0}, T0)])
    start, end = T0 + 7 * SECOND, T0 + 500 * SECOND + 3  # not on bucket bounds
    for every_s, tags in ((60, None), (60, {"node": "n1"}), (17.5, {"device": "d1", "point": "p1"}), (3600, None)):
        got = store.aggregate("readings", tags=tags, start_ns=start, end_ns=end, every_s=every_s, fn=fn)
        want = model_aggregate(points, start_ns=start, end_ns=end, every_ns=int(every_s * SECOND), fn=fn,
                               tags=tags)
        assert typed_series(got) == typed_series(want), (every_s, tags)
        assert want


def test_aggregate_buckets_are_epoch_aligned_and_the_range_half_open(store: MetricsStore) -> None:
    minute = 60 * SECOND
    base = T0 - T0 % minute  # a bucket start
    points = [_reading("n", "d", "p", float(i), base + offset) for i, offset in
              enumerate([-1, 0, 5 * SECOND, minute - 1, minute, 2 * minute + 30 * SECOND])]
    store.write(points)
    got = store.aggregate("readings", start_ns=base + 1, end_ns=base + 2 * minute + 30 * SECOND, every_s=60,
                          fn="count")
    # base - 1 and base are before the range, the last point is at its (excluded) end; the first bucket starts at
    # base although the range starts 1 ns later
    assert typed_series(got) == typed_series([AggregatedSeries({"node": "n", "device": "d", "point": "p"},
                                                               [(base, 2), (base + minute, 1)])])
    before_1970 = [_reading("n", "d", "p", 1.0, -7 * SECOND - 1), _reading("n", "d", "p", 2.0, -1)]
    store.write(before_1970)
    got = store.aggregate("readings", start_ns=-10 * SECOND, end_ns=0, every_s=3, fn="sum")
    assert [s.buckets for s in got] == [[(-9 * SECOND, 1.0), (-3 * SECOND, 2.0)]]


def test_aggregate_group_by_and_filters(store: MetricsStore) -> None:
    points = [
        _reading("n1", "d1", "p1", 1.0, T0), _reading("n1", "d1", None, 2.0, T0 + 1),
        _reading("n1", "d2", "p1", 4.0, T0 + 2), _reading("n2", "d1", "p1", 8.0, T0 + 3),
    ]
    store.write(points)
    window = {"start_ns": T0, "end_ns": T0 + SECOND, "every_s": 1}
    everything = store.aggregate("readings", **window, fn="sum", group_by=[])
    assert typed_series(everything) == typed_series([AggregatedSeries({}, [(T0, 15.0)])])
    by_point = store.aggregate("readings", **window, fn="sum", group_by=["point"])
    # points without the tag form their own group, "" (sorted first)
    assert [(s.tags, s.buckets) for s in by_point] == [({"point": ""}, [(T0, 2.0)]), ({"point": "p1"}, [(T0, 13.0)])]
    by_unit = store.aggregate("readings", **window, fn="count", group_by=["node", "unit"], tags={"device": "d1"})
    assert [(s.tags, s.buckets) for s in by_unit] == [
        ({"node": "n1", "unit": "kg"}, [(T0, 2)]), ({"node": "n2", "unit": "kg"}, [(T0, 1)])]
    assert store.aggregate("readings", **window, fn="mean", tags={"node": "n9"}) == []
    assert store.aggregate("readings", **window, fn="mean", field="no_such_field") == []
    assert store.aggregate("no_such_measurement", **window, fn="mean") == []
    assert store.aggregate("readings", start_ns=T0 + SECOND, end_ns=T0 + 2 * SECOND, every_s=1, fn="max") == []


def test_aggregate_of_fields_that_are_not_numbers(store: MetricsStore) -> None:
    store.write([Point("status", {"node": "n"}, {"text": "ok", "flag": True, "n": 3}, T0),
                 Point("status", {"node": "n"}, {"text": "bad", "flag": False, "n": 5}, T0 + 1)])
    window = {"start_ns": T0, "end_ns": T0 + SECOND, "every_s": 1, "group_by": ["node"]}
    for field in ("text", "flag"):
        assert [s.buckets for s in store.aggregate("status", **window, fn="count", field=field)] == [[(T0, 2)]]
        for fn in ("mean", "max", "first", "sum"):
            with pytest.raises(MetricsStoreError) as caught:
                store.aggregate("status", **window, fn=fn, field=field)
            assert caught.value.retryable is False
    # integer fields aggregate like floats and come back as floats
    assert typed_series(store.aggregate("status", **window, fn="sum", field="n")) == typed_series(
        [AggregatedSeries({"node": "n"}, [(T0, 8.0)])])


def test_aggregate_checks_its_arguments(store: MetricsStore) -> None:
    window = {"start_ns": T0, "end_ns": T0 + 3600 * SECOND}
    with pytest.raises(ValueError, match="fn must be one of"):
        store.aggregate("readings", **window, every_s=60, fn="median")
    with pytest.raises(ValueError, match="every"):
        store.aggregate("readings", **window, every_s=0.0001, fn="mean")
    with pytest.raises(ValueError, match=rf"every 0.1 s makes 36000 buckets .* at most {MAX_BUCKETS}"):
        store.aggregate("readings", **window, every_s=0.1, fn="mean")
    with pytest.raises(ValueError, match="before"):
        store.aggregate("readings", start_ns=T0, end_ns=T0, every_s=60, fn="mean")
    with pytest.raises(ValueError, match="tag"):
        store.aggregate("readings", **window, every_s=60, fn="mean", tags={"node": "a\nb"})
    with pytest.raises(ValueError, match="duplicates"):
        store.aggregate("readings", **window, every_s=60, fn="mean", group_by=["node", "node"])
    with pytest.raises(ValueError, match="would begin before the earliest time"):  # 64-bit bucket arithmetic
        store.aggregate("readings", start_ns=MIN_TIME_NS + SECOND, end_ns=MIN_TIME_NS + 2 * SECOND, every_s=60,
                        fn="mean")
    # exactly MAX_BUCKETS is fine; one more is not
    aligned = T0 - T0 % 360_000_000
    assert store.aggregate("readings", start_ns=aligned, end_ns=aligned + 3600 * SECOND, every_s=0.36,
                           fn="mean") == []
    with pytest.raises(ValueError, match="10001 buckets"):
        store.aggregate("readings", start_ns=aligned, end_ns=aligned + 3600 * SECOND + 1, every_s=0.36, fn="mean")


@pytest.mark.parametrize("text", AWKWARD)
def test_aggregate_awkward_characters(store: MetricsStore, text: str) -> None:
    measurement, key, field = "m " + text, "k " + text, "f " + text
    points = [Point(measurement, {key: text}, {field: 1.5}, T0), Point(measurement, {key: text}, {field: 2.5}, T0 + 1),
              Point(measurement, {key: text + "2"}, {field: 8.0}, T0 + 2)]
    store.write(points)
    got = store.aggregate(measurement, tags={key: text}, start_ns=T0, end_ns=T0 + SECOND, every_s=1, fn="sum",
                          field=field, group_by=[key])
    assert [(s.tags, s.buckets) for s in got] == [({key: text}, [(T0, 4.0)])]


_QUARTERS = st.integers(-(2**20), 2**20).map(lambda n: n / 4)  # exact sums and means


@st.composite
def _aggregate_cases(draw: st.DrawFn) -> tuple[list[Point], int, int, float, str]:
    measurement = f"a{next(_counter)}"
    times = draw(st.lists(st.integers(-(10**11), 10**11), min_size=1, max_size=30, unique=True))
    points = [
        Point(measurement, {"node": draw(st.sampled_from(["n1", "n2"])), "point": draw(st.sampled_from(["p", "q"]))},
              {"value": draw(_QUARTERS)}, T0 + offset)
        for offset in times
    ]
    every_s = draw(st.sampled_from([0.001, 0.25, 1, 7, 60, 86400]))
    start = T0 + draw(st.integers(-(10**11), 10**11))
    end = start + draw(st.integers(1, 2 * 10**11))
    end = min(end, start + int(every_s * SECOND) * (MAX_BUCKETS - 1))
    return points, start, end, every_s, draw(st.sampled_from(AGGREGATE_FUNCTIONS))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_aggregate_cases())
def test_property_aggregate_matches_the_points(
    store: MetricsStore, case: tuple[list[Point], int, int, float, str]
) -> None:
    points, start, end, every_s, fn = case
    store.write(points)
    got = store.aggregate(points[0].measurement, start_ns=start, end_ns=end, every_s=every_s, fn=fn,
                          group_by=["node", "point"])
    want = model_aggregate(points, start_ns=start, end_ns=end, every_ns=round(every_s * SECOND), fn=fn,
                           group_by=["node", "point"])
    assert typed_series(got) == typed_series(want)
