"""The counter's sales API on a real agent: software TSE, real outbox, HTTP on 127.0.0.1 (no broker needed).

Checked: a sale is signed (start + finish), its ``tse_transaction`` record is in the outbox when the answer
arrives, and the receipt QR code verifies on its own; concurrent sales are signed one at a time (each sale's two
counters adjacent, numbers without gaps); the token is required; bad input is a 422 naming the field and signs
nothing; a failing TSE (a driver that raises, a TSE locked by another process) still completes the sale with
"TSE ausgefallen", records the failure and raises the node alarm until the TSE signs again; explicit start /
finish; a retried receipt gets the first answer, also after the agent restarted; sales in flight when the agent is
stopped are recorded.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.agent import Agent
from edge.config import parse_config
from edge.pos.sales import TSE_FAILED
from edge.runtime.http import health
from protocols.tse.api import TransactionResult, TseInfo
from protocols.tse.errors import TseUnavailable
from protocols.tse.processdata import parse_kassenbeleg_v1
from protocols.tse.qr import parse_receipt_qr, verify_receipt_qr
from protocols.tse.software import SoftwareTse
from sync.records import TSE_TRANSACTION
from tests.downlink_support import TRUST
from tests.services import free_port

pytestmark = pytest.mark.integration

SALE = {"client_id": "KASSE-1", "amounts": {"vat_19": "10.00", "vat_7": "2.50", "vat_24_1_3": "107.00",
                                            "vat_24_1_1": "5.55", "vat_0": "0.45"},
        "payments": [{"amount": "100.00", "type": "Bar"}, {"amount": "25.50", "type": "Unbar"}]}
PROCESS_DATA = "Beleg^10.00_2.50_107.00_5.55_0.45^100.00:Bar_25.50:Unbar"


class FlakyTse:
    """A software TSE that fails (``TseUnavailable``) in the operations named in ``fail`` and waits ``delay_s`` in
    each start / finish — as a TSE pulled out, or a slow one."""

    def __init__(self, directory: Path, **kwargs: Any) -> None:
        self.tse = SoftwareTse(directory, **kwargs)
        self.fail: set[str] = set()
        self.delay_s = 0.0

    def _maybe_fail(self, operation: str) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if operation in self.fail:
            raise TseUnavailable(f"{operation}: the TSE does not answer (test)")

    def info(self) -> TseInfo:
        return self.tse.info()

    def self_test(self) -> None:
        self.tse.self_test()

    def update_time(self, unix_time: float | None = None) -> None:
        self.tse.update_time(unix_time)

    def register_client(self, client_id: str) -> None:
        self.tse.register_client(client_id)

    def start_transaction(self, client_id: str, process_data: bytes | str = b"", process_type: str = "", *,
                          additional_data: bytes | None = None) -> TransactionResult:
        self._maybe_fail("start")
        return self.tse.start_transaction(client_id, process_data, process_type, additional_data=additional_data)

    def update_transaction(self, client_id: str, transaction_number: int, process_data: bytes | str,
                           process_type: str) -> TransactionResult:
        return self.tse.update_transaction(client_id, transaction_number, process_data, process_type)

    def finish_transaction(self, client_id: str, transaction_number: int, process_data: bytes | str,
                           process_type: str, *, additional_data: bytes | None = None) -> TransactionResult:
        self._maybe_fail("finish")
        return self.tse.finish_transaction(client_id, transaction_number, process_data, process_type,
                                           additional_data=additional_data)

    def export(self, **kwargs: Any) -> bytes:
        return self.tse.export(**kwargs)

    def close(self) -> None:
        self.tse.close()


@dataclass
class Node:
    agent: Agent
    task: asyncio.Task[None]
    api: httpx.AsyncClient
    token: str
    data_dir: Path

    def records(self) -> list[dict[str, Any]]:
        """The tse_transaction records in the outbox, read through a connection of our own."""
        db = sqlite3.connect(f"file:{self.data_dir / 'outbox.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT record_id, kind, device, data FROM outbox WHERE stream='business' "
                              "ORDER BY seq").fetchall()
        finally:
            db.close()
        return [{"record_id": r[0], "kind": r[1], "device": r[2], **json.loads(r[3])} for r in rows]

    async def sale(self, **changes: Any) -> httpx.Response:
        return await self.api.post("/pos/v1/sales", json={**SALE, **changes})

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task], timeout=10)
        assert self.task.done(), "the agent did not stop within 10 s"


async def start_node(tmp_path: Path, *, tse_driver: Callable[[], Any] | None = None,
                     algorithm: str = "P-256", clients: tuple[str, ...] = ("KASSE-1", "KASSE-2")) -> Node:
    port = free_port()
    data_dir = tmp_path / "edge"
    cfg = parse_config({
        "node_id": "shop-1", "data_dir": str(data_dir), "broker": {"url": "mqtt://127.0.0.1:1"}, **TRUST,
        "http": {"listen": None},
        "tse": {"id": "tse-1", "algorithm": algorithm, "clients": list(clients)},
        "pos": {"listen": f"127.0.0.1:{port}"},
    }, source="test")
    agent = Agent(cfg, tse_driver=tse_driver)
    token = (data_dir / "pos-token").read_text().strip()
    task = asyncio.create_task(agent.run(), name="agent")
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                            timeout=20)
    deadline = time.monotonic() + 15
    while True:
        assert not task.done(), f"the agent ended: {task.exception() if not task.cancelled() else 'cancelled'}"
        try:
            if (await api.get("/pos/v1/tse")).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the POS API did not come up"
        await asyncio.sleep(0.05)
    return Node(agent, task, api, token, data_dir)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = await start_node(tmp_path)
    try:
        yield n
    finally:
        await n.api.aclose()
        await n.stop()


@pytest.mark.parametrize("algorithm", ["brainpoolP384r1", "P-256"])
async def test_a_sale_is_recorded_before_the_answer_and_its_qr_verifies(tmp_path: Path, algorithm: str) -> None:
    n = await start_node(tmp_path, algorithm=algorithm)
    try:
        first = await n.sale(receipt_id="B-1")
        assert first.status_code == 200, first.text
        answer = first.json()
        # the record is in the outbox now, read by another connection: stored before the answer was sent
        (record,) = n.records()
        assert (record["kind"], record["device"], record["record_id"]) == (
            TSE_TRANSACTION, "tse-1", answer["record_id"])
        assert answer["tse_failed"] is False
        assert answer["message"] is None
        assert (answer["tx_number"], answer["start_counter"], answer["signature_counter"]) == (1, 1, 2)
        assert answer["process_data"] == PROCESS_DATA
        assert answer["total"] == "125.50"
        checked = verify_receipt_qr(answer["qr"])
        assert checked.valid, checked.lines()
        qr = parse_receipt_qr(answer["qr"])
        assert (qr.client_id, qr.process_type, qr.process_data) == ("KASSE-1", "Kassenbeleg-V1", PROCESS_DATA)
        assert (qr.transaction_number, qr.signature_counter, qr.start, qr.end) == (
            1, 2, answer["started_at"], answer["finished_at"])
        assert checked.serial_hex == answer["tse_serial"]
        expected_algorithm = "ecdsa-plain-SHA384" if algorithm == "brainpoolP384r1" else "ecdsa-plain-SHA256"
        assert record == {
            "record_id": answer["record_id"], "kind": TSE_TRANSACTION, "device": "tse-1",
            "tse_serial": answer["tse_serial"], "public_key": answer["public_key"], "algorithm": expected_algorithm,
            "time_format": "unixTime", "client_id": "KASSE-1", "tx_number": 1, "signature_counter": 2,
            "start_counter": 1, "started_at": answer["started_at"], "finished_at": answer["finished_at"],
            "log_time": parse_unix(answer["finished_at"]), "process_type": "Kassenbeleg-V1",
            "process_data": PROCESS_DATA, "signature": answer["signature"], "qr": answer["qr"], "total": "125.50",
            "currency": "EUR", "receipt_id": "B-1", "tse_failed": False, "error": None,
        }  # fmt: skip
        beleg = parse_kassenbeleg_v1(record["process_data"])
        assert (beleg.vat_24_1_3, beleg.vat_24_1_1) == (beleg.vat_24_1_3.__class__("107.00"),
                                                        beleg.vat_24_1_1.__class__("5.55"))
        tse = (await n.api.get("/pos/v1/tse")).json()
        assert (tse["serial"], tse["certified"], tse["failing"], tse["sales"]) == (answer["tse_serial"], False,
                                                                                   None, 1)
    finally:
        await n.api.aclose()
        await n.stop()


def parse_unix(iso: str) -> int:
    from protocols.tse.qr import parse_iso_time

    return parse_iso_time(iso)[0]


async def test_concurrent_sales_are_signed_one_at_a_time(node: Node) -> None:
    async def register(no: int, client: str, count: int) -> list[dict[str, Any]]:
        out = []
        for i in range(count):
            r = await node.sale(client_id=client, receipt_id=f"{no}-{i}",
                                amounts={"vat_19": f"{i}.99"}, payments=[{"amount": f"{i}.99", "type": "Unbar"}])
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out

    batches = await asyncio.gather(*(register(no, c, 15) for no, c in enumerate(("KASSE-1", "KASSE-2") * 2)))
    answers = [a for batch in batches for a in batch]
    assert sorted(a["tx_number"] for a in answers) == list(range(1, 61))
    assert all(a["signature_counter"] == a["start_counter"] + 1 == 2 * a["tx_number"] for a in answers)
    assert all(verify_receipt_qr(a["qr"]).valid for a in answers)
    records = node.records()
    assert [r["tx_number"] for r in records] == list(range(1, 61))  # stored in the TSE's order
    assert {r["record_id"] for r in records} == {a["record_id"] for a in answers}


async def test_the_token_is_required_and_made_private(node: Node) -> None:
    path = node.data_dir / "pos-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(node.token) >= 24
    async with httpx.AsyncClient(base_url=node.api.base_url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token-wrong"},
                        {"Authorization": f"Basic {node.token}"}):
            r = await anonymous.post("/pos/v1/sales", json=SALE, headers=headers)
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["code"] == "unauthorized"
        r = await anonymous.post("/pos/v1/sales", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 401  # before the body is looked at
        assert (await anonymous.get("/pos/v1/openapi.json")).status_code == 401
    assert node.records() == []
    assert (await node.api.get("/pos/v1/openapi.json")).status_code == 200


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"amounts": {"vat_7": "2.505"}}, "amounts.vat_7", "more than two decimals"),
        ({"amounts": {"vat_7": 2.5}}, "amounts.vat_7", "as a string"),
        ({"amounts": {"vat_7": "2,50"}}, "amounts.vat_7", "is not an amount"),
        ({"amounts": {"vat_16": "1.00"}}, "amounts.vat_16", "unknown field; the VAT buckets are vat_19, vat_7"),
        ({"amounts": {"vat_19": "1.00"}, "payments": [{"amount": "1.00", "type": "Card"}]}, "payments[0].type",
         "'Bar' or 'Unbar'"),
        ({"amounts": {"vat_19": "1.00"}, "payments": [{"amount": "1.00", "type": "Bar", "currency": "eur"}]},
         "payments[0].currency", "pattern"),
        ({"amounts": {"vat_19": "1.00"}, "payments": [{"amount": "1.001", "type": "Bar"}]}, "payments[0].amount",
         "more than two decimals"),
        ({"amounts": {"vat_19": "1.00"}, "payments": [{"amount": "0.99", "type": "Bar"}]}, "payments",
         "the payments add up to 0.99, the amounts to 1.00"),
        ({"amounts": {"vat_19": "1.00"}, "payments": []}, "payments", "add up to 0.00"),
        ({"client_id": "KASSE-9"}, "client_id", "not a client of TSE tse-1"),
        ({"kind": "Rechnung"}, "kind", "not a Kassenbeleg-V1 kind"),
        ({"receipt_id": ""}, "receipt_id", "at least 1 character"),
        ({"receipt_id": "B-1\x00"}, "receipt_id", "without NUL or other control characters, got U+0000"),
        ({"receipt_id": "B-1\n2"}, "receipt_id", "got U+000A"),
        ({"receipt_id": "B" * 65}, "receipt_id", "at most 64 characters"),
        ({"amounts": {"vat_7": "١٢.٥٠"}}, "amounts.vat_7", "ASCII digits"),
        ({"kind": "AVRechnung", "payments": [], "amounts": {"vat_19": "999999999999.99", "vat_7": "0.01"}},
         "amounts", "more than 12 digits before the point"),
        ({"amount": {}}, "amounts", "Field required"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field_and_signs_nothing(
        node: Node, changes: dict[str, Any], field: str, text: str) -> None:
    body = {**SALE, **changes}
    if "amount" in changes:
        del body["amounts"]
    r = await node.api.post("/pos/v1/sales", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field, error
    assert text in error["message"], error
    assert node.records() == []
    info = node.agent.pos.info if node.agent.pos else None
    assert info is not None
    assert info.signature_counter == 0  # as opened: nothing signed since


async def test_foreign_currency_and_other_kinds_are_not_checked_against_the_total(node: Node) -> None:
    r = await node.sale(amounts={"vat_19": "10.00"}, payments=[{"amount": "11.00", "type": "Bar", "currency": "CHF"}])
    assert r.status_code == 200, r.text
    assert r.json()["process_data"] == "Beleg^10.00_0.00_0.00_0.00_0.00^11.00:Bar:CHF"
    r = await node.sale(kind="AVRechnung", amounts={"vat_7": "-3.5"}, payments=[])
    assert r.status_code == 200, r.text
    assert r.json()["process_data"] == "AVRechnung^0.00_-3.50_0.00_0.00_0.00^"
    assert verify_receipt_qr(r.json()["qr"]).valid


async def test_a_failing_tse_still_completes_the_sale_and_raises_the_alarm(tmp_path: Path) -> None:
    made: list[FlakyTse] = []

    def driver() -> FlakyTse:
        made.append(FlakyTse(tmp_path / "edge" / "tse", curve="P-256"))
        return made[-1]

    n = await start_node(tmp_path, tse_driver=driver)
    try:
        ok = (await n.sale()).json()
        assert ok["tse_failed"] is False
        made[-1].fail = {"finish"}  # the TSE goes away between start and finish
        r = await n.sale(receipt_id="B-2")
        assert r.status_code == 200, r.text
        failed = r.json()
        assert (failed["tse_failed"], failed["message"]) == (True, TSE_FAILED)
        assert (failed["signature"], failed["signature_counter"], failed["qr"]) == (None, None, None)
        assert (failed["tx_number"], failed["start_counter"]) == (2, 3)  # the start was signed
        assert "FinishTransaction of transaction 2: TseUnavailable: finish: the TSE does not answer" in failed["error"]
        record = n.records()[-1]
        assert record["record_id"] == failed["record_id"]
        assert (record["tse_failed"], record["signature"], record["qr"], record["log_time"]) == (True, None, None,
                                                                                                 None)
        assert record["error"] == failed["error"]
        assert record["tse_serial"] == ok["tse_serial"]  # known from when it worked
        assert record["process_data"] == PROCESS_DATA
        code, body = health(n.agent)
        assert code == 503
        assert any(a.startswith(f"TSE tse-1: {TSE_FAILED}: FinishTransaction") for a in body["alarms"]), body
        # still failing: the next sale opens the TSE again, fails at the start
        made[-1].close()
        failing = driver  # every new one fails too
        n.agent.pos.open_driver = lambda: _failing(failing(), {"start"})  # type: ignore[union-attr]
        r = await n.sale()
        assert (r.json()["tse_failed"], r.json()["tx_number"], r.json()["start_counter"]) == (True, None, None)
        assert "StartTransaction: TseUnavailable" in r.json()["error"]
        # the TSE is back: signed again, numbers go on (transaction 2 stays open in the TSE), the alarm is gone
        n.agent.pos.open_driver = driver  # type: ignore[union-attr]
        back = (await n.sale()).json()
        assert (back["tse_failed"], back["tx_number"], back["start_counter"], back["signature_counter"]) == (
            False, 3, 4, 5)
        assert verify_receipt_qr(back["qr"]).valid
        assert health(n.agent)[1]["alarms"] == []
        assert [r["tse_failed"] for r in n.records()] == [False, True, True, False]
    finally:
        await n.api.aclose()
        await n.stop()


def _failing(tse: FlakyTse, operations: set[str]) -> FlakyTse:
    tse.fail = operations
    return tse


async def test_a_tse_locked_by_another_process_fails_sales_until_it_is_free(tmp_path: Path) -> None:
    other = SoftwareTse(tmp_path / "edge" / "tse", curve="P-256")  # holds the TSE's lock, as another process would
    n = await start_node(tmp_path)
    try:
        assert "in use by another process" in (n.agent.pos.failing or "")  # type: ignore[union-attr]
        r = await n.sale()
        assert r.status_code == 200, r.text
        failed = r.json()
        assert (failed["tse_failed"], failed["message"], failed["tse_serial"], failed["tx_number"]) == (
            True, TSE_FAILED, None, None)
        assert "in use by another process" in failed["error"]
        assert n.records()[0]["tse_failed"] is True
        assert any("in use by another process" in a for a in health(n.agent)[1]["alarms"])
        other.close()
        ok = (await n.sale()).json()
        assert (ok["tse_failed"], ok["tx_number"]) == (False, 1)
        assert verify_receipt_qr(ok["qr"]).valid
        assert health(n.agent)[1]["alarms"] == []
    finally:
        other.close()
        await n.api.aclose()
        await n.stop()


async def test_explicit_start_and_finish(node: Node) -> None:
    started = await node.api.post("/pos/v1/transactions", json={"client_id": "KASSE-1"})
    assert started.status_code == 200, started.text
    start = started.json()
    assert (start["tx_number"], start["signature_counter"], start["tse_failed"]) == (1, 1, False)
    between = (await node.sale(client_id="KASSE-2")).json()  # another register sells meanwhile
    assert (between["tx_number"], between["start_counter"], between["signature_counter"]) == (2, 2, 3)
    other = await node.api.post(f"/pos/v1/transactions/{start['tx_number']}/finish",
                                json={**SALE, "client_id": "KASSE-2"})
    assert other.status_code == 409, other.text
    assert other.json()["error"]["field"] == "client_id"
    done = await node.api.post(f"/pos/v1/transactions/{start['tx_number']}/finish", json={**SALE, "receipt_id": "X"})
    assert done.status_code == 200, done.text
    answer = done.json()
    assert (answer["tx_number"], answer["start_counter"], answer["signature_counter"]) == (1, 1, 4)
    assert answer["started_at"] == start["started_at"]
    assert verify_receipt_qr(answer["qr"]).valid
    again = await node.api.post(f"/pos/v1/transactions/{start['tx_number']}/finish", json=SALE)
    assert again.status_code == 404, again.text
    assert again.json()["error"]["field"] == "tx_number"
    assert [(r["tx_number"], r["start_counter"], r["signature_counter"]) for r in node.records()] == [
        (2, 2, 3), (1, 1, 4)]


async def test_a_retried_receipt_gets_the_first_answer(node: Node) -> None:
    first = (await node.sale(receipt_id="B-77")).json()
    again = (await node.sale(receipt_id="B-77")).json()
    assert again == {**first, "replayed": True}
    other = await node.sale(receipt_id="B-77", amounts={"vat_19": "1.00"}, payments=[{"amount": "1.00", "type": "Bar"}])
    assert other.status_code == 409, other.text
    assert other.json()["error"]["field"] == "receipt_id"
    assert len(node.records()) == 1


async def test_sales_in_flight_are_recorded_when_the_agent_stops(tmp_path: Path) -> None:
    slow: list[FlakyTse] = []

    def driver() -> FlakyTse:
        slow.append(FlakyTse(tmp_path / "edge" / "tse", curve="P-256"))
        slow[-1].delay_s = 0.02
        return slow[-1]

    n = await start_node(tmp_path, tse_driver=driver)
    answered: list[dict[str, Any]] = []

    async def register() -> None:
        while True:
            try:
                r = await n.sale()
            except httpx.TransportError:
                return
            if r.status_code != 200:
                assert r.status_code == 503, r.text  # the node is stopping
                return
            answered.append(r.json())

    clients = [asyncio.create_task(register()) for _ in range(4)]
    ours = {asyncio.current_task(), *clients}
    try:
        await asyncio.sleep(0.8)
        t0 = time.monotonic()
        await n.stop()
        assert time.monotonic() - t0 < 5
        await asyncio.sleep(0.05)
        left = [t for t in asyncio.all_tasks() if t not in ours and not t.done()]
        assert not left, f"tasks of the agent outlive it: {left}"
        await asyncio.wait(clients, timeout=10)
    finally:
        for c in clients:
            c.cancel()
        await n.api.aclose()
    assert answered
    records = n.records()
    assert {a["record_id"] for a in answered} <= {r["record_id"] for r in records}
    with SoftwareTse(tmp_path / "edge" / "tse") as tse:  # every signature the TSE gave is in the outbox
        info = tse.info()
    assert info.signature_counter == 2 * len(records)
    assert [r["tx_number"] for r in records] == list(range(1, info.transaction_number + 1))


async def test_a_port_in_use_is_an_alarm_and_the_agent_goes_on(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = parse_config({
            "node_id": "shop-1", "data_dir": str(tmp_path / "edge"), "broker": {"url": "mqtt://127.0.0.1:1"}, **TRUST,
            "http": {"listen": None}, "tse": {"id": "tse-1", "clients": ["KASSE-1"]},
            "pos": {"listen": f"127.0.0.1:{port}"},
        }, source="test")
        agent = Agent(cfg)
        task = asyncio.create_task(agent.run())
        try:
            for _ in range(200):
                if any("POS API not available" in a for a in agent.alarms()):
                    break
                await asyncio.sleep(0.05)
            assert agent.alarms() == [f"POS API not available: cannot listen on 127.0.0.1:{port}"]
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.wait([task], timeout=10)
    assert task.cancelled()


async def test_a_receipt_is_answered_once_also_across_a_restart_of_the_agent(tmp_path: Path) -> None:
    """The answer is in the outbox database with the sale's record: after a restart the same receipt gets it
    (``replayed``), nothing is signed again; other amounts under it are a 409; a sale without receipt id is new."""
    node = await start_node(tmp_path)
    try:
        first = await node.sale(receipt_id="B-restart")
        assert first.status_code == 200, first.text
    finally:
        await node.api.aclose()
        await node.stop()
    node = await start_node(tmp_path)
    try:
        counter = node.agent.pos.info.signature_counter if node.agent.pos and node.agent.pos.info else None
        again = await node.sale(receipt_id="B-restart")
        assert again.status_code == 200, again.text
        assert again.json() == {**first.json(), "replayed": True}
        other = await node.sale(receipt_id="B-restart", amounts={"vat_0": "1.00"},
                                payments=[{"amount": "1.00", "type": "Bar"}])
        assert (other.status_code, other.json()["error"]["field"]) == (409, "receipt_id")
        assert counter == 2  # the first sale's start and finish: nothing signed since
        assert node.agent.pos is not None
        assert node.agent.pos.info is not None
        assert node.agent.pos.info.signature_counter == 2
        assert [r["receipt_id"] for r in node.records()] == ["B-restart"]
        assert (await node.sale(receipt_id="B-other")).json()["tx_number"] == 2
    finally:
        await node.api.aclose()
        await node.stop()
