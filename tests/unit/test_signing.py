"""Node identity: Ed25519 keys on disk (owner-only), public keys as text, signatures and the reasons they fail."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.signing import (
    KEY_PREFIX,
    SigningKeyError,
    canonical_json,
    fingerprint,
    generate_key,
    load_or_create_private_key,
    load_private_key,
    parse_public_key,
    public_key_text,
    save_private_key,
    sign,
    verify,
)


def _raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_a_saved_key_is_owner_only_and_loads_back_as_the_same_key(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "sub" / "node.key"  # the directory is made too
    save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not (tmp_path / "sub" / "node.key.tmp").exists()  # written atomically, no leftover
    loaded = load_private_key(path)
    assert _raw_public(loaded) == _raw_public(key)
    body = b'{"a":1}'
    assert verify(key.public_key(), body, sign(loaded, body)) is None


def test_load_names_the_file_when_it_is_missing_or_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read the node key") as info:
        load_private_key(tmp_path / "nope.key")
    assert "nope.key" in str(info.value)
    junk = tmp_path / "junk.key"
    junk.write_text("hello")
    with pytest.raises(SigningKeyError, match="not a PEM private key") as info:
        load_private_key(junk)
    assert "junk.key" in str(info.value)


def test_load_or_create_makes_the_key_once_and_then_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, created = load_or_create_private_key(path)
    assert created is True
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    second, created_again = load_or_create_private_key(path)
    assert created_again is False
    assert path.read_bytes() == content  # not rewritten
    assert _raw_public(second) == _raw_public(first)


def test_public_key_text_round_trips_from_private_and_public_key() -> None:
    key = generate_key()
    text = public_key_text(key)
    assert text.startswith(KEY_PREFIX)
    assert len(base64.b64decode(text[len(KEY_PREFIX):])) == 32
    assert public_key_text(key.public_key()) == text
    parsed = parse_public_key(text)
    assert _raw_public(parsed) == _raw_public(key)
    assert parse_public_key(f"  {text}\n") is not None  # surrounding whitespace (pasted) is fine
    assert public_key_text(parse_public_key(f"  {text}\n")) == text


def test_a_pem_public_key_is_accepted() -> None:
    key = generate_key()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert public_key_text(parse_public_key(pem)) == public_key_text(key)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rsa:AAAA", "expected 'ed25519:<base64 of 32 bytes>'"),
        ("", "expected 'ed25519:<base64 of 32 bytes>'"),
        ("ed25519:not base64!!", "not valid base64"),
        ("ed25519:" + base64.b64encode(b"\x01" * 31).decode(), "32 bytes, this one 31"),
        ("ed25519:" + base64.b64encode(b"\x01" * 33).decode(), "32 bytes, this one 33"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a PEM public key"),
    ],
)
def test_unusable_public_key_text_gives_a_clear_error(text: str, fragment: str) -> None:
    with pytest.raises(SigningKeyError) as info:
        parse_public_key(text)
    assert fragment in str(info.value)


def test_the_fingerprint_is_stable_and_the_same_for_every_form_of_the_key() -> None:
    key = generate_key()
    fp = fingerprint(key)
    assert len(fp) == 16
    int(fp, 16)  # hex
    assert fingerprint(key.public_key()) == fp
    assert fingerprint(public_key_text(key)) == fp
    assert fingerprint(parse_public_key(public_key_text(key))) == fp
    assert fingerprint(key) == fp  # stable
    assert fingerprint(generate_key()) != fp


def test_canonical_json_leaves_out_sig_and_sorts_keys() -> None:
    assert canonical_json({"b": 1, "a": "ü", "sig": "x"}) == '{"a":"ü","b":1}'.encode()
    assert canonical_json({"b": 1, "a": "ü"}) == canonical_json({"a": "ü", "sig": None, "b": 1})


def test_a_signature_verifies_for_its_body_and_key() -> None:
    key = generate_key()
    body = canonical_json({"node": "mill-01", "records": [1, 2, 3]})
    sig = sign(key, body)
    assert len(base64.b64decode(sig)) == 64
    assert verify(key.public_key(), body, sig) is None
    assert verify(parse_public_key(public_key_text(key)), body, sig) is None


@pytest.mark.parametrize("sig", [None, ""])
def test_verify_says_not_signed_without_a_signature(sig: str | None) -> None:
    assert verify(generate_key().public_key(), b"body", sig) == "not signed"


def test_verify_gives_the_reason_a_signature_is_not_valid() -> None:
    key = generate_key()
    pub = key.public_key()
    body = b'{"gross":"24560","seq":1}'
    sig = sign(key, body)
    assert verify(pub, body, "%%%not-base64%%%") == "signature is not valid base64"
    short = base64.b64encode(base64.b64decode(sig)[:40]).decode()
    assert verify(pub, body, short) == "signature has 40 bytes, an Ed25519 signature has 64"
    other = sign(generate_key(), body)
    forged = "signature does not match the node's registered key (forged or altered)"
    assert verify(pub, body, other) == forged
    assert verify(pub, body.replace(b"24560", b"24561"), sig) == forged
    assert verify(pub, body, sig) is None
