"""The sync envelope: round trips, compression, and a precise error for every malformed batch."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from sync import (
    Ack,
    Batch,
    DecodeError,
    Heartbeat,
    Record,
    Replay,
    StreamBacklog,
    decode_ack,
    decode_batch,
    decode_heartbeat,
    decode_replay,
    encode_ack,
    encode_batch,
    encode_heartbeat,
    encode_replay,
    record_digest,
)
from sync.signing import generate_key, sign, verify
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


# -- signatures, ranges (from_seq), heartbeats and replay requests ---------------------------------------------------

def _signed(batch: Batch, key: Ed25519PrivateKey) -> bytes:
    return encode_batch(batch, signer=lambda body: sign(key, body))


def _small_batch() -> Batch:
    return Batch(node="mill-01", epoch="e1", stream="business", bno=(3 << 32) + 7, boot_id="boot-a",
                 sent_at_ns=1_732_400_000_000_000_000, sent_mono_ns=81_234_000_000,
                 records=(Record(41, "w-41", "weighing", 1_732_400_000_000_000_000, "bridge-1",
                                 {"gross": "24560", "unit": "kg", "note": "Weizen ü"}, mono_ns=5),))


def _inflate(payload: bytes) -> dict[str, object]:
    body = zlib.decompress(payload[1:]) if payload[:1] == b"Z" else payload
    obj = json.loads(body)
    assert isinstance(obj, dict)
    return obj


def _deflate(obj: dict[str, object], compressed: bool) -> bytes:
    body = json.dumps(obj).encode()
    return b"Z" + zlib.compress(body) if compressed else body


@pytest.mark.parametrize(("make", "marker"), [(_small_batch, b"{"), (_big_batch, b"Z")])
def test_a_signed_batch_verifies_after_decoding(make: Callable[[], Batch], marker: bytes) -> None:
    key = generate_key()
    batch = make()
    payload = _signed(batch, key)
    assert payload[:1] == marker  # the small one travels plain, the big one deflated
    decoded = decode_batch(payload)
    assert decoded.sig is not None
    assert verify(key.public_key(), decoded.signed_body, decoded.sig) is None
    assert decoded == replace(batch, sig=decoded.sig)
    assert (decoded.bno, decoded.boot_id, decoded.sent_mono_ns) == (batch.bno, batch.boot_id, batch.sent_mono_ns)
    assert verify(generate_key().public_key(), decoded.signed_body, decoded.sig) is not None  # another node's key
    # decoding and encoding again by other means (key order, spacing, compression) keeps the signature valid
    again = decode_batch(_deflate(_inflate(payload), compressed=marker != b"Z"))
    assert verify(key.public_key(), again.signed_body, again.sig) is None


@pytest.mark.parametrize(("make", "compressed"), [(_small_batch, False), (_big_batch, True)])
def test_altering_one_value_of_a_signed_batch_breaks_the_signature(make: Callable[[], Batch],
                                                                   compressed: bool) -> None:
    key = generate_key()
    obj = _inflate(_signed(make(), key))
    records = obj["records"]
    assert isinstance(records, list)
    if compressed:
        records[50]["data"]["values"]["voltage_l1"] = 231.1
    else:
        records[0]["data"]["gross"] = "24650"
    tampered = decode_batch(_deflate(obj, compressed))
    assert verify(key.public_key(), tampered.signed_body, tampered.sig) == (
        "signature does not match the node's registered key (forged or altered)")
    obj2 = _inflate(_signed(make(), key))
    obj2["bno"] = 1  # an envelope field counts as much as a record
    old = decode_batch(_deflate(obj2, compressed))
    assert verify(key.public_key(), old.signed_body, old.sig) is not None


def _reading(seq: int, from_seq: int | None = None, **data: object) -> Record:
    return Record(seq=seq, record_id=f"r-{seq}", kind="reading", ts_ns=seq, device="meter-1",
                  data={"values": {"v": 1.0}, **data}, mono_ns=seq * 10, from_seq=from_seq)


def test_records_standing_for_a_range_round_trip_and_cover_the_batch() -> None:
    batch = Batch(node="mill-01", epoch="e1", stream="readings",
                  records=(_reading(3, from_seq=1), _reading(4), _reading(9, from_seq=5)))
    assert (batch.first_seq, batch.last_seq) == (1, 9)
    payload = encode_batch(batch)
    obj = _inflate(payload)
    assert (obj["first_seq"], obj["last_seq"]) == (1, 9)
    decoded = decode_batch(payload)
    assert decoded == batch
    assert [(r.first_seq, r.seq, r.covers) for r in decoded.records] == [(1, 3, 3), (4, 4, 1), (5, 9, 5)]


def _raw_readings(*records: tuple[int, int | None], stream: str = "readings", first: int | None = None) -> bytes:
    raws = []
    for seq, from_seq in records:
        raw: dict[str, object] = {"seq": seq, "id": f"r-{seq}", "kind": "reading", "ts_ns": 1, "device": "m",
                                  "data": {}}
        if from_seq is not None:
            raw["from_seq"] = from_seq
        raws.append(raw)
    first_seq = first if first is not None else (records[0][1] or records[0][0])
    return json.dumps({"v": 1, "type": "batch", "node": "mill-01", "epoch": "e1", "stream": stream,
                       "first_seq": first_seq, "last_seq": records[-1][0], "records": raws}).encode()


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        # seq 3 stands for 1..3, so the next record must start at 4
        (_raw_readings((3, 1), (5, None)), "records[1].seq", "expected seq 4"),
        (_raw_readings((3, 1), (6, 5)), "records[1].seq", "expected seq 4"),
        (_raw_readings((3, 1), (4, None), (6, None)), "records[2].seq", "expected seq 5"),
        # a record that covers numbers before the batch's first_seq
        (_raw_readings((3, 1), first=2), "records[0].seq", "expected seq 2"),
        # overlapping ranges
        (_raw_readings((3, 1), (5, 3)), "records[1].seq", "expected seq 4"),
        (_raw_readings((3, 4), first=3), "records[0].from_seq", "from_seq 4 is after seq 3"),
        (_raw_readings((3, 0)), "records[0].from_seq", "must be >= 1"),
        (_raw_readings((3, 1), stream="business"), "records[0].from_seq", "stands for itself only"),
    ],
)
def test_malformed_ranges_name_the_record(payload: bytes, field: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_batch(payload)
    assert info.value.field == field
    assert fragment in info.value.reason


def test_the_contiguous_ranges_above_are_accepted_for_readings_and_health() -> None:
    assert decode_batch(_raw_readings((3, 1), (4, None), (6, 5))).last_seq == 6
    health = decode_batch(_raw_readings((3, 1), (4, None), stream="health"))
    assert [r.covers for r in health.records] == [3, 1]


def test_record_digest_ignores_from_seq_but_not_the_data() -> None:
    kept = _reading(4)
    assert record_digest(replace(kept, from_seq=2)) == record_digest(kept)
    assert record_digest(replace(kept, from_seq=4)) == record_digest(kept)
    assert record_digest(_reading(4, extra=1)) != record_digest(kept)
    assert record_digest(replace(kept, data={"values": {"v": 1.5}})) != record_digest(kept)
    assert record_digest(replace(kept, mono_ns=41)) != record_digest(kept)
    assert record_digest(replace(kept, seq=5)) != record_digest(kept)


def _heartbeat() -> Heartbeat:
    return Heartbeat(
        node="mill-01", epoch="e1", bno=(2 << 32) + 5, sent_at_ns=1_732_400_000_000_000_000, mono_ns=81_234_000_000,
        boot_id="boot-a", version="0.1.0", alarms=("device bridge-1 stopped: outbox full",),
        streams={"business": StreamBacklog(head=42, acked=40, pending=2, oldest_age_s=1.5),
                 "readings": StreamBacklog(head=900, acked=100, pending=800, oldest_age_s=None, lost=55)})


def test_heartbeat_round_trips_signed_and_unsigned() -> None:
    hb = _heartbeat()
    assert decode_heartbeat(encode_heartbeat(hb)) == hb
    key = generate_key()
    decoded = decode_heartbeat(encode_heartbeat(hb, signer=lambda body: sign(key, body)))
    assert decoded.sig is not None
    assert decoded == replace(hb, sig=decoded.sig)
    assert decoded.streams["readings"].lost == 55
    assert verify(key.public_key(), decoded.signed_body, decoded.sig) is None


def test_a_heartbeat_with_an_unknown_stream_names_the_field() -> None:
    obj = json.loads(encode_heartbeat(_heartbeat()))
    obj["streams"]["gossip"] = {"head": 1, "acked": 1, "pending": 0, "oldest_age_s": None}
    with pytest.raises(DecodeError) as info:
        decode_heartbeat(json.dumps(obj).encode())
    assert info.value.field == "streams.gossip"
    assert "unknown stream 'gossip'" in info.value.reason
    obj["streams"].pop("gossip")
    obj["streams"]["business"]["head"] = "42"
    with pytest.raises(DecodeError) as info:
        decode_heartbeat(json.dumps(obj).encode())
    assert info.value.field == "streams.business.head"


def test_replay_round_trips_and_refuses_seq_zero() -> None:
    req = Replay(node="mill-01", epoch="e1", stream="readings", from_seq=101, reason="gap since 100")
    assert decode_replay(encode_replay(req)) == req
    with pytest.raises(DecodeError) as info:
        decode_replay(encode_replay(replace(req, from_seq=0)))
    assert info.value.field == "from_seq"
    with pytest.raises(DecodeError) as info:
        decode_replay(encode_ack(Ack(node="mill-01", epoch="e1", stream="readings", acked_seq=1)))
    assert info.value.field == "type"
