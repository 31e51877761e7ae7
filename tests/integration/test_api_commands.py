"""``/api/v1/commands`` on real HTTP and PostgreSQL: a command is validated (422 with the field), its node and device
must be known (404), it is queued with the caller and audited; lists filter, sort and page; one command is found by
id or UUID and ``wait_s`` waits for its answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from central.db.models import AuditEntry, Command, Device
from central.fleet.nodes import register_node
from sync.signing import generate_key, public_key_text
from tests.api_support import ApiHarness, build_api

pytestmark = pytest.mark.integration

NODE = "mill-01"


@pytest.fixture
def api(pg_url: str, tmp_path: Path) -> Iterator[ApiHarness]:
    """The API app on real HTTP and a fresh Postgres; metrics in SQLite (commands never touch them)."""
    yield from build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")})


@pytest.fixture
def plant(api: ApiHarness) -> ApiHarness:
    register_node(api.sessions, NODE, public_key_text(generate_key()))
    with api.sessions.begin() as s:
        s.add_all([Device(node_id=NODE, device_id="bridge-1", kind="mtsics-scale"),
                   Device(node_id=NODE, device_id="meter-1", kind="sdm630")])
    return api


def _post(api: ApiHarness, role: str = "operator", **body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = api.client.post("/api/v1/commands", json={"node_id": NODE, **body}, headers=api.auth(role))
    return r.status_code, r.json()


def test_a_command_is_checked_queued_and_audited(plant: ApiHarness) -> None:
    api = plant
    code, body = _post(api, device_id="bridge-1", command="weigh", args={"reference": "DN-4711"}, timeout_s=20)
    assert code == 202, body
    assert {k: body[k] for k in ("node_id", "device_id", "command", "args", "status", "result", "error", "late",
                                 "timeout_s", "sent_at", "answered_at")} == {
        "node_id": NODE, "device_id": "bridge-1", "command": "weigh", "args": {"reference": "DN-4711"},
        "status": "queued", "result": None, "error": None, "late": False, "timeout_s": 20.0, "sent_at": None,
        "answered_at": None}
    assert body["requested_by"] == f"user:{api.auth_names['operator']}"
    with api.sessions() as s:
        entry = s.execute(select(AuditEntry).where(AuditEntry.resource == "commands")).scalar_one()
    assert (entry.action, entry.resource_id, entry.after["command_id"]) == ("command", str(body["id"]),
                                                                           body["command_id"])
    assert _post(api, command="reload")[0] == 202  # the whole node: no device

    for payload, field, message in [
        ({"command": "tare"}, "device_id", "tare needs a device"),
        ({"command": "reload", "device_id": "bridge-1"}, "device_id", "reload applies to the whole node"),
        ({"command": "weigh", "device_id": "bridge-1", "args": {"unit": "kg"}}, "args.unit",
         "weigh takes no argument 'unit'"),
        ({"command": "weigh", "device_id": "bridge-1", "args": {"reference": ""}}, "args.reference",
         "expected 1 to 64 characters"),
        ({"command": "weigh", "device_id": "bridge-1", "args": {"vehicle": "STD\tAB 1"}}, "args.vehicle",
         "control characters"),
        ({"command": "weigh", "device_id": "bridge-1", "args": {"lot": 42}}, "args.lot", "Input should be a valid"),
        ({"command": "tare", "device_id": "bridge-1", "args": {"preset_tare": "14 t"}}, "args.preset_tare",
         "non-negative decimal"),
        ({"command": "calibrate", "device_id": "bridge-1"}, "command", "Input should be"),
        ({"command": "poll", "device_id": "bridge 1"}, "device_id", "String should match pattern"),
        ({"command": "poll", "device_id": "bridge-1", "timeout_s": 0}, "timeout_s", "greater than or equal to 0.5"),
        ({"command": "poll", "device_id": "bridge-1", "colour": "red"}, "colour", "Extra inputs"),
    ]:
        code, err = _post(api, **payload)
        assert code == 422, (payload, err)
        assert err["error"]["field"] == field, (payload, err)
        assert message in err["error"]["message"], (payload, err)

    code, err = _post(api, command="poll", device_id="bridge-1", node_id="mill-99")
    assert (code, err["error"]["field"]) == (404, "node_id")
    assert "not enrolled" in err["error"]["message"]
    code, err = _post(api, command="poll", device_id="bridge-9")
    assert (code, err["error"]["field"]) == (404, "device_id")
    assert err["error"]["message"] == "central has not heard of device 'bridge-9' on node 'mill-01'"
    assert _post(api, "viewer", command="poll", device_id="bridge-1")[0] == 403
    with api.sessions() as s:
        assert len(s.execute(select(Command)).scalars().all()) == 2  # nothing of the refused ones was stored

    # every code a weigh takes, and a preset tare, go through as given
    codes = {"reference": "T-2025-000123", "vehicle": "STD-AB 123", "partner": "P-1042", "article": "WHEAT-B",
             "lot": "L-2025-0042", "delivery_note": "LS-88812"}
    code, body = _post(api, device_id="bridge-1", command="weigh", args=codes)
    assert (code, body["args"]) == (202, codes)
    code, body = _post(api, device_id="bridge-1", command="tare", args={"preset_tare": "14960"})
    assert (code, body["args"]) == (202, {"preset_tare": "14960"})


def test_lists_filter_sort_and_page(plant: ApiHarness) -> None:
    api = plant
    ids = [_post(api, device_id=dev, command=cmd)[1]["id"]
           for dev, cmd in [("bridge-1", "tare"), ("bridge-1", "zero"), ("meter-1", "poll"), ("bridge-1", "weigh"),
                            ("bridge-1", "tare"), ("meter-1", "poll"), ("bridge-1", "poll")]]
    with api.sessions.begin() as s:
        s.execute(update(Command).where(Command.id.in_(ids[:3])).values(status="succeeded"))
        s.execute(update(Command).where(Command.id == ids[3]).values(status="failed", error="overload"))
    viewer = api.auth("viewer")

    def get(**params: object) -> dict:  # type: ignore[type-arg]
        r = api.client.get("/api/v1/commands", params=params, headers=viewer)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    assert [c["id"] for c in get()["items"]] == ids[::-1]  # newest first
    assert [c["id"] for c in get(status="succeeded")["items"]] == ids[2::-1]
    assert [c["id"] for c in get(command="tare", sort="id")["items"]] == [ids[0], ids[4]]
    assert [c["id"] for c in get(device_id="meter-1")["items"]] == [ids[5], ids[2]]
    assert get(node_id="mill-02")["items"] == []
    assert get(status="failed")["items"][0]["error"] == "overload"

    seen: list[int] = []
    cursor = None
    while True:
        page = get(sort="created_at", limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    r = api.client.get("/api/v1/commands", params={"sort": "id", "cursor": cursor or "bm9wZQ"}, headers=viewer)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")
    r = api.client.get("/api/v1/commands", params={"sort": "node_id"}, headers=viewer)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "sort")
    r = api.client.get("/api/v1/commands", params={"status": "done"}, headers=viewer)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "status")


def test_one_command_by_id_or_uuid_and_waiting_for_its_answer(plant: ApiHarness) -> None:
    api = plant
    viewer = api.auth("viewer")
    _, cmd = _post(api, device_id="bridge-1", command="zero")
    by_id = api.client.get(f"/api/v1/commands/{cmd['id']}", headers=viewer).json()
    by_uuid = api.client.get(f"/api/v1/commands/{cmd['command_id']}", headers=viewer).json()
    assert by_id == by_uuid == cmd
    for ref in ("999999", "0", str(2**63), "9" * 40, "not-a-command", cmd["command_id"][:-1] + "x"):
        r = api.client.get(f"/api/v1/commands/{ref}", headers=viewer)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), ref

    t0 = time.monotonic()
    r = api.client.get(f"/api/v1/commands/{cmd['id']}", params={"wait_s": 0.6}, headers=viewer)
    assert (r.json()["status"], time.monotonic() - t0 >= 0.5) == ("queued", True)  # no answer: as it is after wait_s

    def answer() -> None:  # what the dispatcher does when the node's result comes
        time.sleep(0.5)
        with api.sessions.begin() as s:
            s.execute(update(Command).where(Command.id == cmd["id"]).values(
                status="failed", error="scale refused zero: Z I (not executable now)", answered_at=datetime.now(UTC),
                result={"answer": "Z I"}))

    threading.Thread(target=answer).start()
    t0 = time.monotonic()
    r = api.client.get(f"/api/v1/commands/{cmd['command_id']}", params={"wait_s": 20}, headers=viewer)
    waited = time.monotonic() - t0
    assert r.json()["status"] == "failed"
    assert r.json()["error"] == "scale refused zero: Z I (not executable now)"
    assert 0.4 < waited < 5
    r = api.client.get(f"/api/v1/commands/{cmd['id']}", params={"wait_s": 31}, headers=viewer)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "wait_s")
