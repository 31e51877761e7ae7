"""The sync envelope: round trips, compression, and a precise error for every malformed batch."""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import Ack, Batch, DecodeError, Record, decode_ack, decode_batch, encode_ack, encode_batch, record_digest
from sync.topics import batch_topic, parse_batch_topic

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    first = draw(st.integers(1, 10**12))
    n = draw(st.integers(1, 30))
    records = tuple(
        Record(
            seq=first + i,
            record_id=draw(st.uuids()).hex,
            kind=draw(st.sampled_from(["weighing", "reading", "device_status"])),
            ts_ns=draw(st.integers(0, 2**63 - 1)),
            device=draw(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)),
            data=draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5)),
        )
        for i in range(n)
    )
    return Batch(node="mill-01", epoch="ab12", stream=draw(st.sampled_from(["business", "health", "readings"])),
                 records=records, sent_at_ns=draw(st.integers(0, 2**62)))


@given(batches())
def test_batch_round_trips(batch: Batch) -> None:
    decoded = decode_batch(encode_batch(batch))
    assert decoded == batch
    assert [record_digest(r) for r in decoded.records] == [record_digest(r) for r in batch.records]


def _big_batch() -> Batch:
    recs = tuple(
        Record(seq=i, record_id=f"id-{i}", kind="reading", ts_ns=i, device="meter-1",
               data={"values": {"voltage_l1": 230.1, "voltage_l2": 229.9}, "units": {"voltage_l1": "V"}})
        for i in range(1, 101)
    )
    return Batch(node="mill-01", epoch="e1", stream="readings", records=recs)


def test_large_batches_are_compressed_and_small_ones_are_not() -> None:
    big = encode_batch(_big_batch())
    assert big[:1] == b"Z"
    plain_size = len(json.dumps(json.loads(zlib.decompress(big[1:]))).encode())
    assert len(big) < plain_size / 3
    small = encode_batch(Batch(node="n", epoch="e", stream="business",
                               records=(Record(1, "r", "weighing", 1, "b", {"gross": "1"}),)))
    assert small[:1] == b"{"


def _payload(**overrides: object) -> bytes:
    obj: dict[str, object] = {
        "v": 1, "type": "batch", "node": "mill-01", "epoch": "e1", "stream": "business", "first_seq": 5,
        "last_seq": 6, "sent_at_ns": 0, "sig": None,
        "records": [
            {"seq": 5, "id": "a", "kind": "weighing", "ts_ns": 1, "device": "b", "data": {}},
            {"seq": 6, "id": "b", "kind": "weighing", "ts_ns": 2, "device": "b", "data": {}},
        ],
    }
    obj.update(overrides)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        (b"", "payload", "empty"),
        (b"\x00\x01garbage", "payload", "unknown encoding marker 0x00"),
        (b"{not json", "payload", "not valid JSON"),
        (b"Z\x00\x00corrupt", "payload", "corrupt zlib"),
        (b"[1, 2]", "payload", "unknown encoding marker"),
        (_payload(v=2), "v", "unsupported envelope version 2"),
        (_payload(type="ack"), "type", "expected 'batch'"),
        (_payload(node="a/+"), "node", "not a valid node id"),
        (_payload(stream="gossip"), "stream", "unknown stream 'gossip'"),
        (_payload(first_seq=True), "first_seq", "got a boolean"),
        (_payload(last_seq=9), "last_seq", "does not match the last record's seq 6"),
        (_payload(records=[]), "records", "at least one record"),
        (_payload(records=[{"seq": 5, "id": "a", "kind": "w", "ts_ns": 1, "device": "b", "data": {}},
                           {"seq": 7, "id": "b", "kind": "w", "ts_ns": 1, "device": "b", "data": {}}]),
         "records[1].seq", "expected seq 6"),
        (_payload(records=[{"seq": 5, "id": "a", "kind": "w", "ts_ns": "x", "device": "b", "data": {}},
                           {"seq": 6, "id": "b", "kind": "w", "ts_ns": 1, "device": "b", "data": {}}]),
         "records[0].ts_ns", "expected int, got str"),
        (_payload(records=[{"seq": 5, "id": "a", "kind": "w", "ts_ns": 1, "device": "b"},
                           {"seq": 6, "id": "b", "kind": "w", "ts_ns": 1, "device": "b", "data": {}}]),
         "records[0].data", "missing"),
    ],
)
def test_malformed_batches_name_the_field(payload: bytes, field: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_batch(payload)
    assert info.value.field == field
    assert fragment in info.value.reason


def test_ack_round_trip_and_errors() -> None:
    ack = Ack(node="mill-01", epoch="e1", stream="readings", acked_seq=42, held=(45, 46))
    assert decode_ack(encode_ack(ack)) == ack
    with pytest.raises(DecodeError, match="acked_seq"):
        decode_ack(json.dumps({"v": 1, "type": "ack", "node": "n", "epoch": "e", "stream": "health",
                               "acked_seq": -1}).encode())
    with pytest.raises(DecodeError, match="held"):
        decode_ack(json.dumps({"v": 1, "type": "ack", "node": "n", "epoch": "e", "stream": "health",
                               "acked_seq": 1, "held": ["x"]}).encode())


def test_topics_round_trip_and_reject_foreign_topics() -> None:
    assert parse_batch_topic(batch_topic("mill-01", "business")) == ("mill-01", "business")
    for bad in ("floorgate/v1/mill-01/up", "floorgate/v2/mill-01/up/business", "floorgate/v1/mill-01/up/x",
                "floorgate/v1/mill 01/up/business"):
        with pytest.raises(DecodeError):
            parse_batch_topic(bad)
    with pytest.raises(DecodeError):
        batch_topic("mill/#", "business")
