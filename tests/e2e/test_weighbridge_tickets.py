"""Issue 6 end to end: 20 trucks over a weighbridge, weighed by command from the API, end as exactly the tickets an
ERP expects at central.

Real parts: ``floorgate central run`` (PostgreSQL), mosquitto, ``floorgate edge run``, and the MT-SICS weighbridge
simulator on a real pseudo-terminal. The simulator runs in this process with its clock in the test's hand: its
trucks are a scripted list of visits (one weight each), and the test puts the bridge where the scenario needs it
(``Weighbridge.time_of(visit, phase)``) before it sends a command. The bridge is run by the ERP: ``weighing.auto``
is off, every weighing is asked for with ``POST /api/v1/commands`` ``weigh`` and its codes (reference, plate,
partner, article, lot, delivery note); partners, articles and lots are made through the API by a logged-in admin.

    9 trucks in   (incoming goods: loaded, then empty)    8 trucks out  (outgoing goods: empty, then loaded)
    2 trucks with a preset tare (tare command with preset_tare: TA <t> kg; one weighing; the tare cleared after)
    1 truck over the 60 t capacity (weigh answers S +: failed "overload", no weighing, no ticket)
    1 weigh while a truck still rolls on (S I: failed, no weighing), with tare (T I) and zero (Z I) refused too

Checked at the end: exactly 19 tickets, each complete, with its direction, gross / tare / net as exact strings (a
preset-tare ticket: the net and tare the scale delivered, no gross - MT-SICS shows a tared truck's net only),
its partner, article and lot (by code), reference, plate and delivery note; no unpaired weighing; 36 weighings, each
with its alibi number, in sequence; the command results carry the scale's values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from central.db.engine import make_engine, make_session_factory
from central.db.models import Weighing
from protocols.sim.load import Phase
from tests.procs import Proc, central_yaml, create_admin, enrol, floorgate, login, node_yaml, wait_until
from tests.services import MosquittoServer, free_port
from tests.weighbridge_support import BridgeThread

pytestmark = pytest.mark.e2e

PARTNERS = {"FARM-1": "supplier", "FARM-2": "supplier", "MILL-C1": "customer", "MILL-C2": "customer"}
ARTICLES = {"WHEAT": "Wheat", "BARLEY": "Barley", "FEED-A": "Cattle feed A", "FEED-B": "Pig feed B"}
LOTS = {"L-W-01": "WHEAT", "L-B-01": "BARLEY", "L-FA-01": "FEED-A", "L-FB-01": "FEED-B"}


@dataclass
class Truck:
    plate: str
    kind: str  # in | out | preset | overload
    loaded: int  # kg on the bridge with the load
    empty: int  # kg without (the preset tare, for kind preset)
    partner: str | None = None
    article: str | None = None
    lot: str | None = None
    reference: str | None = None
    delivery_note: str | None = None
    visits: list[int] = field(default_factory=list)  # visit numbers on the bridge, in order

    def codes(self) -> dict[str, str]:
        codes = {"vehicle": self.plate, "reference": self.reference, "partner": self.partner,
                 "article": self.article, "lot": self.lot, "delivery_note": self.delivery_note}
        return {k: v for k, v in codes.items() if v is not None}


def _trucks() -> list[Truck]:
    trucks = []
    for i in range(9):  # incoming goods: weighed loaded, then empty; every other one by its ERP reference
        article, lot, partner = ("WHEAT", "L-W-01", "FARM-1") if i % 3 else ("BARLEY", "L-B-01", "FARM-2")
        trucks.append(Truck(f"STD-IN {i + 1}", "in", 24_000 + 1_020 * i, 11_980 + 240 * i, partner, article, lot,
                            reference=f"WB-IN-{i + 1}" if i % 2 == 0 else None, delivery_note=f"LS-{7000 + i}"))
    for i in range(8):  # outgoing goods: weighed empty, then loaded
        article, lot, partner = ("FEED-A", "L-FA-01", "MILL-C1") if i % 2 else ("FEED-B", "L-FB-01", "MILL-C2")
        trucks.append(Truck(f"CUX-OUT {i + 1}", "out", 30_500 + 760 * i, 13_020 + 180 * i, partner, article, lot,
                            reference=f"WB-OUT-{i + 1}" if i % 3 == 0 else None))
    trucks.append(Truck("PT-1", "preset", 31_000, 14_960, "FARM-1", "WHEAT", "L-W-01", reference="WB-PT-1"))
    trucks.append(Truck("PT-2", "preset", 28_440, 13_220, "MILL-C1", "FEED-A", "L-FA-01"))
    trucks.append(Truck("HEAVY 1", "overload", 64_000, 16_000, "FARM-2", "BARLEY", "L-B-01"))
    return trucks


def _schedule(trucks: list[Truck]) -> list[tuple[Truck, int]]:
    """The visits in order: (truck, pass). Two-pass trucks come in threes and return in the same order, so their
    weighings interleave as on a real bridge; the single-pass trucks go in between."""
    two_pass = [t for t in trucks if t.kind in ("in", "out")]
    single = [t for t in trucks if t.kind not in ("in", "out")]
    order: list[tuple[Truck, int]] = []
    for start in range(0, len(two_pass), 3):
        group = two_pass[start:start + 3]
        order += [(t, 0) for t in group] + [(t, 1) for t in group]
        if single:
            order.append((single.pop(0), 0))
    order += [(t, 0) for t in single]
    for visit, (truck, _) in enumerate(order):
        truck.visits.append(visit)
    return order


def _weight_of(truck: Truck, passage: int) -> int:
    if truck.kind == "out":
        return (truck.empty, truck.loaded)[passage]
    if truck.kind == "in":
        return (truck.loaded, truck.empty)[passage]
    return truck.loaded


def _all(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.get(path, params={"limit": 100, **params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        out += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return out


TRUCKS = _trucks()
SCHEDULE = _schedule(TRUCKS)


@pytest.fixture
def sim() -> Iterator[BridgeThread]:
    s = BridgeThread([_weight_of(truck, passage) for truck, passage in SCHEDULE])
    try:
        yield s
    finally:
        s.stop()


def test_twenty_trucks_end_as_exactly_the_expected_tickets(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, sim: BridgeThread, unique_id: str,
) -> None:
    node = f"{unique_id}-wb"
    procs: list[Proc] = []
    api_port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=40)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    try:
        pty = sim.start()
        sim.at(0, Phase.EMPTY)
        central_cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url,
                                   client_id=f"central-{unique_id}", api_port=api_port)
        node_cfg = node_yaml(tmp_path, node_id=node, broker_url=mosquitto.url, devices=[
            {"id": "bridge-1", "type": "mtsics-scale", "address": f"serial://{pty}", "interval_s": 0.1,
             "weighing": {"auto": False}}])  # the ERP asks for every weighing
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(node_cfg, central_cfg)
        create_admin(central_cfg)
        central = Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start()
        procs.append(central)
        wait_until("central API", lambda: api.get("/health").status_code in (200, 503), timeout_s=30, procs=procs)
        login(api)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)

        # master data, as the ERP (an admin) keeps it
        ids: dict[str, int] = {}
        for code, kind in PARTNERS.items():
            r = api.post("/api/v1/partners", json={"code": code, "name": f"Partner {code}", "kind": kind})
            assert r.status_code == 201, r.text
            ids[code] = r.json()["id"]
        for code, name in ARTICLES.items():
            r = api.post("/api/v1/articles", json={"code": code, "name": name, "unit": "kg"})
            assert r.status_code == 201, r.text
            ids[code] = r.json()["id"]
        for code, article in LOTS.items():
            r = api.post("/api/v1/lots", json={"code": code, "article_id": ids[article]})
            assert r.status_code == 201, r.text
            ids[code] = r.json()["id"]
        wait_until("bridge-1 known at central", lambda: api.get(
            "/api/v1/devices", params={"node_id": node}).json()["items"], timeout_s=30, procs=procs)

        def run(command: str, args: dict[str, str] | None = None) -> dict[str, Any]:
            r = api.post("/api/v1/commands", json={"node_id": node, "device_id": "bridge-1", "command": command,
                                                   "args": args or {}})
            assert r.status_code == 202, r.text
            done = api.get(f"/api/v1/commands/{r.json()['command_id']}", params={"wait_s": 25})
            assert done.status_code == 200, done.text
            row = done.json()
            assert row["status"] not in ("queued", "sent"), (row, edge.tail())
            return row

        # a bad argument never reaches the node: 422 naming it
        bad = api.post("/api/v1/commands", json={"node_id": node, "device_id": "bridge-1", "command": "weigh",
                                                 "args": {"vehicle": "B\x07AD"}})
        assert (bad.status_code, bad.json()["error"]["field"]) == (422, "args.vehicle"), bad.text
        bad = api.post("/api/v1/commands", json={"node_id": node, "device_id": "bridge-1", "command": "tare",
                                                 "args": {"preset_tare": "-5"}})
        assert (bad.status_code, bad.json()["error"]["field"]) == (422, "args.preset_tare"), bad.text

        record_ids: list[str] = []
        preset_records: dict[str, str] = {}  # plate → record id of the preset-tare weighing
        unstable_visit = TRUCKS[2].visits[0]  # the third truck, as it rolls on for its first weighing
        for visit, (truck, passage) in enumerate(SCHEDULE):
            weight = _weight_of(truck, passage)
            if visit == unstable_visit:
                sim.at(visit, Phase.DRIVE_ON)
                moving = run("weigh", truck.codes())
                assert (moving["status"], moving["result"]["answer"]) == ("failed", "S I"), moving
                assert moving["error"].startswith("no stable weight: S I")
                tare = run("tare")
                assert (tare["status"], tare["error"]) == ("failed", "scale refused tare: T I (not executable now)")
                zero = run("zero")
                assert (zero["status"], zero["error"]) == ("failed", "scale refused zero: Z I (not executable now)")
            sim.at(visit, Phase.SETTLED)
            if truck.kind == "overload":
                over = run("weigh", truck.codes())
                assert (over["status"], over["error"], over["result"]["answer"]) == (
                    "failed", "overload: the scale answered S +", "S +"), over
                continue
            if truck.kind == "preset":
                preset = run("tare", {"preset_tare": str(truck.empty)})
                assert preset["status"] == "succeeded", preset
                assert {k: preset["result"][k] for k in ("tare", "unit", "tare_preset")} == {
                    "tare": str(truck.empty), "unit": "kg", "tare_preset": True}
            weigh = run("weigh", truck.codes())
            assert weigh["status"] == "succeeded", weigh
            assert weigh["args"] == truck.codes()
            result = weigh["result"]
            if truck.kind == "preset":  # the scale shows the net: net and the preset tare, no gross (not delivered)
                assert {k: result.get(k) for k in ("gross", "net", "tare", "tare_preset", "unit", "stable")} == {
                    "gross": None, "net": str(weight - truck.empty), "tare": str(truck.empty), "tare_preset": True,
                    "unit": "kg", "stable": True}, result
                cleared = run("tare", {"preset_tare": "0"})  # the next truck is weighed gross again
                assert (cleared["status"], cleared["result"]["tare"]) == ("succeeded", "0"), cleared
                preset_records[truck.plate] = result["record_id"]
            else:
                assert {k: result.get(k) for k in ("gross", "net", "tare", "unit", "stable", "answer")} == {
                    "gross": str(weight), "net": None, "tare": None, "unit": "kg", "stable": True,
                    "answer": f"S S {weight:>10} kg"}, result
            record_ids.append(result["record_id"])

        # every weighing reaches central (the business stream acknowledged up to it) and is paired
        assert len(record_ids) == 36
        wait_until("the 36 weighings acknowledged", lambda: any(
            m["stream"] == "business" and m["acked_seq"] >= 36
            for m in api.get("/api/v1/ingest/streams", params={"node_id": node}).json()["items"]),
            timeout_s=30, procs=procs)
        weighings = _all(api, "/api/v1/weighings")
        quarantined = [q["reason"] for q in _all(api, "/api/v1/ingest/quarantine")]
        assert sorted(w["record_id"] for w in weighings) == sorted(record_ids), quarantined  # none for S I, S +
        tickets = wait_until("19 complete tickets", lambda: (t := _all(api, "/api/v1/tickets"))
                             and sum(x["status"] == "complete" for x in t) >= 19 and t, timeout_s=30, procs=procs)

        expected = {}
        for truck in TRUCKS:
            if truck.kind == "overload":
                continue
            # a preset-tare ticket holds what the instrument delivered: net and tare, no gross (never computed)
            expected[truck.plate] = {
                "status": "complete", "direction": "out" if truck.kind == "out" else "in",
                "gross": None if truck.kind == "preset" else str(truck.loaded), "tare": str(truck.empty),
                "net": str(truck.loaded - truck.empty), "unit": "kg",
                "reference": truck.reference, "delivery_note": truck.delivery_note,
                "paired_by": "preset_tare" if truck.kind == "preset" else "reference" if truck.reference else "plate",
                "partner_id": ids[truck.partner or ""], "article_id": ids[truck.article or ""],
                "lot_id": ids[truck.lot or ""],
            }
        got = {t["vehicle"]: {k: t[k] for k in expected["PT-1"]} for t in tickets}
        assert len(tickets) == 19, [(t["vehicle"], t["status"], t["notes"]) for t in tickets]
        assert got == expected
        assert all(not t["notes"] for t in tickets), [(t["vehicle"], t["notes"]) for t in tickets]
        assert _all(api, "/api/v1/weighings", unpaired="true") == []

        # every weighing carries its alibi number, consecutive in the order weighed, and the legal values
        with sessions() as s:
            rows = s.execute(select(Weighing).where(Weighing.node_id == node).order_by(Weighing.seq)).scalars().all()
        assert [w.record_id for w in rows] == record_ids
        assert [w.alibi_no for w in rows] == list(range(1, 37)), [w.alibi_no for w in rows]
        by_id = {w.record_id: w for w in rows}
        for truck in TRUCKS:
            if truck.kind == "preset":
                w = by_id[preset_records[truck.plate]]
                assert (w.net, w.tare, w.tare_preset, w.vehicle) == (
                    Decimal(truck.loaded - truck.empty), Decimal(truck.empty), True, truck.plate)
        assert all(w.trigger == "command" and w.scale_serial == "0123456789" for w in rows)
        assert "Traceback" not in central.log() + edge.log()
    finally:
        api.close()
        for p in reversed(procs):
            p.stop()
        engine.dispose()
