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

The heartbeat may carry ``"downlink_rejected": {"<reason>": count, …}``: downlink messages the node refused since
its agent started (``sync.downlink.REASONS``); absent from older nodes. It carries the node's signed ``heads``
(``sync.heads``: its alibi head with the retention boundary, and per TSE the highest transaction number and
signature counter it stored), decoded strictly (a bad or unknown value names its field, ``heads.tse[0].tx``);
absent from older nodes.

Replay request (central → edge, signed by central)::

    {"v": 1, "type": "replay", "node", "epoch", "stream", "from_seq", "reason",
     "issued_at_ns", "nonce", "kid", "sig"}

Ack (central → edge, signed by central)::

    {"v": 1, "type": "ack", "node": "mill-01", "epoch": "…", "stream": "business",
     "acked_seq": 42, "held": [45, 46],
     "issued_at_ns": 1732400000000000000, "nonce": "<32 hex>", "kid": "<central key fingerprint>", "sig": "…"}

``acked_seq`` is the highest sequence number up to which central holds every record (contiguous mark);
``held`` lists sequence numbers central also holds beyond a gap. The edge may forget everything ≤ ``acked_seq`` —
once it has verified the ack (``sync.downlink``: central's signature, its node id and epoch, a fresh nonce) and
checked that it covers nothing the node has not sent.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync import bounded as bounded_json
from sync.errors import DecodeError
from sync.heads import Heads, decode_heads
from sync.signing import canonical_json
from sync.streams import STREAMS
from sync.topics import check_node_id

ENVELOPE_VERSION = 1
MAX_RECORDS_PER_BATCH = 10_000
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
COMPRESS_MIN_BYTES = 512
JSON_LIMITS = bounded_json.JsonLimits(max_bytes=MAX_PAYLOAD_BYTES)  # nesting, sizes, int64: ``sync.bounded``
MAX_COUNTER = 2**63 - 1  # seq, bno and the clocks (ns) fit a signed 64-bit column
MAX_ID_CHARS = 64  # record ids, device names (the columns central stores them in)
MAX_KIND_CHARS = 32
MAX_VERSION_CHARS = 32  # heartbeat: the software version
MAX_ALARMS = 100  # heartbeat: alarms, each at most MAX_ALARM_CHARS
MAX_ALARM_CHARS = 1000
MAX_HELD_PER_ACK = 10_000  # seqs an ack may list as held beyond its mark
MAX_DOWNLINK_ID_CHARS = 64  # nonce and kid of a downlink message
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
    """Central holds ``stream`` up to ``acked_seq`` (and ``held`` beyond a gap); signed by central
    (``sync.downlink``: ``issued_at_ns``, ``nonce``, ``kid``, ``sig``)."""

    node: str
    epoch: str
    stream: str
    acked_seq: int
    held: tuple[int, ...] = ()
    issued_at_ns: int = 0
    nonce: str = ""
    kid: str = ""
    sig: str | None = None
    signed_body: bytes = field(default=b"", compare=False, repr=False)  # set by decode: what ``sig`` covers


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
    downlink_rejected: Mapping[str, int] = field(default_factory=dict)  # optional: refused downlink messages
    heads: Heads | None = None  # optional (older nodes): the node's alibi and TSE heads (sync.heads)


@dataclass(frozen=True)
class Replay:
    """Central asks a node to send a stream again from ``from_seq`` (a gap stayed open)."""

    node: str
    epoch: str
    stream: str
    from_seq: int
    reason: str = ""
    issued_at_ns: int = 0
    nonce: str = ""
    kid: str = ""
    sig: str | None = None
    signed_body: bytes = field(default=b"", compare=False, repr=False)  # set by decode: what ``sig`` covers


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
    obj = bounded_json.loads(body, JSON_LIMITS)  # depth, sizes and int64 range checked before / while parsing
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


def _counter(obj: Mapping[str, Any], key: str, path: str = "", *, minimum: int = 0) -> int:
    """A required sequence number, batch number or clock reading: an integer in ``minimum`` .. 2**63-1."""
    value: int = _get(obj, key, int, path)
    if not minimum <= value <= MAX_COUNTER:
        raise DecodeError(f"{value} is out of range {minimum} .. {MAX_COUNTER}", field=f"{path}{key}")
    return value


def _text(obj: Mapping[str, Any], key: str, path: str = "", *, max_chars: int, min_chars: int = 1) -> str:
    """A required name or id: ``min_chars`` .. ``max_chars`` printable characters (no control characters, NUL)."""
    value: str = _get(obj, key, str, path)
    if not min_chars <= len(value) <= max_chars or not value.isprintable():
        raise DecodeError(f"expected {min_chars} to {max_chars} printable characters, got {value[:40]!r}",
                          field=f"{path}{key}")
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
    """An optional counter or clock (absent / null → None), else an integer in ``minimum`` .. 2**63-1."""
    if key not in obj or obj[key] is None:
        return None
    value = _get(obj, key, int, path)
    if value < minimum:
        raise DecodeError(f"must be >= {minimum}", field=f"{path}{key}")
    if value > MAX_COUNTER:
        raise DecodeError(f"must be <= {MAX_COUNTER}", field=f"{path}{key}")
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
    if not epoch.isprintable():
        raise DecodeError("expected printable characters", field="epoch")
    first = _counter(obj, "first_seq", minimum=1)
    last = _counter(obj, "last_seq", minimum=1)
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
        seq = _counter(raw, "seq", path, minimum=1)
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
                record_id=_text(raw, "id", path, max_chars=MAX_ID_CHARS),
                kind=_text(raw, "kind", path, max_chars=MAX_KIND_CHARS),
                ts_ns=_counter(raw, "ts_ns", path),
                device=_text(raw, "device", path, max_chars=MAX_ID_CHARS, min_chars=0),
                data=_get(raw, "data", dict, path),
                mono_ns=_opt_int(raw, "mono_ns", path),
                from_seq=from_seq,
            )
        )
    if records[-1].seq != last:
        raise DecodeError(f"last_seq {last} does not match the last record's seq {records[-1].seq}",
                          field="last_seq")
    boot_id = obj.get("boot_id", "")
    if not isinstance(boot_id, str) or len(boot_id) > 64 or not boot_id.isprintable():
        raise DecodeError("expected a string of at most 64 printable characters", field="boot_id")
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


def _downlink_fields(msg: Ack | Replay) -> dict[str, Any]:
    return {"issued_at_ns": msg.issued_at_ns, "nonce": msg.nonce, "kid": msg.kid}


def decode_downlink_stamp(obj: Mapping[str, Any]) -> tuple[int, str, str]:
    """``(issued_at_ns, nonce, kid)`` of a downlink message (``sync.downlink``): each may be missing (0 / "") so
    that an unsigned message is refused as ``unsigned`` by the verifier, but a present one must be well-formed."""
    issued = _opt_int(obj, "issued_at_ns") or 0
    if issued >= 2**63:
        raise DecodeError("must be < 2**63", field="issued_at_ns")
    out: list[str] = []
    for name in ("nonce", "kid"):
        value = obj.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str) or len(value) > MAX_DOWNLINK_ID_CHARS:
            raise DecodeError(f"expected a string of at most {MAX_DOWNLINK_ID_CHARS} characters", field=name)
        out.append(value)
    return issued, out[0], out[1]


def encode_ack(ack: Ack, *, signer: Signer | None = None) -> bytes:
    """The wire form of ``ack``; with ``signer`` (central's key, ``sync.downlink.DownlinkSigner``) it is signed,
    else it carries ``ack.sig``."""
    return _dump_signed(
        {
            "v": ENVELOPE_VERSION,
            "type": "ack",
            "node": ack.node,
            "epoch": ack.epoch,
            "stream": ack.stream,
            "acked_seq": ack.acked_seq,
            "held": list(ack.held),
            **_downlink_fields(ack),
        },
        signer, ack.sig,
    )


def decode_ack(payload: bytes) -> Ack:
    """Decode and validate an ack; the signature is not checked here (``sync.downlink.DownlinkVerifier``)."""
    obj = _load(payload)
    node, epoch, stream = _check_common(obj, "ack")
    acked = _get(obj, "acked_seq", int)
    if not 0 <= acked < 2**63:
        raise DecodeError("must be from 0 to 2**63 - 1", field="acked_seq")
    held = obj.get("held", [])
    if not isinstance(held, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in held):
        raise DecodeError("expected a list of integers", field="held")
    if len(held) > MAX_HELD_PER_ACK:
        raise DecodeError(f"{len(held)} seqs exceed {MAX_HELD_PER_ACK}", field="held")
    issued, nonce, kid = decode_downlink_stamp(obj)
    return Ack(node=node, epoch=epoch, stream=stream, acked_seq=acked, held=tuple(held), issued_at_ns=issued,
               nonce=nonce, kid=kid, sig=_sig(obj), signed_body=canonical_json(obj))


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
            **({"downlink_rejected": dict(hb.downlink_rejected)} if hb.downlink_rejected else {}),
            **({"heads": hb.heads.to_json()} if hb.heads is not None else {}),
        },
        signer, hb.sig,
    )


def _downlink_counts(obj: Mapping[str, Any]) -> dict[str, int]:
    """The optional ``downlink_rejected`` of a heartbeat: reason → count (at most 32 reasons)."""
    raw = obj.get("downlink_rejected")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 32:
        raise DecodeError("expected an object of at most 32 counts", field="downlink_rejected")
    out: dict[str, int] = {}
    for reason, count in raw.items():
        if len(reason) > 32 or isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2**63:
            raise DecodeError("expected reason → count (0 to 2**63 - 1)", field=f"downlink_rejected.{reason[:32]}")
        out[reason] = count
    return out


def decode_heartbeat(payload: bytes) -> Heartbeat:
    obj = _load(payload)
    msg_type = _get(obj, "type", str)
    if msg_type != "heartbeat":
        raise DecodeError(f"expected 'heartbeat', got {msg_type!r}", field="type")
    node = check_node_id(_get(obj, "node", str))
    epoch = _text(obj, "epoch", max_chars=64)
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
            head=_counter(raw, "head", path), acked=_counter(raw, "acked", path),
            pending=_counter(raw, "pending", path), oldest_age_s=None if age is None else float(age),
            lost=_opt_int(raw, "lost", path) or 0,
        )
    alarms = obj.get("alarms", [])
    if not isinstance(alarms, list) or len(alarms) > MAX_ALARMS or not all(
            isinstance(a, str) and len(a) <= MAX_ALARM_CHARS and "\x00" not in a for a in alarms):
        raise DecodeError(f"expected a list of at most {MAX_ALARMS} strings of at most {MAX_ALARM_CHARS} "
                          "characters (no NUL)", field="alarms")
    version = obj.get("version", "")
    if isinstance(version, str) and (len(version) > MAX_VERSION_CHARS or not version.isprintable()):
        raise DecodeError(f"expected at most {MAX_VERSION_CHARS} printable characters", field="version")
    boot_id = obj.get("boot_id", "")
    if not isinstance(boot_id, str) or len(boot_id) > 64 or not boot_id.isprintable():
        raise DecodeError("expected a string of at most 64 printable characters", field="boot_id")
    return Heartbeat(
        node=node, epoch=epoch, bno=_opt_int(obj, "bno") or 0, sent_at_ns=_counter(obj, "sent_at_ns"),
        mono_ns=_opt_int(obj, "mono_ns") or 0, boot_id=boot_id,
        version=version if isinstance(version, str) else "", streams=streams, alarms=tuple(alarms),
        sig=_sig(obj), signed_body=canonical_json(obj), downlink_rejected=_downlink_counts(obj),
        heads=decode_heads(obj.get("heads")),
    )


def encode_replay(req: Replay, *, signer: Signer | None = None) -> bytes:
    """The wire form of ``req``; with ``signer`` (central's key) it is signed, else it carries ``req.sig``."""
    return _dump_signed({"v": ENVELOPE_VERSION, "type": "replay", "node": req.node, "epoch": req.epoch,
                         "stream": req.stream, "from_seq": req.from_seq, "reason": req.reason,
                         **_downlink_fields(req)}, signer, req.sig)


def decode_replay(payload: bytes) -> Replay:
    """Decode and validate a replay request; the signature is not checked here (``sync.downlink``)."""
    obj = _load(payload)
    node, epoch, stream = _check_common(obj, "replay")
    from_seq = _get(obj, "from_seq", int)
    if not 1 <= from_seq < 2**63:
        raise DecodeError("must be from 1 to 2**63 - 1", field="from_seq")
    reason = obj.get("reason", "")
    issued, nonce, kid = decode_downlink_stamp(obj)
    return Replay(node=node, epoch=epoch, stream=stream, from_seq=from_seq,
                  reason=reason[:500] if isinstance(reason, str) else "", issued_at_ns=issued, nonce=nonce, kid=kid,
                  sig=_sig(obj), signed_body=canonical_json(obj))
