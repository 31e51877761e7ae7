"""Central's own Ed25519 key: it signs everything central sends to a node — acks, replay requests, commands
(``sync.downlink``) — so that a node deletes, replays or acts only on what central said.

Files (``signing_key_file`` in the central config; default ``<pki.dir>/central-signing.key``, else
``central-signing.key`` beside the config file)::

    central-signing.key        the active key (PKCS#8 PEM, mode 0600); made on first need
    central-signing.key.next   the next key, while a rotation is under way (``signing-key new``)
    central-signing.key.old    the key the last ``signing-key activate`` retired (kept for reference)

Every central process (``central run``, each ``central ingest``) must read the same active key. Nodes trust the
public halves listed in their ``central.pub`` (``edge enrol --central-key``, the bundle of ``node add``).

Rotation with an overlap, never a moment where a node trusts no key central signs with:

1. ``floorgate central signing-key new``      — makes the next key; ``show`` now prints both public keys and
                                                ``node register`` / ``node add`` hand out both;
2. put both keys in every node's ``central.pub`` (the Ansible edge role: ``edge_central_keys``) and restart the
   agents (they read the file at start);
3. ``floorgate central signing-key activate`` — the next key becomes the active one; restart every central process;
4. later, drop the old key from the nodes' ``central.pub``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.signing import (
    SigningKeyError,
    fingerprint,
    generate_key,
    load_or_create_private_key,
    load_private_key,
    public_key_text,
    save_private_key,
)

DEFAULT_NAME = "central-signing.key"


@dataclass(frozen=True)
class KeyInfo:
    role: str  # "active" or "next"
    path: Path
    fingerprint: str
    public_key: str


def key_path(configured: Path | None) -> Path:
    """The active key's file; a SigningKeyError when the settings have none (settings not read from a file)."""
    if configured is None:
        raise SigningKeyError("signing_key_file: not set (and no config file to put central-signing.key beside)")
    return configured


def next_path(active: Path) -> Path:
    return active.with_name(active.name + ".next")


def old_path(active: Path) -> Path:
    return active.with_name(active.name + ".old")


def load_or_create(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """Central's active key, made (mode 0600) if the file does not exist. Returns (key, created)."""
    try:
        return load_or_create_private_key(path)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot create central's signing key: {exc.strerror}") from None


def keys(path: Path, *, create: bool = True) -> list[KeyInfo]:
    """The active key (made if missing and ``create``) and the next one if a rotation is under way: what nodes must
    trust."""
    out: list[KeyInfo] = []
    if create or path.exists():
        active, _ = load_or_create(path)
        out.append(KeyInfo("active", path, fingerprint(active), public_key_text(active)))
    nxt = next_path(path)
    if nxt.exists():
        key = load_private_key(nxt)
        out.append(KeyInfo("next", nxt, fingerprint(key), public_key_text(key)))
    return out


def new_next(path: Path) -> KeyInfo:
    """Make the next key (refused if one is waiting already: activate or remove it first)."""
    nxt = next_path(path)
    if nxt.exists():
        raise SigningKeyError(f"{nxt}: a next key exists already (fingerprint {fingerprint(load_private_key(nxt))}); "
                              "`signing-key activate` it or remove the file")
    load_or_create(path)  # the active key exists first, so that the next one is never the only one
    key = generate_key()
    try:
        save_private_key(key, nxt)
    except OSError as exc:
        raise SigningKeyError(f"{nxt}: cannot write: {exc.strerror}") from None
    return KeyInfo("next", nxt, fingerprint(key), public_key_text(key))


def activate(path: Path) -> tuple[KeyInfo, KeyInfo]:
    """The next key becomes the active one; the active one is kept as ``.old``. Returns (retired, active)."""
    nxt = next_path(path)
    if not nxt.exists():
        raise SigningKeyError(f"{nxt}: no next key to activate (`floorgate central signing-key new` makes one)")
    new = load_private_key(nxt)
    old, _ = load_or_create(path)
    try:
        os.replace(path, old_path(path))
        os.replace(nxt, path)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot activate the next key: {exc.strerror}") from None
    return (KeyInfo("old", old_path(path), fingerprint(old), public_key_text(old)),
            KeyInfo("active", path, fingerprint(new), public_key_text(new)))
