"""External checkpoints on real PostgreSQL: alibi chains made by the real edge code (outbox with its alibi mirror)
and sales signed by the real software TSE, applied with central's real ``apply_batch``; ``floorgate central
checkpoint`` writes the signed heads to a directory, a webhook and an e-mail; ``verify-alibi --checkpoint`` /
``verify-tse --checkpoint`` (child processes) pass on the untouched database and name what was deleted or changed
behind central's back; a changed or forged checkpoint file is refused; a ``central ingest`` process with
``checkpoint.interval_s`` writes them on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from central.config import load_settings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import AuditEntry, Checkpoint
from central.fleet import signing_key
from central.fleet.checkpoint import CheckpointError, compare_alibi, compare_tse, load, make, trusted_keys
from central.fleet.checkpoint_out import destinations, write
from central.fleet.nodes import register_node
from central.ingest.apply import apply_batch
from edge.store.alibi import AlibiMirror
from edge.store.outbox import NewRecord, Outbox
from sync.envelope import Batch
from sync.signing import canonical_json, fingerprint, generate_key, public_key_text
from tests.alert_receivers import SmtpSink, WebhookReceiver
from tests.fiscal_support import Register
from tests.procs import Proc, central_yaml, wait_until
from tests.services import MosquittoServer, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    tmp: Path
    url: str
    config: Path
    sessions: sessionmaker[Session]
    directory: Path
    tse: Register

    def sql(self, statement: str, **params: object) -> None:
        with self.sessions.begin() as s:
            s.execute(text(statement), params)

    def floorgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "floorgate_cli", "central", *args, "--config", str(self.config)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)

    def checkpoint_file(self) -> Path:
        run = self.floorgate("checkpoint")
        assert run.returncode == 0, run.stdout + run.stderr
        [path] = sorted(self.directory.glob("checkpoint-*.json"))[-1:]
        return path


def chain(tmp: Path, sessions: sessionmaker[Session], node: str, n: int) -> None:
    """``n`` weighings through the real edge outbox with its alibi mirror, applied at central."""
    key = generate_key()
    box = Outbox(tmp / f"{node}.db", node_id=node, alibi=AlibiMirror(node, key))
    box.append("business", [NewRecord(kind="weighing", device="bridge-1", data={
        "gross": f"{20000 + 10 * i}", "unit": "kg", "stable": True, "raw": f"S S {20000 + 10 * i} kg",
        "trigger": "auto"}) for i in range(1, n + 1)])
    records = box.pending("business", after_seq=0, limit=1000)
    epoch = box.epoch
    box.close()
    register_node(sessions, node, public_key_text(key))
    result = apply_batch(sessions, Batch(node=node, epoch=epoch, stream="business", records=tuple(records)))
    assert (result.applied, result.rejected) == (n, [])


@pytest.fixture
def env(pg_url: str, tmp_path: Path) -> Iterator[Env]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    chain(tmp_path, sessions, "mill-01", 5)
    chain(tmp_path, sessions, "mill-02", 3)
    register = Register(sessions, tmp_path / "tse")
    register.send(*[register.sale(f"{i}.00") for i in range(1, 5)])
    directory = tmp_path / "checkpoints"
    config = tmp_path / "central.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": pg_url, "metrics": {"kind": "sqlite", "path": str(tmp_path / "m.db")},
        "signing_key_file": "central-signing.key", "checkpoint": {"directory": "checkpoints"}}))
    try:
        yield Env(tmp_path, pg_url, config, sessions, directory, register)
    finally:
        register.close()
        engine.dispose()


def findings(run: subprocess.CompletedProcess[str]) -> list[tuple[str, str, list[int]]]:
    report = json.loads(run.stdout)
    return [(f["kind"], f["subject"], f["numbers"]) for f in report["findings"]]


# -- writing and proving ----------------------------------------------------------------------------------------------


def test_a_checkpoint_is_written_recorded_and_an_untouched_database_passes(env: Env) -> None:
    run = env.floorgate("checkpoint")
    assert run.returncode == 0, run.stdout + run.stderr
    [path] = env.directory.glob("checkpoint-*.json")
    assert f"ok     file:{path}" in run.stdout
    doc = json.loads(path.read_text())
    assert doc["alibi"] == [
        {"node": "mill-01", "no": 5, "hash": doc["alibi"][0]["hash"], "count": 5, "first": 1},
        {"node": "mill-02", "no": 3, "hash": doc["alibi"][1]["hash"], "count": 3, "first": 1}]
    [tse] = doc["tse"]
    assert (tse["serial"], tse["node"], tse["tx"], tse["count"], tse["first"]) == (env.tse.serial, "shop-1", 4, 4, 1)
    assert tse["counter"] == env.tse.rows()[4].signature_counter
    key, _ = signing_key.load_or_create(env.tmp / "central-signing.key")
    assert doc["kid"] == fingerprint(key)
    with env.sessions() as s:
        [row] = s.execute(select(Checkpoint)).scalars()
        [entry] = s.execute(select(AuditEntry).where(AuditEntry.resource == "checkpoint")).scalars()
    assert (row.kid, row.sig, row.statement) == (doc["kid"], doc["sig"], canonical_json(doc).decode())
    assert row.delivered == {f"file:{path}": "ok"}
    assert (entry.actor, entry.action, entry.resource_id) == ("cli:checkpoint", "create", str(row.id))
    assert entry.after is not None
    assert (entry.after["nodes"], entry.after["tses"]) == (2, 1)

    ok = env.floorgate("verify-alibi", "--checkpoint", str(path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 node(s) compared: everything it vouched for is held" in ok.stdout
    ok = env.floorgate("verify-tse", "--checkpoint", str(path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 TSE(s) compared: everything it vouched for is held" in ok.stdout
    # a second checkpoint in the same second gets a name of its own: nothing is overwritten
    again = env.floorgate("checkpoint", "--dir", str(env.directory))
    assert again.returncode == 0, again.stderr
    assert len(list(env.directory.glob("checkpoint-*.json"))) == 2


def test_deleting_the_newest_alibi_entry_or_one_below_is_named(env: Env) -> None:
    path = env.checkpoint_file()
    env.sql("DELETE FROM weighings WHERE node_id = 'mill-01' AND alibi_no = 5")
    env.sql("DELETE FROM alibi_entries WHERE node_id = 'mill-01' AND alibi_no = 5")
    run = env.floorgate("verify-alibi", "--checkpoint", str(path), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    assert findings(run) == [("missing", "node mill-01", [5]), ("removed", "node mill-01", [5, 5])]
    text_run = env.floorgate("verify-alibi", "--checkpoint", str(path))
    assert text_run.returncode == 1
    assert "node mill-01: entry 5 (hash " in text_run.stdout
    assert "is not held" in text_run.stdout
    # the other node, alone, is intact
    other = env.floorgate("verify-alibi", "--checkpoint", str(path), "--node", "mill-02")
    assert other.returncode == 0, other.stdout + other.stderr
    assert "1 node(s) compared" in other.stdout
    # one in the middle of mill-02 goes too; a node the checkpoint does not cover is refused
    env.sql("DELETE FROM alibi_entries WHERE node_id = 'mill-02' AND alibi_no = 2")
    run = env.floorgate("verify-alibi", "--checkpoint", str(path), "--node", "mill-02")
    assert run.returncode == 1
    assert "node mill-02: 1 of the 3 entries 1…3 the checkpoint vouched for are missing; not held now: 2" in run.stdout
    unknown = env.floorgate("verify-alibi", "--checkpoint", str(path), "--node", "mill-99")
    assert unknown.returncode == 2
    assert "vouches for nothing of node 'mill-99' (it covers: mill-01, mill-02)" in unknown.stderr


def test_a_rewritten_chain_below_the_head_is_named_whatever_key_signed_it(env: Env) -> None:
    path = env.checkpoint_file()
    with env.sessions() as s:
        body = s.execute(text("SELECT body FROM alibi_entries WHERE node_id = 'mill-01' AND alibi_no = 3")).scalar()
    forged = json.loads(body)
    forged["gross"] = "19000"
    env.sql("UPDATE alibi_entries SET body = :b WHERE node_id = 'mill-01' AND alibi_no = 3",
            b=canonical_json(forged).decode())
    doc = load(path, trusted_keys(env.tmp / "central-signing.key"))
    result = compare_alibi(env.sessions, doc, file=str(path))
    assert [(f.kind, f.subject, f.numbers) for f in result.findings] == [("altered", "node mill-01", (3,))]
    assert "entry 4's prev_hash" in result.findings[0].message


def test_an_altered_or_deleted_tse_transaction_is_named(env: Env) -> None:
    path = env.checkpoint_file()
    serial = env.tse.serial
    with env.sessions() as s:
        sig = s.execute(text("SELECT signature FROM tse_transactions WHERE tx_number = 4")).scalar()
    env.sql("UPDATE tse_transactions SET signature = :s WHERE tx_number = 4", s="A" + sig[1:])
    run = env.floorgate("verify-tse", "--checkpoint", str(path), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    assert findings(run) == [("altered", f"TSE {serial}", [4])]
    assert "its signature differs from the one the checkpoint vouched for" in json.loads(run.stdout)[
        "findings"][0]["message"]
    env.sql("UPDATE tse_transactions SET signature = :s WHERE tx_number = 4", s=sig)
    assert env.floorgate("verify-tse", "--checkpoint", str(path), "--tse", serial).returncode == 0

    env.sql("DELETE FROM tse_transactions WHERE tx_number = 4")
    run = env.floorgate("verify-tse", "--checkpoint", str(path))
    assert run.returncode == 1
    assert f"TSE {serial}: transaction 4 (signature counter " in run.stdout
    assert "is not held" in run.stdout
    env.sql("DELETE FROM tse_transactions WHERE tx_number = 2")
    doc = load(path, trusted_keys(env.tmp / "central-signing.key"))
    result = compare_tse(env.sessions, doc, file=str(path))
    assert [(f.kind, f.numbers) for f in result.findings] == [("missing", (4,)), ("removed", (2, 2, 4, 4))]
    assert "2 of the 4 transactions 1…4 the checkpoint vouched for are missing; not held now: 2, 4" in (
        result.findings[1].message)


# -- the file itself --------------------------------------------------------------------------------------------------


def test_a_changed_or_forged_checkpoint_is_refused_and_a_rotated_key_still_verifies(env: Env) -> None:
    path = env.checkpoint_file()
    doc = json.loads(path.read_text())
    changed = env.tmp / "changed.json"
    doc["alibi"][0]["no"] = 4  # "the head was 4": would hide the deletion of entry 5
    changed.write_text(json.dumps(doc))
    run = env.floorgate("verify-alibi", "--checkpoint", str(changed))
    assert run.returncode == 2
    assert f"checkpoint {changed}: REFUSED — the signature does not verify with central's key {doc['kid']}" in (
        run.stderr)

    with env.sessions() as s:  # a statement of the heads, signed with a key that is not central's
        forged = make(s, generate_key())
    forged_path = env.tmp / "forged.json"
    forged_path.write_text(json.dumps(forged))
    run = env.floorgate("verify-tse", "--checkpoint", str(forged_path))
    assert run.returncode == 2
    assert f"signed by key {forged['kid']!r}, which is not one of central's keys" in run.stderr

    garbage = env.tmp / "garbage.json"
    garbage.write_text("{\"type\": \"something else\"}")
    run = env.floorgate("verify-alibi", "--checkpoint", str(garbage))
    assert (run.returncode, run.stderr.strip()) == (2, f"floorgate: checkpoint {garbage}: not a floorgate "
                                                       "checkpoint (type 'something else', v None)")
    missing = env.floorgate("verify-alibi", "--checkpoint", str(env.tmp / "nope.json"))
    assert missing.returncode == 2
    assert "cannot read: No such file or directory" in missing.stderr

    # central's key rotates (signing-key new, activate): the checkpoint signed with the retired key still verifies
    key_file = env.tmp / "central-signing.key"
    signing_key.new_next(key_file)
    signing_key.activate(key_file)
    ok = env.floorgate("verify-alibi", "--checkpoint", str(path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with pytest.raises(CheckpointError, match="does not exist"):
        trusted_keys(env.tmp / "other.key")


# -- destinations -----------------------------------------------------------------------------------------------------


def test_webhook_and_email_receive_the_signed_document_and_a_failure_is_named(env: Env) -> None:
    with WebhookReceiver() as hook, SmtpSink() as smtp:
        rules = env.tmp / "alert-rules.yaml"
        rules.write_text(yaml.safe_dump({"channels": {
            "audit-hook": {"kind": "webhook", "url": hook.url},
            "audit-mail": {"kind": "email", "host": "127.0.0.1", "port": smtp.port, "from": "central@example.com",
                           "to": ["auditor@example.com"]}}}))
        data = yaml.safe_load(env.config.read_text())
        data["alerts"] = {"rules_file": str(rules)}
        data["checkpoint"]["channels"] = ["audit-hook", "audit-mail"]
        env.config.write_text(yaml.safe_dump(data))
        settings = load_settings(env.config, check_files=False)
        key, _ = signing_key.load_or_create(env.tmp / "central-signing.key")
        written = write(env.sessions, key, destinations(settings), actor="test")
        assert written.failed == {}
        [file] = env.directory.glob("checkpoint-*.json")
        assert set(written.delivered) == {f"file:{file}", "webhook:audit-hook", "email:audit-mail"}
        [body] = hook.bodies()
        assert body == written.doc
        [msg] = smtp.messages()
        assert str(msg["Subject"]).startswith("floorgate checkpoint ")
        assert "2 node(s), 1 TSE(s)" in str(msg["Subject"])
        assert isinstance(msg, EmailMessage)
        [attachment] = list(msg.iter_attachments())
        mailed = env.tmp / str(attachment.get_filename())
        mailed.write_bytes(attachment.get_payload(decode=True))
        keys = trusted_keys(env.tmp / "central-signing.key")
        assert load(mailed, keys) == written.doc  # what the auditor got by mail proves the same
        ok = env.floorgate("verify-alibi", "--checkpoint", str(mailed))
        assert ok.returncode == 0, ok.stdout + ok.stderr

        hook.fail_next(1, status=503)
        run = env.floorgate("checkpoint")
        assert run.returncode == 1
        assert "FAILED webhook:audit-hook: POST http://127.0.0.1" in run.stdout
        assert "not delivered to webhook:audit-hook: POST" in run.stderr
        assert "HTTP 503" in run.stderr
        with env.sessions() as s:
            newest = s.execute(select(Checkpoint).order_by(Checkpoint.id.desc())).scalars().first()
        assert newest is not None
        assert newest.delivered is not None
        assert "HTTP 503" in newest.delivered["webhook:audit-hook"]
        assert newest.delivered["email:audit-mail"] == "ok"

    data["checkpoint"]["channels"] = ["pager"]
    env.config.write_text(yaml.safe_dump(data))
    run = env.floorgate("checkpoint")
    assert run.returncode == 1
    assert f"checkpoint.channels: 'pager' is not a channel of {rules} (defined: audit-hook, audit-mail)" in run.stderr
    data["checkpoint"] = {}
    env.config.write_text(yaml.safe_dump(data))
    run = env.floorgate("checkpoint")
    assert run.returncode == 1
    assert "no destination for the checkpoint" in run.stderr


# -- on a schedule ----------------------------------------------------------------------------------------------------


def test_central_writes_checkpoints_on_its_schedule(env: Env, mosquitto: MosquittoServer, unique_id: str) -> None:
    directory = env.tmp / "scheduled"
    (env.tmp / "proc").mkdir()
    cfg = central_yaml(env.tmp / "proc", database_url=env.url, broker_url=mosquitto.url,
                       client_id=f"{unique_id}-cp", api_port=free_port(),
                       signing_key_file=str(env.tmp / "central-signing.key"),
                       checkpoint={"interval_s": 1, "directory": str(directory)})
    worker = Proc("central-ingest", ["central", "ingest", "--config", str(cfg)], env.tmp).start()
    try:
        files = wait_until("two scheduled checkpoint files", lambda: (
            f if len(f := sorted(directory.glob("checkpoint-*.json"))) >= 2 else None), timeout_s=60,
            procs=[worker])
    finally:
        worker.stop()
    assert "checkpoints: one every 1 s to file:" in worker.log()
    with env.sessions() as s:
        rows = s.execute(select(Checkpoint).order_by(Checkpoint.id)).scalars().all()
        actors = set(s.execute(select(AuditEntry.actor).where(AuditEntry.resource == "checkpoint")).scalars())
    assert len(rows) >= 2
    assert actors == {"system:checkpoint"}
    assert all(list(r.delivered or {}).pop().startswith(f"file:{directory}") for r in rows)
    ok = env.floorgate("verify-alibi", "--checkpoint", str(files[-1]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
