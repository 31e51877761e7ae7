"""The versioned envelope of the sync protocol: batches of records up, acknowledgements down.

Payload on the wire (MQTT message body)::

    [ 0x7B '{' ][ JSON … ]            plain JSON (UTF-8)
    [ 0x5A 'Z' ][ zlib(JSON) … ]      JSON deflated with zlib, used when that saves at least 10 %

Batch (edge → central, one stream, contiguous sequence numbers)::

    {"v": 1, "type": "batch", "node": "mill-01", "epoch": "<hex id of the outbox database>",
     "stream": "business", "first_seq": 41, "last_seq": 42, "bno": 8589934593,
     "sent_at_ns": 1732400000000000000, "sent_mono_ns": 81234000000, "boot_id": "<OS boot id>",
     "records": [{"seq": 41, "id": "<uuid>", "kind": "weighing", "ts_ns": …, "mono_ns": …, "device": "bridge-1",
                  "data": {…}}, …],
     "sig": "<base64 Ed25519 signature of the canonical JSON without sig>"}

``bno`` grows with every batch a node sends (agent start number × 2³² + batch counter): a batch whose ``bno`` is
older than one central already applied, and which brings nothing new, is a replay. ``ts_ns`` is the wall clock of
the device / node when the record was taken, ``mono_ns`` the node's monotonic clock at that moment (meaningful
within one ``boot_id``) — sequence numbers order records, clocks never do.

A record of the ``readings`` or ``health`` stream may carry ``from_seq`` < ``seq``: it stands for every sequence
number from ``from_seq`` to ``seq``. The outbox writes such records when its disk quota forces it to thin or drop
readings (kind ``loss`` for a dropped range); the covered numbers that central never received are counted as lost.
Business records never cover a range.

Heartbeat (edge → central, every few seconds, signed, not stored)::

    {"v": 1, "type": "heartbeat", "node": "mill-01", "epoch": "…", "bno": …, "sent_at_ns": …, "mono_ns": …,
     "boot_id": "…", "version": "0.1.0", "alarms": ["…"],
     "streams": {"business": {"head": 42, "acked": 40, "pending": 2, "oldest_age_s": 1.5, "lost": 0}, …},
     "sig": "…"}

Replay request (central → edge): ``{"v": 1, "type": "replay", "node", "epoch", "stream", "from_seq", "reason"}``.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.errors import DecodeError
from sync.signing import canonical_json
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
    mono_ns: int | None = None  # the node's monotonic clock when the record was taken (per boot_id)
    from_seq: int | None = None  # set when the record stands for seqs from_seq..seq (thinned / dropped readings)

    @property
    def first_seq(self) -> int:
        return self.seq if self.from_seq is None else self.from_seq

    @property
    def covers(self) -> int:
        """How many sequence numbers this record stands for (1 unless thinned / a loss marker)."""
        return self.seq - self.first_seq + 1

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "seq": self.seq,
            "id": self.record_id,
            "kind": self.kind,
            "ts_ns": self.ts_ns,
            "device": self.device,
            "data": dict(self.data),
        }
        if self.mono_ns is not None:
            obj["mono_ns"] = self.mono_ns
        if self.from_seq is not None:
            obj["from_seq"] = self.from_seq
        return obj


@dataclass(frozen=True)
class Batch:
    node: str
    epoch: str
    stream: str
    records: tuple[Record, ...]
    sent_at_ns: int = 0
    sig: str | None = None
    bno: int = 0
    boot_id: str = ""
    sent_mono_ns: int = 0
    signed_body: bytes = field(default=b"", compare=False, repr=False)  # set by decode: what ``sig`` covers

    @property
    def first_seq(self) -> int:
        return self.records[0].first_seq

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


@dataclass(frozen=True)
class StreamBacklog:
    head: int  # highest seq produced
    acked: int  # highest seq central acknowledged
    pending: int  # records waiting on the node
    oldest_age_s: float | None  # age of the oldest pending record
    lost: int = 0  # records given up to the disk quota (readings / health only), ever

    def to_json(self) -> dict[str, Any]:
        return {"head": self.head, "acked": self.acked, "pending": self.pending,
                "oldest_age_s": self.oldest_age_s, "lost": self.lost}


@dataclass(frozen=True)
class Heartbeat:
    node: str
    epoch: str
    bno: int
    sent_at_ns: int
    mono_ns: int
    boot_id: str
    version: str
    streams: Mapping[str, StreamBacklog]
    alarms: tuple[str, ...] = ()
    sig: str | None = None
    signed_body: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True)
class Replay:
    """Central asks a node to send a stream again from ``from_seq`` (a gap stayed open)."""

    node: str
    epoch: str
    stream: str
    from_seq: int
    reason: str = ""


def record_digest(record: Record) -> str:
    """SHA-256 over the canonical JSON of a record: equal records give equal digests on both sides. ``from_seq``
    is left out: a sample the quota thinning kept is the same record, whatever range it stands for later."""
    body = record.to_json()
    body.pop("from_seq", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _dump(obj: Mapping[str, Any]) -> bytes:
    return _compress(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def _compress(body: bytes) -> bytes:
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


Signer = Callable[[bytes], str]  # canonical body → base64 signature


def _dump_signed(obj: dict[str, Any], signer: Signer | None, sig: str | None) -> bytes:
    """Serialise ``obj``; with a signer, as its canonical JSON with the signature spliced in at the end."""
    if signer is None:
        obj["sig"] = sig
        return _dump(obj)
    body = canonical_json(obj)
    signed = body[:-1] + b',"sig":' + json.dumps(signer(body)).encode() + b"}"
    return _compress(signed)


def encode_batch(batch: Batch, *, signer: Signer | None = None) -> bytes:
    """The wire form of ``batch``; with ``signer`` (the node key) it is signed, else it carries ``batch.sig``."""
    if not batch.records:
        raise ValueError("a batch needs at least one record")
    return _dump_signed(
        {
            "v": ENVELOPE_VERSION,
            "type": "batch",
            "node": batch.node,
            "epoch": batch.epoch,
            "stream": batch.stream,
            "first_seq": batch.first_seq,
            "last_seq": batch.last_seq,
            "bno": batch.bno,
            "sent_at_ns": batch.sent_at_ns,
            "sent_mono_ns": batch.sent_mono_ns,
            "boot_id": batch.boot_id,
            "records": [r.to_json() for r in batch.records],
        },
        signer, batch.sig,
    )


def _opt_int(obj: Mapping[str, Any], key: str, path: str = "", *, minimum: int = 0) -> int | None:
    if key not in obj or obj[key] is None:
        return None
    value = _get(obj, key, int, path)
    if value < minimum:
        raise DecodeError(f"must be >= {minimum}", field=f"{path}{key}")
    return int(value)


def _sig(obj: Mapping[str, Any]) -> str | None:
    sig = obj.get("sig")
    if sig is not None and not isinstance(sig, str):
        raise DecodeError("expected a string or null", field="sig")
    return sig


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
    if first < 1 or last < first:
        raise DecodeError(f"first_seq {first} .. last_seq {last} is not a range of sequence numbers",
                          field="last_seq")
    records = []
    expected = first  # the first seq the next record must stand for
    for i, raw in enumerate(raw_records):
        path = f"records[{i}]."
        if not isinstance(raw, dict):
            raise DecodeError("expected an object", field=f"records[{i}]")
        seq = _get(raw, "seq", int, path)
        from_seq = _opt_int(raw, "from_seq", path, minimum=1)
        if from_seq is not None and from_seq > seq:
            raise DecodeError(f"from_seq {from_seq} is after seq {seq}", field=f"{path}from_seq")
        if from_seq is not None and from_seq < seq and STREAMS[stream].durable:
            raise DecodeError(f"a {stream} record stands for itself only (no range)", field=f"{path}from_seq")
        if (from_seq if from_seq is not None else seq) != expected:
            raise DecodeError(f"expected seq {expected} (records must be contiguous), got {seq}", field=f"{path}seq")
        expected = seq + 1
        records.append(
            Record(
                seq=seq,
                record_id=_get(raw, "id", str, path),
                kind=_get(raw, "kind", str, path),
                ts_ns=_get(raw, "ts_ns", int, path),
                device=_get(raw, "device", str, path),
                data=_get(raw, "data", dict, path),
                mono_ns=_opt_int(raw, "mono_ns", path),
                from_seq=from_seq,
            )
        )
    if records[-1].seq != last:
        raise DecodeError(f"last_seq {last} does not match the last record's seq {records[-1].seq}",
                          field="last_seq")
    boot_id = obj.get("boot_id", "")
    if not isinstance(boot_id, str) or len(boot_id) > 64:
        raise DecodeError("expected a string of at most 64 characters", field="boot_id")
    return Batch(
        node=node,
        epoch=epoch,
        stream=stream,
        records=tuple(records),
        sent_at_ns=_opt_int(obj, "sent_at_ns") or 0,
        sig=_sig(obj),
        bno=_opt_int(obj, "bno") or 0,
        boot_id=boot_id,
        sent_mono_ns=_opt_int(obj, "sent_mono_ns") or 0,
        signed_body=canonical_json(obj),
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


def encode_heartbeat(hb: Heartbeat, *, signer: Signer | None = None) -> bytes:
    return _dump_signed(
        {
            "v": ENVELOPE_VERSION,
            "type": "heartbeat",
            "node": hb.node,
            "epoch": hb.epoch,
            "bno": hb.bno,
            "sent_at_ns": hb.sent_at_ns,
            "mono_ns": hb.mono_ns,
            "boot_id": hb.boot_id,
            "version": hb.version,
            "alarms": list(hb.alarms),
            "streams": {name: b.to_json() for name, b in hb.streams.items()},
        },
        signer, hb.sig,
    )


def decode_heartbeat(payload: bytes) -> Heartbeat:
    obj = _load(payload)
    msg_type = _get(obj, "type", str)
    if msg_type != "heartbeat":
        raise DecodeError(f"expected 'heartbeat', got {msg_type!r}", field="type")
    node = check_node_id(_get(obj, "node", str))
    epoch = _get(obj, "epoch", str)
    raw_streams = _get(obj, "streams", dict)
    streams: dict[str, StreamBacklog] = {}
    for name, raw in raw_streams.items():
        path = f"streams.{name}."
        if name not in STREAMS:
            raise DecodeError(f"unknown stream {name!r}", field=f"streams.{name}")
        if not isinstance(raw, dict):
            raise DecodeError("expected an object", field=f"streams.{name}")
        age = raw.get("oldest_age_s")
        if age is not None and (isinstance(age, bool) or not isinstance(age, int | float)):
            raise DecodeError("expected a number or null", field=f"{path}oldest_age_s")
        streams[name] = StreamBacklog(
            head=_get(raw, "head", int, path), acked=_get(raw, "acked", int, path),
            pending=_get(raw, "pending", int, path), oldest_age_s=None if age is None else float(age),
            lost=_opt_int(raw, "lost", path) or 0,
        )
    alarms = obj.get("alarms", [])
    if not isinstance(alarms, list) or not all(isinstance(a, str) for a in alarms):
        raise DecodeError("expected a list of strings", field="alarms")
    version = obj.get("version", "")
    return Heartbeat(
        node=node, epoch=epoch, bno=_opt_int(obj, "bno") or 0, sent_at_ns=_get(obj, "sent_at_ns", int),
        mono_ns=_opt_int(obj, "mono_ns") or 0, boot_id=str(obj.get("boot_id", ""))[:64],
        version=version if isinstance(version, str) else "", streams=streams, alarms=tuple(alarms),
        sig=_sig(obj), signed_body=canonical_json(obj),
    )


def encode_replay(req: Replay) -> bytes:
    return _dump({"v": ENVELOPE_VERSION, "type": "replay", "node": req.node, "epoch": req.epoch,
                  "stream": req.stream, "from_seq": req.from_seq, "reason": req.reason})


def decode_replay(payload: bytes) -> Replay:
    obj = _load(payload)
    node, epoch, stream = _check_common(obj, "replay")
    from_seq = _get(obj, "from_seq", int)
    if from_seq < 1:
        raise DecodeError("must be >= 1", field="from_seq")
    reason = obj.get("reason", "")
    return Replay(node=node, epoch=epoch, stream=stream, from_seq=from_seq,
                  reason=reason if isinstance(reason, str) else "")
