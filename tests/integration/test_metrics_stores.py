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
from central.metrics.base import check_key, check_name, check_tag_value
from tests.influx_v2_adapter import InfluxV2Adapter
from tests.services import InfluxServer

pytestmark = pytest.mark.integration

BACKENDS = ["influxdb-v1", "influxdb-v2", "sqlite"]
T0 = 1_700_000_000_000_000_000  # 2023-11-14, nanoseconds


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
        calls += [lambda: store.query("m"), lambda: store.latest("m", group_by=["a"])]
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
