"""The shared sale rules (``sync.sales``), the node's receipt book (``edge.store.receipts`` in the outbox) and the POS
API's body limit (``edge.pos.api.BodyLimit``) without a network.

Checked: receipt ids with NUL, control, format or separator characters and overlong ones are refused naming the
field; amounts are ASCII decimal strings (non-ASCII digits, exponents, numbers refused); a total of 10**12 is refused;
central's record check (``central.fiscal.records``) quarantines exactly what the shared rules refuse; the kinds are the
processData kinds; a receipt's answer is committed with its record (or neither), survives reopening the outbox and is
pruned after its retention; the body limit answers 413 by Content-Length before the token and while a chunked body
streams, with the body cut off there.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from central.fiscal.records import BadTseRecord, tse_row
from edge.errors import OutboxError
from edge.pos.api import BearerAuth, BodyLimit
from edge.store.outbox import NewRecord, Outbox
from edge.store.receipts import DAY_NS, OutboxReceipts, Receipt
from protocols.tse.processdata import KINDS as PROCESS_KINDS
from protocols.tse.processdata import PROCESS_TYPE as PROCESS_PROCESS_TYPE
from sync.envelope import Record
from sync.sales import (
    KINDS,
    PROCESS_TYPE,
    SaleError,
    check_receipt_id,
    check_sale_record,
    check_total,
    clean_text,
    format_total,
    parse_amount,
)

BAD_RECEIPT_IDS = [
    ("B-1\x00", "U+0000"), ("\x00", "U+0000"), ("B\n1", "U+000A"), ("B\t1", "U+0009"), ("B\r", "U+000D"),
    ("B\x1b[31m", "U+001B"), ("B\x7f", "U+007F"), ("B\u0085", "U+0085"), ("B\u200b", "U+200B"),
    ("B\u202e1", "U+202E"), ("B\u2028", "U+2028"), ("B\ud800", "U+D800"), ("B\u00a0", "U+00A0"),
    ("", "empty"), ("B" * 65, "at most 64 characters"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "why"), BAD_RECEIPT_IDS)
def test_receipt_ids_with_control_characters_or_too_long_are_refused(value: str, why: str) -> None:
    with pytest.raises(SaleError) as info:
        check_receipt_id(value)
    assert info.value.field == "receipt_id"
    assert why in info.value.reason


@pytest.mark.parametrize("value", ["B-1001", "=HYPERLINK(\"x\")", "Bon 17/2024", "Rechnung Nr. ÄÖÜ-ß", "B" * 64, "€"])
def test_printable_receipt_ids_are_taken(value: str) -> None:
    assert check_receipt_id(value) == value  # formula-looking ones too: the CSV export neutralises them


@pytest.mark.parametrize("value", ["12", "12.5", "-3.00", "0.01", "999999999999.99", "-0"])
def test_amounts_are_ascii_decimal_strings(value: str) -> None:
    assert parse_amount(value, "amounts.vat_19") == Decimal(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [(12.5, "JSON numbers are refused"), (12, "JSON numbers are refused"), (None, "JSON numbers are refused"),
     ("١٢", "ASCII digits"), ("１２.００", "ASCII digits"), ("1e3", "not an amount"), ("NaN", "not an amount"),
     ("+1.00", "not an amount"), ("1.005", "more than two decimals"), ("1000000000000", "at most 12"),
     (" 1.00", "not an amount"), ("1.", "not an amount"), (".5", "not an amount"), ("1_000", "not an amount")],
)  # fmt: skip
def test_other_amounts_are_refused_naming_the_field(value: object, why: str) -> None:
    with pytest.raises(SaleError) as info:
        parse_amount(value, "payments[2].amount")
    assert info.value.field == "payments[2].amount"
    assert why in info.value.reason


def test_the_total_is_bounded_as_central_stores_it() -> None:
    assert format_total(Decimal("999999999999.99")) == "999999999999.99"
    assert format_total(Decimal("-0.00")) == "0.00"
    with pytest.raises(SaleError, match="more than 12 digits"):
        format_total(Decimal("1999999999999.98"))
    assert check_total("12.50") == Decimal("12.50")
    for bad in ("12.5", 12.5, "١٢.٥٠", "1000000000000.00", "1e2"):
        with pytest.raises(SaleError, match="expected a decimal number"):
            check_total(bad)


def test_the_kinds_and_process_type_are_those_of_the_processdata_builder() -> None:
    assert KINDS == PROCESS_KINDS
    assert PROCESS_TYPE == PROCESS_PROCESS_TYPE


def test_clean_text_leaves_nothing_central_refuses() -> None:
    assert clean_text("USB\x00 gone\nagain", limit=100) == "USB? gone?again"
    assert len(clean_text("x" * 5000)) == 1000


# -- central applies the same rules to the record ------------------------------------------------------------------
def _record(**data: Any) -> Record:
    base = {"client_id": "KASSE-1", "receipt_id": "B-1", "total": "1.00", "currency": "EUR", "tse_failed": True,
            "error": "no TSE", "process_type": PROCESS_TYPE, "process_data": "Beleg^1.00_0.00_0.00_0.00_0.00^"}
    return Record(seq=1, record_id="r-1", kind="tse_transaction", ts_ns=time.time_ns(), device="tse-1",
                  data={**base, **data})


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"receipt_id": "B\x00"}, "data.receipt_id: expected text without NUL"),
     ({"receipt_id": "B\n"}, "data.receipt_id: expected text without NUL or other control characters"),
     ({"receipt_id": "B" * 65}, "data.receipt_id: expected text of at most 64"),
     ({"client_id": "K\x1b"}, "data.client_id: expected text without NUL"),
     ({"total": 1.0}, "data.total: expected a decimal number"),
     ({"total": "١.٠٠"}, "data.total: expected a decimal number"),
     ({"total": "1000000000000.00"}, "data.total: expected a decimal number"),
     ({"currency": "EU1"}, "data.currency: expected an ISO 4217 code"),
     ({"process_type": "Kassenbeleg_V1"}, "data.process_type: expected a PrintableString"),
     ({"process_data": "Beleg\x00"}, "data.process_data: expected text without NUL")],
)  # fmt: skip
def test_central_quarantines_what_the_shared_rules_refuse(change: dict[str, Any], reason: str) -> None:
    record = _record(**change)
    with pytest.raises(SaleError):
        check_sale_record(record.data, signed=False)
    with pytest.raises(BadTseRecord) as info:
        tse_row(node="shop-1", record=record, received_at=datetime.now(UTC))
    assert reason in info.value.reason


def test_central_stores_a_record_the_shared_rules_take() -> None:
    record = _record(receipt_id="=1+2 Bon ÄÖÜ")
    check_sale_record(record.data, signed=False)
    row = tse_row(node="shop-1", record=record, received_at=datetime.now(UTC))
    assert (row.receipt_id, row.total, row.currency) == ("=1+2 Bon ÄÖÜ", Decimal("1.00"), "EUR")


# -- the receipt book in the outbox ---------------------------------------------------------------------------------
def _receipt(rid: str, record: NewRecord, *, created_ns: int | None = None) -> Receipt:
    return Receipt(client_id="KASSE-1", receipt_id=rid, digest="d-" + rid, answer={"tx_number": 7, "qr": "V0;…"},
                   record_id=record.record_id, created_ns=created_ns or time.time_ns())


def test_a_receipt_is_committed_with_its_record_and_survives_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", node_id="shop-1")
    record = NewRecord(kind="tse_transaction", device="tse-1", data={"total": "1.00"})
    box.append("business", [record], receipt=_receipt("B-1", record))
    box.close()
    box = Outbox(tmp_path / "outbox.db", node_id="shop-1")
    book = OutboxReceipts(box, lambda *a, **k: None)
    found = book.find("KASSE-1", "B-1")
    assert found is not None
    assert (found.digest, found.answer, found.record_id) == ("d-B-1", {"tx_number": 7, "qr": "V0;…"},
                                                              record.record_id)
    assert book.find("KASSE-2", "B-1") is None
    box.close()


def test_a_record_that_cannot_be_stored_leaves_no_receipt(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", node_id="shop-1")
    first = NewRecord(kind="tse_transaction", device="tse-1", data={})
    box.append("business", [first])
    clash = NewRecord(kind="tse_transaction", device="tse-1", data={"x": object()})  # not JSON: the insert fails
    with pytest.raises(TypeError):
        box.append("business", [clash], receipt=_receipt("B-2", clash))
    assert OutboxReceipts(box, lambda *a, **k: None).find("KASSE-1", "B-2") is None
    assert box.stats()["business"].produced == 1
    box.close()


def test_receipts_past_their_retention_are_pruned(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", node_id="shop-1")
    old, new = (NewRecord(kind="tse_transaction", device="tse-1", data={}) for _ in range(2))
    box.append("business", [old], receipt=_receipt("old", old, created_ns=time.time_ns() - 8 * DAY_NS))
    box.append("business", [new], receipt=_receipt("new", new))
    book = OutboxReceipts(box, lambda *a, **k: None, retention_days=7)  # prunes when made
    assert book.find("KASSE-1", "old") is None
    assert book.find("KASSE-1", "new") is not None
    box.close()
    with pytest.raises(OutboxError, match="cannot read the receipt book"):
        book.find("KASSE-1", "new")


# -- the body limit ----------------------------------------------------------------------------------------------
class _Sink:
    """An ASGI app that reads the whole body (as FastAPI does) and answers 200 with its size."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        more = True
        while more:
            message = await receive()
            self.read += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.read).encode()})


async def _call(app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[list[Any], int]:
    sent: list[Any] = []
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        body = chunks[pulled - 1] if pulled <= len(chunks) else b""
        return {"type": "http.request", "body": body, "more_body": pulled < len(chunks)}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/pos/v1/sales", "headers": headers}, receive, send)
    return sent, pulled


def test_the_body_limit_refuses_by_content_length_before_the_token_and_reading() -> None:
    sink = _Sink()
    app = BodyLimit(BearerAuth(sink, token="t" * 30), max_bytes=1024)
    sent, pulled = asyncio.run(_call(app, [(b"content-length", b"62914560")], [b"x" * 1024] * 3))
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"
    assert (pulled, sink.read, app.refused) == (0, 0, 1)


def test_the_body_limit_cuts_a_chunked_body_as_it_streams() -> None:
    sink = _Sink()
    app = BodyLimit(sink, max_bytes=1024)
    sent, pulled = asyncio.run(_call(app, [(b"transfer-encoding", b"chunked")], [b"x" * 400] * 100))
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]
    assert pulled == 3  # 1,200 bytes: over the limit at the third chunk, nothing read after it
    ok, _ = asyncio.run(_call(BodyLimit(_Sink(), max_bytes=1024), [], [b"x" * 512, b"x" * 512]))
    assert (ok[0]["status"], ok[1]["body"]) == (200, b"1024")
