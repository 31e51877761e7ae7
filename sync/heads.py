"""The heads a node signs in its heartbeat: what it holds of its alibi chain and, per TSE, the highest transaction
number and signature counter it stored — so central can tell what it lacks at the end of a chain (truncation).

On the wire (``sync.envelope``: the heartbeat's ``heads``, covered by the heartbeat's signature)::

    "heads": {"alibi": {"no": 42, "hash": "<64 hex>", "epoch": "<outbox epoch>", "stream": "business", "seq": 97,
                        "pruned_through": 0, "pruned_hash": null} | null,
              "tse": [{"serial": "<hex>", "tx": 118, "counter": 240}, …]}

``alibi``: the newest entry of the node's alibi mirror (its number and hash) and where its weighing record stands in
the outbox (``epoch``, ``stream``, ``seq``); ``pruned_through`` is the highest entry number the node has given up to
its retention (0: none) and ``pruned_hash`` that entry's hash (null when none). ``null``: the node has no entry yet.
``tse``: per TSE serial (hex SHA-256 of its public key) the highest transaction number (``tx``) and signature
counter (``counter``, 0 when no sale was finished yet) of the sales the node stored.

Decoding is strict: every key is required (``pruned_hash`` may be null), no other key is accepted, every number is
an integer within its bound, and each problem raises ``DecodeError`` naming the field (``heads.tse[2].counter``).
Stdlib only, like the rest of ``sync``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync.errors import DecodeError
from sync.streams import STREAMS

MAX_COUNTER = 2**63 - 1
MAX_TSE_HEADS = 32  # TSEs one node reports
MAX_SERIAL_CHARS = 128  # tse_registry.tse_serial
MAX_EPOCH_CHARS = 64
_HASH = re.compile(r"[0-9a-f]{64}")
_SERIAL = re.compile(rf"[0-9a-f]{{1,{MAX_SERIAL_CHARS}}}")
_ALIBI_KEYS = ("no", "hash", "epoch", "stream", "seq", "pruned_through", "pruned_hash")
_TSE_KEYS = ("serial", "tx", "counter")


@dataclass(frozen=True)
class AlibiHead:
    """The newest entry of the node's alibi chain, the outbox place of its weighing, and the retention boundary."""

    no: int
    hash: str
    epoch: str
    stream: str
    seq: int
    pruned_through: int = 0  # the highest entry number given up to retention (0: none)
    pruned_hash: str | None = None  # that entry's hash

    def to_json(self) -> dict[str, Any]:
        return {"no": self.no, "hash": self.hash, "epoch": self.epoch, "stream": self.stream, "seq": self.seq,
                "pruned_through": self.pruned_through, "pruned_hash": self.pruned_hash}


@dataclass(frozen=True)
class TseMark:
    """One TSE's head: the highest transaction number and signature counter of the sales the node stored."""

    serial: str
    tx: int
    counter: int

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "tx": self.tx, "counter": self.counter}


@dataclass(frozen=True)
class Heads:
    alibi: AlibiHead | None = None
    tse: tuple[TseMark, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"alibi": self.alibi.to_json() if self.alibi is not None else None,
                "tse": [m.to_json() for m in self.tse]}

    def tse_mark(self, serial: str) -> TseMark | None:
        return next((m for m in self.tse if m.serial == serial), None)


def _only(obj: Mapping[str, Any], keys: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in keys:
            raise DecodeError(f"unknown field (expected {', '.join(keys)})", field=f"{path}.{str(key)[:40]}")
    for key in keys:
        if key not in obj:
            raise DecodeError("missing", field=f"{path}.{key}")


def _int(obj: Mapping[str, Any], key: str, path: str, *, minimum: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"expected an integer, got {type(value).__name__}", field=f"{path}.{key}")
    if not minimum <= value <= MAX_COUNTER:
        raise DecodeError(f"{value} is out of range {minimum} .. {MAX_COUNTER}", field=f"{path}.{key}")
    return value


def _hash(value: object, field: str) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        shown = value[:70] if isinstance(value, str) else type(value).__name__
        raise DecodeError(f"expected 64 lowercase hex digits, got {shown!r}", field=field)
    return value


def _alibi(raw: object, path: str) -> AlibiHead | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DecodeError("expected an object or null", field=path)
    _only(raw, _ALIBI_KEYS, path)
    no = _int(raw, "no", path, minimum=1)
    epoch = raw["epoch"]
    if not isinstance(epoch, str) or not 1 <= len(epoch) <= MAX_EPOCH_CHARS or not epoch.isprintable():
        raise DecodeError(f"expected 1 to {MAX_EPOCH_CHARS} printable characters", field=f"{path}.epoch")
    stream = raw["stream"]
    if not isinstance(stream, str) or stream not in STREAMS:
        raise DecodeError(f"unknown stream {str(stream)[:40]!r} (expected one of {sorted(STREAMS)})",
                          field=f"{path}.stream")
    pruned = _int(raw, "pruned_through", path, minimum=0)
    if pruned > no:
        raise DecodeError(f"{pruned} is beyond the head {no}", field=f"{path}.pruned_through")
    pruned_hash = raw["pruned_hash"]
    if pruned == 0:
        if pruned_hash is not None:
            raise DecodeError("must be null when nothing was given up (pruned_through 0)", field=f"{path}.pruned_hash")
    else:
        pruned_hash = _hash(pruned_hash, f"{path}.pruned_hash")
    return AlibiHead(no=no, hash=_hash(raw["hash"], f"{path}.hash"), epoch=epoch, stream=stream,
                     seq=_int(raw, "seq", path, minimum=1), pruned_through=pruned, pruned_hash=pruned_hash)


def _tse(raw: object, path: str) -> tuple[TseMark, ...]:
    if not isinstance(raw, list):
        raise DecodeError("expected a list", field=path)
    if len(raw) > MAX_TSE_HEADS:
        raise DecodeError(f"{len(raw)} TSEs exceed {MAX_TSE_HEADS}", field=path)
    out: list[TseMark] = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise DecodeError("expected an object", field=where)
        _only(item, _TSE_KEYS, where)
        serial = item["serial"]
        if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
            shown = serial[:70] if isinstance(serial, str) else type(serial).__name__
            raise DecodeError(f"expected 1 to {MAX_SERIAL_CHARS} lowercase hex digits, got {shown!r}",
                              field=f"{where}.serial")
        if any(m.serial == serial for m in out):
            raise DecodeError(f"TSE {serial} is listed twice", field=f"{where}.serial")
        out.append(TseMark(serial=serial, tx=_int(item, "tx", where, minimum=1),
                           counter=_int(item, "counter", where, minimum=0)))
    return tuple(out)


def decode_heads(raw: object, path: str = "heads") -> Heads | None:
    """The heads of a decoded heartbeat object (absent / null → None); ``DecodeError`` names the field."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DecodeError("expected an object or null", field=path)
    _only(raw, ("alibi", "tse"), path)
    return Heads(alibi=_alibi(raw["alibi"], f"{path}.alibi"), tse=_tse(raw["tse"], f"{path}.tse"))


__all__ = ["MAX_TSE_HEADS", "AlibiHead", "Heads", "TseMark", "decode_heads"]
