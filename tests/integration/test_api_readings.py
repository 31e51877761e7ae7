"""``/api/v1/readings`` and ``/api/v1/readings/latest`` on real HTTP, real Postgres (users, API keys) and every
metrics backend: InfluxDB 1.x, InfluxDB 2.x through the v2 adapter, and the demo's SQLite store.

Expected values are computed here from the points the test writes; values are multiples of 1/4, so sums and means
are exact and compared with ``==``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from central.metrics import Point
from central.metrics.base import AGGREGATE_FUNCTIONS
from tests.api_support import ApiHarness, build_api
from tests.influx_v2_adapter import InfluxV2Adapter
from tests.services import InfluxServer

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # a bucket start for every `every` used here
MINUTE = timedelta(minutes=1)


def ns(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def reading(node: str, device: str, point: str, value: float, at: datetime, unit: str | None = "kg",
            measurement: str = "readings") -> Point:
    tags = {"node": node, "device": device, "point": point}
    if unit:
        tags["unit"] = unit
    return Point(measurement, tags, {"value": value}, ns(at))


@pytest.fixture(scope="module")
def v2_adapter(influx_server: InfluxServer) -> Iterator[InfluxV2Adapter]:
    with InfluxV2Adapter(influx_server.url) as adapter:
        yield adapter


@pytest.fixture(params=["influxdb-v1", "influxdb-v2", "sqlite"])
def backend_api(request: pytest.FixtureRequest, pg_url: str, unique_id: str, tmp_path: Path) -> Iterator[ApiHarness]:
    """The API on a fresh Postgres database and a fresh database / bucket / file of each metrics backend."""
    metrics: dict[str, Any]
    if request.param == "influxdb-v1":
        influx: InfluxServer = request.getfixturevalue("influx_server")
        metrics = {"kind": "influxdb-v1", "url": influx.url, "database": request.getfixturevalue("influx_db")}
    elif request.param == "influxdb-v2":
        adapter: InfluxV2Adapter = request.getfixturevalue("v2_adapter")
        metrics = {"kind": "influxdb-v2", "url": adapter.url, "org": adapter.org, "bucket": unique_id,
                   "token": adapter.token}
    else:
        metrics = {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")}
    yield from build_api(pg_url, metrics)


def get_ok(api: ApiHarness, path: str, **params: str) -> dict[str, Any]:
    r = api.client.get(path, params=params, headers=api.auth("viewer"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- latest ---------------------------------------------------------------------------------------------------


def test_latest_is_the_newest_value_of_every_point(backend_api: ApiHarness) -> None:
    api = backend_api
    api.store.write([
        reading("n1", "d1", "p1", 1.0, T0), reading("n1", "d1", "p1", 2.5, T0 + timedelta(seconds=1)),
        reading("n1", "d1", "p2", 3.0, T0, unit="%"), reading("n1", "d2", "p1", 4.0, T0 + timedelta(seconds=5)),
        reading("n2", "d1", "p1", 5.0, T0 + timedelta(seconds=2), unit=None),
        reading("n1", "d1", "rtt_ms", 12.0, T0, unit=None, measurement="device_health"),
    ])

    items = get_ok(api, "/api/v1/readings/latest")["items"]
    assert items == [
        {"node_id": "n1", "device_id": "d1", "point": "p1", "value": 2.5, "unit": "kg",
         "time": iso(T0 + timedelta(seconds=1))},
        {"node_id": "n1", "device_id": "d1", "point": "p2", "value": 3.0, "unit": "%", "time": iso(T0)},
        {"node_id": "n1", "device_id": "d2", "point": "p1", "value": 4.0, "unit": "kg",
         "time": iso(T0 + timedelta(seconds=5))},
        {"node_id": "n2", "device_id": "d1", "point": "p1", "value": 5.0, "unit": None,
         "time": iso(T0 + timedelta(seconds=2))},
    ]
    assert get_ok(api, "/api/v1/readings/latest", node_id="n1", device_id="d1")["items"] == items[:2]
    assert get_ok(api, "/api/v1/readings/latest", point="p1")["items"] == [items[0], items[2], items[3]]
    assert get_ok(api, "/api/v1/readings/latest", node_id="n9")["items"] == []
    health = get_ok(api, "/api/v1/readings/latest", measurement="device_health")["items"]
    assert [(i["point"], i["value"]) for i in health] == [("rtt_ms", 12.0)]


# --- range with aggregation -----------------------------------------------------------------------------------


def _expected(points: list[Point], start: datetime, end: datetime, every: timedelta, fn: str
              ) -> list[dict[str, Any]]:
    every_ns = every // timedelta(microseconds=1) * 1000
    series: dict[tuple[str, str | None], dict[int, list[tuple[int, float]]]] = {}
    for p in points:
        if ns(start) <= p.time_ns < ns(end):
            value = p.fields["value"]
            assert isinstance(value, float)
            bucket = p.time_ns - p.time_ns % every_ns
            series.setdefault((p.tags["point"], p.tags.get("unit")), {}).setdefault(bucket, []).append(
                (p.time_ns, value))
    out = []
    for (point, unit), buckets in sorted(series.items()):
        rows = []
        for bucket, timed in sorted(buckets.items()):
            values = [v for _, v in sorted(timed)]
            value = {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "first": values[0],
                     "last": values[-1], "sum": sum(values), "count": len(values)}[fn]
            rows.append({"time": iso(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=bucket // 1000)),
                         "value": value})
        out.append({"node_id": "n1", "device_id": "d1", "point": point, "unit": unit, "points": rows})
    return out


@pytest.mark.parametrize("fn", AGGREGATE_FUNCTIONS)
def test_range_buckets_match_the_points(backend_api: ApiHarness, fn: str) -> None:
    rng = random.Random(3)
    points = []
    for node, device, point, unit in [("n1", "d1", "p1", "kg"), ("n1", "d1", "p2", "%"), ("n1", "d2", "p1", "kg"),
                                      ("n2", "d1", "p1", "kg")]:
        for second in sorted(rng.sample(range(0, 30 * 60), 60)):
            points.append(reading(node, device, point, rng.randrange(-2000, 2000) / 4,
                                  T0 + timedelta(seconds=second, microseconds=rng.randrange(10**6)), unit))
    points.append(reading("n1", "d1", "p1", 99.0, T0 + 10 * MINUTE + timedelta(milliseconds=5), unit="t"))
    backend_api.store.write(points)

    start, end = T0 + 2 * MINUTE + timedelta(seconds=7), T0 + 27 * MINUTE
    body = get_ok(backend_api, "/api/v1/readings", node_id="n1", device_id="d1",
                  start=start.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00",
                  end=(end + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00",  # the same instant
                  every="5m", fn=fn)
    mine = [p for p in points if p.tags["node"] == "n1" and p.tags["device"] == "d1"]
    assert body["series"] == _expected(mine, start, end, 5 * MINUTE, fn)
    assert {k: body[k] for k in ("measurement", "start", "end", "every", "every_s", "fn")} == {
        "measurement": "readings", "start": iso(start), "end": iso(end), "every": "5m", "every_s": 300.0, "fn": fn}
    # a change of unit is a series of its own
    assert [(s["point"], s["unit"]) for s in body["series"]] == [("p1", "kg"), ("p1", "t"), ("p2", "%")]

    one = get_ok(backend_api, "/api/v1/readings", node_id="n1", device_id="d1", point="p2", start=iso(start),
                 end=iso(end), every="90s", fn=fn)
    assert one["series"] == _expected([p for p in mine if p.tags["point"] == "p2"], start, end,
                                      timedelta(seconds=90), fn)


def test_range_defaults_to_the_last_hour_with_an_every_for_a_chart(backend_api: ApiHarness) -> None:
    now = datetime.now(UTC)
    backend_api.store.write([reading("n1", "d1", "p1", v, now - age) for v, age in
                             ((1.0, timedelta(hours=2)), (2.0, timedelta(minutes=30)), (4.0, timedelta(minutes=1)))])
    body = get_ok(backend_api, "/api/v1/readings", node_id="n1", device_id="d1", fn="sum")
    start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
    assert end - start == timedelta(hours=1)
    assert abs(end - datetime.now(UTC)) < timedelta(seconds=30)
    assert (body["every"], body["every_s"]) == ("10s", 10.0)  # 360 buckets; 5s would be 720, more than 500
    assert sum(b["value"] for s in body["series"] for b in s["points"]) == 6.0

    week = get_ok(backend_api, "/api/v1/readings", node_id="n1", device_id="d1", fn="count",
                  start=iso(now - timedelta(days=7)))
    assert week["every"] == "30m"
    assert sum(b["value"] for s in week["series"] for b in s["points"]) == 3


def test_a_result_that_is_not_a_finite_number_is_null_never_nan(tmp_path: Path, pg_url: str) -> None:
    for api in build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "m.sqlite")}):
        api.store.write([reading("n1", "d1", "p1", 1e308, T0), reading("n1", "d1", "p1", 1e308, T0 + MINUTE)])
        body = get_ok(api, "/api/v1/readings", node_id="n1", device_id="d1", start=iso(T0),
                      end=iso(T0 + 5 * MINUTE), every="5m", fn="sum")
        assert body["series"][0]["points"] == [{"time": iso(T0), "value": None}]


# --- bad requests ---------------------------------------------------------------------------------------------

GOOD = {"node_id": "n1", "device_id": "d1"}
DAY = {"start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"}
BAD: list[tuple[str, dict[str, str], int, str, str]] = [
    ("no node", {"device_id": "d1"}, 422, "invalid_request", "node_id"),
    ("no device", {"node_id": "n1"}, 422, "invalid_request", "device_id"),
    ("empty node", {**GOOD, "node_id": ""}, 422, "invalid_request", "node_id"),
    ("control character", {**GOOD, "device_id": "d\x01"}, 422, "invalid_request", "device_id"),
    ("no time zone", {**GOOD, "start": "2024-05-01T06:00:00"}, 422, "invalid_request", "start"),
    ("not a time", {**GOOD, "end": "yesterday"}, 422, "invalid_request", "end"),
    ("every 0", {**GOOD, "every": "0s"}, 422, "invalid_request", "every"),
    ("every in words", {**GOOD, "every": "5 minutes"}, 422, "invalid_request", "every"),
    ("every too long", {**GOOD, "every": "400d"}, 400, "invalid_request", "every"),
    ("unknown fn", {**GOOD, "fn": "median"}, 422, "invalid_request", "fn"),
    ("unknown measurement", {**GOOD, "measurement": "weighings"}, 422, "invalid_request", "measurement"),
    ("reversed", {**GOOD, "start": "2024-05-01T07:00:00Z", "end": "2024-05-01T06:00:00+00:00"}, 400,
     "invalid_range", "start"),
    ("empty range", {**GOOD, "start": "2024-05-01T07:00:00Z", "end": "2024-05-01T09:00:00+02:00"}, 400,
     "invalid_range", "start"),
    ("start in the future", {**GOOD, "start": "2200-01-01T00:00:00Z"}, 400, "invalid_range", "start"),
    ("before InfluxDB", {**GOOD, "start": "1500-01-01T00:00:00Z"}, 400, "invalid_range", "start"),
    ("after InfluxDB", {**GOOD, "end": "2300-01-01T00:00:00Z"}, 400, "invalid_range", "end"),
    ("year 1 end, no start", {**GOOD, "end": "0001-01-01T00:30:00+00:00"}, 400, "invalid_range", "end"),
    ("first bucket before InfluxDB", {**GOOD, "start": "1677-09-22T00:00:00Z", "end": "1677-09-23T00:00:00Z",
                                      "every": "366d"}, 400, "invalid_range", "start"),
    ("too many buckets", {**GOOD, **DAY, "every": "1s"}, 400, "too_many_buckets", "every"),
]


@pytest.mark.parametrize(("params", "status", "code", "field"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_parameters_get_one_error_shape_naming_the_field(
    api: ApiHarness, params: dict[str, str], status: int, code: str, field: str
) -> None:
    r = api.client.get("/api/v1/readings", params=params, headers=api.auth("viewer"))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == (code, field), error
    assert error["message"]


def test_bad_parameters_of_latest(api: ApiHarness) -> None:
    for params, field in (({"node_id": "a\x00b"}, "node_id"), ({"point": ""}, "point"),
                          ({"measurement": "x"}, "measurement"), ({"device_id": "x\\"}, "device_id")):
        r = api.client.get("/api/v1/readings/latest", params=params, headers=api.auth("viewer"))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field


def test_the_bucket_limit_is_10000(api: ApiHarness) -> None:
    ten_thousand = {**GOOD, "start": "2024-05-01T00:00:00Z", "end": "2024-05-01T02:46:40Z", "every": "1s"}
    assert api.client.get("/api/v1/readings", params=ten_thousand, headers=api.auth("viewer")).status_code == 200
    r = api.client.get("/api/v1/readings", params={**ten_thousand, "end": "2024-05-01T02:46:41Z"},
                       headers=api.auth("viewer"))
    assert r.status_code == 400
    assert "10001 buckets" in r.json()["error"]["message"]


# --- credentials and an unavailable InfluxDB ----------------------------------------------------------------


def test_readings_need_credentials_of_any_role(api: ApiHarness) -> None:
    api.store.write([reading("n1", "d1", "p1", 1.0, T0)])
    for path in ("/api/v1/readings/latest", "/api/v1/readings?node_id=n1&device_id=d1"):
        r = api.client.get(path)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "not_authenticated"
        assert r.headers["WWW-Authenticate"] == "Bearer"
        for role in ("viewer", "auditor", "operator", "admin"):
            assert api.client.get(path, headers=api.auth(role)).status_code == 200, role
        key = api.api_key("viewer")["X-API-Key"]
        assert api.client.get(path, headers={"X-API-Key": key}).status_code == 200
        assert api.client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert api.client.get(path, headers={"Authorization": "Bearer fgk_nope_nope"}).status_code == 401


def test_influxdb_down_is_503_metrics_unavailable_and_recovers(pg_url: str, unique_id: str) -> None:
    with InfluxServer() as influx:
        for api in build_api(pg_url, {"kind": "influxdb-v1", "url": influx.url, "database": unique_id,
                                      "timeout_s": 2.0}):
            api.store.write([reading("n1", "d1", "p1", 1.0, T0)])
            headers = api.auth("viewer")
            latest = "/api/v1/readings/latest"
            ranged = f"/api/v1/readings?node_id=n1&device_id=d1&start={iso(T0)}&end={iso(T0 + MINUTE)}"
            assert api.client.get(latest, headers=headers).status_code == 200
            influx.stop()
            for path in (latest, ranged):
                r = api.client.get(path, headers=headers)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "metrics_unavailable"
                assert r.headers["Retry-After"] == "5"
                assert influx.url not in r.text  # details go to the log, not to the caller
            influx.start()
            assert api.client.get(ranged, headers=headers).json()["series"][0]["points"] == [
                {"time": iso(T0), "value": 1.0}]
