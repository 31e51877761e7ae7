"""A central signing key for tests that play central towards a node (acks, replay requests, commands) without a
central process: the node config trusts ``CENTRAL_PUB`` (``central_keys``), ``SIGNER`` signs like central does."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sync.commands import Command, encode_command
from sync.downlink import DownlinkSigner
from sync.envelope import Ack, Replay, encode_ack, encode_replay
from sync.signing import generate_key, public_key_text

CENTRAL_KEY = generate_key()
CENTRAL_PUB = public_key_text(CENTRAL_KEY)
SIGNER = DownlinkSigner(CENTRAL_KEY)
TRUST: dict[str, Any] = {"central_keys": [CENTRAL_PUB]}  # merge into a node config


def signed_ack(ack: Ack, signer: DownlinkSigner = SIGNER) -> bytes:
    return encode_ack(replace(ack, **signer.stamp()), signer=signer)


def signed_replay(req: Replay, signer: DownlinkSigner = SIGNER) -> bytes:
    return encode_replay(replace(req, **signer.stamp()), signer=signer)


def signed_command(cmd: Command, signer: DownlinkSigner = SIGNER) -> bytes:
    stamp = signer.stamp()
    return encode_command(replace(cmd, nonce=stamp["nonce"], kid=stamp["kid"]), signer=signer)
