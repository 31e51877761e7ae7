"""``floorgate bench outbox`` and ``floorgate bench codec``: the outbox's durable append against plain sqlite3 inserts
of the same rows (same journal and sync mode), and the sync codec against plain ``json``; each as records/s of the
raw baseline and of floorgate, measured in the same run (the command is ``tools.bench.register``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from edge.store.outbox import NewRecord, Outbox
from sync.envelope import Batch, Record, decode_batch, encode_batch


def _rate(n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _data(i: int) -> dict[str, object]:
    return {"gross": str(20000 + i), "unit": "kg", "stable": True, "scale_serial": "0123456789"}


def _raw_db(path: Path, sync: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.execute("CREATE TABLE t (stream TEXT, seq INTEGER, record_id TEXT, kind TEXT, device TEXT, ts_ns INTEGER,"
               " data TEXT, created_ns INTEGER, PRIMARY KEY (stream, seq)) WITHOUT ROWID")
    return db


def _row(i: int) -> tuple[object, ...]:
    return ("business", i, f"id-{i}", "weighing", "bridge-1", time.time_ns(), json.dumps(_data(i)), time.time_ns())


def bench_outbox(n: int, batch: int, where: Path) -> list[tuple[str, float, float]]:
    out = []
    raw = _raw_db(where / "raw-full.db", "FULL")

    def raw_business() -> None:
        for i in range(n):
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row(i))
            raw.execute("COMMIT")

    box = Outbox(where / "outbox.db", node_id="bench")

    def ours_business() -> None:
        for i in range(n):
            box.append("business", [NewRecord(kind="weighing", device="bridge-1", data=_data(i))])

    out.append(("business record, fsync each", _rate(n, raw_business), _rate(n, ours_business)))
    raw2 = _raw_db(where / "raw-normal.db", "NORMAL")

    def raw_readings() -> None:
        for start in range(0, n, batch):
            raw2.execute("BEGIN IMMEDIATE")
            raw2.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [_row(i) for i in range(start, min(start + batch, n))])
            raw2.execute("COMMIT")

    def ours_readings() -> None:
        for start in range(0, n, batch):
            box.append("readings", [NewRecord(kind="reading", device="meter-1", data=_data(i))
                                    for i in range(start, min(start + batch, n))])

    out.append((f"readings, {batch} per transaction", _rate(n, raw_readings), _rate(n, ours_readings)))
    box.close()
    raw.close()
    raw2.close()
    return out


def bench_codec(n: int, batch: int) -> list[tuple[str, float, float]]:
    records = tuple(Record(seq=i + 1, record_id=f"id-{i}", kind="reading", ts_ns=time.time_ns(), device="meter-1",
                           data={"values": {"voltage_l1": 230.1 + i % 7, "frequency": 50.0}}) for i in range(batch))
    b = Batch(node="bench", epoch="e", stream="readings", records=records)
    plain = {"records": [r.to_json() for r in records]}
    rounds = max(1, n // batch)

    def raw() -> None:
        for _ in range(rounds):
            json.loads(json.dumps(plain))

    def ours() -> None:
        for _ in range(rounds):
            decode_batch(encode_batch(b))

    return [(f"encode+decode, {batch} records a batch", _rate(rounds * batch, raw), _rate(rounds * batch, ours))]
