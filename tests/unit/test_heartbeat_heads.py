"""The heads a node signs in its heartbeat (``sync.heads``): round trips, old heartbeats without heads, strict
bounds with the offending field named; the node's side (``edge.store.heads``): the alibi head from the mirror, the
TSE heads raised only when central's ack releases the sales; and the ``integrity`` alert rule's model."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.alerts.config import parse_rules
from central.alerts.rules import INTEGRITY_CHECKS, IntegrityRule
from edge.store.alibi import AlibiMirror
from edge.store.heads import read_heads
from edge.store.outbox import NewRecord, Outbox
from sync.envelope import Heartbeat, StreamBacklog, decode_heartbeat, encode_heartbeat
from sync.errors import DecodeError
from sync.heads import MAX_TSE_HEADS, AlibiHead, Heads, TseMark, decode_heads
from sync.runtime.config import ConfigError
from sync.signing import generate_key, sign, verify

H1 = "a" * 64
H2 = "0123456789abcdef" * 4
SERIAL = "5c" * 32


def wire(payload: bytes) -> Any:
    """The JSON of a payload, inflated if the envelope compressed it."""
    return json.loads(zlib.decompress(payload[1:]) if payload[:1] == b"Z" else payload)


def heads() -> Heads:
    return Heads(alibi=AlibiHead(no=42, hash=H1, epoch="e1", stream="business", seq=97, pruned_through=3,
                                 pruned_hash=H2),
                 tse=(TseMark(serial=SERIAL, tx=118, counter=240), TseMark(serial="ab", tx=1, counter=0)))


def heartbeat(h: Heads | None) -> Heartbeat:
    return Heartbeat(node="mill-01", epoch="e1", bno=(3 << 32) + 1, sent_at_ns=1_732_400_000_000_000_000,
                     mono_ns=5, boot_id="boot-a", version="0.1.0",
                     streams={"business": StreamBacklog(head=97, acked=97, pending=0, oldest_age_s=None)}, heads=h)


def test_heads_round_trip_signed_and_the_wire_shape_is_the_contract() -> None:
    key = generate_key()
    payload = encode_heartbeat(heartbeat(heads()), signer=lambda body: sign(key, body))
    decoded = decode_heartbeat(payload)
    assert decoded.heads == heads()
    assert verify(key.public_key(), decoded.signed_body, decoded.sig) is None  # the heads are under the signature
    assert wire(payload)["heads"] == {
        "alibi": {"no": 42, "hash": H1, "epoch": "e1", "stream": "business", "seq": 97, "pruned_through": 3,
                  "pruned_hash": H2},
        "tse": [{"serial": SERIAL, "tx": 118, "counter": 240}, {"serial": "ab", "tx": 1, "counter": 0}]}
    empty = decode_heartbeat(encode_heartbeat(heartbeat(Heads())))
    assert empty.heads == Heads(alibi=None, tse=())
    assert wire(encode_heartbeat(heartbeat(Heads())))["heads"] == {"alibi": None, "tse": []}


COUNTER = st.integers(1, 2**63 - 1)
HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)


@st.composite
def any_heads(draw: st.DrawFn) -> Heads:
    alibi = None
    if draw(st.booleans()):
        no = draw(COUNTER)
        pruned = draw(st.integers(0, no))
        epoch = draw(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF).filter(str.isprintable),
                             min_size=1, max_size=64))
        alibi = AlibiHead(no=no, hash=draw(HEX64), epoch=epoch,
                          stream=draw(st.sampled_from(["business", "health", "readings"])), seq=draw(COUNTER),
                          pruned_through=pruned, pruned_hash=draw(HEX64) if pruned else None)
    serials = draw(st.lists(st.text("0123456789abcdef", min_size=1, max_size=128), max_size=MAX_TSE_HEADS,
                            unique=True))
    return Heads(alibi=alibi, tse=tuple(TseMark(s, draw(COUNTER), draw(st.integers(0, 2**63 - 1)))
                                        for s in serials))


@given(any_heads())
def test_any_valid_heads_round_trip(h: Heads) -> None:
    assert decode_heartbeat(encode_heartbeat(heartbeat(h))).heads == h


def test_a_heartbeat_without_heads_still_decodes() -> None:
    payload = encode_heartbeat(heartbeat(None))
    assert "heads" not in wire(payload)
    assert decode_heartbeat(payload).heads is None
    obj = wire(payload)
    obj["heads"] = None
    assert decode_heartbeat(json.dumps(obj).encode()).heads is None


def _with(mutate: Any) -> bytes:
    obj = wire(encode_heartbeat(heartbeat(heads())))
    mutate(obj["heads"])
    return json.dumps(obj).encode()


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(h: dict[str, Any]) -> None:
        target = h
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
    return mutate


def _delete(path: tuple[Any, ...]) -> Any:
    def mutate(h: dict[str, Any]) -> None:
        target = h
        for p in path[:-1]:
            target = target[p]
        del target[path[-1]]
    return mutate


@pytest.mark.parametrize(("mutate", "field", "reason"), [
    (_set(("alibi", "no"), 0), "heads.alibi.no", "out of range 1"),
    (_set(("alibi", "no"), 2**63), "heads.alibi.no", "out of range"),  # beyond int64: sync.bounded says so
    (_set(("alibi", "no"), "42"), "heads.alibi.no", "expected an integer, got str"),
    (_set(("alibi", "no"), True), "heads.alibi.no", "got bool"),
    (_set(("alibi", "no"), 4.2), "heads.alibi.no", "got float"),
    (_set(("alibi", "hash"), "A" * 64), "heads.alibi.hash", "64 lowercase hex"),
    (_set(("alibi", "hash"), "a" * 63), "heads.alibi.hash", "64 lowercase hex"),
    (_set(("alibi", "hash"), None), "heads.alibi.hash", "NoneType"),
    (_set(("alibi", "epoch"), ""), "heads.alibi.epoch", "1 to 64 printable"),
    (_set(("alibi", "epoch"), "e" * 65), "heads.alibi.epoch", "1 to 64 printable"),
    (_set(("alibi", "epoch"), "e\n1"), "heads.alibi.epoch", "printable"),
    (_set(("alibi", "stream"), "gossip"), "heads.alibi.stream", "unknown stream 'gossip'"),
    (_set(("alibi", "seq"), 0), "heads.alibi.seq", "out of range 1"),
    (_set(("alibi", "pruned_through"), -1), "heads.alibi.pruned_through", "out of range 0"),
    (_set(("alibi", "pruned_through"), 43), "heads.alibi.pruned_through", "beyond the head 42"),
    (_set(("alibi", "pruned_hash"), None), "heads.alibi.pruned_hash", "64 lowercase hex"),
    (_set(("alibi", "pruned_hash"), "zz"), "heads.alibi.pruned_hash", "64 lowercase hex"),
    (_set(("alibi", "extra"), 1), "heads.alibi.extra", "unknown field"),
    (_delete(("alibi", "seq")), "heads.alibi.seq", "missing"),
    (_delete(("alibi", "pruned_hash")), "heads.alibi.pruned_hash", "missing"),
    (_set(("alibi",), [1]), "heads.alibi", "an object or null"),
    (_set(("tse",), {}), "heads.tse", "expected a list"),
    (_set(("tse",), None), "heads.tse", "expected a list"),
    (_set(("tse", 0, "serial"), "5C" * 32), "heads.tse[0].serial", "lowercase hex"),
    (_set(("tse", 0, "serial"), ""), "heads.tse[0].serial", "lowercase hex"),
    (_set(("tse", 0, "serial"), "a" * 129), "heads.tse[0].serial", "1 to 128"),
    (_set(("tse", 1, "serial"), SERIAL), "heads.tse[1].serial", "listed twice"),
    (_set(("tse", 0, "tx"), 0), "heads.tse[0].tx", "out of range 1"),
    (_set(("tse", 1, "counter"), -1), "heads.tse[1].counter", "out of range 0"),
    (_set(("tse", 1, "counter"), "0"), "heads.tse[1].counter", "got str"),
    (_set(("tse", 1, "kid"), "x"), "heads.tse[1].kid", "unknown field"),
    (_delete(("tse", 0, "counter")), "heads.tse[0].counter", "missing"),
    (_set(("tse", 0), 7), "heads.tse[0]", "expected an object"),
    (_set(("tse",), [{"serial": f"{i:02x}", "tx": 1, "counter": 1} for i in range(MAX_TSE_HEADS + 1)]),
     "heads.tse", f"exceed {MAX_TSE_HEADS}"),
    (_set(("signed_by",), "x"), "heads.signed_by", "unknown field"),
    (_delete(("tse",)), "heads.tse", "missing"),
])
def test_a_bad_head_names_its_field(mutate: Any, field: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_heartbeat(_with(mutate))
    assert info.value.field == field, info.value
    assert reason in info.value.reason, info.value


def test_nothing_given_up_means_a_null_pruned_hash() -> None:
    obj = heads().to_json()
    obj["alibi"].update(pruned_through=0, pruned_hash=None)
    decoded = decode_heads(obj)
    assert decoded is not None
    assert decoded.alibi is not None
    assert (decoded.alibi.pruned_through, decoded.alibi.pruned_hash) == (0, None)
    obj["alibi"]["pruned_hash"] = H2
    with pytest.raises(DecodeError) as info:
        decode_heads(obj)
    assert info.value.field == "heads.alibi.pruned_hash"
    with pytest.raises(DecodeError) as info:
        decode_heads([])
    assert info.value.field == "heads"


# -- the node's side ---------------------------------------------------------------------------------------------------


def _sale(serial: str, tx: int | None, counter: int | None) -> NewRecord:
    return NewRecord(kind="tse_transaction", device="tse-1",
                     data={"tse_serial": serial, "tx_number": tx, "signature_counter": counter, "total": "1.00"})


def test_the_outbox_gives_the_alibi_head_and_raises_tse_heads_only_when_central_acknowledges(tmp_path: Path) -> None:
    key = generate_key()
    box = Outbox(tmp_path / "outbox.db", node_id="mill-01", alibi=AlibiMirror("mill-01", key))
    read = lambda: box.use("read the heads", read_heads)  # noqa: E731
    assert read() == Heads(alibi=None, tse=())
    box.append("business", [_sale(SERIAL, 7, 14), _sale(SERIAL, 8, 16)])  # seq 1, 2
    weighed = box.append("business", [NewRecord(kind="weighing", device="bridge-1",
                                                data={"gross": "24560", "unit": "kg", "stable": True})])  # seq 3
    box.append("business", [_sale(SERIAL, None, None), _sale("ab", 3, 9)])  # a failed sale (no number); seq 4, 5
    got = read()
    entry = weighed[0].data["alibi"]
    assert got.alibi == AlibiHead(no=1, hash=entry["hash"], epoch=box.epoch, stream="business", seq=3)
    assert got.tse == ()  # stored, not acknowledged: nothing vouched for yet
    box.ack("business", 1)
    assert read().tse == (TseMark(SERIAL, 7, 14),)
    box.ack("business", 4)
    assert read().tse == (TseMark(SERIAL, 8, 16),)
    box.ack("business", 5)
    assert read().tse == (TseMark(SERIAL, 8, 16), TseMark("ab", 3, 9))
    box.append("business", [_sale(SERIAL, 5, 10)])  # an older number acknowledged later: the head never goes back
    box.ack("business", 6)
    assert read().tse == (TseMark(SERIAL, 8, 16), TseMark("ab", 3, 9))
    box.ack("readings", 0)
    box.close()
    again = Outbox(tmp_path / "outbox.db", node_id="mill-01")  # a restart keeps the heads
    assert again.use("read", read_heads).tse == (TseMark(SERIAL, 8, 16),
                                                                              TseMark("ab", 3, 9))
    again.close()


# -- the alert rule ----------------------------------------------------------------------------------------------------


def test_the_integrity_rule_validates_its_checks() -> None:
    rules = parse_rules({"rules": [{"name": "trust", "kind": "integrity"},
                                   {"name": "tails", "kind": "integrity", "node": "mill-*",
                                    "checks": ["alibi_truncated", "tse_truncated"], "severity": "critical"}]},
                       source="alert-rules.yaml")
    first, second = rules.rules
    assert isinstance(first, IntegrityRule)
    assert isinstance(second, IntegrityRule)
    assert (first.checks, first.threshold, second.node) == (list(INTEGRITY_CHECKS), 0, "mill-*")
    for bad, where in (({"checks": ["alibi_truncated", "alibi_truncated"]}, "checks: a check is named twice"),
                       ({"checks": []}, "checks: List should have at least 1 item"),
                       ({"checks": ["lies"]}, "checks[0]: Input should be 'alibi_truncated'"),
                       ({"node": ""}, "node:"), ({"after_s": 3}, "after_s:")):
        with pytest.raises(ConfigError) as info:
            parse_rules({"rules": [{"name": "x", "kind": "integrity", **bad}]}, source="alert-rules.yaml")
        assert f"alert-rules.yaml: rules[0].{where}" in str(info.value), str(info.value)
