"""Authenticated downlink (``sync.downlink``): central signs acks, replay requests and commands; the node acts on
none that is not signed with a trusted key, for it, for its epoch, with a fresh nonce — and never on an ack beyond
what it sent. Every rejection reason, key rotation with two trusted keys, and the uplink's handling of each."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from central.fleet import signing_key
from edge.config import parse_config
from edge.store.outbox import NewRecord, Outbox
from edge.uplink.session import Uplink, trusted_central_keys
from sync.commands import Command, decode_command, encode_command
from sync.downlink import (
    REASONS,
    DownlinkRejected,
    DownlinkSigner,
    DownlinkVerifier,
    NonceCache,
    load_trusted_keys,
)
from sync.envelope import (
    Ack,
    Heartbeat,
    Replay,
    decode_ack,
    decode_heartbeat,
    decode_replay,
    encode_ack,
    encode_heartbeat,
    encode_replay,
)
from sync.errors import DecodeError
from sync.runtime.config import ConfigError
from sync.signing import SigningKeyError, generate_key, public_key_text

NODE, EPOCH = "mill-01", "e" * 32
KEY = generate_key()
SIGNER = DownlinkSigner(KEY)


def _ack(signer: DownlinkSigner | None = SIGNER, **changes: object) -> bytes:
    ack = Ack(node=NODE, epoch=EPOCH, stream="business", acked_seq=5, held=(7,))
    if signer is not None:
        ack = replace(ack, **signer.stamp())
    return encode_ack(replace(ack, **changes), signer=signer)  # type: ignore[arg-type]


def _verifier(*keys: object, size: int = 100) -> DownlinkVerifier:
    return DownlinkVerifier(NODE, [k.public_key() for k in (keys or (KEY,))], nonce_cache_size=size)  # type: ignore


def _check(v: DownlinkVerifier, payload: bytes, *, epoch: str = EPOCH) -> None:
    a = decode_ack(payload)
    v.verify("ack", node=a.node, kid=a.kid, nonce=a.nonce, issued_at_ns=a.issued_at_ns, signed_body=a.signed_body,
             sig=a.sig, epoch=a.epoch, expected_epoch=epoch)


def _reason(v: DownlinkVerifier, payload: bytes, **kw: str) -> str:
    with pytest.raises(DownlinkRejected) as info:
        _check(v, payload, **kw)
    return info.value.reason


def test_a_signed_ack_and_replay_request_round_trip_and_verify() -> None:
    v = _verifier()
    payload = _ack()
    ack = decode_ack(payload)
    assert (ack.acked_seq, ack.held, ack.kid, len(ack.nonce)) == (5, (7,), SIGNER.kid, 32)
    assert ack.sig
    assert ack.issued_at_ns > 0
    _check(v, payload)
    req = replace(Replay(node=NODE, epoch=EPOCH, stream="readings", from_seq=3, reason="gap"), **SIGNER.stamp())
    got = decode_replay(encode_replay(req, signer=SIGNER))
    v.verify("replay", node=got.node, kid=got.kid, nonce=got.nonce, issued_at_ns=got.issued_at_ns,
             signed_body=got.signed_body, sig=got.sig, epoch=got.epoch, expected_epoch=EPOCH)
    assert (v.accepted, v.rejected) == (2, 0)


def test_every_rejection_reason_is_counted() -> None:
    v = _verifier()
    other = DownlinkSigner(generate_key())
    assert _reason(v, _ack(None)) == "unsigned"
    assert _reason(v, _ack(other)) == "unknown_key"
    # another key's signature under central's kid
    forged = json.loads(_ack(other))
    forged["kid"] = SIGNER.kid
    assert _reason(v, json.dumps(forged).encode()) == "bad_signature"
    # central's signature, but the body altered after signing (a bigger acked_seq)
    altered = json.loads(_ack())
    altered["acked_seq"] = 99
    assert _reason(v, json.dumps(altered).encode()) == "bad_signature"
    assert _reason(v, _ack(node="mill-02")) == "wrong_node"
    assert _reason(v, _ack(), epoch="another-epoch") == "wrong_epoch"
    genuine = _ack()
    _check(v, genuine)
    assert _reason(v, genuine) == "replayed"
    assert v.counts == {"unsigned": 1, "unknown_key": 1, "bad_signature": 2, "wrong_node": 1, "wrong_epoch": 1,
                        "replayed": 1}
    assert set(v.counts) <= set(REASONS)
    assert v.accepted == 1


def test_a_message_that_fell_out_of_the_nonce_cache_cannot_be_replayed() -> None:
    clock = iter(range(1000, 2000))
    signer = DownlinkSigner(KEY, clock_ns=lambda: next(clock))
    v = _verifier(size=2)
    first, second, third = (_ack(signer) for _ in range(3))
    for p in (first, second, third):
        _check(v, p)
    assert len(v.nonces) == 2
    assert v.nonces.floor_ns == 1000
    assert _reason(v, first) == "replayed"  # forgotten, but not newer than the floor
    assert _reason(v, third) == "replayed"  # remembered
    _check(v, _ack(signer))  # a new one goes on


def test_nonce_cache_bounds() -> None:
    cache = NonceCache(3)
    for i in range(10):
        assert cache.check(f"n{i}", i) is None
        cache.add(f"n{i}", i)
    assert len(cache) == 3
    assert cache.floor_ns == 6
    with pytest.raises(ValueError, match="at least one"):
        NonceCache(0)


def test_rotation_two_trusted_keys_both_work_and_a_third_does_not() -> None:
    old, new = generate_key(), generate_key()
    v = _verifier(old, new)
    _check(v, _ack(DownlinkSigner(old)))
    _check(v, _ack(DownlinkSigner(new)))
    assert _reason(v, _ack(DownlinkSigner(generate_key()))) == "unknown_key"


def test_a_signed_command_round_trips_and_an_unsigned_one_is_refused() -> None:
    stamp = SIGNER.stamp()
    cmd = Command(command_id=str(uuid.uuid4()), node=NODE, command="zero", device="bridge-1",
                  issued_at_ns=stamp["issued_at_ns"], expires_at_ns=stamp["issued_at_ns"] + 10**9,
                  nonce=stamp["nonce"], kid=stamp["kid"])
    got = decode_command(encode_command(cmd, signer=SIGNER))
    assert got == replace(cmd, sig=got.sig)
    assert got.sig
    v = _verifier()
    v.verify("command", node=got.node, kid=got.kid, nonce=got.nonce, issued_at_ns=got.issued_at_ns,
             signed_body=got.signed_body, sig=got.sig)
    plain = decode_command(encode_command(replace(cmd, nonce="", kid="")))
    with pytest.raises(DownlinkRejected, match="unsigned"):
        v.verify("command", node=plain.node, kid=plain.kid, nonce=plain.nonce, issued_at_ns=plain.issued_at_ns,
                 signed_body=plain.signed_body, sig=plain.sig)


@pytest.mark.parametrize(("field", "value"), [("nonce", 5), ("nonce", "x" * 65), ("kid", ["a"]), ("issued_at_ns", -1),
                                         ("issued_at_ns", 2**70), ("acked_seq", 2**64), ("held", list(range(10_001)))])
def test_malformed_stamps_do_not_decode(field: str, value: object) -> None:
    obj = json.loads(_ack())
    obj[field] = value
    with pytest.raises(DecodeError):
        decode_ack(json.dumps(obj).encode())


def test_the_heartbeat_carries_the_rejections_and_tolerates_their_absence() -> None:
    hb = Heartbeat(node=NODE, epoch=EPOCH, bno=1, sent_at_ns=1, mono_ns=1, boot_id="b", version="v", streams={},
                   downlink_rejected={"unsigned": 3, "replayed": 0})
    assert decode_heartbeat(encode_heartbeat(hb)).downlink_rejected == {"unsigned": 3, "replayed": 0}
    assert decode_heartbeat(encode_heartbeat(replace(hb, downlink_rejected={}))).downlink_rejected == {}
    obj = json.loads(encode_heartbeat(hb))
    obj["downlink_rejected"] = {"unsigned": "3"}
    with pytest.raises(DecodeError, match="downlink_rejected"):
        decode_heartbeat(json.dumps(obj).encode())


# -- the uplink -------------------------------------------------------------------------------------------------------
def _uplink(tmp_path: Path, **extra: object) -> Uplink:
    cfg = parse_config({"node_id": NODE, "data_dir": str(tmp_path), "broker": {"url": "mqtt://127.0.0.1:1"},
                        "central_keys": [public_key_text(KEY)], **extra}, source="test")
    outbox = Outbox(tmp_path / "outbox.db", node_id=NODE)
    outbox.append("business", [NewRecord(kind="weighing", device="d", data={"i": i}) for i in range(10)])
    return Uplink(cfg, outbox, generate_key())


def _signed(uplink: Uplink, signer: DownlinkSigner = SIGNER, **changes: object) -> bytes:
    ack = Ack(node=NODE, epoch=uplink.outbox.epoch, stream="business", acked_seq=4, **signer.stamp())
    return encode_ack(replace(ack, **changes), signer=signer)  # type: ignore[arg-type]


def test_the_uplink_acts_only_on_genuine_acks_and_never_beyond_what_it_sent(tmp_path: Path) -> None:
    up = _uplink(tmp_path)
    pending = lambda: up.outbox.stats()["business"].pending  # noqa: E731
    assert up.published["business"] == 0  # nothing sent yet by this agent: the acked mark
    assert not up.on_downlink(_signed(up, DownlinkSigner(generate_key())), replay=False)  # forged
    assert not up.on_downlink(_signed(up, node="mill-02"), replay=False)
    assert not up.on_downlink(_signed(up, epoch="old"), replay=False)
    assert not up.on_downlink(_signed(up, acked_seq=11), replay=False)  # beyond what was ever produced
    assert not up.on_downlink(_signed(up, held=(50,)), replay=False)
    assert not up.on_downlink(b"Z\x78\x9c garbage", replay=False)
    assert not up.on_downlink(b'{"a":' * 100_000, replay=False)  # deep nesting: malformed, nothing escapes
    assert pending() == 10
    # central's mark beyond what this agent published: taken only up to what it published (nothing yet)
    assert up.on_downlink(_signed(up, acked_seq=4), replay=False)
    assert pending() == 10
    up.published["business"] = 6  # as _send_loop does before it publishes a batch
    genuine = _signed(up, acked_seq=4)
    assert up.on_downlink(genuine, replay=False)
    assert pending() == 6
    assert not up.on_downlink(genuine, replay=False)  # the same ack again
    assert up.downlink.counts == {"unknown_key": 1, "wrong_node": 1, "wrong_epoch": 1, "beyond_sent": 2,
                                  "malformed": 2, "replayed": 1}
    hb = up.heartbeat()
    assert hb.downlink_rejected["beyond_sent"] == 2
    assert set(hb.downlink_rejected) == set(REASONS)
    assert up.counters.bad_acks == 8
    up.outbox.close()


def test_a_replay_request_before_the_nodes_mark_sends_what_the_node_still_has(tmp_path: Path) -> None:
    up = _uplink(tmp_path)
    up.published["business"] = 10
    assert up.on_downlink(_signed(up, acked_seq=6), replay=False)
    st = up._state["business"]
    st.sent_upto = 10
    req = Replay(node=NODE, epoch=up.outbox.epoch, stream="business", from_seq=2, reason="restored", **SIGNER.stamp())
    assert up.on_downlink(encode_replay(req, signer=SIGNER), replay=True)
    assert st.sent_upto == 6  # 7..10 go again; 2..6 are no longer on the node
    unsigned = Replay(node=NODE, epoch=up.outbox.epoch, stream="business", from_seq=1)
    assert not up.on_downlink(encode_replay(unsigned), replay=True)
    assert up.counters.replays == 1
    up.outbox.close()


def test_no_central_key_no_start(tmp_path: Path) -> None:
    cfg = parse_config({"node_id": NODE, "data_dir": str(tmp_path), "broker": {"url": "mqtt://127.0.0.1:1"}},
                       source="test")
    with pytest.raises(ConfigError) as info:
        trusted_central_keys(cfg)
    text = str(info.value)
    assert str(tmp_path / "central.pub") in text
    assert "edge enrol" in text
    assert "--central-key" in text
    (tmp_path / "central.pub").write_text(f"# central\n{public_key_text(KEY)}\n")
    assert len(trusted_central_keys(cfg)) == 1
    (tmp_path / "central.pub").write_text("ed25519:nope\n")
    with pytest.raises(ConfigError, match="line 1"):
        trusted_central_keys(cfg)
    with pytest.raises(ConfigError, match=r"central_keys"):
        parse_config({"node_id": NODE, "broker": {"url": "mqtt://h"}, "central_keys": ["x"]}, source="t")


def test_central_key_rotation_files(tmp_path: Path) -> None:
    path = tmp_path / "pki" / "central-signing.key"
    (first,) = signing_key.keys(path)
    assert first.role == "active"
    assert (path.stat().st_mode & 0o777) == 0o600
    nxt = signing_key.new_next(path)
    with pytest.raises(SigningKeyError, match="exists already"):
        signing_key.new_next(path)
    assert [k.fingerprint for k in signing_key.keys(path)] == [first.fingerprint, nxt.fingerprint]
    old, active = signing_key.activate(path)
    assert (old.fingerprint, active.fingerprint) == (first.fingerprint, nxt.fingerprint)
    assert [k.fingerprint for k in signing_key.keys(path)] == [nxt.fingerprint]
    with pytest.raises(SigningKeyError, match="no next key"):
        signing_key.activate(path)
    pub = tmp_path / "central.pub"
    pub.write_text(f"{old.public_key}\n{active.public_key}\n")
    assert len(load_trusted_keys(pub)) == 2
