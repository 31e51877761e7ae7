"""An ingest-only worker (``floorgate central ingest --metrics-listen HOST:PORT``) serves Prometheus /metrics with the
same names as the API's /metrics, so one scrape job covers API processes and workers (grafana/prometheus): a real
worker process, a real broker and Postgres; what it quarantines shows up in its counters."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import paho.mqtt.publish as publish
import pytest
from prometheus_client.parser import text_string_to_metric_families

from floorgate_cli import main
from tests.procs import Proc, central_yaml, floorgate, wait_until
from tests.services import MosquittoServer, free_port

pytestmark = pytest.mark.integration


def _samples(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if not s.labels}


def test_an_ingest_worker_serves_its_counters_without_the_api(
        tmp_path: Path, pg_url: str, mosquitto: MosquittoServer, unique_id: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url, client_id=f"{unique_id}-worker",
                       api_port=free_port())
    assert main(["central", "migrate", "--config", str(cfg)]) == 0, capsys.readouterr()
    port = free_port()
    worker = Proc("central-ingest", ["central", "ingest", "--config", str(cfg), "--metrics-listen",
                                     f"127.0.0.1:{port}"], tmp_path).start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def connected() -> dict[str, float] | None:
            try:
                samples = _samples(url)
            except httpx.HTTPError:
                return None
            return samples if samples.get("floorgate_ingest_connected") == 1.0 else None

        before = wait_until("the worker's /metrics, connected to the broker", connected, timeout_s=30,
                            procs=[worker])
        assert before["floorgate_ingest_running"] == 1.0
        assert before["floorgate_database_up"] == 1.0
        assert before["floorgate_ingest_quarantined_total"] == 0.0
        assert "floorgate_http_request_duration_seconds_count" not in before  # no API in this process
        publish.single(f"floorgate/v1/{unique_id}/up/readings", b"garbage", qos=1, hostname="127.0.0.1",
                       port=mosquitto.port)
        after = wait_until("the garbage batch counted as quarantined", lambda: (
            s if (s := _samples(url)).get("floorgate_ingest_quarantined_total") == 1.0 else None),
            timeout_s=15, procs=[worker])
        assert after["floorgate_ingest_quarantine_entries"] == 1.0
    finally:
        worker.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the port is given back when the worker stops
        try:
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=0.5)
        except httpx.TransportError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the worker's /metrics on port {port} still answers after it stopped")


@pytest.mark.parametrize("value", ["9464", "host:", "127.0.0.1:70000", ":9464"])
def test_a_bad_metrics_listen_names_the_option(tmp_path: Path, value: str) -> None:
    cfg = central_yaml(tmp_path, database_url=f"sqlite:///{tmp_path}/c.db", broker_url="mqtt://127.0.0.1:1",
                       client_id="w", api_port=free_port())
    result = floorgate(["central", "ingest", "--config", str(cfg), "--metrics-listen", value], timeout_s=30)
    assert result.returncode == 2
    assert "--metrics-listen: Value error, expected HOST:PORT" in result.stderr, result.stderr
