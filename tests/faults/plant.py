"""A whole plant on real parts for fault injection: simulators → ``floorgate edge run`` → (a cuttable network) →
mosquitto → ``floorgate central run`` / ``central ingest`` → PostgreSQL + InfluxDB.

``Plant.verify()`` is the promise of issue 4, checked exactly after the edge has drained: for every stream the
records central holds (plus the ranges the node gave up to its disk quota) cover seq 1..produced with no hole and
no overlap, nothing is doubled, every business record is a weighing row, every reading record is in InfluxDB, the
loss central counted is the loss the node reported, and the outbox passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from edge.store.outbox import StreamStats, read_stats
from tests.api_support import TEST_JWT_SECRET
from tests.netcut import NetCut
from tests.procs import Proc, enrol, floorgate, wait_until
from tests.services import InfluxServer, MosquittoServer, free_port

TRUCKS = [18000 + 37 * i for i in range(400)]


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Plant:
    tmp: Path
    pg_url: str
    mosquitto: MosquittoServer
    influx: InfluxServer
    influx_db: str
    node: str = "fault-node"
    quota_mb: float | None = None
    share_group: str | None = None
    procs: list[Proc] = field(default_factory=list)
    sims: list[Proc] = field(default_factory=list)
    edge: Proc | None = None
    centrals: list[Proc] = field(default_factory=list)
    net: NetCut | None = None
    api_port: int = 0
    node_http_port: int = 0
    edge_dir: Path | None = None  # default: <tmp>/edge

    # -- setup ----------------------------------------------------------------------------------------------------
    def start(self) -> Plant:
        self.net = NetCut("127.0.0.1", self.mosquitto.port)
        self.net.__enter__()
        self.api_port = free_port()
        self.node_http_port = free_port()
        bridge = self._sim("sim-weighbridge", ["weighbridge", "--pty", "--time-scale", "0.02", "--trucks",
                                               ",".join(map(str, TRUCKS)), "--seed", "5"])
        meter = self._sim("sim-sdm630", ["sdm630", "--seed", "1"])
        probe = self._sim("sim-probe", ["th-probe", "--seed", "2"])
        self.central_cfg = _write_yaml(self.tmp / "central.yaml", {
            "database_url": self.pg_url,
            "broker": {"url": self.mosquitto.url, "protocol": "5", "client_id": f"central-{self.node}"},
            "metrics": {"kind": "influxdb-v1", "url": self.influx.url, "database": self.influx_db},
            "api": {"host": "127.0.0.1", "port": self.api_port},
            "auth": {"jwt_secret": TEST_JWT_SECRET},
            "ingest": {"replay_after_s": 5, **({"share_group": self.share_group} if self.share_group else {})},
        })
        self.edge_dir = self.edge_dir or self.tmp / "edge"
        node: dict[str, Any] = {
            "node_id": self.node,
            "data_dir": str(self.edge_dir),
            "broker": {"url": self.net.url_for("mqtt"), "protocol": "5", "keepalive_s": 3},
            "uplink": {"ack_timeout_s": 2, "retry_min_s": 0.2, "retry_max_s": 2, "batch_max_records": 100},
            "health_interval_s": 1,
            "heartbeat_interval_s": 1,
            "http": {"listen": f"127.0.0.1:{self.node_http_port}"},
            "devices": [
                {"id": "bridge-1", "type": "mtsics-scale", "address": bridge, "interval_s": 0.05,
                 "weighing": {"threshold": 500}},
                {"id": "meter-1", "type": "sdm630", "address": meter, "interval_s": 0.05},
                {"id": "probe-1", "type": "th-probe", "address": probe, "interval_s": 0.05},
            ],
        }
        if self.quota_mb is not None:
            node["outbox"] = {"quota_mb": self.quota_mb}
        self.node_cfg = _write_yaml(self.tmp / "node.yaml", node)
        migrated = floorgate(["central", "migrate", "--config", str(self.central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        enrol(self.node_cfg, self.central_cfg)
        self.engine = sa.create_engine(self.pg_url, pool_pre_ping=True)
        return self

    def _sim(self, name: str, args: list[str]) -> str:
        proc = Proc(name, ["simulate", *args], self.tmp).start()
        self.sims.append(proc)
        self.procs.append(proc)
        if "--pty" in args:
            return "serial://" + proc.wait_for_line("pty:")
        return proc.wait_for_line("listening:")

    def start_central(self, *, api: bool = True, env: dict[str, str] | None = None, name: str = "central") -> Proc:
        args = ["central", "run" if api else "ingest", "--config", str(self.central_cfg)]
        if not api:
            args += ["--client-id", f"ingest-{name}"]
        proc = Proc(name, args, self.tmp, env=env).start()
        self.centrals.append(proc)
        self.procs.append(proc)
        if api:
            with httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=3) as client:
                wait_until("central API", lambda: client.get("/health").status_code in (200, 503), timeout_s=30,
                           procs=[proc])
        return proc

    def start_edge(self) -> Proc:
        self.edge = Proc("edge", ["edge", "run", "--config", str(self.node_cfg)], self.tmp).start()
        self.procs.append(self.edge)
        return self.edge

    def kill_edge(self) -> None:
        assert self.edge is not None
        self.edge.kill()
        self.procs.remove(self.edge)
        self.edge = None

    def forget(self, proc: Proc) -> None:
        if proc in self.procs:
            self.procs.remove(proc)
        if proc in self.centrals:
            self.centrals.remove(proc)

    def alive(self) -> list[Proc]:
        return [p for p in self.procs if p.running or p in self.sims]

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        if self.net is not None:
            self.net.close()
        if hasattr(self, "engine"):
            self.engine.dispose()

    # -- observing ------------------------------------------------------------------------------------------------
    def outbox(self) -> tuple[str, dict[str, StreamStats]]:
        assert self.edge_dir is not None
        return read_stats(self.edge_dir / "outbox.db")

    def weighings(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.text("SELECT count(*) FROM weighings WHERE node_id=:n"), {"n": self.node})
                       .scalar_one())

    def wait_weighings(self, n: int, timeout_s: float = 60) -> int:
        return wait_until(f"{n} weighings at central", lambda: (w := self.weighings()) >= n and w,
                          timeout_s=timeout_s, procs=self.alive())

    def marks(self, epoch: str) -> dict[str, tuple[int, int]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.text("SELECT stream, acked_seq, lost FROM ingest_marks WHERE node_id=:n AND epoch=:e"),
                             {"n": self.node, "e": epoch}).all()
        return {s: (int(a), int(lost)) for s, a, lost in rows}

    def stop_devices(self) -> None:
        for sim in self.sims:
            sim.stop()
            self.procs.remove(sim)
        self.sims.clear()

    def drain(self, timeout_s: float = 120) -> tuple[str, dict[str, StreamStats]]:
        """Wait until the edge has nothing pending and central's marks equal what the edge produced."""
        def drained() -> tuple[str, dict[str, StreamStats]] | None:
            epoch, stats = self.outbox()
            marks = self.marks(epoch)
            ok = all(s.pending == 0 and marks.get(name, (0, 0))[0] == s.produced for name, s in stats.items())
            return (epoch, stats) if ok else None

        return wait_until("the edge outbox to drain into central", drained, timeout_s=timeout_s, procs=self.alive())

    def stop_edge(self) -> None:
        """A clean stop (SIGTERM): the agent commits what it collected and closes the outbox."""
        assert self.edge is not None
        self.edge.stop()
        self.procs.remove(self.edge)
        self.edge = None

    def _edge_pending(self, stream: str) -> list[tuple[int, int]]:
        assert self.edge_dir is not None
        db = sqlite3.connect(f"file:{self.edge_dir / 'outbox.db'}?mode=ro", uri=True)
        try:
            return [(int(a), int(b)) for a, b in db.execute(
                "SELECT COALESCE(from_seq, seq), seq FROM outbox WHERE stream=? ORDER BY seq", (stream,))]
        finally:
            db.close()

    # -- the promise ----------------------------------------------------------------------------------------------
    def verify(self, *, loss_allowed: bool = False) -> dict[str, int]:
        """After ``drain`` and ``stop_edge``: every seq the edge produced is at central exactly once, or still
        waiting in the outbox (the agent may have made a few health records after the drain)."""
        assert self.edge is None, "stop the edge first: the figures must hold still"
        epoch, stats = self.outbox()
        figures: dict[str, int] = {}
        marks = self.marks(epoch)
        with self.engine.connect() as c:
            for stream, s in stats.items():
                rows = c.execute(sa.text(
                    "SELECT seq, first_seq, kind FROM ingest_inbox WHERE node_id=:n AND epoch=:e AND stream=:s "
                    "ORDER BY seq"), {"n": self.node, "e": epoch, "s": stream}).all()
                expected = 1
                for seq, first, _kind in rows:  # coverage: contiguous from 1, no hole
                    # a record standing for a range the node gave up may overlap seqs central got before
                    assert (first or seq) == expected or (first is not None and first < expected <= seq), (
                        f"{stream}: hole or overlap at seq {expected} (row {seq} from {first})")
                    expected = seq + 1
                central_upto = expected - 1
                assert central_upto <= s.produced, f"{stream}: central holds seq {central_upto} > produced"
                for first, seq in self._edge_pending(stream):  # the rest is still waiting on the edge
                    if seq <= central_upto:
                        continue  # held at central, ack not yet received: harmless, it will be acked
                    assert first <= central_upto + 1, f"{stream}: seq {central_upto + 1}..{first - 1} is nowhere"
                    central_upto = seq
                assert central_upto == s.produced, f"{stream}: {central_upto} of {s.produced} accounted for"
                data_rows = sum(1 for _, _, kind in rows if kind != "loss")
                waiting = sum(1 for f, q in self._edge_pending(stream) if q > expected - 1)
                central_lost = marks[stream][1] if stream in marks else 0
                assert data_rows + central_lost + waiting == s.produced, (
                    stream, data_rows, central_lost, waiting, s.produced)
                if not loss_allowed or stream == "business":
                    assert (central_lost, s.lost) == (0, 0), f"{stream}: lost {central_lost} / {s.lost}"
                else:
                    assert central_lost <= s.lost, (stream, central_lost, s.lost)
                figures[f"{stream}_produced"] = s.produced
                figures[f"{stream}_lost"] = central_lost
            # business: exactly one weighing row per business record, seqs 1..produced, no doubled record id
            w = c.execute(sa.text("SELECT seq, record_id FROM weighings WHERE node_id=:n AND epoch=:e ORDER BY seq"),
                          {"n": self.node, "e": epoch}).all()
            assert [r[0] for r in w] == list(range(1, stats["business"].produced + 1)), "a weighing lost or doubled"
            assert stats["business"].pending == 0
            assert len({r[1] for r in w}) == len(w)
            readings = c.execute(sa.text(
                "SELECT count(*) FROM ingest_inbox WHERE node_id=:n AND epoch=:e AND stream='readings' "
                "AND kind='reading'"), {"n": self.node, "e": epoch}).scalar_one()
        # every reading record central applied is in InfluxDB, once (one marker point per record kind)
        in_influx = (self._influx_count("readings", "voltage_l1") + self._influx_count("readings", "temperature")
                     + self._influx_count("device_health", "polls"))
        assert in_influx == readings, f"InfluxDB holds {in_influx} reading records, central applied {readings}"
        figures["influx_records"] = in_influx
        assert self.edge_dir is not None
        db = sqlite3.connect(f"file:{self.edge_dir / 'outbox.db'}?mode=ro", uri=True)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
        return figures

    def _influx_count(self, measurement: str, point: str) -> int:
        res = self.influx.query(
            self.influx_db, f"SELECT count(\"value\") FROM \"{measurement}\" WHERE \"node\"='{self.node}' "
            f"AND \"point\"='{point}'")
        series = res["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    def quarantine_reasons(self) -> list[str]:
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(sa.text("SELECT reason FROM ingest_quarantine WHERE node_id=:n"),
                                            {"n": self.node}).all()]
