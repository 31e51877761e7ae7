"""Device commands of the sync protocol: central asks a node to act (tare, zero, weigh now, poll now, reload its
config) and the node answers with a signed result.

Both travel in the envelope of ``sync.envelope`` (``{`` plain JSON or ``Z`` + zlib, ``"v": 1``), with MQTT QoS 1::

    floorgate/v1/<node>/cmd          central → node   Command
    floorgate/v1/<node>/cmd/result   node → central   CommandResult (signed with the node's Ed25519 key)

Command::

    {"v": 1, "type": "command", "command_id": "<uuid4>", "node": "mill-01", "device": "bridge-1",
     "command": "weigh", "args": {"reference": "DN-4711"},
     "issued_at_ns": 1732400000000000000, "expires_at_ns": 1732400030000000000,
     "nonce": "<32 hex>", "kid": "<fingerprint of central's key>", "sig": "<base64 Ed25519, central's key>"}

A command is signed by central (``sync.downlink``): the node verifies the signature with one of its trusted central
keys and that the command names it **before** the command enters its command log; anything else is dropped,
logged and counted, never answered and never executed.

``device`` names the device for ``tare``, ``zero``, ``weigh`` and ``poll`` and is null for ``reload`` (the whole
node). ``args`` is an object of strings, each optional:

    weigh   reference, vehicle, partner, article, lot, delivery_note   1-64 printable characters each (not blank),
            (``sync.records.weighing.CODES``)                          copied into the weighing record
    tare    preset_tare   a non-negative decimal as the scale shows it ("14960", "2.486"; at most 10 characters):
                          the scale's tare memory is set to it (MT-SICS ``TA <value> <unit>``) instead of taring

A node executes a command at most once: it keeps every ``command_id`` it saw (and the signed result it
sent) and answers a redelivered command with the stored result. It does not execute a command whose
``expires_at_ns`` has passed by its own clock; it answers ``rejected`` with an error starting ``expired``.

CommandResult::

    {"v": 1, "type": "command_result", "command_id": "<uuid4>", "node": "mill-01", "device": "bridge-1",
     "command": "weigh", "status": "succeeded", "error": null,
     "result": {"gross": "24560", "unit": "kg", "stable": true, "answer": "S S      24560 kg", "record_id": "…"},
     (a tared scale: "net", "tare", "tare_preset" and no "gross" - the values of the weighing record)
     "finished_at_ns": 1732400000400000000, "sig": "<base64 Ed25519 over the canonical JSON without sig>"}

``status``: ``succeeded`` (``error`` null), ``failed`` (the device or the node could not do it: a scale's refusal
``Z I`` / ``T I``, overload, no answer) or ``rejected`` (not attempted: the device cannot do that, the command
expired, a config to reload is invalid); ``failed`` and ``rejected`` carry an ``error`` text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sync.envelope import (
    ENVELOPE_VERSION,
    Signer,
    _dump_signed,
    _get,
    _load,
    _opt_int,
    _sig,
    decode_downlink_stamp,
)
from sync.errors import DecodeError
from sync.records.weighing import CODES, TEXT_LIMITS
from sync.signing import canonical_json
from sync.topics import NODE_ID_RE, check_node_id

COMMANDS: Final = ("tare", "zero", "weigh", "poll", "reload")
DEVICE_COMMANDS: Final = frozenset({"tare", "zero", "weigh", "poll"})
RESULT_STATUSES: Final = ("succeeded", "failed", "rejected")
MAX_REFERENCE_CHARS: Final = 64  # every text argument (reference, vehicle, partner, article, lot, delivery_note)
MAX_DECIMAL_CHARS: Final = 10  # a decimal argument fits the 10-character weight field of MT-SICS
MAX_ERROR_CHARS: Final = 2000
# the arguments each command takes: name → kind ("text": 1-64 printable characters; "decimal": see _DECIMAL_RE)
COMMAND_ARGS: Final[dict[str, dict[str, str]]] = {
    "weigh": dict.fromkeys(CODES, "text"),  # the codes it carries into its weighing record
    "tare": {"preset_tare": "decimal"},
}
_DECIMAL_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
EXPIRED: Final = "expired"  # first word of the error of a command answered as expired


@dataclass(frozen=True)
class Command:
    """What central asks a node to do; ``device`` is None for ``reload``."""

    command_id: str
    node: str
    command: str
    device: str | None
    issued_at_ns: int
    expires_at_ns: int
    args: Mapping[str, Any] = field(default_factory=dict)
    nonce: str = ""  # sync.downlink: signed by central
    kid: str = ""
    sig: str | None = None
    signed_body: bytes = field(default=b"", compare=False, repr=False)  # set by decode: what ``sig`` covers

    def expired(self, now_ns: int) -> bool:
        return now_ns >= self.expires_at_ns


@dataclass(frozen=True)
class CommandResult:
    """The node's answer to one command (signed)."""

    command_id: str
    node: str
    command: str
    device: str | None
    status: str
    finished_at_ns: int
    result: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    sig: str | None = None
    signed_body: bytes = field(default=b"", compare=False, repr=False)  # set by decode: what ``sig`` covers


def check_command_id(value: str, *, field_name: str = "command_id") -> str:
    """``value`` if it is a UUID in its canonical form (36 lower-case characters), else DecodeError."""
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise DecodeError(f"{value[:40]!r} is not a UUID", field=field_name) from None
    if canonical != value:
        raise DecodeError(f"expected the canonical form {canonical!r}", field=field_name)
    return value


def check_device(command: str, device: object, *, field_name: str = "device") -> str | None:
    """The device a command addresses: required for device commands, absent (None) for ``reload``."""
    if command not in DEVICE_COMMANDS:
        if device is not None:
            raise DecodeError(f"{command} applies to the whole node: no device", field=field_name)
        return None
    if device is None:
        raise DecodeError(f"{command} needs a device", field=field_name)
    if not isinstance(device, str):
        raise DecodeError(f"expected a string, got {type(device).__name__}", field=field_name)
    if not NODE_ID_RE.match(device):
        raise DecodeError(f"{device[:70]!r} is not a valid device id (letters, digits, '_', '.', '-'; at most 64)",
                          field=field_name)
    return device


def check_command(command: object, *, field_name: str = "command") -> str:
    if not isinstance(command, str):
        raise DecodeError(f"expected a string, got {type(command).__name__}", field=field_name)
    if command not in COMMANDS:
        raise DecodeError(f"unknown command {command[:40]!r} (expected one of {', '.join(COMMANDS)})",
                          field=field_name)
    return command


def check_args(command: str, args: object, *, field_name: str = "args") -> dict[str, Any]:
    """The arguments of ``command``, checked: every key known to the command, every value of its type."""
    if not isinstance(args, dict):
        raise DecodeError(f"expected an object, got {type(args).__name__}", field=field_name)
    allowed = COMMAND_ARGS.get(command, {})
    out: dict[str, Any] = {}
    for key, value in args.items():
        path = f"{field_name}.{key}"
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise DecodeError(f"{command} takes no argument {str(key)[:40]!r} (its arguments: {known})", field=path)
        if not isinstance(value, str):
            raise DecodeError(f"expected a string, got {type(value).__name__}", field=path)
        if allowed[key] == "decimal":
            out[key] = _check_decimal(value, path)
        else:  # a code that becomes a column of central's weighings is held to that column's width (vehicle: 32)
            out[key] = _check_text(value, path, TEXT_LIMITS.get(key) or MAX_REFERENCE_CHARS)
    return out


def _check_text(value: str, path: str, limit: int = MAX_REFERENCE_CHARS) -> str:
    if not 1 <= len(value) <= limit:
        raise DecodeError(f"expected 1 to {limit} characters, got {len(value)}", field=path)
    if not value.isprintable():
        raise DecodeError("control characters and other non-printable characters are not allowed", field=path)
    if not value.strip():
        raise DecodeError("expected some text, got only spaces", field=path)
    return value


def _check_decimal(value: str, path: str) -> str:
    if len(value) > MAX_DECIMAL_CHARS or not _DECIMAL_RE.fullmatch(value):
        raise DecodeError(f"expected a non-negative decimal number such as '14960' or '2.486' (at most "
                          f"{MAX_DECIMAL_CHARS} characters), got {value[:20]!r}", field=path)
    return value


def _check_type(obj: Mapping[str, Any], expected: str) -> None:
    msg_type = _get(obj, "type", str)
    if msg_type != expected:
        raise DecodeError(f"expected {expected!r}, got {msg_type!r}", field="type")


def encode_command(cmd: Command, *, signer: Signer | None = None) -> bytes:
    """The wire form of ``cmd``; with ``signer`` (central's key, ``sync.downlink.DownlinkSigner``) it is signed,
    else it carries ``cmd.sig``."""
    return _dump_signed({
        "v": ENVELOPE_VERSION, "type": "command", "command_id": cmd.command_id, "node": cmd.node,
        "device": cmd.device, "command": cmd.command, "args": dict(cmd.args), "issued_at_ns": cmd.issued_at_ns,
        "expires_at_ns": cmd.expires_at_ns, "nonce": cmd.nonce, "kid": cmd.kid,
    }, signer, cmd.sig)


def decode_command(payload: bytes) -> Command:
    """Decode and validate a command; every problem raises DecodeError naming the field."""
    obj = _load(payload)
    _check_type(obj, "command")
    command_id = check_command_id(_get(obj, "command_id", str))
    node = check_node_id(_get(obj, "node", str))
    command = check_command(_get(obj, "command", str))
    device = check_device(command, obj.get("device"))
    args = check_args(command, obj.get("args", {}))
    issued = _opt_int(obj, "issued_at_ns")
    expires = _opt_int(obj, "expires_at_ns")
    if issued is None:
        raise DecodeError("missing", field="issued_at_ns")
    if expires is None:
        raise DecodeError("missing", field="expires_at_ns")
    if expires <= issued:
        raise DecodeError(f"{expires} is not after issued_at_ns {issued}", field="expires_at_ns")
    _, nonce, kid = decode_downlink_stamp(obj)
    return Command(command_id=command_id, node=node, command=command, device=device, args=args,
                   issued_at_ns=issued, expires_at_ns=expires, nonce=nonce, kid=kid, sig=_sig(obj),
                   signed_body=canonical_json(obj))


def peek_command(payload: bytes) -> tuple[str, str, str | None] | None:
    """``(command_id, command, device)`` of a command that does not decode as a whole (bad ``args``, missing times)
    when those three are usable, so that the node can answer ``rejected`` with the reason instead of leaving central
    to time out; None otherwise."""
    try:
        obj = _load(payload)
        command_id, command = obj.get("command_id"), obj.get("command")
        if not isinstance(command_id, str) or not isinstance(command, str):
            return None
        check_command_id(command_id)
        check_command(command)
        return command_id, command, check_device(command, obj.get("device"))
    except DecodeError:
        return None


def peek_signature(payload: bytes) -> tuple[str, str, str | None, bytes] | None:
    """``(node, kid, sig, signed_body)`` of a command that does not decode as a whole, so that the node can tell
    whether central signed it (then it answers ``rejected``) or not (then it drops it); None when not even that."""
    try:
        obj = _load(payload)
        node = check_node_id(_get(obj, "node", str))
        _, _, kid = decode_downlink_stamp(obj)
        return node, kid, _sig(obj), canonical_json(obj)
    except DecodeError:
        return None


def encode_result(res: CommandResult, *, signer: Signer | None = None) -> bytes:
    """The wire form of ``res``; with ``signer`` (the node key) it is signed, else it carries ``res.sig``."""
    return _dump_signed({
        "v": ENVELOPE_VERSION, "type": "command_result", "command_id": res.command_id, "node": res.node,
        "device": res.device, "command": res.command, "status": res.status, "error": res.error,
        "result": dict(res.result), "finished_at_ns": res.finished_at_ns,
    }, signer, res.sig)


def decode_result(payload: bytes) -> CommandResult:
    """Decode and validate a command result; every problem raises DecodeError naming the field. The signature is
    not checked here (``signed_body`` is what it covers: ``sync.signing.verify``)."""
    obj = _load(payload)
    _check_type(obj, "command_result")
    command_id = check_command_id(_get(obj, "command_id", str))
    node = check_node_id(_get(obj, "node", str))
    command = check_command(_get(obj, "command", str))
    device = check_device(command, obj.get("device"))
    status = _get(obj, "status", str)
    if status not in RESULT_STATUSES:
        raise DecodeError(f"unknown status {status[:40]!r} (expected one of {', '.join(RESULT_STATUSES)})",
                          field="status")
    error = obj.get("error")
    if status == "succeeded":
        if error is not None:
            raise DecodeError("a succeeded command has no error (null)", field="error")
    elif not isinstance(error, str) or not error.strip():
        raise DecodeError(f"a {status} command needs an error text", field="error")
    elif len(error) > MAX_ERROR_CHARS:
        raise DecodeError(f"at most {MAX_ERROR_CHARS} characters", field="error")
    result = obj.get("result", {})
    if not isinstance(result, dict):
        raise DecodeError(f"expected an object, got {type(result).__name__}", field="result")
    finished = _opt_int(obj, "finished_at_ns")
    if finished is None:
        raise DecodeError("missing", field="finished_at_ns")
    return CommandResult(command_id=command_id, node=node, command=command, device=device, status=status,
                         result=result, error=error, finished_at_ns=finished, sig=_sig(obj),
                         signed_body=canonical_json(obj))


__all__ = [
    "COMMANDS",
    "COMMAND_ARGS",
    "DEVICE_COMMANDS",
    "EXPIRED",
    "MAX_REFERENCE_CHARS",
    "RESULT_STATUSES",
    "Command",
    "CommandResult",
    "check_args",
    "check_command",
    "check_command_id",
    "check_device",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_result",
    "peek_command",
    "peek_signature",
]
