"""500 sales at the counter end to end, with the network to the broker cut for part of the time (issue 7 §4).

Real parts: ``floorgate edge run`` with the software TSE and the sales API, a ``NetCut`` between the node and
mosquitto, ``floorgate central run`` on PostgreSQL. Five registers (three client ids) post 500 sales to the node's
API at once; the network is cut after 150 answers and restored after 350, so 200 sales are signed and stored while
central cannot be reached. Then central must hold exactly 500 transactions of the node, each verified, transaction
numbers 1..500 without gaps, signature counters 1..1000 without gaps (start + finish per sale), and every receipt
QR code must verify on its own — the one central holds and the one the register printed, which are the same.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from central.db.engine import make_engine, make_session_factory
from edge.store.outbox import read_stats
from protocols.tse.qr import parse_receipt_qr, verify_receipt_qr
from tests.api_support import TEST_JWT_SECRET, add_api_key
from tests.fiscal_support import confirm_tse
from tests.netcut import NetCut
from tests.procs import Proc, enrol, floorgate, wait_until
from tests.services import MosquittoServer, free_port

pytestmark = pytest.mark.e2e

SALES = 500
REGISTERS = 5
CLIENTS = ("KASSE-1", "KASSE-2", "KASSE-3")
CUT_AFTER, RESTORE_AFTER = 150, 350  # answers received
MIN_CUT_S = 6.0  # … and at least this long: the node notices a silent broker after about 1.5 keepalives
BUCKETS = ("vat_19", "vat_7", "vat_24_1_3", "vat_24_1_1", "vat_0")


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sale(rnd: random.Random, client: str, receipt: str) -> dict[str, Any]:
    """A sale with some of the five buckets (the §24 flat rates included) and one or two payments."""
    amounts = {b: f"{Decimal(rnd.randrange(1, 50_000)) / 100:.2f}" for b in rnd.sample(BUCKETS, rnd.randint(1, 3))}
    total = sum(Decimal(v) for v in amounts.values())
    card = Decimal(rnd.randrange(0, int(total * 100) + 1)) / 100 if rnd.random() < 0.5 else Decimal(0)
    payments = [{"amount": f"{total - card:.2f}", "type": "Bar"}]
    if card:
        payments.append({"amount": f"{card:.2f}", "type": "Unbar"})
    return {"client_id": client, "receipt_id": receipt, "amounts": amounts, "payments": payments}


@pytest.fixture
def net(mosquitto: MosquittoServer) -> Iterator[NetCut]:
    with NetCut(mosquitto.host, mosquitto.port) as cut:
        yield cut


def test_500_sales_with_the_network_cut_reach_central_verified_and_without_gaps(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, net: NetCut, unique_id: str,
) -> None:
    node = f"{unique_id}-shop"
    api_port, pos_port, health_port = free_port(), free_port(), free_port()
    procs: list[Proc] = []
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
    try:
        central_cfg = _write_yaml(tmp_path / "central.yaml", {
            "database_url": pg_url,
            "broker": {"url": mosquitto.url, "protocol": "5", "client_id": f"central-{unique_id}"},
            "metrics": {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")},
            "api": {"host": "127.0.0.1", "port": api_port},
            "auth": {"jwt_secret": TEST_JWT_SECRET},
            "ingest": {"replay_after_s": 5},
        })
        node_cfg = _write_yaml(tmp_path / "node.yaml", {
            "node_id": node,
            "data_dir": str(tmp_path / "edge"),
            "broker": {"url": net.url_for("mqtt"), "protocol": "5", "keepalive_s": 3},
            "uplink": {"ack_timeout_s": 2, "retry_min_s": 0.2, "retry_max_s": 2, "batch_max_records": 100},
            "health_interval_s": 1,
            "heartbeat_interval_s": 1,
            "http": {"listen": f"127.0.0.1:{health_port}"},
            "tse": {"id": "tse-1", "driver": "software", "algorithm": "brainpoolP384r1", "clients": list(CLIENTS)},
            "pos": {"listen": f"127.0.0.1:{pos_port}"},
        })
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(node_cfg, central_cfg)
        api.headers["X-API-Key"] = add_api_key(sessions, "auditor")
        central = Proc("central", ["central", "run", "--config", str(central_cfg)], tmp_path).start()
        procs.append(central)
        wait_until("central API", lambda: api.get("/health").status_code in (200, 503), timeout_s=30, procs=procs)
        edge = Proc("edge", ["edge", "run", "--config", str(node_cfg)], tmp_path).start()
        procs.append(edge)
        token_file = tmp_path / "edge" / "pos-token"
        wait_until("the POS token", lambda: token_file.exists() and token_file.read_text().strip(), timeout_s=30,
                   procs=procs)
        pos = httpx.Client(base_url=f"http://127.0.0.1:{pos_port}", timeout=5,
                           headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
        tse = wait_until("the POS API", lambda: (r := pos.get("/pos/v1/tse")).status_code == 200 and r.json(),
                         timeout_s=30, procs=procs)
        pos.close()
        assert (tse["failing"], tse["certified"]) == (None, False)
        confirm_tse(central_cfg, tse)  # the admin confirms the TSE in central's registry: its sales are trusted

        def rows_at_central() -> int:
            with engine.connect() as c:
                return int(c.execute(sa.text("SELECT count(*) FROM tse_transactions WHERE node_id=:n"),
                                     {"n": node}).scalar_one())

        # -- 500 sales from five registers at once; the network is cut after 150 answers, back after 350 --------
        seen: dict[str, int] = {}
        started = time.monotonic()
        answers = asyncio.run(_sell(pos_port, health_port, token_file.read_text().strip(), net, rows_at_central,
                                    seen))
        sold_s = time.monotonic() - started
        assert len(answers) == SALES
        assert not any(a["tse_failed"] for a in answers)
        # nothing got through while the network was cut, and the registers went on selling meanwhile
        assert seen["at_restore"] <= seen["answered_at_cut"] + REGISTERS, seen
        assert seen["answered_at_restore"] >= RESTORE_AFTER, seen
        assert seen["dropped"] > 0, seen

        # -- central: 500 transactions, verified ----------------------------------------------------------------
        wait_until(f"{SALES} TSE transactions at central", lambda: rows_at_central() >= SALES, timeout_s=60,
                   procs=procs)

        def listed() -> list[dict[str, Any]]:
            r = api.get("/api/v1/tse-transactions", params={"node_id": node, "limit": 500, "sort": "tx_number"})
            assert r.status_code == 200, r.text
            return list(r.json()["items"])

        items = wait_until("central's verification of every transaction", lambda: (
            got := listed()) and all(t["verified"] != "pending" for t in got) and got, timeout_s=30, procs=procs)
        assert len(items) == SALES
        bad = [(t["tx_number"], t["verified"], t["verify_error"]) for t in items if t["verified"] != "valid"]
        assert not bad, bad[:5]
        assert [t["tx_number"] for t in items] == list(range(1, SALES + 1))
        assert len({t["tse_serial"] for t in items}) == 1
        assert {t["tse_serial"] for t in items} == {tse["serial"]}

        # counters: start + finish per sale, 1..1000 without a gap, each sale's two counters adjacent
        with engine.connect() as c:
            counters = c.execute(sa.text("SELECT tx_number, start_counter, signature_counter FROM tse_transactions "
                                         "WHERE node_id=:n ORDER BY signature_counter"), {"n": node}).all()
        assert sorted([s for _, s, _ in counters] + [f for _, _, f in counters]) == list(range(1, 2 * SALES + 1))
        assert all(f == s + 1 for _, s, f in counters)
        finishes = [f for _, _, f in counters]
        assert finishes == sorted(set(finishes))  # strictly increasing

        # every receipt QR code verifies on its own; central's is the one the register got
        by_record = {a["record_id"]: a for a in answers}
        for t in items:
            check = verify_receipt_qr(t["qr"])
            assert check.valid, check.lines()
            qr = parse_receipt_qr(t["qr"])
            assert (qr.transaction_number, qr.signature_counter, qr.client_id) == (
                t["tx_number"], t["signature_counter"], t["client_id"])
            assert check.serial_hex == t["tse_serial"]
            assert by_record[t["record_id"]]["qr"] == t["qr"]
        assert {a["qr"] for a in answers} == {t["qr"] for t in items}

        # the node has nothing left to send
        _, stats = read_stats(tmp_path / "edge" / "outbox.db")
        assert stats["business"].pending == 0
        assert stats["business"].produced == SALES
        assert "Traceback" not in edge.log() + central.log()
        print(f"{SALES} sales in {sold_s:.1f} s ({SALES / sold_s:.0f}/s), network cut for "
              f"{seen['cut_s']:.1f} s; central verified all")
    finally:
        api.close()
        for p in reversed(procs):
            p.stop()
        engine.dispose()


async def _sell(pos_port: int, health_port: int, token: str, net: NetCut, rows_at_central: Any,
                seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Five registers sell the 500 sales; beside them the network is cut after ``CUT_AFTER`` answers and restored
    once ``RESTORE_AFTER`` answers are in and the node has noticed the broker is gone (its /health: degraded)."""
    rnd = random.Random(7)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for i in range(SALES):
        queue.put_nowait(_sale(rnd, CLIENTS[i % len(CLIENTS)], f"R-{i:04d}"))
    answers: list[dict[str, Any]] = []
    time_to_cut = asyncio.Event()

    async def register(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            r = await client.post("/pos/v1/sales", json=queue.get_nowait())
            assert r.status_code == 200, r.text
            answers.append(r.json())
            if len(answers) >= CUT_AFTER:
                time_to_cut.set()

    async def network(registers: asyncio.Future[Any]) -> None:
        await time_to_cut.wait()
        await asyncio.to_thread(net.cut)
        cut_at = time.monotonic()
        seen["answered_at_cut"] = len(answers)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}") as node_health:
            while (len(answers) < RESTORE_AFTER and not registers.done()) or time.monotonic() - cut_at < MIN_CUT_S \
                    or "degraded" not in seen.get("health_during_cut", ""):
                seen["health_during_cut"] = (await node_health.get("/health")).text
                assert time.monotonic() - cut_at < 30, f"the node did not notice the cut: {seen}"
                await asyncio.sleep(0.2)
        seen["at_restore"] = await asyncio.to_thread(rows_at_central)
        seen["answered_at_restore"] = len(answers)
        seen["dropped"] = net.bytes_dropped
        await asyncio.to_thread(net.restore)
        seen["cut_s"] = time.monotonic() - cut_at

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pos_port}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        registers = asyncio.gather(*(register(client) for _ in range(REGISTERS)))
        await asyncio.gather(registers, network(registers))
    return answers
