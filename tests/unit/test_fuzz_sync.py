"""Property-based fuzzing of every sync decoder (issue 14: bounded decoding everywhere untrusted bytes enter).

The property: whatever bytes arrive — random, random JSON, or a valid message of every type mutated at the JSON or
byte level — a decoder either returns a value or raises its documented error (``DecodeError``; ``AlibiError`` for
the alibi part), never another exception (``RecursionError``, ``ValueError``, ``OverflowError`` …); valid messages
round-trip. Budget: the hypothesis profile (``ci`` in ``make test``, ``fuzz`` in ``make fuzz``; tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

from sync import bounded
from sync.alibi import AlibiError, StoredEntry, check_chain, make_entry, parse_part
from sync.commands import (
    COMMANDS,
    DEVICE_COMMANDS,
    Command,
    CommandResult,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    peek_command,
)
from sync.envelope import (
    Ack,
    Batch,
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
)
from sync.errors import DecodeError
from sync.signing import generate_key, sign
from sync.streams import STREAMS

KEY = generate_key()
INT64 = st.integers(min_value=0, max_value=2**63 - 1)
SMALL = st.integers(min_value=0, max_value=2**40)
NODE = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
PRINTABLE = st.characters(categories=["L", "N", "P", "S"])
TEXT = st.text(PRINTABLE, min_size=1, max_size=30)
JSON_SCALAR = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=40)
# valid messages stay within the envelope's limits (sync.bounded: 32 levels, of which the envelope uses 4)
JSON = st.recursive(JSON_SCALAR, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=10), inner, max_size=5), max_leaves=20).filter(lambda v: _depth(v) <= 24)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
DECODERS: dict[str, Callable[[bytes], Any]] = {
    "batch": decode_batch, "heartbeat": decode_heartbeat, "ack": decode_ack, "replay": decode_replay,
    "command": decode_command, "command_result": decode_result,
}


def _wire(obj: object, compressed: bool) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return b"Z" + zlib.compress(body) if compressed else body


def _only_decode_error(decode: Callable[[bytes], Any], payload: bytes) -> Any:
    try:
        return decode(payload)
    except DecodeError as exc:
        if not exc.reason:  # it names why (and, where it can, the field)
            raise AssertionError(f"a DecodeError without a reason: {exc!r}") from exc
        return None


# -- valid messages of every type ------------------------------------------------------------------------------------
@st.composite
def records(draw: st.DrawFn, stream: str) -> tuple[Record, ...]:
    first = draw(st.integers(min_value=1, max_value=2**62))
    out = []
    seq = first
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        span = 0 if STREAMS[stream].durable else draw(st.integers(min_value=0, max_value=3))
        out.append(Record(seq=seq + span, record_id=draw(TEXT), kind=draw(TEXT), ts_ns=draw(INT64),
                          device=draw(st.text(PRINTABLE, max_size=20)),
                          data=draw(st.dictionaries(st.text(max_size=10), JSON, max_size=4)),
                          mono_ns=draw(st.none() | INT64), from_seq=seq if span else draw(st.none() | st.just(seq))))
        seq += span + 1
    return tuple(out)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    stream = draw(st.sampled_from(sorted(STREAMS)))
    return Batch(node=draw(NODE), epoch=draw(st.text(PRINTABLE, min_size=1, max_size=64)), stream=stream,
                 records=draw(records(stream)), sent_at_ns=draw(INT64), bno=draw(INT64),
                 boot_id=draw(st.text(PRINTABLE, max_size=64)), sent_mono_ns=draw(INT64))


@st.composite
def heartbeats(draw: st.DrawFn) -> Heartbeat:
    streams = {name: StreamBacklog(head=draw(SMALL), acked=draw(SMALL), pending=draw(SMALL),
                                   oldest_age_s=draw(st.none() | st.floats(0, 1e9)), lost=draw(SMALL))
               for name in draw(st.sets(st.sampled_from(sorted(STREAMS))))}
    return Heartbeat(node=draw(NODE), epoch=draw(TEXT), bno=draw(INT64), sent_at_ns=draw(INT64),
                     mono_ns=draw(INT64), boot_id=draw(st.text(PRINTABLE, max_size=64)),
                     version=draw(st.text(PRINTABLE, max_size=32)), streams=streams,
                     alarms=tuple(draw(st.lists(st.text(PRINTABLE, max_size=50), max_size=3))))


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    return Ack(node=draw(NODE), epoch=draw(TEXT), stream=draw(st.sampled_from(sorted(STREAMS))),
               acked_seq=draw(SMALL), held=tuple(draw(st.lists(SMALL, max_size=4))), issued_at_ns=draw(SMALL),
               nonce=draw(st.text(PRINTABLE, max_size=20)), kid=draw(st.text(PRINTABLE, max_size=16)))


@st.composite
def replays(draw: st.DrawFn) -> Replay:
    return Replay(node=draw(NODE), epoch=draw(TEXT), stream=draw(st.sampled_from(sorted(STREAMS))),
                  from_seq=draw(st.integers(1, 2**62)), reason=draw(st.text(PRINTABLE, max_size=40)),
                  issued_at_ns=draw(SMALL), nonce=draw(st.text(PRINTABLE, max_size=20)),
                  kid=draw(st.text(PRINTABLE, max_size=16)))


@st.composite
def commands(draw: st.DrawFn) -> Command:
    command = draw(st.sampled_from(COMMANDS))
    args: dict[str, str] = {}
    if command == "weigh":
        args = draw(st.dictionaries(st.sampled_from(["reference", "vehicle", "lot"]),
                                    st.text(PRINTABLE, min_size=1, max_size=20), max_size=2))
    elif command == "tare" and draw(st.booleans()):
        args = {"preset_tare": draw(st.from_regex(r"\A[0-9]{1,5}(\.[0-9]{1,3})?\Z"))}
    issued = draw(SMALL)
    return Command(command_id=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))), node=draw(NODE),
                   command=command, device=draw(NODE) if command in DEVICE_COMMANDS else None,
                   issued_at_ns=issued, expires_at_ns=issued + draw(st.integers(1, 10**12)), args=args,
                   nonce=draw(st.text(PRINTABLE, max_size=20)), kid=draw(st.text(PRINTABLE, max_size=16)))


@st.composite
def results(draw: st.DrawFn) -> CommandResult:
    command = draw(st.sampled_from(COMMANDS))
    status = draw(st.sampled_from(["succeeded", "failed", "rejected"]))
    command_id = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    return CommandResult(command_id=command_id, node=draw(NODE), command=command,
                         device=draw(NODE) if command in DEVICE_COMMANDS else None, status=status,
                         finished_at_ns=draw(INT64),
                         result=draw(st.dictionaries(st.text(max_size=10), JSON, max_size=3)),
                         error=None if status == "succeeded" else draw(TEXT))


def _signer(body: bytes) -> str:
    return sign(KEY, body)


MESSAGES: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], bytes]]] = {
    "batch": (batches(), lambda b: encode_batch(b, signer=_signer)),
    "heartbeat": (heartbeats(), lambda h: encode_heartbeat(h, signer=_signer)),
    "ack": (acks(), lambda a: encode_ack(a, signer=_signer)),
    "replay": (replays(), lambda r: encode_replay(r, signer=_signer)),
    "command": (commands(), lambda c: encode_command(c, signer=_signer)),
    "command_result": (results(), lambda r: encode_result(r, signer=_signer)),
}


def _without_sig(msg: Any) -> Any:
    from dataclasses import replace
    return replace(msg, sig=None)


@pytest.mark.parametrize("kind", sorted(MESSAGES))
@given(data=st.data())
def test_fuzz_valid_messages_round_trip(kind: str, data: st.DataObject) -> None:
    strategy, encode = MESSAGES[kind]
    msg = data.draw(strategy)
    decoded = DECODERS[kind](encode(msg))
    assert _without_sig(decoded) == msg
    assert decoded.sig


# -- mutations of valid messages -------------------------------------------------------------------------------------
def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


HOSTILE_VALUES = st.sampled_from([
    2**63, 2**70, -1, -(2**63) - 1, 0, 2**63 - 1, 1.5, True, None, "", "١٢٣", "\x00", "x" * 70_000, [], {},
    "NaN", 1e308, -0.0, "\u202e", "𝟙𝟚𝟛", "9" * 30,
]) | JSON


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    strategy, encode = MESSAGES[kind]
    wire = encode(draw(strategy))
    obj = json.loads(zlib.decompress(wire[1:]) if wire[:1] == b"Z" else wire)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(obj)))
        if not path:
            continue
        parent = obj
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "nest"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "nest":
            nest: Any = draw(JSON_SCALAR)
            for _ in range(draw(st.integers(1, 40))):
                nest = [nest]
            parent[path[-1]] = nest
        else:
            parent[path[-1]] = draw(HOSTILE_VALUES)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=draw(st.booleans())).encode()
    if draw(st.booleans()):  # a deep nest spliced in as text (json.dumps itself would recurse)
        depth = draw(st.integers(30, 20_000))
        cut = draw(st.integers(1, len(text) - 1))
        text = text[:cut] + b"[" * depth + b"]" * depth + text[cut:]
    return b"Z" + zlib.compress(text) if draw(st.booleans()) else text


@st.composite
def byte_mutated(draw: st.DrawFn, kind: str) -> bytes:
    strategy, encode = MESSAGES[kind]
    wire = bytearray(encode(draw(strategy)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(wire) - 1)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b"[" * 3000, b"{\"a\":" * 2000, b"\\", b"\"", b"1e999", b"NaN", "١".encode()]))
        elif op == "delete" and wire:
            del wire[pos]
        elif op == "truncate":
            del wire[pos:]
    return bytes(wire)


@pytest.mark.parametrize("kind", sorted(MESSAGES))
@given(data=st.data())
def test_fuzz_mutated_messages_raise_only_decode_error(kind: str, data: st.DataObject) -> None:
    payload = data.draw(mutated(kind) | byte_mutated(kind))
    note(repr(payload[:300]))
    for decode in DECODERS.values():  # every decoder, not only the message's own: a topic can carry anything
        _only_decode_error(decode, payload)
    peek = peek_command(payload)
    assert peek is None or isinstance(peek, tuple)


@given(payload=st.binary(max_size=3000), prefix=st.sampled_from([b"", b"{", b"Z", b"["]))
def test_fuzz_arbitrary_bytes_raise_only_decode_error(payload: bytes, prefix: bytes) -> None:
    for decode in DECODERS.values():
        _only_decode_error(decode, prefix + payload)
        _only_decode_error(decode, b"Z" + zlib.compress(prefix + payload))
    peek_command(prefix + payload)


@given(obj=JSON, compressed=st.booleans(), kind=st.sampled_from(sorted(DECODERS)))
def test_fuzz_arbitrary_json_raises_only_decode_error(obj: Any, compressed: bool, kind: str) -> None:
    if isinstance(obj, dict) and kind and "v" not in obj:
        obj = {**obj, "v": 1, "type": kind}
    _only_decode_error(DECODERS[kind], _wire(obj, compressed))


@given(depth=st.integers(33, 200_000), opener=st.sampled_from(["[", '{"a":']), compressed=st.booleans(),
       kind=st.sampled_from(sorted(DECODERS)), closed=st.booleans())
def test_fuzz_deep_nesting_is_refused_before_parsing(depth: int, opener: str, compressed: bool, kind: str,
                                                     closed: bool) -> None:
    closer = "]" if opener == "[" else "}"
    body = ('{"v":1,"records":' + opener * depth + "1" + closer * (depth if closed else 0) + "}").encode()
    payload = b"Z" + zlib.compress(body) if compressed else body
    with pytest.raises(DecodeError) as info:
        DECODERS[kind](payload)
    assert "nested deeper" in info.value.reason or "not paired" in info.value.reason


# -- the bounded loader itself ---------------------------------------------------------------------------------------
@given(obj=JSON)
def test_fuzz_bounded_loads_agrees_with_json_on_valid_documents(obj: Any) -> None:
    text = json.dumps(obj)
    assume(len(text) < 60_000)
    assert bounded.loads(text) == json.loads(text)


@given(text=st.text(alphabet='[]{}",:\\0123456789.eE+-aNInfinty tfrue', max_size=400))
def test_fuzz_bounded_loads_raises_only_decode_error(text: str) -> None:
    try:
        result = bounded.loads(text)
    except DecodeError:
        return
    assert result == json.loads(text)


# -- alibi -----------------------------------------------------------------------------------------------------------
ENTRY = make_entry(KEY, node="n1", alibi_no=1, record_id="r1", device="d1", weighed_at_ns=1,
                   data={"gross": "24560", "unit": "kg"}, prev_hash="0" * 64)


@given(body=st.text(max_size=500) | st.builds(lambda d: "[" * d + "]" * d, st.integers(1, 20_000)),
       no=st.integers(-5, 2**64) | st.booleans() | st.none(), digest=st.text(max_size=70),
       sig=st.text(max_size=90) | st.just(ENTRY.sig))
def test_fuzz_alibi_part_raises_only_alibi_error(body: str, no: Any, digest: str, sig: str) -> None:
    for part in ({"no": no, "body": body, "hash": digest, "sig": sig},
                 {"no": 1, "body": body, "hash": hashlib.sha256(body.encode()).hexdigest(),
                  "sig": ENTRY.sig}):
        with contextlib.suppress(AlibiError):
            parse_part(part)
    chain = check_chain([StoredEntry(1, body, digest, sig), StoredEntry(2, ENTRY.body, ENTRY.hash, ENTRY.sig)],
                        KEY.public_key(), node="n1")
    assert chain.problems  # entry 1 is never the node's intact entry here


def test_alibi_entry_round_trips() -> None:
    part, body = parse_part(ENTRY.to_json())
    assert part == ENTRY
    assert body["gross"] == "24560"
