"""Property: whatever JSON a register (or an attacker with its token) posts to ``/pos/v1/sales``, the node either
refuses it with a 4xx naming the field — and signs nothing — or signs a sale whose record central stores (never
quarantines: that would be a gap in the TSE's sequence).

The real POS app (``edge.pos.api.make_pos_app``) with a real software TSE, in process; central's record check is
``central.fiscal.records.tse_row``. The budget comes from the hypothesis profile (``ci`` in ``make test``, ``fuzz``
in ``make fuzz``; registered in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from central.fiscal.records import BadTseRecord, tse_row
from edge.pos.api import make_pos_app
from edge.pos.config import TseConfig
from edge.pos.sales import PosService
from edge.store.outbox import NewRecord
from protocols.tse.processdata import KINDS
from protocols.tse.software import SoftwareTse
from sync.envelope import Record

TOKEN = "t" * 32
CLIENTS = ["KASSE-1", "KASSE-2"]
BUCKETS = ["vat_19", "vat_7", "vat_24_1_3", "vat_24_1_1", "vat_0"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
amount_text = st.one_of(
    st.from_regex(r"-?[0-9]{1,13}(\.[0-9]{0,3})?", fullmatch=True),
    st.sampled_from(["999999999999.99", "-999999999999.99", "0", "-0.00", "١٢.٥٠", "1e3", "NaN", " 1", ""]),
    st.text(max_size=8),
)
amount = st.one_of(amount_text, amount_text, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.none())
receipt_id = st.one_of(st.none(), st.text(max_size=70), st.text(alphabet=st.characters(max_codepoint=0x40),
                                                                 max_size=70), st.just("B-1"))
payment = st.fixed_dictionaries(
    {"amount": amount, "type": st.sampled_from(["Bar", "Unbar", "Cash"])},
    optional={"currency": st.sampled_from(["EUR", "CHF", "eur", "€€€", ""]), "extra": json_values},
)
sale_like = st.fixed_dictionaries(
    {"client_id": st.one_of(st.sampled_from(CLIENTS), st.text(max_size=40), json_values),
     "amounts": st.one_of(st.dictionaries(st.sampled_from([*BUCKETS, "vat_16"]), amount, max_size=6), json_values)},
    optional={"receipt_id": receipt_id, "kind": st.sampled_from(["Beleg", "AVRechnung", "Rechnung", ""]),
              "payments": st.one_of(st.lists(payment, max_size=4), json_values)},
)  # fmt: skip
valid_amount = st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,2})?", fullmatch=True)


@st.composite
def plausible_sale(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly sales the node takes, at the edges: 12-digit amounts (whose total may not fit), any printable or not
    receipt id, a Beleg paid in full, other kinds with any payments."""
    amounts = draw(st.dictionaries(st.sampled_from(BUCKETS), valid_amount, max_size=5))
    kind = draw(st.sampled_from(KINDS))
    total = sum((Decimal(v) for v in amounts.values()), Decimal(0))
    if kind == "Beleg" and draw(st.booleans()):
        payments: Any = [{"amount": f"{total:.2f}", "type": draw(st.sampled_from(["Bar", "Unbar"]))}]
    else:
        payments = draw(st.lists(st.fixed_dictionaries({"amount": valid_amount, "type": st.just("Unbar"),
                                                         "currency": st.sampled_from(["EUR", "CHF"])}), max_size=3))
    body = {"client_id": draw(st.sampled_from(CLIENTS)), "kind": kind, "amounts": amounts, "payments": payments}
    if (rid := draw(receipt_id)) is not None:
        body["receipt_id"] = rid
    return body


bodies = st.one_of(plausible_sale(), plausible_sale(), plausible_sale(), sale_like, sale_like, json_values)


@dataclass
class Pos:
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    records: list[NewRecord]
    service: PosService

    def post(self, body: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post("/pos/v1/sales", json=body))


@pytest.fixture(scope="module")
def pos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pos]:
    """One POS app on one event loop of its own for all examples (the TSE's counters run on, as on a node)."""
    directory: Path = tmp_path_factory.mktemp("fuzz-pos")
    records: list[NewRecord] = []
    cfg = TseConfig.model_validate({"id": "tse-1", "algorithm": "P-256", "clients": CLIENTS})
    service = PosService(cfg, data_dir=directory, emit=lambda _stream, new: records.extend(new),
                         open_driver=lambda: SoftwareTse(directory / "tse", curve="P-256"))
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=make_pos_app(service, TOKEN)),
                               base_url="http://pos", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        loop.run_until_complete(service.open())
        yield Pos(loop, client, records, service)
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(service.drain())
        loop.close()


@pytest.mark.timeout(3600 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 300)  # 5,000 TSE signatures
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies)
def test_the_pos_refuses_naming_a_field_or_signs_what_central_stores(pos: Pos, body: Any) -> None:
    records, service = pos.records, pos.service
    before = len(records)
    counter = service.info.signature_counter if service.info else None
    r = pos.post(body)
    event(f"status {r.status_code}")
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, r.text
        error = r.json()["error"]
        assert error["code"], error
        assert error["message"], error
        assert error["field"] or not isinstance(body, dict), error  # only a body that is no object names none
        assert len(records) == before  # nothing recorded …
        if counter is not None and service.info is not None:
            assert service.info.signature_counter == counter  # … and nothing signed
        return
    answer = r.json()
    if answer["replayed"]:
        assert len(records) == before
        return
    [record] = records[before:]
    assert answer["tse_failed"] is False, answer
    data = dict(record.data)
    row = Record(seq=1, record_id=record.record_id, kind=record.kind, ts_ns=record.ts_ns, device=record.device,
                 data=data)
    try:
        stored = tse_row(node="shop-1", record=row, received_at=datetime.now(UTC))
    except BadTseRecord as exc:
        pytest.fail(f"central would quarantine a sale the node signed: {exc.reason} (body {body!r})")
    assert stored.receipt_id == (body.get("receipt_id") if isinstance(body, dict) else None)
