"""One short end-to-end run on real parts that leaves every kind of row a Grafana panel reads.

    simulators (silo cable, T/H probe, SDM630 on Modbus TCP; an MT-SICS weighbridge on a pseudo-terminal whose clock
    the run holds) → ``floorgate edge run`` (with the software TSE and the POS API) → mosquitto →
    ``floorgate central run`` (ingest, alert evaluator, API) → PostgreSQL + InfluxDB 1.x; Prometheus scraping
    central's ``/metrics`` with a viewer API key, as ``grafana/prometheus/floorgate-central.yml`` says.

What the run makes, and which panels need it:

- a site with the node on it, partners and articles (made through the API by an admin), weigh commands: two
  complete tickets (one in by reference, one out by plate), one open first weighing, one weigh refused as unstable
  (``S I``) and one as overload (``S +``), a refused zero → Weighbridge; a second scale in automatic mode that
  sees one overloaded truck and one that drives over without stopping (its ``events_overload`` and
  ``events_unstable`` counters in ``device_health``) → Weighbridge (refused in automatic mode)
- silo temperatures (one sensor forced to 45 °C), probe temperature and humidity, SDM630 power and energy →
  Silos and energy; the forced sensor fires ``silo-hot-spot``
- ``device_health`` of every device, a device answering Modbus exceptions (offline, errors) → Fleet
- a second node, enrolled but never started and on no site → Fleet (offline, no heartbeat)
- heartbeats (``node_backlog``, the node row) → Fleet; central is stopped for a few seconds meanwhile, so that
  the heartbeats queued at the broker show a backlog (pending records and the age of the oldest)
- sales through the POS API: two while another process holds the TSE ("TSE ausgefallen"), then signed ones from two
  registers → Fiscal (TSE); the failed ones fire ``fiscal-tse``
- a malformed batch (quarantine), alerts whose notifications fail (the receiver is down), HTTP requests and ingest
  counters in Prometheus → Central, and the Grafana alert rules

The alert rules are ``firmware-config/examples/alert-rules.yaml`` with its thresholds kept and only the times
shortened, the node renamed to the run's node, and both channels pointed at a port nobody listens on. When the data
is there, every process but Prometheus is stopped (so nothing keeps running into later tests), and ``Plant`` holds
the URLs and names the dashboard checker needs.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import sqlalchemy as sa
import yaml

from protocols.sim.load import Phase
from protocols.tse.software import SoftwareTse
from sync.signing import generate_key, public_key_text
from tests.api_support import TEST_JWT_SECRET
from tests.dashboards.prometheus_server import PrometheusServer
from tests.fiscal_support import confirm_tse
from tests.procs import Proc, create_admin, enrol, floorgate, login, wait_until, write_yaml
from tests.weighbridge_support import BridgeThread
from tools.devservers import free_port
from tools.devservers.influx import InfluxServer
from tools.devservers.mosquitto import MosquittoServer
from tools.devservers.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = REPO / "firmware-config" / "examples" / "alert-rules.yaml"
SERVER_CERT_DAYS = 20
SCRAPE_CONFIG = REPO / "grafana" / "prometheus" / "floorgate-central.yml"

SITE_CODE = "MILL-A"
PARTNERS = {"FARM-1": "supplier", "MILL-C1": "customer", "FARM-2": "supplier"}
ARTICLES = {"WHEAT": "Wheat", "FEED-A": "Cattle feed A", "BARLEY": "Barley"}
CLIENTS = ("KASSE-1", "KASSE-2")
OUTAGE_S = 4.0  # central stopped while the node goes on
SCRAPE_INTERVAL = "2s"  # also the scrape timeout: a slow /metrics on a busy machine must not read as "down"

# the weighbridge's visits (one weight each) and what is asked of it: (visit, phase, command, args, expected status)
VISITS = [30_000, 12_000, 11_000, 28_000, 25_000, 70_000]  # 70 t on a 60 t bridge: S +
COMMANDS: list[tuple[int, Phase, str, dict[str, str], str]] = [
    (0, Phase.SETTLED, "weigh", {"reference": "WB-1", "vehicle": "AB-1", "partner": "FARM-1", "article": "WHEAT"},
     "succeeded"),  # opens ticket WB-1 (loaded)
    (1, Phase.SETTLED, "weigh", {"vehicle": "CD-2", "partner": "MILL-C1", "article": "FEED-A"},
     "succeeded"),  # opens a ticket by plate (empty)
    (2, Phase.SETTLED, "weigh", {"reference": "WB-1"}, "succeeded"),  # completes WB-1: in, 19000 kg
    (3, Phase.SETTLED, "weigh", {"vehicle": "CD-2"}, "succeeded"),  # completes CD-2: out, 16000 kg
    (4, Phase.SETTLED, "weigh", {"vehicle": "EF-3", "partner": "FARM-2", "article": "BARLEY"},
     "succeeded"),  # stays open: an unpaired first weighing
    (5, Phase.DRIVE_ON, "weigh", {"vehicle": "GH-4"}, "failed"),  # S I: no stable weight
    (5, Phase.DRIVE_ON, "zero", {}, "failed"),  # Z I
    (5, Phase.SETTLED, "weigh", {"vehicle": "GH-4"}, "failed"),  # S +: overload
]
# the scale in automatic mode (bridge-2): an overloaded truck, then one that drives on and off without stopping;
# each step a "poll" command, so that the agent's weighing detector sees exactly these answers in this order
AUTO_SCALE = "bridge-2"
AUTO_VISITS = [70_000, 20_000]
AUTO_STEPS: list[tuple[int, Phase, str]] = [
    (0, Phase.EMPTY, "S S"),  # empty: the detector is armed
    (0, Phase.SETTLED, "S +"),  # overload: one overload episode (events_overload 1)
    (1, Phase.EMPTY, "S S"),  # the overloaded truck left: counted as overload only
    (1, Phase.DRIVE_ON, "S D"),  # the next truck moves on ...
    (2, Phase.EMPTY, "S S"),  # ... and off without standing still (events_unstable 1)
]


def derived_rules(node: str, dead_port: int) -> dict[str, Any]:
    """The example alert rules with their thresholds as they are; times shortened so that they fire within the run,
    the node-specific rule on the run's node, every channel aimed at a receiver that is down."""
    rules: dict[str, Any] = yaml.safe_load(EXAMPLE_RULES.read_text(encoding="utf-8"))
    for name, channel in rules["channels"].items():
        if channel["kind"] == "webhook":
            rules["channels"][name] = {"kind": "webhook", "url": f"http://127.0.0.1:{dead_port}/hook",
                                       "timeout_s": 1, "max_attempts": 2}
        else:
            rules["channels"][name] = {"kind": "email", "host": "127.0.0.1", "port": dead_port,
                                       "from": "floorgate@test.example", "to": ["ops@test.example"],
                                       "max_attempts": 2}
    for rule in rules["rules"]:
        if rule["kind"] == "reading":
            rule.update(for_s=1, max_gap_s=10)
            if "node" in rule:
                rule["node"] = node
        elif rule["kind"] == "device_offline":
            rule["after_s"] = 5
    return rules


@dataclass
class Plant:
    """Where the run's data is, for the checker: ``pg_url`` (libpq URL), ``influx_url`` + ``influx_db``,
    ``prometheus``; ``node``; ``finished_at`` (Unix time when everything was there, before the processes
    stopped); ``figures`` what the run made."""

    tmp: Path
    postgres: PostgresServer
    mosquitto: MosquittoServer
    influx: InfluxServer
    node: str
    db_name: str
    procs: list[Proc] = field(default_factory=list)
    prometheus: PrometheusServer | None = None
    bridge: BridgeThread | None = None
    auto_bridge: BridgeThread | None = None
    finished_at: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def spare_node(self) -> str:
        return f"{self.node}-spare"

    @property
    def pg_url(self) -> str:
        return self.postgres.dsn(self.db_name)

    @property
    def influx_url(self) -> str:
        return self.influx.url

    @property
    def influx_db(self) -> str:
        return self.db_name

    # -- the run ------------------------------------------------------------------------------------------------------
    def run(self) -> Plant:
        started = time.monotonic()
        sa_url = self.postgres.create_database(self.db_name)
        self.influx.create_database(self.db_name)
        self.engine = sa.create_engine(sa_url)
        api_port, dead_port = free_port(), free_port()
        pos_port = free_port()
        force_file = self.tmp / "force.json"
        silo_addr = self._sim("sim-silo", ["silo-cable-8", "--seed", "3", "--force-file", str(force_file)])
        probe_addr = self._sim("sim-probe", ["th-probe", "--seed", "2"])
        meter_addr = self._sim("sim-sdm630", ["sdm630", "--seed", "1"])
        self.bridge = BridgeThread(VISITS)
        pty = self.bridge.start()
        self.bridge.at(0, Phase.EMPTY)
        self.auto_bridge = BridgeThread(AUTO_VISITS, serial="0123456790")
        auto_pty = self.auto_bridge.start()
        self.auto_bridge.at(0, Phase.EMPTY)

        rules_file = write_yaml(self.tmp / "alert-rules.yaml", derived_rules(self.node, dead_port))
        central_cfg = write_yaml(self.tmp / "central.yaml", {
            "database_url": sa_url,
            "broker": {"url": self.mosquitto.url, "protocol": "5", "client_id": f"central-{self.node}"},
            "metrics": {"kind": "influxdb-v1", "url": self.influx.url, "database": self.db_name},
            "api": {"host": "127.0.0.1", "port": api_port},
            "auth": {"jwt_secret": TEST_JWT_SECRET},
            "alerts": {"rules_file": str(rules_file), "evaluate_every_s": 0.5},
            "pki": {"dir": str(self.tmp / "pki")},
        })
        edge_dir = self.tmp / "edge"
        node_cfg = write_yaml(self.tmp / "node.yaml", {
            "node_id": self.node,
            "data_dir": str(edge_dir),
            "broker": {"url": self.mosquitto.url, "protocol": "5"},
            "uplink": {"ack_timeout_s": 2, "retry_min_s": 0.2, "retry_max_s": 2},
            "health_interval_s": 1,
            "heartbeat_interval_s": 1,
            "http": {"listen": None},
            "buses": [{"id": "gw-1", "kind": "tcp", "address": silo_addr}],
            "devices": [
                {"id": "bridge-1", "type": "mtsics-scale", "address": f"serial://{pty}", "interval_s": 0.2,
                 "weighing": {"auto": False}},
                {"id": AUTO_SCALE, "type": "mtsics-scale", "address": f"serial://{auto_pty}", "interval_s": 0.2},
                {"id": "silo-1", "profile": "silo-cable-8", "bus": "gw-1", "unit_id": 1,
                 "poll_groups": {"default": 0.3}, "report_every_s": 1},
                {"id": "probe-1", "type": "th-probe", "address": probe_addr, "interval_s": 0.3},
                {"id": "meter-1", "type": "sdm630", "address": meter_addr, "interval_s": 0.3},
                # an SDM630 map read from the probe: registers it does not have → Modbus exceptions, offline
                {"id": "wrong-1", "type": "sdm630", "address": probe_addr, "interval_s": 0.5},
            ],
            "tse": {"id": "tse-1", "driver": "software", "algorithm": "P-256", "clients": list(CLIENTS)},
            "pos": {"listen": f"127.0.0.1:{pos_port}"},
        })
        migrated = floorgate(["central", "migrate", "--config", str(central_cfg)])
        assert migrated.returncode == 0, migrated.stderr
        # the fleet CA (central's metrics expose its certificates' and CRL's expiry): a broker certificate that
        # expires within the Grafana rule's 30 days, central's client certificate for the default 730
        for pki_command in (["init"], ["server-cert", "--dns", "localhost", "--days", str(SERVER_CERT_DAYS), "--out",
                                       str(self.tmp / "broker-tls")],
                            ["client-cert", "--out", str(self.tmp / "central-tls")]):
            done = floorgate(["central", "ca", *pki_command, "--config", str(central_cfg)])
            assert done.returncode == 0, done.stdout + done.stderr
        enrol(node_cfg, central_cfg)
        # a second node, enrolled but never started (and on no site): offline, without heartbeat
        spare = floorgate(["central", "node", "register", self.spare_node, "--public-key",
                           public_key_text(generate_key()), "--config", str(central_cfg)])
        assert spare.returncode == 0, spare.stdout + spare.stderr
        create_admin(central_cfg)
        central = self._start("central", ["central", "run", "--config", str(central_cfg)])
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=40)
        try:
            wait_until("central API", lambda: api.get("/health").status_code in (200, 503), timeout_s=30,
                       procs=self.procs)
            login(api)
            self._master_data(api)
            self._start_prometheus(api, api_port)

            # another process holds the TSE: the first sales complete without a signature ("TSE ausgefallen")
            holder = SoftwareTse(edge_dir / "tse", curve="P-256")
            made = holder.info()  # the admin confirms the TSE in central's registry: its sales are trusted
            confirm_tse(central_cfg, {"serial": made.serial_hex,
                                      "public_key": base64.b64encode(made.public_key).decode()})
            edge = self._start("edge", ["edge", "run", "--config", str(node_cfg)])
            token_file = edge_dir / "pos-token"
            wait_until("the POS token", lambda: token_file.exists() and token_file.read_text().strip(),
                       timeout_s=30, procs=self.procs)
            pos = httpx.Client(base_url=f"http://127.0.0.1:{pos_port}", timeout=10,
                               headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
            try:
                wait_until("the POS API", lambda: pos.get("/pos/v1/tse").status_code == 200, timeout_s=30,
                           procs=self.procs)
                failed = [self._sale(pos, CLIENTS[i % 2], f"F-{i}") for i in range(2)]
                assert all(s["tse_failed"] for s in failed), failed
                holder.close()
                signed = [self._sale(pos, CLIENTS[i % 2], f"B-{i}") for i in range(6)]
                assert not any(s["tse_failed"] for s in signed), signed
            finally:
                pos.close()

            def scales_known() -> bool:  # the commands need both scales at central (other devices may come first)
                items = api.get("/api/v1/devices", params={"node_id": self.node, "limit": 100}).json()["items"]
                return {"bridge-1", AUTO_SCALE} <= {d["device_id"] for d in items}

            wait_until("bridge-1 and the automatic scale known at central", scales_known, timeout_s=30,
                       procs=self.procs)
            self._commands(api, edge)
            self._automatic(api, edge)
            # central away for a few seconds: the node's heartbeats queue at the broker with a growing backlog
            # (pending records, the age of the oldest) — what the Fleet dashboard's backlog panels show
            central.stop()
            self.procs.remove(central)
            time.sleep(OUTAGE_S)
            central = self._start("central-2", ["central", "run", "--config", str(central_cfg)])
            wait_until("central API again", lambda: api.get("/health").status_code in (200, 503), timeout_s=30,
                       procs=self.procs)
            force_file.write_text(json.dumps({"temperature_5": 45.0}), encoding="utf-8")
            self._quarantine()
            for path in ("/api/v1/weighings", "/api/v1/tickets", "/api/v1/alerts", "/api/v1/nodes", "/nowhere"):
                api.get(path)  # requests by route template and status class, for the HTTP latency panels
            self._wait_for_everything(api)
            self.finished_at = time.time()
            self.figures["run_s"] = round(time.monotonic() - started, 1)
            for proc in self.procs:
                assert "Traceback" not in proc.log(), proc.tail()
        finally:
            api.close()
            self.stop_processes()
        return self

    def _sim(self, name: str, args: list[str]) -> str:
        proc = self._start(name, ["simulate", *args])
        return proc.wait_for_line("listening:")

    def _start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(name, args, self.tmp).start()
        self.procs.append(proc)
        return proc

    def _master_data(self, api: httpx.Client) -> None:
        site = api.post("/api/v1/sites", json={"code": SITE_CODE, "name": "Mill A", "timezone": "Europe/Berlin"})
        assert site.status_code == 201, site.text
        moved = api.patch(f"/api/v1/nodes/{self.node}", json={"site_id": site.json()["id"]})
        assert moved.status_code == 200, moved.text
        for code, kind in PARTNERS.items():
            r = api.post("/api/v1/partners", json={"code": code, "name": f"Partner {code}", "kind": kind})
            assert r.status_code == 201, r.text
        for code, name in ARTICLES.items():
            r = api.post("/api/v1/articles", json={"code": code, "name": name, "unit": "kg"})
            assert r.status_code == 201, r.text

    def _start_prometheus(self, api: httpx.Client, api_port: int) -> None:
        r = api.post("/api/v1/api-keys", json={"name": "prometheus", "role": "viewer"})
        assert r.status_code == 201, r.text
        key_file = self.tmp / "prometheus-central.key"
        key_file.write_text(r.json()["key"])
        key_file.chmod(0o600)
        [job] = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
        job["scrape_interval"] = SCRAPE_INTERVAL
        job["authorization"]["credentials_file"] = str(key_file)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"]}]
        self.prometheus = PrometheusServer([job], scrape_interval=SCRAPE_INTERVAL).start()

    def _sale(self, pos: httpx.Client, client: str, receipt: str) -> dict[str, Any]:
        r = pos.post("/pos/v1/sales", json={
            "client_id": client, "receipt_id": receipt, "amounts": {"vat_19": "11.90", "vat_7": "2.14"},
            "payments": [{"amount": "14.04", "type": "Bar"}]})
        assert r.status_code == 200, r.text
        sale: dict[str, Any] = r.json()
        return sale

    def _commands(self, api: httpx.Client, edge: Proc) -> None:
        assert self.bridge is not None
        for visit, phase, command, args, expected in COMMANDS:
            self.bridge.at(visit, phase)
            r = api.post("/api/v1/commands", json={"node_id": self.node, "device_id": "bridge-1",
                                                   "command": command, "args": args})
            assert r.status_code == 202, r.text
            done = api.get(f"/api/v1/commands/{r.json()['command_id']}", params={"wait_s": 25}).json()
            assert done["status"] == expected, (visit, phase, command, done, edge.tail())

    def _automatic(self, api: httpx.Client, edge: Proc) -> None:
        """The scale in automatic mode through ``AUTO_STEPS``: the clock set, then a poll that must see that answer
        (scheduled polls in between see the same)."""
        assert self.auto_bridge is not None
        for visit, phase, answer in AUTO_STEPS:
            self.auto_bridge.at(visit, phase)
            r = api.post("/api/v1/commands", json={"node_id": self.node, "device_id": AUTO_SCALE,
                                                   "command": "poll", "args": {}})
            assert r.status_code == 202, r.text
            done = api.get(f"/api/v1/commands/{r.json()['command_id']}", params={"wait_s": 25}).json()
            assert done["status"] == "succeeded", (visit, phase, done, edge.tail())
            assert done["result"]["answer"].startswith(answer), (visit, phase, answer, done)

    def _quarantine(self) -> None:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect(self.mosquitto.host, self.mosquitto.port)
        pub.loop_start()
        try:
            pub.publish(f"floorgate/v1/{self.node}/up/business", b'{"v": 1, "type": "batch"}',
                        qos=1).wait_for_publish(5)
        finally:
            pub.loop_stop()
            pub.disconnect()

    def _count(self, sql: str) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.text(sql), {"n": self.node}).scalar_one())

    def _influx_count(self, influxql: str) -> int:
        series = self.influx.query(self.db_name, influxql)["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    def _wait_for_everything(self, api: httpx.Client) -> None:
        """Until every kind of row a panel needs is stored (each named, so a timeout says what is missing)."""
        assert self.prometheus is not None
        prom = self.prometheus
        wanted: dict[str, Any] = {
            "5 weighings": lambda: self._count("SELECT count(*) FROM weighings WHERE node_id=:n") >= 5,
            "2 complete tickets and 1 open": lambda: self._count(
                "SELECT count(*) FILTER (WHERE status='complete') * 10 + count(*) FILTER (WHERE status='open') "
                "FROM tickets") == 21,
            "8 verified TSE transactions": lambda: self._count(
                "SELECT count(*) FROM tse_transactions WHERE node_id=:n AND verified <> 'pending'") >= 8,
            "silo-hot-spot, fiscal-tse and device-offline firing": lambda: self._count(
                "SELECT count(DISTINCT rule) FROM alerts WHERE state='firing' AND rule IN "
                "('silo-hot-spot', 'fiscal-tse', 'device-offline')") == 3,
            "failed alert notifications": lambda: self._count(
                "SELECT count(*) FROM alert_notifications WHERE status='failed'") >= 1,
            "a quarantined batch": lambda: self._count(
                "SELECT count(*) FROM ingest_quarantine WHERE node_id=:n") >= 1,
            "a heartbeat": lambda: self._count(
                "SELECT count(*) FROM nodes WHERE node_id=:n AND last_heartbeat_at IS NOT NULL") == 1,
            "node_backlog with the age of the oldest pending record": lambda: self._influx_count(
                'SELECT count("oldest_age_s") FROM "node_backlog"') >= 1,
            f"{AUTO_SCALE}'s events_overload and events_unstable in device_health": lambda: all(self._influx_count(
                f'SELECT count("value") FROM "device_health" WHERE "device" = \'{AUTO_SCALE}\' AND "point" = '
                f'\'events_{kind}\'') >= 1 for kind in ("overload", "unstable")),
            "device errors in device_health": lambda: self._influx_count(
                'SELECT count("value") FROM "device_health" WHERE "point" =~ /^errors_/') >= 3,
            "silo temperatures, humidity, power and energy": lambda: all(self._influx_count(
                f'SELECT count("value") FROM "readings" WHERE "point" = \'{p}\'') >= 2 for p in (
                    "temperature_5", "humidity", "total_power", "import_energy")),
            "Prometheus: 5 samples of the ingest counters": lambda: len(prom.query(
                "count_over_time(floorgate_ingest_records_total[5m]) >= 5")) == 1,
            "Prometheus: requests on 5 routes": lambda: len(prom.query(
                "floorgate_http_request_duration_seconds_count")) >= 5,
        }
        for what, probe in wanted.items():
            wait_until(what, probe, timeout_s=60, procs=self.procs)
        self.figures.update({
            "weighings": self._count("SELECT count(*) FROM weighings WHERE node_id=:n"),
            "tse_transactions": self._count("SELECT count(*) FROM tse_transactions WHERE node_id=:n"),
            "alerts_firing": self._count("SELECT count(*) FROM alerts WHERE state='firing'"),
        })

    # -- teardown -----------------------------------------------------------------------------------------------------
    def stop_processes(self) -> None:
        """Everything but Prometheus and the databases: nothing of the run keeps going into later tests."""
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        for bridge in (self.bridge, self.auto_bridge):
            if bridge is not None:
                bridge.stop()
        self.bridge = self.auto_bridge = None
        if hasattr(self, "engine"):
            self.engine.dispose()

    def close(self) -> None:
        self.stop_processes()
        if self.prometheus is not None:
            self.prometheus.close()
            self.prometheus = None
        if self.influx.is_running:
            self.influx.drop_database(self.db_name)
        self.postgres.drop_database(self.db_name)
