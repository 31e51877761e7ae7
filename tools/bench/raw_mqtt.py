"""The raw baseline of ``floorgate bench sync``: a plain paho-mqtt publish loop — QoS 1, MQTT 5, paho's defaults,
one compact JSON message per record — and a plain paho subscriber counting them, each in its own process (started
as ``python -m tools.bench.sync`` with its job in the environment, see :class:`tools.bench.processes.Worker`)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench.backlog import Progress, publish_packet_bytes, stream_items
from tools.bench.processes import STALL_S, BenchError, Worker

RAW_WINDOW = 2000  # publishes the raw loop hands paho ahead of the PUBACKs (bounds its memory, not its rate)


@dataclass
class RawResult:
    seconds: float
    payload_bytes: int
    packet_bytes: int


def raw_baseline(label: str, host: str, port: int, stream: str, n: int, log_dir: Path,
                 stack: contextlib.ExitStack, tls: dict[str, dict[str, str]] | None = None) -> RawResult:
    """``tls``: the PEM files (ca_file, cert_file, key_file) of the subscriber ("sub") and the publisher ("pub")."""
    topic = f"bench/raw/{stream}"
    sub = Worker(f"raw-{stream}-subscriber", {"role": "sub", "host": host, "port": port, "topic": topic, "n": n,
                                              "tls": (tls or {}).get("sub")}, log_dir)
    stack.callback(sub.stop)
    sub.expect("ready", 30)
    pub = Worker(f"raw-{stream}-publisher", {"role": "pub", "host": host, "port": port, "topic": topic, "n": n,
                                             "stream": stream, "tls": (tls or {}).get("pub")}, log_dir)
    stack.callback(pub.stop)
    payload_bytes, packet_bytes = map(int, pub.expect("ready", 120 + n / 5000).split())
    pub.send("go")
    progress = Progress(f"raw baseline {label}", n, "received")
    got, moved = 0, time.monotonic()
    while True:
        line = sub.next_line(STALL_S)
        if line.startswith("{"):
            result = json.loads(line)
            break
        count = int(line.split()[1])
        if count > got:
            got, moved = count, time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            raise BenchError(f"raw baseline {label}: stuck at {got}/{n} received")
        progress.update(count)
    progress.update(result["received"], force=True)
    started = json.loads(pub.next_line(60))["started_at"]
    sub.stop()
    pub.stop()
    return RawResult(result["last_at"] - started, payload_bytes, packet_bytes)


def _raw_payloads(stream: str, n: int) -> list[bytes]:
    from sync.envelope import Record

    return [json.dumps(Record(seq=i + 1, record_id=str(uuid.uuid4()), kind=kind, ts_ns=ts_ns, device=device,
                              data=data, mono_ns=time.monotonic_ns()).to_json(),
                       separators=(",", ":"), ensure_ascii=False).encode()
            for i, (kind, device, ts_ns, data) in enumerate(stream_items(stream, n))]


def _paho_tls(client: Any, tls: dict[str, str] | None) -> None:
    if tls is not None:
        client.tls_set(ca_certs=tls["ca_file"], certfile=tls["cert_file"], keyfile=tls["key_file"])


def _raw_publisher(host: str, port: int, topic: str, stream: str, n: int, tls: dict[str, str] | None = None
                   ) -> None:
    """The baseline sender: every record its own QoS 1 message, paho's defaults."""
    import paho.mqtt.client as mqtt

    payloads = _raw_payloads(stream, n)
    acked = 0
    done, connected = threading.Event(), threading.Event()
    window = threading.Semaphore(RAW_WINDOW)

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked >= n:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-raw-pub-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    _paho_tls(client, tls)
    client.connect(host, port)
    client.loop_start()
    if not connected.wait(30):
        raise SystemExit(f"raw publisher: no CONNACK from {host}:{port}")
    print(f"ready {sum(map(len, payloads))} {sum(publish_packet_bytes(topic, len(p)) for p in payloads)}",
          flush=True)
    sys.stdin.readline()
    started = time.time()
    for payload in payloads:
        window.acquire()
        client.publish(topic, payload, qos=1)
    done.wait()
    print(json.dumps({"started_at": started, "acked_at": time.time()}), flush=True)
    client.disconnect()
    client.loop_stop()


def _raw_subscriber(host: str, port: int, topic: str, n: int, tls: dict[str, str] | None = None) -> None:
    """The baseline receiver: a QoS 1 subscription that counts messages."""
    import paho.mqtt.client as mqtt

    got = 0
    last_at = 0.0
    done, subscribed = threading.Event(), threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal got, last_at
        got += 1
        last_at = time.time()
        if got >= n:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-raw-sub-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    _paho_tls(client, tls)
    client.connect(host, port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    if not subscribed.wait(30):
        raise SystemExit(f"raw subscriber: no SUBACK from {host}:{port}")
    print("ready", flush=True)
    while not done.wait(1.0):
        print(f"received {got}", flush=True)
    print(json.dumps({"received": got, "last_at": last_at}), flush=True)
    client.disconnect()
    client.loop_stop()



def worker(job: dict[str, Any]) -> None:
    """The body of a raw-baseline process: ``job`` says publisher or subscriber, where, and how much."""
    if job["role"] == "sub":
        _raw_subscriber(job["host"], job["port"], job["topic"], job["n"], job.get("tls"))
    else:
        _raw_publisher(job["host"], job["port"], job["topic"], job["stream"], job["n"], job.get("tls"))
