"""schemathesis with every check against the live API: ``st run --checks all`` (phases examples, coverage, fuzzing
and stateful) on a real ``floorgate central run`` on PostgreSQL with mosquitto, authenticated with an admin API key
(an admin may call every operation of every role). Any finding fails the test: a 5xx, a status code, content type,
header (``Allow`` on 405) or body the document does not declare, a request the schema forbids that is accepted, a
schema-valid one refused for a reason the schema could state, an operation that works without credentials.

``tests/schemathesis_hooks.py`` keeps the run from revoking its own key and tells ``positive_data_acceptance`` which
refusals are rules beyond a JSON Schema (a cursor not issued by us, a reference to a missing row, …) — see there.

Budget: ``FLOORGATE_FUZZ_EXAMPLES`` examples per operation and phase (default 10): 3 to 5 minutes on 2 busy
cores, most of it the coverage phase.
The seed is printed in the output (``st run --seed`` replays it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from central.db.engine import make_engine, make_session_factory
from central.db.models import ApiKey
from tests.api_support import add_api_key
from tests.procs import Proc, central_yaml, floorgate, wait_until
from tests.services import MosquittoServer
from tools.devservers import free_port

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FLOORGATE_FUZZ_EXAMPLES", "10"))
REPO = Path(__file__).resolve().parents[2]


def test_schemathesis_all_checks_against_live_central(pg_url: str, mosquitto: MosquittoServer, tmp_path: Path,
                                                     unique_id: str) -> None:
    port = free_port()
    cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url, client_id=f"central-{unique_id}",
                       api_port=port)
    migrated = floorgate(["central", "migrate", "--config", str(cfg)])
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    key = add_api_key(sessions, "admin", name="schemathesis")
    prefix = key.split("_")[1]
    with sessions() as s:
        key_id = s.execute(select(ApiKey.id).where(ApiKey.prefix == prefix)).scalar_one()
    base = f"http://127.0.0.1:{port}"
    central = Proc("central", ["central", "run", "--config", str(cfg)], tmp_path).start()
    try:
        with httpx.Client(base_url=base, timeout=30) as api:
            wait_until("central's API and ingest", lambda: api.get("/health").status_code == 200, timeout_s=60,
                       procs=[central])
        st = Path(sys.executable).with_name("st")
        run = subprocess.run(
            [str(st), "run", f"{base}/openapi.json", "--url", base, "-H", f"X-API-Key: {key}",
             "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
             "--max-examples", str(EXAMPLES), "--workers", "1", "--no-color"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False,  # its cache stays there
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "FLOORGATE_FUZZ_KEY_ID": str(key_id),
                 "PYTHONPATH": str(REPO)})
        output = run.stdout + run.stderr
        central.check_alive()
        assert run.returncode == 0, output[-25000:] + "\n" + central.tail()
        counted = re.search(r"Operations:\s+(\d+) selected / (\d+) total", output)
        assert counted is not None, output[-3000:]
        assert counted.group(1) == counted.group(2), output[-3000:]
        assert int(counted.group(2)) >= 60, output[-3000:]
        # the run really went through the API: its key worked to the end
        with sessions() as s:
            assert s.execute(select(ApiKey.revoked_at).where(ApiKey.id == key_id)).scalar_one() is None
        assert "Authentication failed" not in output, output[-5000:]
        assert "Server error" not in output
    finally:
        central.stop()
        engine.dispose()
