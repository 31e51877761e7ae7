"""The versioned envelope of the sync protocol: batches of records up, acknowledgements down.

Payload on the wire (MQTT message body)::

    [ 0x7B '{' ][ JSON … ]            plain JSON (UTF-8)
    [ 0x5A 'Z' ][ zlib(JSON) … ]      JSON deflated with zlib, used when that saves at least 10 %

Batch (edge → central, one stream, contiguous sequence numbers)::

    {"v": 1, "type": "batch", "node": "mill-01", "epoch": "<hex id of the outbox database>",
     "stream": "business", "first_seq": 41, "last_seq": 42, "sent_at_ns": 1732400000000000000,
     "records": [{"seq": 41, "id": "<uuid>", "kind": "weighing", "ts_ns": …, "device": "bridge-1",
                  "data": {…}}, …],
     "sig": null}

Ack (central → edge)::

    {"v": 1, "type": "ack", "node": "mill-01", "epoch": "…", "stream": "business",
     "acked_seq": 42, "held": [45, 46]}

``acked_seq`` is the highest sequence number up to which central holds every record (contiguous mark);
``held`` lists sequence numbers central also holds beyond a gap. The edge may forget everything ≤ ``acked_seq``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.errors import DecodeError
from sync.streams import STREAMS
from sync.topics import check_node_id

ENVELOPE_VERSION = 1
MAX_RECORDS_PER_BATCH = 10_000
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
COMPRESS_MIN_BYTES = 512
_PLAIN = 0x7B  # "{"
_ZLIB = 0x5A  # "Z"


@dataclass(frozen=True)
class Record:
    """One record of a stream: an event (weighing, device status) or a set of readings."""

    seq: int
    record_id: str
    kind: str
    ts_ns: int
    device: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.record_id,
            "kind": self.kind,
            "ts_ns": self.ts_ns,
            "device": self.device,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Batch:
    node: str
    epoch: str
    stream: str
    records: tuple[Record, ...]
    sent_at_ns: int = 0
    sig: str | None = None

    @property
    def first_seq(self) -> int:
        return self.records[0].seq

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq


@dataclass(frozen=True)
class Ack:
    node: str
    epoch: str
    stream: str
    acked_seq: int
    held: tuple[int, ...] = ()


def record_digest(record: Record) -> str:
    """SHA-256 over the canonical JSON of a record: equal records give equal digests on both sides."""
    canonical = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _dump(obj: Mapping[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) >= COMPRESS_MIN_BYTES:
        packed = zlib.compress(body, 6)
        if len(packed) + 1 <= 0.9 * len(body):
            return bytes([_ZLIB]) + packed
    return body


def _load(payload: bytes) -> dict[str, Any]:
    if not payload:
        raise DecodeError("empty payload", field="payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", field="payload")
    if payload[0] == _ZLIB:
        try:
            dobj = zlib.decompressobj()
            body = dobj.decompress(payload[1:], MAX_PAYLOAD_BYTES)
            if dobj.unconsumed_tail:
                raise DecodeError(f"inflated payload exceeds {MAX_PAYLOAD_BYTES} bytes", field="payload")
        except zlib.error as exc:
            raise DecodeError(f"corrupt zlib data: {exc}", field="payload") from exc
    elif payload[0] == _PLAIN:
        body = payload
    else:
        raise DecodeError(f"unknown encoding marker 0x{payload[0]:02x} (expected '{{' or 'Z')", field="payload")
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not valid JSON: {exc}", field="payload") from exc
    if not isinstance(obj, dict):
        raise DecodeError("expected a JSON object", field="payload")
    version = obj.get("v")
    if version != ENVELOPE_VERSION:
        raise DecodeError(f"unsupported envelope version {version!r} (this side speaks {ENVELOPE_VERSION})", field="v")
    return obj


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str = "") -> Any:
    name = f"{path}{key}"
    if key not in obj:
        raise DecodeError("missing", field=name)
    value = obj[key]
    # bool is an int in Python: never accept it where a number is expected
    if isinstance(value, bool) and kind is not bool:
        raise DecodeError(f"expected {_kind_name(kind)}, got a boolean", field=name)
    if not isinstance(value, kind):
        raise DecodeError(f"expected {_kind_name(kind)}, got {type(value).__name__}", field=name)
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _check_common(obj: Mapping[str, Any], expected_type: str) -> tuple[str, str, str]:
    msg_type = _get(obj, "type", str)
    if msg_type != expected_type:
        raise DecodeError(f"expected {expected_type!r}, got {msg_type!r}", field="type")
    node = check_node_id(_get(obj, "node", str))
    epoch = _get(obj, "epoch", str)
    if not 1 <= len(epoch) <= 64:
        raise DecodeError("must be 1 to 64 characters", field="epoch")
    stream = _get(obj, "stream", str)
    if stream not in STREAMS:
        raise DecodeError(f"unknown stream {stream!r} (expected one of {sorted(STREAMS)})", field="stream")
    return node, epoch, stream


def encode_batch(batch: Batch) -> bytes:
    if not batch.records:
        raise ValueError("a batch needs at least one record")
    return _dump(
        {
            "v": ENVELOPE_VERSION,
            "type": "batch",
            "node": batch.node,
            "epoch": batch.epoch,
            "stream": batch.stream,
            "first_seq": batch.first_seq,
            "last_seq": batch.last_seq,
            "sent_at_ns": batch.sent_at_ns,
            "records": [r.to_json() for r in batch.records],
            "sig": batch.sig,
        }
    )


def decode_batch(payload: bytes) -> Batch:
    """Decode and validate a batch; every problem raises DecodeError naming the field."""
    obj = _load(payload)
    node, epoch, stream = _check_common(obj, "batch")
    first = _get(obj, "first_seq", int)
    last = _get(obj, "last_seq", int)
    raw_records = _get(obj, "records", list)
    if not raw_records:
        raise DecodeError("a batch needs at least one record", field="records")
    if len(raw_records) > MAX_RECORDS_PER_BATCH:
        raise DecodeError(f"{len(raw_records)} records exceed {MAX_RECORDS_PER_BATCH}", field="records")
    if first < 1 or last - first + 1 != len(raw_records):
        raise DecodeError(
            f"first_seq {first} .. last_seq {last} does not match {len(raw_records)} records", field="last_seq"
        )
    records = []
    for i, raw in enumerate(raw_records):
        path = f"records[{i}]."
        if not isinstance(raw, dict):
            raise DecodeError("expected an object", field=f"records[{i}]")
        seq = _get(raw, "seq", int, path)
        if seq != first + i:
            raise DecodeError(f"expected seq {first + i} (records must be contiguous), got {seq}", field=f"{path}seq")
        records.append(
            Record(
                seq=seq,
                record_id=_get(raw, "id", str, path),
                kind=_get(raw, "kind", str, path),
                ts_ns=_get(raw, "ts_ns", int, path),
                device=_get(raw, "device", str, path),
                data=_get(raw, "data", dict, path),
            )
        )
    sent_at = obj.get("sent_at_ns", 0)
    sig = obj.get("sig")
    if sig is not None and not isinstance(sig, str):
        raise DecodeError("expected a string or null", field="sig")
    return Batch(
        node=node,
        epoch=epoch,
        stream=stream,
        records=tuple(records),
        sent_at_ns=sent_at if isinstance(sent_at, int) else 0,
        sig=sig,
    )


def encode_ack(ack: Ack) -> bytes:
    return _dump(
        {
            "v": ENVELOPE_VERSION,
            "type": "ack",
            "node": ack.node,
            "epoch": ack.epoch,
            "stream": ack.stream,
            "acked_seq": ack.acked_seq,
            "held": list(ack.held),
        }
    )


def decode_ack(payload: bytes) -> Ack:
    obj = _load(payload)
    node, epoch, stream = _check_common(obj, "ack")
    acked = _get(obj, "acked_seq", int)
    if acked < 0:
        raise DecodeError("must be >= 0", field="acked_seq")
    held = obj.get("held", [])
    if not isinstance(held, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in held):
        raise DecodeError("expected a list of integers", field="held")
    return Ack(node=node, epoch=epoch, stream=stream, acked_seq=acked, held=tuple(held))
