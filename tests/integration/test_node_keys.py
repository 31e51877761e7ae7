"""A node's keys anchored in the fleet CA, with their history, on real PostgreSQL and through the real CLI.

Re-keying with the CA (``node add --reissue``) keeps the old key with the interval the CA signed, chained to the new
one, each step an audit row; re-keying without it (a key written into the database) and any change to a stored
statement or interval make ``key_history`` call the key untrusted; ``node register`` without the CA's key registers
the key unbound and says what that means; ``node revoke`` ends the key with a CA-signed revocation.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import AuditEntry, Node, NodeKey
from central.fleet.keys import key_history, load_ca_cert
from central.fleet.nodes import register_node
from sync.keybinding import verify_statement
from sync.signing import fingerprint, generate_key, load_private_key, public_key_text
from tests.procs import floorgate, write_yaml

pytestmark = pytest.mark.integration

NODE = "mill-01"


@pytest.fixture
def sessions(pg_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _cfg(tmp_path: Path, pg_url: str, *, pki: bool = True, name: str = "central.yaml") -> Path:
    return write_yaml(tmp_path / name, {
        "database_url": pg_url, "metrics": {"kind": "sqlite", "path": str(tmp_path / "m.sqlite")},
        **({"pki": {"dir": str(tmp_path / "pki")}} if pki else {})})


def _ok(*args: str) -> str:
    done = floorgate(list(args))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rows(sessions: sessionmaker[Session], node: str = NODE) -> list[NodeKey]:
    with sessions() as s:
        return list(s.execute(select(NodeKey).where(NodeKey.node_id == node).order_by(NodeKey.id)).scalars())


def _audit(sessions: sessionmaker[Session], node: str = NODE) -> list[AuditEntry]:
    with sessions() as s:
        return list(s.execute(select(AuditEntry).where(AuditEntry.resource == "node_key",
                                                       AuditEntry.resource_id == node)
                              .order_by(AuditEntry.id)).scalars())


def _history(sessions: sessionmaker[Session], tmp_path: Path, node: str = NODE):  # type: ignore[no-untyped-def]
    with sessions() as s:
        return key_history(s, node, load_ca_cert(tmp_path / "pki"))


def test_reissue_with_the_ca_keeps_the_old_key_chained_to_the_new(tmp_path: Path, pg_url: str,
                                                                 sessions: sessionmaker[Session]) -> None:
    cfg = str(_cfg(tmp_path, pg_url))
    bundles = tmp_path / "bundles"
    _ok("central", "ca", "init", "--config", cfg)
    _ok("central", "node", "add", NODE, "--config", cfg, "--out", str(bundles))
    first = load_private_key(bundles / NODE / "node.key")
    out = _ok("central", "node", "add", NODE, "--config", cfg, "--out", str(bundles), "--reissue")
    assert "the previous key stays in its history" in out
    second = load_private_key(bundles / NODE / "node.key")

    old, new = _rows(sessions)
    assert (old.public_key, new.public_key) == (public_key_text(first), public_key_text(second))
    assert (old.end_reason, new.end_reason, new.valid_until) == ("rotated", None, None)
    assert old.valid_until == new.valid_from  # chained: no gap, no overlap
    assert old.end_statement == new.binding  # the old key ends where the CA's binding of the new one starts
    assert (old.registered_by, new.registered_by) == ("cli:node-add", "cli:node-add")
    with sessions() as s:
        node = s.get(Node, NODE)
        assert node is not None
        assert (node.public_key, node.key_fingerprint) == (new.public_key, fingerprint(second))

    history = _history(sessions, tmp_path)
    assert history.untrusted == []
    p_old, p_new = history.periods
    assert (p_old.fingerprint, p_old.end, p_new.fingerprint, p_new.end) == (
        fingerprint(first), "rotated", fingerprint(second), None)
    assert p_old.valid_until_ns == p_new.valid_from_ns
    during_old = p_old.valid_from_ns + 1
    assert [p.fingerprint for p in history.candidates(during_old, tolerance_ns=0, rotation_grace_ns=0)] == [
        fingerprint(first)]  # an entry made before the reissue still verifies with the key it was signed with
    assert [p.fingerprint for p in history.candidates(p_new.valid_from_ns + 1, tolerance_ns=0,
                                                      rotation_grace_ns=0)] == [fingerprint(second)]
    assert history.current() == p_new

    create, rotate = _audit(sessions)
    assert (create.action, create.actor, rotate.action, rotate.actor) == ("create", "cli:node-add", "rotate",
                                                                          "cli:node-add")
    assert create.after is not None
    assert create.after["fingerprint"] == fingerprint(first)
    assert rotate.before is not None
    assert rotate.before["fingerprint"] == fingerprint(first)
    assert rotate.after is not None
    assert rotate.after["fingerprint"] == fingerprint(second)
    assert rotate.after["supersedes"] == fingerprint(first)

    # the bundle carries every statement, in node_keys order, each verifiable with the bundle's ca.crt
    statements = json.loads((bundles / NODE / "bindings.json").read_text())
    assert statements == [old.binding, new.binding]
    ca = load_ca_cert(bundles / NODE)
    assert ca is not None
    assert [verify_statement(t, ca, node=NODE).fingerprint for t in statements] == [fingerprint(first),
                                                                                   fingerprint(second)]
    keys = _ok("central", "node", "keys", NODE, "--config", cfg)
    assert keys.count("trusted (bound by the fleet CA)") == 2
    assert "rotated" in keys
    listing = _ok("central", "node", "list", "--config", cfg)
    assert "2 keys, trusted" in listing


def test_a_key_written_into_the_database_without_the_ca_is_untrusted(tmp_path: Path, pg_url: str,
                                                                      sessions: sessionmaker[Session]) -> None:
    cfg = str(_cfg(tmp_path, pg_url))
    _ok("central", "ca", "init", "--config", cfg)
    _ok("central", "node", "add", NODE, "--config", cfg, "--out", str(tmp_path / "b"))
    forged = generate_key()
    with sessions.begin() as s:  # what someone with the database but not the CA key does
        s.execute(update(Node).where(Node.node_id == NODE).values(public_key=public_key_text(forged),
                                                                  key_fingerprint=fingerprint(forged)))
        (row,) = s.execute(select(NodeKey).where(NodeKey.node_id == NODE)).scalars()
        row.valid_until, row.end_reason = row.valid_from + timedelta(seconds=1), "rotated"
        s.add(NodeKey(node_id=NODE, public_key=public_key_text(forged), fingerprint=fingerprint(forged),
                      binding=None, valid_from=row.valid_until, registered_by="cli:node-add",
                      created_at=row.created_at))
    history = _history(sessions, tmp_path)
    (untrusted,) = history.untrusted
    assert untrusted.fingerprint == fingerprint(forged)
    assert "not bound by the fleet CA" in untrusted.why
    assert [p.end for p in history.periods] == [None]  # the real key: its end was never signed, it is still open
    assert history.candidates(history.periods[0].valid_from_ns + 10**12)[0].public_key != public_key_text(forged)
    done = floorgate(["central", "node", "keys", NODE, "--config", cfg])
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{fingerprint(forged)}" in done.stdout
    assert "UNTRUSTED: not bound by the fleet CA" in done.stdout
    assert "1 UNTRUSTED" in _ok("central", "node", "list", "--config", cfg)

    # only nodes.public_key changed, no node_keys row: the registered key is named as written without the CA
    other = generate_key()
    with sessions.begin() as s:
        s.execute(update(Node).where(Node.node_id == NODE).values(public_key=public_key_text(other),
                                                                  key_fingerprint=fingerprint(other)))
    done = floorgate(["central", "node", "keys", NODE, "--config", cfg])
    assert done.returncode == 1
    assert "is in no node_keys row: it was written into the database without the fleet CA" in done.stdout


def test_a_changed_statement_or_interval_makes_the_key_untrusted(tmp_path: Path, pg_url: str,
                                                                 sessions: sessionmaker[Session]) -> None:
    cfg = str(_cfg(tmp_path, pg_url))
    _ok("central", "ca", "init", "--config", cfg)
    _ok("central", "node", "add", NODE, "--config", cfg, "--out", str(tmp_path / "b"))
    _ok("central", "node", "add", NODE, "--config", cfg, "--out", str(tmp_path / "b"), "--reissue")
    old, new = _rows(sessions)
    assert _history(sessions, tmp_path).untrusted == []

    # 1. the statement's valid_from moved back a day (to cover entries made before): the CA's signature breaks
    outer = json.loads(new.binding or "")
    body = json.loads(outer["statement"])
    body["valid_from_ns"] -= 86_400 * 10**9
    outer["statement"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    with sessions.begin() as s:
        s.execute(update(NodeKey).where(NodeKey.id == new.id).values(binding=json.dumps(outer)))
    (bad,) = _history(sessions, tmp_path).untrusted
    assert bad.fingerprint == new.fingerprint
    assert "signature over the statement does not verify" in bad.why

    # 2. the statement intact, the valid_from column changed: the row no longer says what the CA signed
    with sessions.begin() as s:
        s.execute(update(NodeKey).where(NodeKey.id == new.id).values(binding=new.binding,
                                                                     valid_from=new.valid_from - timedelta(days=1)))
    history = _history(sessions, tmp_path)
    (bad,) = history.untrusted
    assert "valid_from in the database" in bad.why
    assert "the row was changed" in bad.why
    assert [p.fingerprint for p in history.periods] == [old.fingerprint]

    # 3. the old key's end statement altered (to hide that it ended): the old key is untrusted
    with sessions.begin() as s:
        s.execute(update(NodeKey).where(NodeKey.id == new.id).values(valid_from=new.valid_from))
        s.execute(update(NodeKey).where(NodeKey.id == old.id).values(
            end_statement=(old.end_statement or "").replace('"sig":"', '"sig":"AA')))
    (bad,) = _history(sessions, tmp_path).untrusted
    assert bad.fingerprint == old.fingerprint
    assert "its end statement" in bad.why

    # 4. the old key's valid_until moved later (to cover entries made after the rotation)
    with sessions.begin() as s:
        s.execute(update(NodeKey).where(NodeKey.id == old.id).values(
            end_statement=old.end_statement, valid_until=(old.valid_until or old.valid_from) + timedelta(hours=1)))
    (bad,) = _history(sessions, tmp_path).untrusted
    assert bad.fingerprint == old.fingerprint
    assert "valid_until in the database" in bad.why
    done = floorgate(["central", "node", "keys", NODE, "--config", cfg])
    assert done.returncode == 1
    assert "UNTRUSTED" in done.stdout


def test_register_binds_with_the_ca_key_and_warns_without_it(tmp_path: Path, pg_url: str,
                                                            sessions: sessionmaker[Session]) -> None:
    bare = str(_cfg(tmp_path, pg_url, pki=False, name="bare.yaml"))
    cfg = str(_cfg(tmp_path, pg_url))
    key = generate_key()
    done = floorgate(["central", "node", "register", NODE, "--public-key", public_key_text(key), "--config", bare])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"key {fingerprint(key)} is NOT bound by the fleet CA" in done.stderr
    assert "untrusted_key" in done.stderr
    (row,) = _rows(sessions)
    assert (row.binding, row.registered_by) == (None, "cli:node-register")
    done = floorgate(["central", "node", "register", NODE, "--public-key", public_key_text(key), "--config", bare,
                      "--out", str(tmp_path / "out")])
    assert done.returncode == 1
    assert "--out writes the fleet CA's statements" in done.stderr

    # the same key with the CA's key at hand: bound from when central registered it, audited as a binding
    _ok("central", "ca", "init", "--config", cfg)
    out = _ok("central", "node", "register", NODE, "--public-key", public_key_text(key), "--config", cfg,
              "--out", str(tmp_path / "out"))
    assert "bound by the fleet CA from" in out
    (row,) = _rows(sessions)
    assert row.binding is not None
    history = _history(sessions, tmp_path)
    assert history.untrusted == []
    assert history.periods[0].fingerprint == fingerprint(key)
    assert [a.action for a in _audit(sessions)] == ["create", "bind"]
    assert json.loads((tmp_path / "out" / NODE / "bindings.json").read_text()) == [row.binding]
    assert (tmp_path / "out" / NODE / "ca.crt").read_bytes() == (tmp_path / "pki" / "ca.crt").read_bytes()

    # again: nothing changes, nothing is audited
    assert "unchanged" in _ok("central", "node", "register", NODE, "--public-key", public_key_text(key),
                              "--config", cfg)
    # a new key (the node re-enrolled): rotated, the old key kept
    fresh = generate_key()
    out = _ok("central", "node", "register", NODE, "--public-key", public_key_text(fresh), "--config", cfg)
    assert f"previous key {fingerprint(key)} replaced, kept in its history" in out
    assert [a.action for a in _audit(sessions)] == ["create", "bind", "rotate"]
    history = _history(sessions, tmp_path)
    assert [(p.fingerprint, p.end) for p in history.periods] == [(fingerprint(key), "rotated"),
                                                                 (fingerprint(fresh), None)]


def test_revoke_ends_the_key_with_a_ca_signed_revocation(tmp_path: Path, pg_url: str,
                                                        sessions: sessionmaker[Session]) -> None:
    cfg = str(_cfg(tmp_path, pg_url))
    _ok("central", "ca", "init", "--config", cfg)
    _ok("central", "node", "add", NODE, "--config", cfg, "--out", str(tmp_path / "b"))
    out = _ok("central", "node", "revoke", NODE, "--config", cfg, "--reason", "device stolen")
    assert "revoked by the fleet CA" in out
    (row,) = _rows(sessions)
    assert row.end_reason == "revoked"
    assert row.valid_until is not None
    ca = load_ca_cert(tmp_path / "pki")
    assert ca is not None
    st = verify_statement(row.end_statement, ca, node=NODE)
    assert (st.type, st.fingerprint, st.body["reason"]) == ("key-revocation", row.fingerprint, "device stolen")
    (period,) = _history(sessions, tmp_path).periods
    assert period.end == "revoked"
    assert not period.covers(period.valid_until_ns or 0, rotation_grace_ns=10**15)  # no grace for a revoked key
    assert [a.action for a in _audit(sessions)] == ["create", "revoke"]
    with sessions() as s:
        node = s.get(Node, NODE)
        assert node is not None
        assert node.public_key is None
    # revoking again changes nothing
    _ok("central", "node", "revoke", NODE, "--config", cfg)
    assert [a.action for a in _audit(sessions)] == ["create", "revoke"]


def test_registration_without_a_ca_still_works_in_python(sessions: sessionmaker[Session]) -> None:
    """The existing way in (tests, the bench): ``register_node`` without a CA registers unbound, audited."""
    key = generate_key()
    fp, replaced = register_node(sessions, NODE, public_key_text(key))
    assert (fp, replaced) == (fingerprint(key), False)
    fp2, replaced = register_node(sessions, NODE, public_key_text(generate_key()))
    assert replaced is True
    assert fp2 != fp
    rows = _rows(sessions)
    assert [(r.binding, r.end_reason) for r in rows] == [(None, "rotated"), (None, None)]
    assert [a.action for a in _audit(sessions)] == ["create", "rotate"]
    with sessions() as s:
        assert s.execute(text("SELECT count(*) FROM node_keys WHERE valid_until IS NULL")).scalar_one() == 1
        history = key_history(s, NODE, None)
    assert len(history.untrusted) == 2
    assert history.periods == []
