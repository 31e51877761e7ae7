"""The node's alibi mirror on a real SQLite outbox: every weighing gets the next entry in the transaction of its
outbox row (a failed or killed append leaves neither), the numbering survives an agent restart, retention gives up
only old acknowledged entries and keeps the head, and ``floorgate edge alibi`` lists and re-checks the chain."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge.agent import OUTBOX_FILE, Agent
from edge.config import parse_config
from edge.errors import OutboxError
from edge.store.alibi import DAY_NS, AlibiMirror, check_local, read_entries, read_meta
from edge.store.outbox import NewRecord, Outbox
from floorgate_cli import main
from sync.alibi import ZERO_HASH, body_hash
from sync.runtime.config import ConfigError
from sync.signing import generate_key, load_private_key, verify
from tests.downlink_support import TRUST

ROOT = Path(__file__).resolve().parents[2]
NODE = "mill-01"


def weighing(gross: str = "24560", *, ts_ns: int | None = None, **extra: object) -> NewRecord:
    data = {"gross": gross, "unit": "kg", "stable": True, "scale_serial": "B123", "raw": f"S S {gross} kg",
            "trigger": "auto", **extra}
    return NewRecord(kind="weighing", device="bridge-1", data=data,
                     **({"ts_ns": ts_ns} if ts_ns is not None else {}))  # type: ignore[arg-type]


def rows(path: Path) -> list[tuple[int, str, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT alibi_no, record_id, seq FROM alibi ORDER BY alibi_no").fetchall()
    finally:
        db.close()


def test_every_weighing_gets_the_next_entry_with_the_record(tmp_path: Path) -> None:
    key = generate_key()
    box = Outbox(tmp_path / "o.db", node_id=NODE, alibi=AlibiMirror(NODE, key))
    out = box.append("business", [
        weighing("24560", tare="8420.5", tare_preset=True, net="16139.5", instrument_alibi="004711"),
        NewRecord(kind="tse_transaction", device="pos-1", data={"total": "12.50"}),
        weighing("18420"),
    ])
    assert "alibi" not in out[1].data
    first, second = out[0].data["alibi"], out[2].data["alibi"]
    assert (first["no"], second["no"]) == (1, 2)
    body = json.loads(first["body"])
    assert body == {"v": 1, "node": NODE, "alibi_no": 1, "record_id": out[0].record_id, "device": "bridge-1",
                    "weighed_at_ns": out[0].ts_ns, "gross": "24560", "tare": "8420.5", "tare_preset": True,
                    "net": "16139.5", "unit": "kg", "scale_serial": "B123", "instrument_alibi": "004711",
                    "prev_hash": ZERO_HASH}
    assert first["hash"] == body_hash(first["body"])
    assert verify(key.public_key(), first["body"].encode(), first["sig"]) is None
    assert json.loads(second["body"])["prev_hash"] == first["hash"]
    assert json.loads(second["body"])["tare"] is None  # a value the record does not have is null
    # the entry travels with the record: what the uplink reads from the outbox carries it
    pending = box.pending("business", after_seq=0, limit=10)
    assert pending[0].data["alibi"] == first
    assert pending[2].data["alibi"] == second
    assert rows(tmp_path / "o.db") == [(1, out[0].record_id, 1), (2, out[2].record_id, 3)]
    assert check_local(read_entries(tmp_path / "o.db"), key.public_key(), NODE).ok
    box.close()


def test_the_mirror_is_given_when_the_outbox_is_made_and_stays(tmp_path: Path) -> None:
    mirror = AlibiMirror(NODE, generate_key())
    box = Outbox(tmp_path / "o.db", node_id=NODE, alibi=mirror)
    assert box.alibi is mirror
    with pytest.raises(AttributeError):
        box.alibi = None  # type: ignore[misc]  # never attached or taken away afterwards: no weighing without it
    assert "alibi" in box.append("business", [weighing("100")])[0].data
    box.close()
    plain = Outbox(tmp_path / "p.db", node_id=NODE)  # without one (tools, tests): weighings get no entry
    assert plain.alibi is None
    assert "alibi" not in plain.append("business", [weighing("100")])[0].data
    plain.close()


def _agent_config(tmp_path: Path, **extra: object) -> Path:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({"node_id": NODE, "data_dir": "data", "broker": {"url": "mqtt://127.0.0.1:1"},
                                   "http": {"listen": None}, **TRUST, **extra}))
    return cfg


def test_the_numbering_goes_on_across_an_agent_restart(tmp_path: Path) -> None:
    from edge.config import load_config

    cfg = load_config(_agent_config(tmp_path))
    agent = Agent(cfg)
    agent.sink.emit("business", [weighing("1000")])
    agent.sink.emit("business", [weighing("2000"), weighing("3000")])
    agent.outbox.close()

    again = Agent(cfg)  # a new process would do the same: the head is read from the table
    again.sink.emit("business", [weighing("4000")])
    records = again.outbox.pending("business", after_seq=0, limit=10)
    again.outbox.close()
    assert [r.data["alibi"]["no"] for r in records] == [1, 2, 3, 4]
    assert [json.loads(r.data["alibi"]["body"])["gross"] for r in records] == ["1000", "2000", "3000", "4000"]
    assert json.loads(records[3].data["alibi"]["body"])["prev_hash"] == records[2].data["alibi"]["hash"]
    key = load_private_key(cfg.key_path)
    check = check_local(read_entries(cfg.data_dir / OUTBOX_FILE), key.public_key(), NODE)
    assert check.ok
    assert [e.position for e in check.entries] == [1, 2, 3, 4]


def test_a_failed_outbox_append_leaves_no_alibi_entry(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "o.db"
    box = Outbox(path, node_id=NODE, alibi=AlibiMirror(NODE, key))
    box.append("business", [weighing("1000")])
    # the outbox insert fails after the alibi entry was written in the same transaction
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.data LIKE '%4711%' "
               "BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
    db.commit()
    with pytest.raises(OutboxError, match="refused by test"):
        box.append("business", [weighing("2000"), weighing("4711")])
    assert [no for no, _, _ in rows(path)] == [1]
    db.execute("DROP TRIGGER refuse")
    db.commit()
    db.close()
    ok = box.append("business", [weighing("3000")])
    assert ok[0].data["alibi"]["no"] == 2
    assert ok[0].seq == 2
    assert check_local(read_entries(path), key.public_key(), NODE).ok
    box.close()


_WRITER = """
import sys
from edge.store.alibi import AlibiMirror
from edge.store.outbox import NewRecord, Outbox
from sync.signing import load_private_key
box = Outbox(sys.argv[1], node_id="mill-01", alibi=AlibiMirror("mill-01", load_private_key(sys.argv[2])))
i = 0
while True:
    i += 1
    box.append("business", [NewRecord(kind="weighing", device="bridge-1", data={"gross": str(i), "unit": "kg"}),
                            NewRecord(kind="weighing", device="bridge-2", data={"gross": str(i), "unit": "kg"})])
    if i == 20:
        print("running", flush=True)
"""


def test_a_killed_writer_leaves_weighings_and_entries_in_step(tmp_path: Path) -> None:
    from sync.signing import save_private_key

    key = generate_key()
    save_private_key(key, tmp_path / "node.key")
    path = tmp_path / "o.db"
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(tmp_path / "node.key")], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "running"
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGKILL)  # in the middle of some append
            proc.wait(10)
    db = sqlite3.connect(path)
    weighings = db.execute("SELECT record_id FROM outbox WHERE kind='weighing' ORDER BY seq").fetchall()
    db.close()
    entries = rows(path)
    assert len(entries) >= 40
    assert [rid for _, rid, _ in entries] == [rid for (rid,) in weighings]  # every weighing has its entry, in order
    assert [no for no, _, _ in entries] == list(range(1, len(entries) + 1))
    assert check_local(read_entries(path), key.public_key(), NODE, meta=read_meta(path)).ok  # the head in step too
    box = Outbox(path, node_id=NODE, alibi=AlibiMirror(NODE, key))  # and the chain goes on
    assert box.append("business", [weighing()])[0].data["alibi"]["no"] == len(entries) + 1
    box.close()


def test_retention_gives_up_old_acknowledged_entries_and_keeps_the_head(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "o.db"
    now = time.time_ns()
    mirror = AlibiMirror(NODE, key, retention_days=90)
    box = Outbox(path, node_id=NODE, alibi=mirror)
    old = now - 100 * DAY_NS
    box.append("business", [weighing(str(i), ts_ns=old + i) for i in range(1, 4)])  # entries 1-3: 100 days old
    box.append("business", [weighing("4", ts_ns=now - DAY_NS)])  # entry 4: yesterday
    assert box.prune_alibi(now_ns=now) == 0  # nothing acknowledged yet: nothing goes
    box.ack("business", 2)
    assert box.prune_alibi(now_ns=now) == 2
    assert [no for no, _, _ in rows(path)] == [3, 4]
    box.ack("business", 4)
    assert box.prune_alibi(now_ns=now) == 1  # 3 now acknowledged too; 4 is younger than 90 days
    assert box.prune_alibi(now_ns=now + 365 * DAY_NS) == 0  # 4 is the head: always kept
    assert [no for no, _, _ in rows(path)] == [4]
    nxt = box.append("business", [weighing("5")])[0]
    assert nxt.data["alibi"]["no"] == 5
    check = check_local(read_entries(path), key.public_key(), NODE)
    assert check.ok
    assert [e.position for e in check.entries] == [4, 5]
    box.close()


def test_an_acknowledgement_prunes_by_itself_at_most_every_so_often(tmp_path: Path) -> None:
    mirror = AlibiMirror(NODE, generate_key(), retention_days=1, prune_every_s=3600)
    box = Outbox(tmp_path / "o.db", node_id=NODE, alibi=mirror)
    old = time.time_ns() - 2 * DAY_NS
    box.append("business", [weighing(str(i), ts_ns=old) for i in range(3)])
    box.ack("business", 3)
    assert [no for no, _, _ in rows(tmp_path / "o.db")] == [3]
    box.append("business", [weighing("9", ts_ns=old)])
    box.ack("business", 4)  # within the hour: not pruned again
    assert [no for no, _, _ in rows(tmp_path / "o.db")] == [3, 4]
    box.close()


@pytest.mark.parametrize(("value", "message"), [
    (0, "alibi.retention_days: Input should be greater than or equal to 1 (got 0)"),
    (True, "alibi.retention_days: expected a number of days, e.g. 90 (got True)"),
    ("ninety", "alibi.retention_days: Input should be a valid integer, unable to parse string as an integer"),
])
def test_the_retention_setting_is_validated_naming_the_key(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"node_id": NODE, "broker": {"url": "mqtt://h"}, "alibi": {"retention_days": value}},
                     source="node.yaml")
    assert f"node.yaml: {message}" in str(info.value)
    cfg = parse_config({"node_id": NODE, "broker": {"url": "mqtt://h"}}, source="node.yaml")
    assert cfg.alibi.retention_days == 90


def test_edge_alibi_lists_and_verifies_the_local_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.config import load_config

    path = _agent_config(tmp_path, alibi={"retention_days": 30})
    cfg = load_config(path)
    agent = Agent(cfg)
    assert agent.outbox.alibi is not None
    assert agent.outbox.alibi.retention_days == 30
    agent.sink.emit("business", [weighing("24560", tare="8420", tare_preset=True, net="16140", instrument_alibi="4711"),
                            weighing("18420.5")])
    agent.outbox.close()
    assert main(["edge", "alibi", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "chain verified: 2 entries (1…2)" in out
    assert "24560" in out
    assert "8420*" in out
    assert "16140" in out
    assert "4711" in out
    assert "18420.5" in out
    assert main(["edge", "alibi", "--config", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"]
    assert [e["no"] for e in report["entries"]] == [1, 2]
    assert report["problems"] == []

    db = sqlite3.connect(cfg.data_dir / OUTBOX_FILE)
    db.execute("UPDATE alibi SET body = replace(body, '\"gross\":\"24560\"', '\"gross\":\"24960\"') WHERE alibi_no=1")
    db.commit()
    db.close()
    assert main(["edge", "alibi", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "chain NOT intact: 1 problem(s)" in out
    assert "altered: entry 1: body does not match its hash" in out
