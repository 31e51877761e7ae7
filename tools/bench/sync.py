"""``floorgate bench sync``: the whole sync path, edge outbox to central's stores, against raw baselines measured
in the same run.

1. **Durable outbox write**: ``Outbox.append("business", [one record])`` (``synchronous=FULL``) vs. plain
   ``sqlite3`` inserts of the same rows, WAL, ``synchronous=FULL``, one row per transaction
   (``tools.bench.outbox.bench_outbox``; ``--records`` each way).
2. **Readings drain**: a backlog of ``--readings`` N readings (3–5 points each, from 16 meters, climate probes
   and silo level sensors) waits in the outbox of a node that was offline. ``floorgate edge run`` (no devices)
   sends it through mosquitto to ``floorgate central ingest``, which writes the points to InfluxDB 1.x. The clock
   runs from the uplink's connect until the outbox is empty (all acknowledged) and InfluxDB holds every point.
3. **Business drain**: the same for ``--business`` M weighings into PostgreSQL (rows in ``weighings``).
4. **Bytes on the wire per record**: MQTT PUBLISH packets edge → broker (the batches as a subscriber sees them,
   resends included; header + payload, and the payload alone).

The raw baseline of 2 and 3 is a plain paho-mqtt publish loop — QoS 1, MQTT 5, paho's defaults (20 in flight),
**one compact JSON message per record** (the record as it appears in a batch) — to the same broker, with a plain
paho subscriber (QoS 1) in another process counting them; its clock runs from the first publish until the
subscriber has the last message. Publisher and subscriber are separate processes, as edge and central are.

With ``--tls`` every party — the raw publisher and subscriber, the agents, central — connects over TLS to a second
listener of the same broker (``require_certificate``, certificates from a throwaway fleet CA made with
``central.fleet.pki``, each its own client certificate, EC P-256, TLS 1.3 as negotiated); only the bytes-on-the-wire
sniffer stays on the plain listener. Compare a run with and without it for the price of TLS.

The servers are throwaway processes on 127.0.0.1 with random ports (``tools.devservers``; PostgreSQL runs with
``fsync=off``, mosquitto without a queue limit so the raw subscriber loses nothing), removed at the end, also on
Ctrl-C. Progress goes to stderr, the figures to stdout. A ratio of 0.25 means floorgate reaches a quarter of the
raw baseline's rate — the price of the outbox, signing, exactly-once application and the stores' writes.

Like ``floorgate_cli`` this is a root module: it imports both ``edge`` and ``central``. The raw publisher and
subscriber (``tools.bench.raw_mqtt``) run as ``python -m tools.bench.sync`` with their job in
``FLOORGATE_BENCH_SYNC_WORKER``; the backlog is made by ``tools.bench.backlog``, the children are handled by
``tools.bench.processes``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench.backlog import DEVICES, Progress, fill_outbox, log, publish_packet_bytes
from tools.bench.processes import STALL_S, WORKER_ENV, BenchError, Child
from tools.bench.raw_mqtt import RawResult, raw_baseline, worker

READINGS_NODE = "bench-readings"
BUSINESS_NODE = "bench-business"
DATABASE = "floorgate_bench"
POLL_S = 0.1
WHAT = {"readings": "readings", "business": "business records"}
POINTS_QUERY = 'SELECT count("value") FROM "readings" WHERE "node"=\'bench-readings\''


# -- floorgate --------------------------------------------------------------------------------------------------------
class _Sniffer:
    """Counts the batches a node publishes (a QoS 1 subscriber on its batch topic): messages, payload and PUBLISH
    packet bytes, resends included."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages = self.payload_bytes = self.packet_bytes = 0
        self.last_at = time.monotonic()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sniffer-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect(host, port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(30):
            self.stop()
            raise BenchError(f"no SUBACK for {topic} from the broker")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.last_at = time.monotonic()
        self.messages += 1
        self.payload_bytes += len(message.payload)
        self.packet_bytes += publish_packet_bytes(message.topic, len(message.payload))

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 5.0) -> None:
        """Wait until nothing arrived for ``quiet_s`` (the last batch may reach us after central acknowledged it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() - self.last_at < quiet_s and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class DrainResult:
    seconds: float
    startup_s: float  # agent process start to the uplink's connect (not in ``seconds``)
    batches: int
    payload_bytes: int
    packet_bytes: int


def drain(label: str, node: str, stream: str, n: int, config: Path, outbox: Path,
          stored: tuple[str, Callable[[], int], int], central: Child, host: str, port: int, log_dir: Path,
          stack: contextlib.ExitStack) -> DrainResult:
    """Start the agent on the pre-filled outbox; wait until every record is acknowledged and central's store holds
    everything (``stored``: what, how many now, how many expected)."""
    from edge.store.outbox import read_stats
    from sync.topics import batch_topic

    sniffer = _Sniffer(host, port, batch_topic(node, stream))
    stack.callback(sniffer.stop)
    edge = Child(f"edge-{stream}", ["edge", "run", "--config", str(config)], log_dir)
    stack.callback(edge.stop)
    launched = time.time()
    edge.start()
    progress = Progress(f"draining {label}", n, "acked")
    acked, moved = 0, time.monotonic()
    while True:
        central.check_alive()
        edge.check_alive()
        try:
            _, stats = read_stats(outbox)
        except sqlite3.Error:  # the agent is still opening it
            stats = {}
        if stream in stats:
            s = stats[stream]
            progress.update(s.acked)
            if s.acked > acked:
                acked, moved = s.acked, time.monotonic()
            if s.pending == 0 and s.acked == n:
                acked_at = time.time()
                done_at = acked_at if _wait_stored(*stored) else time.time()
                break
        if time.monotonic() - moved > STALL_S:
            raise BenchError(f"draining {label}: stuck at {acked}/{n} acknowledged for {STALL_S:.0f} s\n"
                             f"{edge.tail()}\n{central.tail()}")
        time.sleep(POLL_S)
    progress.update(n, force=True)
    connected = edge.logged_at("uplink connected") or launched
    edge.stop()
    sniffer.settle()
    sniffer.stop()
    return DrainResult(done_at - connected, connected - launched, sniffer.messages, sniffer.payload_bytes,
                       sniffer.packet_bytes)


def _wait_stored(what: str, check: Callable[[], int], expected: int, timeout_s: float = 60.0) -> bool:
    """Wait until ``check()`` returns ``expected``: True if it did at the first look, False if later; a BenchError
    if it does not within ``timeout_s`` (or finds more)."""
    deadline = time.monotonic() + timeout_s
    first = True
    while True:
        got = check()
        if got == expected:
            return first
        if got > expected or time.monotonic() > deadline:
            raise BenchError(f"{what}: {got} stored, expected {expected}")
        first = False
        time.sleep(POLL_S)


# -- the run ----------------------------------------------------------------------------------------------------------
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.readings < 1 or args.business < 1:
        print("floorgate bench sync: --readings and --business must be at least 1", file=sys.stderr)
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # clean up on SIGTERM too
    try:
        return _run(args)
    except BenchError as exc:
        print(f"floorgate bench sync: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    import psycopg
    import yaml

    from central.db import migrate
    from central.db.engine import make_engine, make_session_factory
    from central.fleet.nodes import register_node
    from edge.agent import OUTBOX_FILE
    from edge.config import UplinkConfig
    from sync.signing import generate_key, load_or_create_private_key, public_key_text, save_private_key
    from tools.bench.outbox import bench_outbox
    from tools.devservers import LOCALHOST, free_port
    from tools.devservers.influx import InfluxServer
    from tools.devservers.mosquitto import MosquittoServer
    from tools.devservers.postgres import PostgresServer

    n_read, n_bus = args.readings, args.business
    uplink = UplinkConfig()
    with tempfile.TemporaryDirectory(prefix="floorgate-bench-sync-", dir=args.dir) as tmp, \
            contextlib.ExitStack() as stack:
        d = Path(tmp)
        tls = make_pki(d / "pki", [READINGS_NODE, BUSINESS_NODE]) if args.tls else None
        tls_port = free_port()
        extra = ["max_queued_messages 0"]
        if tls is not None:  # a second listener: mqtts with client certificates (the sniffer stays on the plain one)
            server_files = tls["server"]
            extra += [f"listener {tls_port} {LOCALHOST}", f"cafile {server_files['ca_file']}",
                      f"certfile {server_files['cert_file']}", f"keyfile {server_files['key_file']}",
                      "require_certificate true", "use_identity_as_username true"]
        try:  # a missing binary fails here, before minutes of filling, naming the Debian package
            pg, broker, influx = PostgresServer(), MosquittoServer(extra_config=extra), InfluxServer()
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        for server in (influx, broker, pg):  # closed last (the children first), whatever happens
            stack.callback(server.close)

        def broker_section(who: str) -> dict[str, Any]:
            if tls is None:
                return {"url": broker.url, "protocol": "5"}
            return {"url": f"mqtts://{LOCALHOST}:{tls_port}", "protocol": "5", "tls": tls[who]}
        (d / "sqlite").mkdir()
        log(f"durable outbox write: {args.records} business records each way, fsync each, in {d} …")
        _, raw_write, ours_write = bench_outbox(args.records, args.batch, d / "sqlite")[0]

        nodes = {"readings": (READINGS_NODE, n_read), "business": (BUSINESS_NODE, n_bus)}
        points = {stream: fill_outbox(d / node / OUTBOX_FILE, node, stream, n) for stream, (node, n) in nodes.items()}

        log("starting mosquitto, PostgreSQL and InfluxDB on 127.0.0.1 …")
        try:
            for server in (pg, broker, influx):
                server.start()
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        db_url = pg.create_database(DATABASE)
        influx.create_database(DATABASE)
        engine = make_engine(db_url)
        logging.getLogger("central").setLevel(logging.WARNING)  # the figures, not the enrolments
        try:
            migrate.upgrade(engine)
            sessions = make_session_factory(engine)
            configs: dict[str, Path] = {}
            # central's downlink key, where `central ingest` finds it (beside central.yaml): the nodes trust it
            central_key, _ = load_or_create_private_key(d / "central-signing.key")
            for stream, (node, _) in nodes.items():
                key = generate_key()
                save_private_key(key, d / node / "node.key")
                register_node(sessions, node, public_key_text(key))
                configs[stream] = d / f"{node}.yaml"
                configs[stream].write_text(yaml.safe_dump({
                    "node_id": node, "data_dir": str(d / node), "key_file": str(d / node / "node.key"),
                    "broker": broker_section(node), "http": {"listen": None},
                    "central_keys": [public_key_text(central_key)], "health_interval_s": 3600}))
        finally:
            engine.dispose()
        (d / "central.yaml").write_text(yaml.safe_dump({
            "database_url": db_url,
            "broker": {**broker_section("central"), "client_id": "floorgate-bench-central"},
            "metrics": {"kind": "influxdb-v1", "url": influx.url, "database": DATABASE},
        }))

        raw: dict[str, RawResult] = {}
        for stream, (_, n) in nodes.items():
            log(f"raw baseline: {n} {WHAT[stream]}, one paho QoS 1 message each …")
            raw[stream] = raw_baseline(stream, broker.host, tls_port if tls else broker.port, stream, n, d, stack,
                                       tls=tls and {"pub": tls["raw-publisher"], "sub": tls["raw-subscriber"]})

        central = Child("central-ingest", ["central", "ingest", "--config", str(d / "central.yaml")], d)
        stack.callback(central.stop)
        central.start()
        central.wait_logged("ingest connected", 60)

        def weighings_stored() -> int:
            with psycopg.connect(pg.dsn(DATABASE)) as conn:
                row = conn.execute("SELECT count(*) FROM weighings WHERE node_id = %s", (BUSINESS_NODE,)).fetchone()
            return int(row[0]) if row else 0

        def points_stored() -> int:
            res = influx.query(DATABASE, POINTS_QUERY)
            series = res["results"][0].get("series")
            return int(series[0]["values"][0][1]) if series else 0

        ours: dict[str, DrainResult] = {}
        checks = {"business": ("weighings in Postgres", weighings_stored),
                  "readings": ("points in InfluxDB", points_stored)}
        for stream in ("business", "readings"):
            node, n = nodes[stream]
            log(f"floorgate: {n} {WHAT[stream]}, edge run → mosquitto → central ingest …")
            ours[stream] = drain(stream, node, stream, n, configs[stream], d / node / OUTBOX_FILE,
                                 (*checks[stream], points[stream]), central, broker.host, broker.port, d, stack)
        if tls is not None:  # each party came in through the TLS listener with its certificate as user name
            log_text = broker.log_file.read_text(errors="replace")
            absent = [cn for cn in ("floorgate:central", "floorgate:bench-raw-publisher",
                                    "floorgate:bench-raw-subscriber", READINGS_NODE, BUSINESS_NODE)
                      if f"u'{cn}'" not in log_text]
            if absent:
                raise BenchError(f"--tls: no TLS connection with the certificate of {', '.join(absent)} in "
                                 f"{broker.log_file}")

    _report(args, raw_write, ours_write, raw, ours, points, uplink.batch_max_records, uplink.max_in_flight)
    return 0


def make_pki(directory: Path, nodes: list[str]) -> dict[str, dict[str, str]]:
    """A throwaway fleet CA in ``directory`` and the TLS files of every party: the broker ("server", for
    127.0.0.1), each node (CN = node id), central and the raw publisher and subscriber (``floorgate:…``)."""
    from central.fleet.pki import init_ca, issue, write_certificate, write_private_key

    ca = init_ca(directory)
    parties: list[tuple[str, str, str]] = [
        ("server", "server", "127.0.0.1"), ("central", "client", "floorgate:central"),
        ("raw-publisher", "client", "floorgate:bench-raw-publisher"),
        ("raw-subscriber", "client", "floorgate:bench-raw-subscriber"),
        *((node, "node", node) for node in nodes)]
    files: dict[str, dict[str, str]] = {}
    for name, kind, cn in parties:
        issued = issue(ca, kind=kind, common_name=cn,  # type: ignore[arg-type]
                       ip_addresses=("127.0.0.1",) if kind == "server" else ())
        write_certificate(directory / f"{name}.crt", issued.cert)
        write_private_key(directory / f"{name}.key", issued.key)
        files[name] = {"ca_file": str(ca.cert_path), "cert_file": str(directory / f"{name}.crt"),
                       "key_file": str(directory / f"{name}.key")}
    return files


def _report(args: argparse.Namespace, raw_write: float, ours_write: float, raw: dict[str, RawResult],
            ours: dict[str, DrainResult], points: dict[str, int], batch: int, in_flight: int) -> None:
    n = {"readings": args.readings, "business": args.business}
    print(f"sync: {n['readings']:,} readings ({points['readings'] / n['readings']:.1f} points each, "
          f"{len(DEVICES)} devices), {n['business']:,} weighings; uplink {batch} records a batch, {in_flight} "
          f"in flight; raw: paho-mqtt QoS 1, one JSON message per record; "
          + ("over TLS (mqtts, client certificates) for both" if args.tls else "plain MQTT"))
    print(f"{'measurement':<44} {'raw rec/s':>12} {'floorgate rec/s':>16} {'ratio':>7}")
    print(f"{'durable outbox write, fsync each':<44} {raw_write:>12,.0f} {ours_write:>16,.0f} "
          f"{ours_write / raw_write:>7.2f}")
    names = {"readings": "drain readings → InfluxDB", "business": "drain business → Postgres"}
    for stream in ("readings", "business"):
        r, o = n[stream] / raw[stream].seconds, n[stream] / ours[stream].seconds
        print(f"{names[stream]:<44} {r:>12,.0f} {o:>16,.0f} {o / r:>7.2f}")
    print("drain time: " + "; ".join(
        f"{stream} raw {raw[stream].seconds:.2f} s, floorgate {ours[stream].seconds:.2f} s "
        f"(+{ours[stream].startup_s:.1f} s agent start, {ours[stream].batches} batches)"
        for stream in ("readings", "business")))
    print(f"{'bytes on the wire per record (edge → broker)':<44} {'raw':>12} {'floorgate':>16} {'ratio':>7}")
    labels = {"readings": "reading", "business": "business record"}
    for stream in ("readings", "business"):
        for what, r_bytes, o_bytes in (
                ("MQTT PUBLISH", raw[stream].packet_bytes, ours[stream].packet_bytes),
                ("payload only", raw[stream].payload_bytes, ours[stream].payload_bytes)):
            r, o = r_bytes / n[stream], o_bytes / n[stream]
            print(f"{labels[stream] + ', ' + what:<44} {r:>12,.1f} {o:>16,.1f} {o / r:>7.2f}")


if __name__ == "__main__" and os.environ.get(WORKER_ENV):
    worker(json.loads(os.environ[WORKER_ENV]))
