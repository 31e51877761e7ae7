"""The ``checkpoint:`` settings and the checkpoint file on its own (no database): what is refused is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.config import parse_settings
from central.fleet import signing_key
from central.fleet.checkpoint import TYPE, CheckpointError, document_bytes, file_name, load, row_hash, trusted_keys
from sync.runtime.config import ConfigError
from sync.signing import canonical_json, fingerprint, generate_key, sign

BASE = {"database_url": "sqlite:///c.db", "metrics": {"kind": "sqlite", "path": "m.db"}}


def test_the_settings_resolve_the_directory_and_need_a_destination_for_a_schedule(tmp_path: Path) -> None:
    s = parse_settings({**BASE, "checkpoint": {"interval_s": 600, "directory": "cps"}}, source="c.yaml",
                       base_dir=tmp_path)
    assert (s.checkpoint.interval_s, s.checkpoint.directory, s.checkpoint.channels) == (600, tmp_path / "cps", ())
    assert parse_settings(BASE, source="c.yaml").checkpoint.interval_s is None  # off by default
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, "checkpoint": {"interval_s": 600}}, source="c.yaml")
    assert err.value.problems == ["checkpoint: interval_s needs a destination: directory and/or "
                                  "channels"]
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, "checkpoint": {"interval_s": 0, "channels": ["x"]}}, source="c.yaml")
    assert err.value.problems[0].startswith("checkpoint.interval_s: Input should be greater than or equal to 1")


def _doc(key: Ed25519PrivateKey, **over: object) -> dict[str, object]:
    statement = {"type": TYPE, "v": 1, "made_at": "2026-12-08T10:15:00.000001+00:00", "kid": fingerprint(key),
                 "alibi": [{"node": "n1", "no": 3, "hash": "a" * 64, "count": 3, "first": 1}],
                 "tse": [{"serial": "ab", "node": "n1", "tx": 2, "counter": 5, "row_hash": row_hash("sig"),
                          "count": 2, "first": 1}], **over}
    return {**statement, "sig": sign(key, canonical_json(statement))}


def test_a_file_signed_by_central_loads_and_anything_else_is_refused_naming_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "central-signing.key"
    key, _ = signing_key.load_or_create(key_file)
    keys = trusted_keys(key_file)
    assert list(keys) == [fingerprint(key)]
    good = tmp_path / file_name("2026-12-08T10:15:00.000001+00:00")
    assert good.name == "checkpoint-20261208T101500Z.json"
    doc = _doc(key)
    good.write_bytes(document_bytes(doc))
    assert load(good, keys) == doc

    def refused(content: object) -> str:
        path = tmp_path / "bad.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(CheckpointError) as err:
            load(path, keys)
        assert str(err.value).startswith(f"checkpoint {path}: ")
        return str(err.value).removeprefix(f"checkpoint {path}: ")

    assert refused("[1, 2").startswith("not JSON: ")
    assert refused([1]) == "expected a JSON object"
    assert refused({**doc, "alibi": [{"node": "n1", "no": -1}]}) == (
        "alibi[0]: expected node, no, hash (64 hex), count, first")
    assert refused({**doc, "tse": [{"serial": "ab", "tx": 1, "count": 1, "first": 1, "row_hash": "xyz"}]}) == (
        "tse[0]: expected serial, tx, counter, row_hash (64 hex), count, first")
    assert refused({**doc, "made_at": "yesterday"}) == "field made_at: 'yesterday' is not an ISO 8601 time"
    assert refused({**doc, "tse": []}).startswith("REFUSED — the signature does not verify with central's key")
    other = generate_key()
    assert refused(_doc(other)).startswith(f"REFUSED — signed by key '{fingerprint(other)}', which is not one of "
                                           f"central's keys ({fingerprint(key)})")
    # a rotation under way: the next key is trusted too
    nxt = signing_key.new_next(key_file)
    assert set(trusted_keys(key_file)) == {fingerprint(key), nxt.fingerprint}
