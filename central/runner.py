"""Runs central: the API (uvicorn) and the ingest consumer in one process (``central run``), or ingest alone
(``central ingest``, several of which may run side by side)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator

import uvicorn

from central.alerts.engine import AlertEvaluator
from central.api.app import create_app
from central.config import CentralSettings
from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.fiscal.registry import load_registry as load_tse_registry
from central.fiscal.registry import use_registry as use_tse_registry
from central.fleet import signing_key
from central.fleet.checkpoint import CheckpointError
from central.fleet.checkpoint_out import CheckpointSchedule
from central.fleet.keys import CaCertError, load_ca_cert
from central.ingest.service import IngestService
from central.metrics import MetricsStoreError, open_store
from central.tickets.pairing import use_settings as use_ticket_settings
from sync.downlink import DownlinkSigner
from sync.signing import SigningKeyError, fingerprint, public_key_text


class _SignalFreeServer(uvicorn.Server):
    """The API inside ``central run``: the runner handles SIGINT / SIGTERM itself and stops the server with
    ``should_exit``, so uvicorn takes no signals (its ``capture_signals`` hook, a no-op here)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


log = logging.getLogger(__name__)


class Central:
    def __init__(self, settings: CentralSettings, *, with_api: bool = True, client_id: str | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        if migrate.current_revision(self.engine) is None:
            raise SystemExit(
                f"database {self.engine.url.render_as_string(hide_password=True)} has no schema: "
                "run `floorgate central migrate --config …` first"
            )
        if with_api and settings.auth.jwt_secret is None:
            raise SystemExit(
                "auth.jwt_secret is not set: the API signs access tokens with it. Set FLOORGATE_AUTH__JWT_SECRET "
                "(the same value for every API worker, e.g. `openssl rand -hex 32`)"
            )
        if with_api and settings.api.open_read_only:
            log.warning("API OPEN FOR READING WITHOUT LOGIN on %s:%d (api.open_read_only — for the demo only)",
                        settings.api.host, settings.api.port)
        self.sessions = make_session_factory(self.engine)
        use_ticket_settings(self.sessions, settings.tickets)  # the plate pairing window, in apply's sessions
        self.store = open_store(settings.metrics)
        try:
            self.store.ensure_ready()
        except MetricsStoreError as exc:  # ingest retries; readings wait on the edge meanwhile
            log.warning("metrics store not ready yet: %s", exc)
        try:  # central's downlink key: acks, replay requests and commands are signed with it
            key, created = signing_key.load_or_create(signing_key.key_path(settings.signing_key_file))
        except SigningKeyError as exc:
            raise SystemExit(f"central signing key: {exc}") from None
        if created:
            log.warning("new central signing key %s (fingerprint %s): nodes must trust its public key %s "
                        "(`floorgate central signing-key show`)", settings.signing_key_file, fingerprint(key),
                        public_key_text(key))
        # the TSE registry: central's key signs the pins ingest makes, fiscal.tse lists the TSEs trusted from the start
        use_tse_registry(self.sessions, load_tse_registry(settings, signer=key))
        try:  # the fleet CA's certificate: only node keys it bound are accepted (central.fleet.keys)
            ca_cert = load_ca_cert(settings.pki.dir if settings.pki is not None else None)
        except CaCertError as exc:
            raise SystemExit(f"fleet CA: {exc} (pki.dir is set: create the CA with `floorgate central ca init`, or "
                             "copy its ca.crt there)") from None
        self.ingest = IngestService(settings.broker, self.sessions, self.store, client_id=client_id,
                                    settings=settings.ingest, signer=DownlinkSigner(key), ca_cert=ca_cert)
        self.alerts = (AlertEvaluator(settings.alerts, self.sessions, self.store, ingest=self.ingest,
                                      pki_dir=settings.pki.dir if settings.pki is not None else None)
                       if settings.alerts.rules_file is not None else None)
        try:  # external checkpoints of the chain heads, every checkpoint.interval_s (one process at a time)
            self.checkpoints = (CheckpointSchedule(settings, self.sessions, key)
                                if settings.checkpoint.interval_s is not None else None)
        except CheckpointError as exc:
            raise SystemExit(str(exc)) from None
        self.app = (
            create_app(settings, sessions=self.sessions, store=self.store, ingest=self.ingest) if with_api else None
        )

    def _serve_worker_metrics(self):  # type: ignore[no-untyped-def]
        """An ingest-only process with ``ingest.metrics_listen``: Prometheus /metrics (the API's ingest, quarantine,
        alert and database gauges — the same names, so one scrape job covers API processes and workers)."""
        from prometheus_client import CollectorRegistry, start_http_server

        from central.api.deps import AppState
        from central.api.observability import StateCollector

        host, _, port = (self.settings.ingest.metrics_listen or "").rpartition(":")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StateCollector(AppState(settings=self.settings, sessions=self.sessions, store=self.store,
                                                  ingest=self.ingest, started_at=time.time())))
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
        log.info("ingest metrics on http://%s/metrics", self.settings.ingest.metrics_listen)
        return server, thread

    async def run(self) -> None:
        metrics = None
        if self.app is None and self.settings.ingest.metrics_listen:
            metrics = self._serve_worker_metrics()
        tasks = [asyncio.create_task(self.ingest.run(), name="ingest")]
        if self.alerts is not None:  # cancelled at the end: it finishes the evaluation under way
            tasks.append(asyncio.create_task(self.alerts.run(), name="alerts"))
        if self.checkpoints is not None:  # cancelled at the end: it finishes the checkpoint under way
            tasks.append(asyncio.create_task(self.checkpoints.run(), name="checkpoints"))
        server = None
        if self.app is not None:
            config = uvicorn.Config(
                self.app, host=self.settings.api.host, port=self.settings.api.port, log_config=None,
                access_log=False, lifespan="off",
                proxy_headers=False,  # X-Forwarded-For only from api.trusted_proxies (central.api.boundary)
            )
            server = _SignalFreeServer(config)
            tasks.append(asyncio.create_task(server.serve(), name="api"))
            log.info("central API on http://%s:%d (docs at /docs)", self.settings.api.host, self.settings.api.port)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            if server is not None:
                server.should_exit = True
            for t in tasks:
                if t.get_name() in ("ingest", "alerts", "checkpoints"):
                    t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, 20)  # ingest finishes the batches in hand (≤ 15 s)
            if metrics is not None:
                metrics[0].shutdown()
                metrics[0].server_close()
            self.store.close()
            self.engine.dispose()


async def run_until_signal(central: Central) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(central.run())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main

