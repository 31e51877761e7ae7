"""Issue 16 end to end, values exactly as delivered: a multi-interval weighbridge (the MT-SICS simulator with
``mixed_decimals``: 0.5 kg steps with one decimal below 30 t, 20 kg steps above) writes frames with mixed decimals;
they travel simulated weighbridge → ``floorgate edge run`` → mosquitto → ``floorgate central run`` on PostgreSQL and
come back digit for digit in the weighings API, the tickets JSON, the delivery note's total and the ticket PDF.

    MIX-1  in      S S    24560.0 kg  then  S S     8420.5 kg    → ticket 24560.0 − 8420.5 = 16139.5
    MIX-2  in      S S      32980 kg  then  S S     8420.0 kg    → ticket 32980 − 8420.0 = 24560.0
    MIX-PT preset  TA A     8420.5 kg, S S      31580 kg (net)   → ticket tare 8420.5, net 31580, no gross

Issue 16 found tare ``8420.5`` shown as ``"8420"``, net ``"16140"`` (the gross's decimals) and ``"24560.0"`` as
``"24560"`` (trailing zeros dropped).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pypdfium2 as pdfium
import pytest
from sqlalchemy import select, text

from central.db.engine import make_engine, make_session_factory
from central.db.models import Weighing
from central.tickets.views import delivery_note_view
from protocols.sim.load import Phase
from tests.procs import Proc, central_yaml, create_admin, enrol, floorgate, login, node_yaml, wait_until
from tests.services import MosquittoServer, free_port
from tests.weighbridge_support import BridgeThread

pytestmark = pytest.mark.e2e

# visits on the bridge: (plate, kg on the bridge, preset tare) and what the scale writes
VISITS = [("MIX-1", Decimal("24560"), None), ("MIX-1", Decimal("8420.5"), None),
          ("MIX-2", Decimal("32980"), None), ("MIX-2", Decimal("8420"), None),
          ("MIX-PT", Decimal("40000"), "8420.5")]
SHOWN = [("24560.0", None, None), ("8420.5", None, None), ("32980", None, None), ("8420.0", None, None),
         (None, "8420.5", "31580")]  # gross, tare, net of each weighing, as the frames carry them
TICKETS = {"MIX-1": ("24560.0", "8420.5", "16139.5"), "MIX-2": ("32980", "8420.0", "24560.0"),
           "MIX-PT": (None, "8420.5", "31580")}


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


def _weights(item: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    return item.get("gross"), item.get("tare"), item.get("net")


def _pdf_text(api: httpx.Client, path: str) -> str:
    r = api.get(path)
    assert r.status_code == 200, r.text
    doc = pdfium.PdfDocument(r.content)
    try:
        return " ".join(" ".join(doc[i].get_textpage().get_text_range() for i in range(len(doc))).split())
    finally:
        doc.close()


def test_a_mixed_decimal_weighing_comes_back_digit_for_digit(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, unique_id: str,
) -> None:
    node = f"{unique_id}-mix"
    sim = BridgeThread([kg for _, kg, _ in VISITS], mixed_decimals=True)
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
             "weighing": {"auto": False}}])
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
        wait_until("bridge-1 known at central", lambda: api.get(
            "/api/v1/devices", params={"node_id": node}).json()["items"], timeout_s=30, procs=procs)

        def run(command: str, args: dict[str, str] | None = None) -> dict[str, Any]:
            r = api.post("/api/v1/commands", json={"node_id": node, "device_id": "bridge-1", "command": command,
                                                   "args": args or {}})
            assert r.status_code == 202, r.text
            done = api.get(f"/api/v1/commands/{r.json()['command_id']}", params={"wait_s": 25})
            assert done.status_code == 200, done.text
            row = done.json()
            assert row["status"] == "succeeded", (row, edge.tail())
            return dict(row["result"])

        record_ids = []
        for visit, ((plate, _, preset), shown) in enumerate(zip(VISITS, SHOWN, strict=True)):
            sim.at(visit, Phase.SETTLED)
            if preset is not None:
                tare = run("tare", {"preset_tare": preset})
                assert (tare["tare"], tare["answer"]) == (preset, f"TA A {preset:>10} kg")
            result = run("weigh", {"vehicle": plate, "delivery_note": "LS-MIX"})
            assert _weights(result) == shown, result  # the node's command result: the frame's digits
            if preset is not None:
                assert (result["answer"], result["tare_preset"]) == (f"S S {shown[2]:>10} kg", True)
                assert run("tare", {"preset_tare": "0"})["tare"] == "0.0"  # the scale's own zero, one decimal
            else:
                assert result["answer"] == f"S S {shown[0]:>10} kg"
            record_ids.append(result["record_id"])

        wait_until("the 5 weighings acknowledged", lambda: any(
            m["stream"] == "business" and m["acked_seq"] >= len(VISITS)
            for m in api.get("/api/v1/ingest/streams", params={"node_id": node}).json()["items"]),
            timeout_s=30, procs=procs)

        # the weighings API: every value with the instrument's digits
        weighings = {w["record_id"]: w for w in _all(api, "/api/v1/weighings", node_id=node)}
        assert [_weights(weighings[r]) for r in record_ids] == SHOWN, [_weights(w) for w in weighings.values()]
        for r, shown in zip(record_ids, SHOWN, strict=True):
            one = api.get(f"/api/v1/weighings/{weighings[r]['id']}")
            assert _weights(one.json()) == shown, one.text
        assert weighings[record_ids[4]]["tare_preset"] is True

        # the tickets JSON: a net by difference keeps the decimals of both weighings
        def complete() -> list[dict[str, Any]] | None:
            found = _all(api, "/api/v1/tickets")
            return found if sum(t["status"] == "complete" for t in found) >= 3 else None

        tickets = {t["vehicle"]: t for t in wait_until("3 complete tickets", complete, timeout_s=30, procs=procs)}
        assert {plate: _weights(t) for plate, t in tickets.items()} == TICKETS, tickets
        assert {plate: t["status"] for plate, t in tickets.items()} == dict.fromkeys(TICKETS, "complete")
        assert tickets["MIX-PT"]["paired_by"] == "preset_tare"
        for plate, weights in TICKETS.items():
            assert _weights(api.get(f"/api/v1/tickets/{tickets[plate]['id']}").json()) == weights

        # the database holds the digit strings; the delivery note's total is their exact sum
        with engine.connect() as conn:
            held = conn.execute(text("SELECT record_id, gross, tare, net FROM weighings WHERE node_id = :n"),
                                {"n": node}).all()
        assert {row[0]: tuple(row[1:]) for row in held} == dict(zip(record_ids, SHOWN, strict=True))
        with sessions() as s:
            note = delivery_note_view(s, "LS-MIX", "Europe/Berlin")
            rows = s.execute(select(Weighing).where(Weighing.node_id == node).order_by(Weighing.seq)).scalars()
            assert [w.alibi_no for w in rows] == [1, 2, 3, 4, 5]
        assert note is not None
        assert note.totals == (("kg", "72279.5"),)  # 16139.5 + 24560.0 + 31580

        # and the ticket PDF prints them as delivered
        pdf = _pdf_text(api, f"/api/v1/tickets/{tickets['MIX-1']['id']}/pdf")
        for value in ("24560.0 kg", "8420.5 kg", "16139.5 kg"):
            assert value in pdf, pdf
        assert "16140" not in pdf
        assert "8420 kg" not in pdf
        assert "Traceback" not in central.log() + edge.log()
    finally:
        api.close()
        for p in reversed(procs):
            p.stop()
        sim.stop()
        engine.dispose()
