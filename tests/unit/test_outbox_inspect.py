"""The outbox is a plain SQLite file: the sqlite-utils CLI reads it while the agent owns it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.store.outbox import NewRecord, Outbox


def test_sqlite_utils_shows_streams_and_pending_records(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", node_id="n1")
    box.append("business", [NewRecord(kind="weighing", device="bridge-1", data={"gross": "24560", "unit": "kg"})])
    box.append("readings", [NewRecord(kind="reading", device="m1", data={"values": {"v": 1.0}})] * 3)
    box.ack("readings", 2)

    def rows(table: str) -> list[dict[str, object]]:
        out = subprocess.run([sys.executable, "-m", "sqlite_utils", "rows", str(tmp_path / "outbox.db"), table],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    streams = {r["stream"]: r for r in rows("streams")}  # read while the agent's connection is open
    assert (streams["business"]["next_seq"], streams["business"]["acked_seq"]) == (2, 0)
    assert (streams["readings"]["next_seq"], streams["readings"]["acked_seq"], streams["readings"]["lost"]) == (4, 2, 0)
    pending = rows("outbox")
    assert sorted((r["stream"], r["seq"]) for r in pending) == [("business", 1), ("readings", 3)]
    assert json.loads(next(r["data"] for r in pending if r["stream"] == "business"))["gross"] == "24560"
    assert len(rows("starts")) == 1
    box.close()
