"""Device command messages (sync.commands): round trips, signatures over results, topics, and a precise error naming
the field for every malformed command or result."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.commands import (
    COMMANDS,
    DEVICE_COMMANDS,
    Command,
    CommandResult,
    check_args,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    peek_command,
)
from sync.errors import DecodeError
from sync.records.weighing import CODES
from sync.signing import generate_key, sign, verify
from sync.topics import (
    command_result_subscription,
    command_result_topic,
    command_topic,
    parse_command_result_topic,
)

CID = "1f0c7a52-8d4e-4f8e-9a0b-3c2d1e0f9a8b"
T0 = 1_732_400_000_000_000_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    name = draw(st.sampled_from(COMMANDS))
    issued = draw(st.integers(0, 2**62))
    args: dict[str, str] = {}
    if name == "weigh":
        text = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="\u00a0"),
                       min_size=1, max_size=32).filter(lambda t: t.isprintable() and t.strip() != "")
        args = draw(st.dictionaries(st.sampled_from(CODES), text))  # 32: the narrowest code (vehicle, a column)
    elif name == "tare" and draw(st.booleans()):
        args = {"preset_tare": draw(st.from_regex(r"[0-9]{1,5}(\.[0-9]{1,4})?", fullmatch=True))}
    return Command(command_id=str(draw(st.uuids())), node=draw(ids), command=name,
                   device=draw(ids) if name in DEVICE_COMMANDS else None, args=args, issued_at_ns=issued,
                   expires_at_ns=issued + draw(st.integers(1, 10**12)))


@st.composite
def results(draw: st.DrawFn) -> CommandResult:
    name = draw(st.sampled_from(COMMANDS))
    status = draw(st.sampled_from(["succeeded", "failed", "rejected"]))
    return CommandResult(command_id=str(draw(st.uuids())), node=draw(ids), command=name,
                         device=draw(ids) if name in DEVICE_COMMANDS else None, status=status,
                         result=draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5)),
                         error=None if status == "succeeded" else draw(st.text(min_size=1, max_size=50).filter(
                             str.strip)),
                         finished_at_ns=draw(st.integers(0, 2**62)))


@given(commands())
def test_a_command_round_trips(cmd: Command) -> None:
    assert decode_command(encode_command(cmd)) == cmd


@given(results())
def test_a_signed_result_round_trips_and_verifies(res: CommandResult) -> None:
    key = generate_key()
    decoded = decode_result(encode_result(res, signer=lambda body: sign(key, body)))
    assert replace(decoded, sig=None) == res
    assert verify(key.public_key(), decoded.signed_body, decoded.sig) is None


def _result(**over: Any) -> CommandResult:
    base: dict[str, Any] = {"command_id": CID, "node": "mill-01", "command": "zero", "device": "bridge-1",
                            "status": "failed", "error": "scale refused zero: Z I (not executable now)",
                            "result": {"answer": "Z I"}, "finished_at_ns": T0}
    return CommandResult(**{**base, **over})


def test_an_altered_result_does_not_verify_and_another_key_is_refused() -> None:
    key = generate_key()
    payload = encode_result(_result(), signer=lambda body: sign(key, body))
    obj = json.loads(payload)
    obj["status"], obj["error"] = "succeeded", None  # turn a refusal into a success
    forged = decode_result(json.dumps(obj).encode())
    assert verify(key.public_key(), forged.signed_body, forged.sig) == (
        "signature does not match the node's registered key (forged or altered)")
    other = decode_result(encode_result(_result(), signer=lambda body: sign(generate_key(), body)))
    assert verify(key.public_key(), other.signed_body, other.sig) is not None
    unsigned = decode_result(encode_result(_result()))
    assert verify(key.public_key(), unsigned.signed_body, unsigned.sig) == "not signed"


def test_a_large_result_is_compressed_and_still_verifies() -> None:
    key = generate_key()
    res = _result(status="succeeded", error=None, command="poll",
                  result={"values": {f"temperature_{i}": 20.5 + i for i in range(200)}})
    payload = encode_result(res, signer=lambda body: sign(key, body))
    assert payload[:1] == b"Z"
    decoded = decode_result(payload)
    assert verify(key.public_key(), decoded.signed_body, decoded.sig) is None


def _command_obj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"v": 1, "type": "command", "command_id": CID, "node": "mill-01", "device": "bridge-1",
                           "command": "weigh", "args": {"reference": "DN-4711"}, "issued_at_ns": T0,
                           "expires_at_ns": T0 + 30 * 10**9}
    for key, value in over.items():
        if value is _DROP:
            obj.pop(key)
        else:
            obj[key] = value
    return obj


_DROP = object()


@pytest.mark.parametrize(("over", "field", "reason"), [
    ({"v": 2}, "v", "unsupported envelope version 2"),
    ({"type": "batch"}, "type", "expected 'command'"),
    ({"command_id": _DROP}, "command_id", "missing"),
    ({"command_id": "not-a-uuid"}, "command_id", "is not a UUID"),
    ({"command_id": CID.upper()}, "command_id", "expected the canonical form"),
    ({"node": "mill/01"}, "node", "not a valid node id"),
    ({"command": "calibrate"}, "command", "unknown command 'calibrate'"),
    ({"command": 3}, "command", "expected str"),
    ({"device": _DROP}, "device", "weigh needs a device"),
    ({"device": "bridge 1"}, "device", "not a valid device id"),
    ({"command": "reload", "args": {}}, "device", "reload applies to the whole node: no device"),
    ({"args": []}, "args", "expected an object"),
    ({"args": {"unit": "kg"}}, "args.unit", "weigh takes no argument 'unit'"),
    ({"args": {"reference": 4711}}, "args.reference", "expected a string"),
    ({"args": {"reference": "x" * 65}}, "args.reference", "expected 1 to 64 characters"),
    ({"args": {"reference": "a\x00b"}}, "args.reference", "control characters"),
    ({"command": "tare", "args": {"reference": "x"}}, "args.reference", "tare takes no argument 'reference'"),
    ({"args": {"vehicle": ""}}, "args.vehicle", "expected 1 to 32 characters, got 0"),
    ({"args": {"vehicle": "V" * 33}}, "args.vehicle", "expected 1 to 32 characters, got 33"),  # weighings.vehicle
    ({"args": {"partner": "   "}}, "args.partner", "only spaces"),
    ({"args": {"article": "WHEAT\u200b"}}, "args.article", "non-printable"),
    ({"args": {"lot": "L\n1"}}, "args.lot", "control characters"),
    ({"args": {"delivery_note": ["LS-1"]}}, "args.delivery_note", "expected a string, got list"),
    ({"command": "tare", "args": {"preset_tare": "-14960"}}, "args.preset_tare", "non-negative decimal"),
    ({"command": "tare", "args": {"preset_tare": "1e4"}}, "args.preset_tare", "got '1e4'"),
    ({"command": "tare", "args": {"preset_tare": "14960 kg"}}, "args.preset_tare", "non-negative decimal"),
    ({"command": "tare", "args": {"preset_tare": "12345678.901"}}, "args.preset_tare", "at most 10 characters"),
    ({"command": "tare", "args": {"preset_tare": 14960}}, "args.preset_tare", "expected a string, got int"),
    ({"command": "zero", "args": {"preset_tare": "0"}}, "args.preset_tare", "zero takes no argument"),
    ({"issued_at_ns": _DROP}, "issued_at_ns", "missing"),
    ({"expires_at_ns": "soon"}, "expires_at_ns", "expected int"),
    ({"expires_at_ns": True}, "expires_at_ns", "got a boolean"),
    ({"expires_at_ns": T0}, "expires_at_ns", "is not after issued_at_ns"),
])
def test_a_malformed_command_names_the_field(over: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_command(json.dumps(_command_obj(**over)).encode())
    assert err.value.field == field
    assert reason in err.value.reason


def test_each_code_is_held_to_the_width_central_stores_it_in() -> None:
    """A vehicle is a 32-character column of weighings; the other codes take 64 (a longer one was accepted by the
    command and then quarantined with its weighing at central)."""
    cmd = decode_command(json.dumps(_command_obj(args={"reference": "R" * 64, "partner": "P" * 64,
                                                       "vehicle": "V" * 32})).encode())
    assert dict(cmd.args) == {"reference": "R" * 64, "partner": "P" * 64, "vehicle": "V" * 32}


def test_a_command_without_device_for_reload_decodes() -> None:
    cmd = decode_command(json.dumps(_command_obj(command="reload", device=None, args={})).encode())
    assert (cmd.command, cmd.device, dict(cmd.args)) == ("reload", None, {})
    assert cmd.expired(T0 + 30 * 10**9)
    assert not cmd.expired(T0 + 30 * 10**9 - 1)


def test_peek_gives_what_a_node_needs_to_answer_a_malformed_command() -> None:
    bad_args = json.dumps(_command_obj(args={"unit": "kg"})).encode()
    assert peek_command(bad_args) == (CID, "weigh", "bridge-1")
    assert peek_command(json.dumps(_command_obj(command_id="nope")).encode()) is None
    assert peek_command(json.dumps(_command_obj(command="calibrate")).encode()) is None
    assert peek_command(b"\x00garbage") is None


def _result_obj(**over: Any) -> dict[str, Any]:
    obj = json.loads(encode_result(_result()))
    obj.update(over)
    return obj


@pytest.mark.parametrize(("over", "field", "reason"), [
    ({"type": "command"}, "type", "expected 'command_result'"),
    ({"status": "done"}, "status", "unknown status 'done'"),
    ({"status": "succeeded"}, "error", "a succeeded command has no error"),
    ({"error": None}, "error", "a failed command needs an error text"),
    ({"error": "   "}, "error", "needs an error text"),
    ({"error": "x" * 2001}, "error", "at most 2000 characters"),
    ({"result": [1, 2]}, "result", "expected an object"),
    ({"finished_at_ns": -1}, "finished_at_ns", "must be >= 0"),
    ({"device": None}, "device", "zero needs a device"),
    ({"sig": 5}, "sig", "expected a string or null"),
])
def test_a_malformed_result_names_the_field(over: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_result(json.dumps(_result_obj(**over)).encode())
    assert err.value.field == field
    assert reason in err.value.reason


def test_check_args_is_what_the_api_uses() -> None:
    assert check_args("weigh", {"reference": "DN-1"}) == {"reference": "DN-1"}
    codes = {"reference": "T-2025-000123", "vehicle": "STD-AB 123", "partner": "Hof Müller", "article": "WHEAT",
             "lot": "L-2025-0042", "delivery_note": "x" * 64}
    assert check_args("weigh", codes) == codes
    assert set(codes) == set(CODES)
    for value in ("0", "14960", "2.486", "0000012345"):
        assert check_args("tare", {"preset_tare": value}) == {"preset_tare": value}
    assert check_args("tare", {}) == {}
    assert check_args("poll", {}) == {}
    with pytest.raises(DecodeError, match="poll takes no argument 'x'"):
        check_args("poll", {"x": "1"})


def test_topics() -> None:
    node = "mill-01"
    assert command_topic(node) == "floorgate/v1/mill-01/cmd"
    assert command_result_topic(node) == "floorgate/v1/mill-01/cmd/result"
    assert parse_command_result_topic(command_result_topic(node)) == node
    assert command_result_subscription() == "floorgate/v1/+/cmd/result"
    assert command_result_subscription("ingest") == "$share/ingest/floorgate/v1/+/cmd/result"
    for bad in ("floorgate/v1/mill-01/cmd", "floorgate/v1/mill-01/up/business", "floorgate/v2/mill-01/cmd/result",
                "floorgate/v1/+/cmd/result"):
        with pytest.raises(DecodeError):
            parse_command_result_topic(bad)
    with pytest.raises(DecodeError):
        command_topic("a/b")


def test_uuid4_ids_are_canonical() -> None:
    cid = str(uuid.uuid4())
    cmd = Command(command_id=cid, node="n1", command="poll", device="d1", issued_at_ns=0, expires_at_ns=1)
    assert decode_command(encode_command(cmd)).command_id == cid
