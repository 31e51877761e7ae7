"""Findings 4, 5 and the POS half of 6 against real processes: the counter's sales API signs each sale once, signs
nothing central would refuse, and does not read huge bodies.

mosquitto, ``floorgate central run`` on PostgreSQL and ``floorgate edge run`` with the software TSE and the POS API.
Before the fix: the same ``receipt_id`` after an agent restart got a second transaction number (both ``valid`` at
central); a ``receipt_id`` holding NUL was signed and answered 200, then quarantined by central — a gap in the TSE's
sequence; a 60 MB body was read whole.

Now: (a) the answer is committed with the sale's record, so after a restart (SIGKILL: no clean stop) the same
receipt gets it again with ``replayed: true`` and central holds exactly one transaction for it; (b) receipt ids with
NUL, other control characters or over 64 characters are a 422 naming ``receipt_id`` and nothing is signed — the next
sale takes the next transaction number and signature counter, central's sequence has no gap and its quarantine stays
empty; (c) a 60 MB body is a 413 by its Content-Length before anything is read (with and without a token), a chunked
one without Content-Length as soon as 64 KiB are read; the agent's memory does not grow by anything like the body and
it goes on selling.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from central.db.engine import make_engine
from tests.fiscal_support import confirm_tse
from tests.procs import Proc, central_yaml, enrol, floorgate, node_yaml, wait_until
from tests.raw_http import stream_post
from tests.services import MosquittoServer, free_port

pytestmark = pytest.mark.e2e

SALE = {"client_id": "KASSE-1", "amounts": {"vat_19": "10.00", "vat_7": "2.50"},
        "payments": [{"amount": "12.50", "type": "Bar"}]}
BIG = 60 * 1024 * 1024


@dataclass
class Plant:
    tmp_path: Path
    node: str
    node_cfg: Path
    pos_port: int
    engine: sa.Engine
    procs: list[Proc]
    edge: Proc | None = None
    pos: httpx.Client | None = None
    http_port: int = 0  # the node's /health and /metrics

    def refused(self) -> dict[str, int]:
        """What the node's /health says the POS API refused, by reason."""
        body = httpx.get(f"http://127.0.0.1:{self.http_port}/health", timeout=10).json()
        return dict(body["pos"]["refused"])

    def start_edge(self) -> None:
        self.edge = Proc("edge", ["edge", "run", "--config", str(self.node_cfg)], self.tmp_path).start()
        self.procs.append(self.edge)
        token_file = self.tmp_path / "edge" / "pos-token"
        wait_until("the POS token", lambda: token_file.exists() and token_file.read_text().strip(), timeout_s=30,
                   procs=self.procs)
        if self.pos is not None:
            self.pos.close()
        self.pos = httpx.Client(base_url=f"http://127.0.0.1:{self.pos_port}", timeout=10,
                                headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})

        def up() -> bool:
            try:
                return self.api.get("/pos/v1/tse").status_code == 200
            except httpx.TransportError:
                return False

        wait_until("the POS API", up, timeout_s=30, procs=self.procs)

    @property
    def api(self) -> httpx.Client:
        assert self.pos is not None
        return self.pos

    def kill_edge(self) -> None:
        assert self.edge is not None
        self.edge.kill()
        self.procs.remove(self.edge)

    def sale(self, **changes: Any) -> httpx.Response:
        return self.api.post("/pos/v1/sales", json={**SALE, **changes})

    def at_central(self) -> list[tuple[int, str | None, str]]:
        """(tx_number, receipt_id, verified) of the node's transactions at central, by number."""
        with self.engine.connect() as c:
            rows = c.execute(sa.text("SELECT tx_number, receipt_id, verified FROM tse_transactions WHERE node_id=:n "
                                     "ORDER BY tx_number"), {"n": self.node}).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def quarantined(self) -> list[str]:
        with self.engine.connect() as c:
            return list(c.execute(sa.text("SELECT reason FROM ingest_quarantine")).scalars())

    def central_has(self, receipt_id: str) -> bool:
        return any(r == receipt_id for _, r, _ in self.at_central())

    def rss_kib(self) -> int:
        assert self.edge is not None
        assert self.edge.popen is not None
        for line in Path(f"/proc/{self.edge.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture
def plant(tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, unique_id: str) -> Iterator[Plant]:
    node = f"{unique_id}-pos"
    api_port, pos_port, http_port = free_port(), free_port(), free_port()
    central_cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url,
                               client_id=f"central-{unique_id}", api_port=api_port)
    node_cfg = node_yaml(tmp_path, node_id=node, broker_url=mosquitto.url,
                         tse={"id": "tse-1", "driver": "software", "algorithm": "P-256", "clients": ["KASSE-1"]},
                         pos={"listen": f"127.0.0.1:{pos_port}"}, http={"listen": f"127.0.0.1:{http_port}"})
    migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
    assert migrated.returncode == 0, migrated.stderr
    enrol(node_cfg, central_cfg)
    engine = make_engine(pg_url)
    procs: list[Proc] = []
    p = Plant(tmp_path, node, node_cfg, pos_port, engine, procs, http_port=http_port)
    try:
        procs.append(Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start())
        wait_until("central API", lambda: _get(f"http://127.0.0.1:{api_port}/health") in (200, 503), timeout_s=30,
                   procs=procs)
        p.start_edge()
        confirm_tse(central_cfg, p.api.get("/pos/v1/tse").json())  # central trusts the node's TSE from its first sale
        yield p
    finally:
        if p.pos is not None:
            p.pos.close()
        for proc in reversed(procs):
            proc.stop()
        engine.dispose()


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def test_the_same_receipt_after_an_agent_restart_is_signed_once(plant: Plant) -> None:
    first = plant.sale(receipt_id="B-4711")
    assert first.status_code == 200, first.text
    assert first.json()["replayed"] is False
    wait_until("the sale at central", lambda: plant.central_has("B-4711"), timeout_s=30, procs=plant.procs)

    plant.kill_edge()  # no clean stop: the answer was committed before it was sent
    plant.start_edge()
    again = plant.sale(receipt_id="B-4711")
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "replayed": True}
    changed = plant.sale(receipt_id="B-4711", amounts={"vat_19": "99.00"}, payments=[{"amount": "99.00",
                                                                                         "type": "Bar"}])
    assert changed.status_code == 409, changed.text
    assert changed.json()["error"]["field"] == "receipt_id"

    # the next sale takes the next number and counter: the replay and the 409 signed nothing
    later = plant.sale(receipt_id="B-4712").json()
    assert (later["tx_number"], later["start_counter"]) == (first.json()["tx_number"] + 1,
                                                            first.json()["signature_counter"] + 1)
    wait_until("the later sale at central", lambda: plant.central_has("B-4712"), timeout_s=30, procs=plant.procs)
    assert plant.at_central() == [(1, "B-4711", "valid"), (2, "B-4712", "valid")]
    assert plant.quarantined() == []


BAD_RECEIPT_IDS = ["B-1\x00", "\x00", "B\n2", "B\r\n", "B\t3", "B\x1b[2J", "B\x7f", "B\u202e4", "B\u2028",
                   "B\ud800", "B" * 65, "B" * 60_000]


def test_receipt_ids_central_would_refuse_are_refused_before_anything_is_signed(plant: Plant) -> None:
    first = plant.sale(receipt_id="ok-1").json()
    for bad in BAD_RECEIPT_IDS:
        body = json.dumps({**SALE, "receipt_id": bad})  # ensure_ascii: a lone surrogate is sent as \\ud800
        r = plant.api.post("/pos/v1/sales", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (bad[:20], r.text)
        assert r.json()["error"]["field"] == "receipt_id", r.text
    nul_only = plant.api.post("/pos/v1/sales", json={**SALE, "receipt_id": "\x00", "amounts": {"vat_0": "0.00"},
                                                      "payments": []})
    assert nul_only.status_code == 422, nul_only.text
    after = plant.sale(receipt_id="ok-2").json()
    # nothing signed in between: the next transaction number and signature counter
    assert (after["tx_number"], after["start_counter"]) == (first["tx_number"] + 1, first["signature_counter"] + 1)
    wait_until("both sales at central", lambda: plant.central_has("ok-2"), timeout_s=30, procs=plant.procs)
    assert plant.at_central() == [(1, "ok-1", "valid"), (2, "ok-2", "valid")]  # no gap
    assert plant.quarantined() == []
    assert plant.refused() == {"invalid": len(BAD_RECEIPT_IDS) + 1}  # counted on the node's /health
    assert plant.edge is not None
    plant.edge.check_alive()


def test_huge_bodies_are_refused_while_reading_and_the_agent_stays_small_and_up(plant: Plant) -> None:
    assert plant.sale().status_code == 200  # warm: the app, the TSE and the outbox in use
    base = f"http://127.0.0.1:{plant.pos_port}"
    token = {"Authorization": plant.api.headers["Authorization"]}
    rss_before = plant.rss_kib()
    for headers, chunked in (({}, False), (token, False), (token, True), ({}, True)):
        answer = stream_post(base, "/pos/v1/sales", total=BIG, chunked=chunked, timeout_s=30,
                             headers={"Content-Type": "application/json", **headers})
        what = f"{'chunked' if chunked else 'Content-Length'}, {'token' if headers else 'no token'}"
        if chunked and not headers:  # no token: refused before the body is read at all
            assert answer.status == 401, (what, answer)
        else:
            assert answer.status == 413, (what, answer)
            assert answer.json()["error"]["code"] == "payload_too_large", answer.body
        print(f"{what}: {answer.status} after {answer.seconds:.3f} s, {answer.sent} body bytes sent")  # -s: figures
        assert answer.seconds < 20, (what, answer.seconds)  # refused while reading, not after 60 MB
        assert answer.sent < 8 * 1024 * 1024, (what, answer.sent)  # far from the 60 MB: the server stopped reading
        plant.edge.check_alive()  # type: ignore[union-attr]
    assert plant.refused() == {"payload_too_large": 3, "unauthorized": 1}
    grown_kib = plant.rss_kib() - rss_before
    print(f"agent RSS {rss_before} KiB before, grew by {grown_kib} KiB")
    assert grown_kib < 16 * 1024, f"the agent's RSS grew by {grown_kib} KiB"
    ok = plant.sale(receipt_id="after-the-flood")
    assert ok.status_code == 200, ok.text
    wait_until("the sale at central", lambda: plant.central_has("after-the-flood"), timeout_s=30, procs=plant.procs)
    assert plant.quarantined() == []
