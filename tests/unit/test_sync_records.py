"""The record kinds of ``sync.records``: every kind has a payload model, what the edge builds with it central's check
takes unchanged, and a record central cannot use is refused naming its field.

Checked: ``KINDS`` holds every model under its kind constant, and central has a handler for every kind but ``loss``;
each model's ``to_payload`` comes back equal through ``from_payload``; the payloads the edge's producers build
(``weighing_record``, ``DeviceHealth``) pass central's check; bad values are a ``DecodeError`` naming ``data.<field>``
(legal values as JSON numbers too); the ticket codes of a weighing never make it refused.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest

from central.ingest.handlers import HANDLERS
from edge.bus.health import DeviceHealth
from edge.devices.weighing import weighing_record
from edge.store.outbox import NewRecord
from sync.errors import DecodeError
from sync.records import (
    DEVICE_HEALTH,
    DEVICE_STATUS,
    KINDS,
    LOSS,
    POINT_EVENT,
    READING,
    TSE_TRANSACTION,
    WEIGHING,
    DeviceHealthPayload,
    DeviceStatusPayload,
    LossPayload,
    Payload,
    PointEventPayload,
    ReadingPayload,
    TseTransactionPayload,
    WeighingPayload,
)
from sync.records.weighing import TRIGGER_COMMAND, WeighingValues

KEY = base64.b64encode(b"\x04" + bytes(64)).decode()
SAMPLES: list[Payload] = [
    WeighingPayload(values=WeighingValues(unit="kg", raw="S S 16040 kg | TA A 14960 kg", net="16040", tare="14960",
                                          tare_preset=True, instrument_alibi="4711"),
                    scale_serial="0123456789", trigger=TRIGGER_COMMAND, reference="DN-4711", vehicle="B-AB 1234",
                    partner="P-1042", lot="L-1"),
    WeighingPayload(values=WeighingValues(unit="kg", raw=None, gross="24560")),
    TseTransactionPayload(
        client_id="KASSE-1", tse_serial=hashlib.sha256(b"k").hexdigest(), public_key=KEY,
        algorithm="ecdsa-plain-SHA256", time_format="unixTime", tx_number=7, signature_counter=15, start_counter=14,
        started_at="2021-08-23T14:36:33.000Z", finished_at="2021-08-23T14:36:34.000Z", log_time=1629729394,
        process_type="Kassenbeleg-V1", process_data="Beleg^12.50_0.00_0.00_0.00_0.00^12.50:Bar", signature=KEY,
        qr="V0;…", total="12.50", receipt_id="B-1001"),
    TseTransactionPayload(client_id="KASSE-1", tse_failed=True, error="TseUnavailable: no answer",
                          started_at="2021-08-23T14:36:33.000Z", finished_at="2021-08-23T14:36:33.000Z"),
    DeviceStatusPayload(status="offline", reason="timeout: no answer", device_kind="eastron-sdm630"),
    DeviceHealthPayload(device_kind="eastron-sdm630", online=True, last_ok_ns=1, last_error=None, rtt_ms_last=12.5,
                        rtt_ms_avg=11, counters={"polls": 3, "errors": {"timeout": 1}}),
    DeviceHealthPayload(),
    PointEventPayload(point="alarm", value=3, previous=None, device_kind="th-probe"),
    PointEventPayload(point="firmware", value="1.2", previous="1.1"),
    ReadingPayload(values={"voltage_l1": 230.1, "polls": 3}, units={"voltage_l1": "V"}),
    ReadingPayload(values={"rtt_ms": 1.5}, units={"rtt_ms": "ms"}, series="device_health"),
    LossPayload(records=120),
]


def test_every_kind_has_its_model_and_central_a_handler_for_it() -> None:
    assert set(KINDS) == {WEIGHING, TSE_TRANSACTION, DEVICE_STATUS, DEVICE_HEALTH, POINT_EVENT, READING, LOSS}
    assert all(kind == model.KIND for kind, model in KINDS.items())
    assert set(HANDLERS) == set(KINDS) - {LOSS}  # a loss record is the envelope's business (apply counts it)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: type(p).__name__)
def test_what_the_edge_builds_central_takes_unchanged(payload: Payload) -> None:
    assert type(payload).from_payload(payload.to_payload()) == payload


class Sink:
    def __init__(self) -> None:
        self.records: list[NewRecord] = []

    def emit(self, stream: str, records: Sequence[NewRecord]) -> None:
        self.records.extend(records)


def test_the_edge_producers_build_payloads_central_accepts() -> None:
    record = weighing_record("bridge-1", WeighingValues(unit="kg", raw="S S 24560 kg", gross="24560"),
                             scale_serial=None, trigger="auto", args={"reference": "DN-1", "preset_tare": "5"})
    payload = WeighingPayload.from_payload(record.data)
    assert (record.kind, payload.values.gross, payload.reference, payload.trigger) == (WEIGHING, "24560", "DN-1",
                                                                                       "auto")
    sink = Sink()
    health = DeviceHealth("meter-1", "eastron-sdm630", sink)
    health.failure("timeout", "no answer")
    health.success(0.012)
    health.stop("outbox full")
    built = [*sink.records, health.health_record(), health.health_reading()]
    assert [r.kind for r in built] == [DEVICE_STATUS, DEVICE_STATUS, DEVICE_HEALTH, READING]
    for r in built:
        KINDS[r.kind].from_payload(r.data)
    assert ReadingPayload.from_payload(built[-1].data).series == "device_health"


@pytest.mark.parametrize(("model", "data", "field", "reason"), [
    (WeighingPayload, {"gross": "heavy", "unit": "kg"}, "data.gross", "expected a decimal number, got 'heavy'"),
    (WeighingPayload, {"gross": "١٢٣", "unit": "kg"}, "data.gross", "ASCII digits"),
    (WeighingPayload, {"gross": 24560, "unit": "kg"}, "data.gross", "never as a JSON number"),
    (WeighingPayload, {"gross": 8420.5, "unit": "kg"}, "data.gross", "never as a JSON number"),
    (WeighingPayload, {"gross": "1.1234567", "unit": "kg"}, "data.gross", "more than 6 decimal places"),
    (WeighingPayload, {"gross": "1" * 13, "unit": "kg"}, "data.gross", "more than 12 digits"),
    (WeighingPayload, {"tare": "5", "unit": "kg"}, "data.gross", "expected a decimal number, got None"),
    (WeighingPayload, {"gross": "5"}, "data.unit", "expected a unit such as 'kg'"),
    (WeighingPayload, {"gross": "5", "unit": "kg", "tare_preset": "yes"}, "data.tare_preset", "true or false"),
    (WeighingPayload, {"gross": "5", "unit": "kg", "vehicle": "V" * 33}, "data.vehicle", "at most 32 characters"),
    (WeighingPayload, {"gross": "5", "unit": "kg", "raw": "S\x00"}, "data.raw", "without NUL"),
    (WeighingPayload, {"gross": "5", "unit": "kg", "stable": 1}, "data.stable", "true or false"),
    (ReadingPayload, {"values": {"v": 1.0}, "series": "gossip"}, "data.series", "expected one of"),
    (ReadingPayload, {"values": {"v": 1.0}, "series": ["readings"]}, "data.series", "expected one of"),
    (ReadingPayload, {"values": [1.0]}, "data.values", "point name → number"),
    (ReadingPayload, {"values": {"v": True}}, "data.values.v", "expected a number, got True"),
    (ReadingPayload, {"values": {"v": "1"}}, "data.values.v", "expected a number"),
    (ReadingPayload, {"values": {"v": 1}, "units": {"v": 1}}, "data.units.v", "unit as text"),
    (DeviceStatusPayload, {"reason": "x"}, "data.status", "missing"),
    (DeviceStatusPayload, {"status": "o" * 17}, "data.status", "at most 16 characters"),
    (DeviceStatusPayload, {"status": "offline", "reason": "a\x00"}, "data.reason", "without NUL"),
    (DeviceHealthPayload, {"counters": [1]}, "data.counters", "expected an object"),
    (DeviceHealthPayload, {"online": "yes"}, "data.online", "true or false"),
    (DeviceHealthPayload, {"last_ok_ns": -1}, "data.last_ok_ns", "whole number"),
    (PointEventPayload, {"point": "alarm", "value": {"a": 1}}, "data.value", "expected a text, a number"),
    (PointEventPayload, {"value": 1}, "data.point", "missing"),
    (TseTransactionPayload, {"client_id": "K", "tse_failed": "no"}, "data.tse_failed", "true or false"),
    (TseTransactionPayload, {"client_id": "K", "tse_failed": True}, "data.error", "missing"),
    (TseTransactionPayload, {"client_id": "K\x1b", "tse_failed": True, "error": "x"}, "data.client_id", "NUL"),
    (TseTransactionPayload, {"client_id": "K", "tse_failed": True, "error": "x", "started_at": 1},
     "data.started_at", "expected an ISO 8601 time"),
])
def test_a_payload_central_cannot_use_names_the_field(model: type[Payload], data: dict[str, Any], field: str,
                                                      reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        model.from_payload(data)
    assert info.value.field == field
    assert reason in info.value.reason


def test_the_ticket_codes_of_a_weighing_never_refuse_it() -> None:
    data = {"gross": "5", "unit": "kg", "partner": 1042, "lot": None, "delivery_note": "x" * 500,
            "direction": ["out"], "alibi": "not an alibi part", "future_field": {"a": 1}}
    payload = WeighingPayload.from_payload(data)
    assert (payload.partner, payload.lot, payload.delivery_note, payload.direction) == (None, None, "x" * 500, None)
    assert payload.alibi == "not an alibi part"  # checked by sync.alibi.parse_part, where it cannot cost the weighing
