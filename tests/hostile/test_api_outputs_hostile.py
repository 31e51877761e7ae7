"""What central's API shows and exports, tried as an attacker would, on a real ``floorgate central run`` on
PostgreSQL (issue 14, findings 9, 10 and 11):

- secrets: a webhook URL with a password, a token in its path and one in its query is masked for a viewer; a
  webhook URL without a scheme is refused with an error that names the key but not the token; a too-short
  ``auth.jwt_secret`` stops ``central migrate`` / ``central run`` naming the key, never the value;
- CSV injection: a partner name, a vehicle and a POS ``receipt_id`` of ``=HYPERLINK(…)`` leave ``tickets.csv`` and
  ``tse-transactions.csv`` as ``'=HYPERLINK(…)`` (a negative number as it is), and ``raw=true`` gives them raw;
- forged cursors: on every list route (every GET operation of the OpenAPI document with a ``cursor`` parameter),
  cursors naming the right sort with a null, mistyped or out-of-range value, and garbage, are each a 400
  ``invalid_cursor`` in the documented error shape — never a 500, never plain text.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from central.db.engine import make_engine, make_session_factory
from central.db.models import Node, TseTransaction
from tests.api_support import add_api_key, add_user
from tests.procs import Proc, central_yaml, floorgate, login, wait_until, write_yaml
from tests.services import MosquittoServer
from tools.devservers import free_port

pytestmark = pytest.mark.integration

HOOK = "https://user:pw@hooks.example:8443/hook/SECRETTOKEN?token=xyzzy"
FORMULA = '=HYPERLINK("http://x")'


def _rules(url: str) -> dict[str, Any]:
    return {"channels": {"ops-hook": {"kind": "webhook", "url": url}},
            "rules": [{"name": "hot", "kind": "reading", "point": "temperature", "above": 35,
                       "channels": ["ops-hook"]}]}


@pytest.fixture
def central(pg_url: str, mosquitto: MosquittoServer, tmp_path: Path, unique_id: str) -> Iterator[dict[str, Any]]:
    port = free_port()
    rules = write_yaml(tmp_path / "alert-rules.yaml", _rules(HOOK))
    cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url, client_id=f"central-{unique_id}",
                       api_port=port, alerts={"rules_file": str(rules), "evaluate_every_s": 3600})
    migrated = floorgate(["central", "migrate", "--config", str(cfg)])
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    admin = {"X-API-Key": add_api_key(sessions, "admin")}
    add_user(sessions, "vera", "viewer")
    proc = Proc("central", ["central", "run", "--config", str(cfg)], tmp_path).start()
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_until("central's API", lambda: api.get("/health").status_code in (200, 503), timeout_s=60, procs=[proc])
        yield {"api": api, "admin": admin, "sessions": sessions, "rules": rules, "cfg": cfg, "proc": proc}
        proc.check_alive()
    finally:
        api.close()
        proc.stop()
        engine.dispose()


def test_webhook_secrets_are_never_shown(central: dict[str, Any]) -> None:
    api: httpx.Client = central["api"]
    login(api, "vera", "correct horse battery staple")
    r = api.get("/api/v1/alert-rules")
    assert r.status_code == 200, r.text
    assert [c["url"] for c in r.json()["channels"]] == ["https://hooks.example:8443/…?…"]
    for secret in ("user", "pw@", "SECRETTOKEN", "xyzzy", "hook/"):
        assert secret not in r.text, secret

    # saved without a scheme: the file is refused (the last good rules stay), the error names the key only
    write_yaml(central["rules"], _rules("hooks.example/hook/SECRETTOKEN?token=xyzzy"))

    def refused() -> dict[str, Any] | None:
        body = api.get("/api/v1/alert-rules").json()
        return body if body["error"] else None

    body = wait_until("the rules file to be refused", refused, timeout_s=20, procs=[central["proc"]])
    assert "channels.ops-hook.url" in body["error"], body["error"]
    assert "expected an http:// or https:// URL" in body["error"]
    text = json.dumps(body)
    assert "SECRETTOKEN" not in text
    assert "xyzzy" not in text
    assert [c["url"] for c in body["channels"]] == ["https://hooks.example:8443/…?…"]  # the last good rules


def test_short_jwt_secret_is_named_never_echoed(pg_url: str, mosquitto: MosquittoServer, tmp_path: Path,
                                                unique_id: str) -> None:
    cfg = central_yaml(tmp_path, database_url=pg_url, broker_url=mosquitto.url, client_id=f"central-{unique_id}",
                       api_port=free_port())
    data = yaml.safe_load(cfg.read_text())
    data["auth"]["jwt_secret"] = "tooShortSECRETVALUE"  # noqa: S105 — the value that must not be echoed
    write_yaml(cfg, data)
    for command in (["central", "migrate"], ["central", "run"]):
        done = floorgate([*command, "--config", str(cfg)], timeout_s=60)
        out = done.stdout + done.stderr
        assert done.returncode != 0, out
        assert "auth.jwt_secret" in out, out
        assert "at least 32 characters" in out, out
        assert "SECRETVALUE" not in out, out


def _csv(r: httpx.Response) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    return list(csv.DictReader(io.StringIO(r.text)))


def test_formula_cells_are_neutralised_unless_raw(central: dict[str, Any]) -> None:
    api: httpx.Client = central["api"]
    admin = central["admin"]
    partner = api.post("/api/v1/partners", headers=admin, json={"code": "EVIL-1", "name": FORMULA,
                                                                   "kind": "supplier"})
    assert partner.status_code == 201, partner.text
    ticket = api.post("/api/v1/tickets", headers=admin, json={
        "direction": "in", "partner_id": partner.json()["id"], "vehicle": FORMULA, "delivery_note": "-12.50",
        "notes": "@SUM(1+1)"})
    assert ticket.status_code == 201, ticket.text
    now = datetime.now(UTC)
    with central["sessions"].begin() as s:  # as test_api_tickets does: the row ingest writes for a signed sale
        s.add(TseTransaction(
            node_id="shop-1", record_id="r1", tse_serial="3c1f" * 16, client_id="+KASSE-01", tx_number=1,
            signature_counter=2, process_type="Kassenbeleg-V1", process_data="Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Bar",
            started_at=now, finished_at=now, signature="c2ln==", algorithm="ecdsa-plain-SHA256",
            time_format="unixTime", total=Decimal("-12.50"), currency="EUR", tse_failed=False, verified="valid",
            received_at=now, receipt_id=FORMULA))

    [row] = _csv(api.get("/api/v1/tickets.csv", headers=admin))
    assert (row["partner_name"], row["vehicle"], row["notes"]) == ("'" + FORMULA, "'" + FORMULA, "'@SUM(1+1)")
    assert row["delivery_note"] == "-12.50"  # exactly a number: no formula, left as it is
    [raw] = _csv(api.get("/api/v1/tickets.csv", headers=admin, params={"raw": "true"}))
    assert (raw["partner_name"], raw["vehicle"], raw["notes"]) == (FORMULA, FORMULA, "@SUM(1+1)")

    [tx] = _csv(api.get("/api/v1/tse-transactions.csv", headers=admin))
    assert (tx["BON_ID"], tx["Z_KASSE_ID"]) == ("'" + FORMULA, "'+KASSE-01")
    [tx_raw] = _csv(api.get("/api/v1/tse-transactions.csv", headers=admin, params={"raw": "true"}))
    assert (tx_raw["BON_ID"], tx_raw["Z_KASSE_ID"]) == (FORMULA, "+KASSE-01")

    doc = api.get("/openapi.json").json()
    for path in ("/api/v1/tickets.csv", "/api/v1/tse-transactions.csv", "/api/v1/weighings.csv"):
        op = doc["paths"][path]["get"]
        assert "raw" in {p["name"] for p in op["parameters"]}
        assert "OWASP CSV injection" in op["responses"]["200"]["description"]


def _cursor(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def _forged(sorts: list[str]) -> list[str]:
    out = ["!!!not base64!!!", "AAAA", _cursor(None), _cursor([1, 2]), _cursor({"after": None}) + "x",
           base64.urlsafe_b64encode(b'{"after": ' + b"[" * 5000 + b"]" * 5000 + b"}").decode()[:2000],
           _cursor({"after": {"sort": "-id", "id": 2**70}})]
    for sort in sorts:
        if sort.lstrip("-") != "id":  # sorted by id, a cursor holds only the id: its "v" is not read
            for value in (None, {"dt": "not a time"}, {"dec": 5}, {"dec": "NaN"}, [1], {"x": 1}, 2**70,
                          "x\u0000y", True):
                out.append(_cursor({"after": {"sort": sort, "id": 1, "v": value}}))
        out += [_cursor({"after": {"sort": sort, "id": "1\u0000", "v": None}}),
                _cursor({"after": {"sort": sort, "id": None}}),
                _cursor({"after": {"sort": sort, "k": [None, 1]}}),
                _cursor({"after": {"sort": sort, "k": ["a\u0000", "b"]}})]
    return out


def test_forged_cursors_are_400_invalid_cursor_on_every_list_route(central: dict[str, Any]) -> None:
    api: httpx.Client = central["api"]
    admin = central["admin"]
    with central["sessions"].begin() as s:  # a node for the lists under /api/v1/nodes/{node_id}
        s.add(Node(node_id="mill-1"))
    doc = api.get("/openapi.json").json()
    routes = []
    for path, ops in doc["paths"].items():
        op = ops.get("get")
        params = {p["name"]: p for p in (op or {}).get("parameters", [])}
        if "cursor" not in params:
            continue
        sort = params.get("sort", {}).get("schema", {})
        sorts = sort.get("enum") or [sort.get("default", "-id")]
        routes.append((path.replace("{node_id}", "mill-1"), sorts))
    assert len(routes) >= 15, routes
    wrong = []
    for path, sorts in routes:
        for cursor in _forged(sorts):
            r = api.get(path, headers=admin, params={"cursor": cursor})
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
            if not (r.status_code == 400 and body is not None and body.get("error", {}).get("code") == "invalid_cursor"
                    and body["error"].get("field") == "cursor" and set(body["error"]) == {"code", "message", "field"}):
                wrong.append((path, cursor[:80], r.status_code, r.text[:200]))
    assert wrong == []
    central["proc"].check_alive()
