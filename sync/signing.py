"""Node identity for the sync protocol: every node has an Ed25519 key; every batch and heartbeat it sends is signed.

The signature covers the *canonical* JSON of the message without its ``sig`` field: keys sorted, no spaces, UTF-8
(``canonical_json``). Both sides compute it from the same values, so the edge can splice the signature into its
payload and central can verify after decoding, whatever compression was used on the wire.

Public keys travel as text: ``ed25519:<base64 of the 32 raw bytes>``; the fingerprint shown to admins is the first
16 hex digits of the SHA-256 of the raw key. The private key is stored as PKCS#8 PEM, readable by its owner only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.errors import SyncError

KEY_PREFIX = "ed25519:"


class SigningKeyError(SyncError):
    """A key file or key text that cannot be used; the message names the file or the value."""


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no whitespace, UTF-8, ``sig`` left out."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> None:
    """Write the key as PKCS#8 PEM with mode 0600 (created atomically, never world-readable)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except OSError as exc:
        raise SigningKeyError(f"{p}: cannot read the node key: {exc.strerror}") from None
    except ValueError as exc:
        raise SigningKeyError(f"{p}: not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{p}: expected an Ed25519 key, found {type(key).__name__}")
    return key


def load_or_create_private_key(path: str | Path) -> tuple[Ed25519PrivateKey, bool]:
    """The node key at ``path``; a new one is made (and saved) if the file does not exist. Returns (key, created)."""
    p = Path(path)
    if p.exists():
        return load_private_key(p), False
    key = generate_key()
    save_private_key(key, p)
    return key, True


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """``ed25519:<base64>`` (or a PEM public key) → key; a clear SigningKeyError for anything else."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise SigningKeyError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"expected an Ed25519 public key, found {type(key).__name__}")
        return key
    if not text.startswith(KEY_PREFIX):
        raise SigningKeyError(f"expected 'ed25519:<base64 of 32 bytes>' or a PEM public key, got {text[:20]!r}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError("the part after 'ed25519:' is not valid base64") from None
    if len(raw) != 32:
        raise SigningKeyError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey | str) -> str:
    pub = parse_public_key(key) if isinstance(key, str) else (
        key.public_key() if isinstance(key, Ed25519PrivateKey) else key)
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body)).decode()


def verify(key: Ed25519PublicKey, body: bytes, sig: str | None) -> str | None:
    """None if ``sig`` is a valid signature of ``body``; otherwise the reason it is not."""
    if not sig:
        return "not signed"
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return "signature is not valid base64"
    if len(raw) != 64:
        return f"signature has {len(raw)} bytes, an Ed25519 signature has 64"
    try:
        key.verify(raw, body)
    except InvalidSignature:
        return "signature does not match the node's registered key (forged or altered)"
    return None
