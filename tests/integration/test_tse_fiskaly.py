"""The fiskaly SIGN DE driver (edge.pos.fiskaly) over real HTTP against the fake fiskaly server (tests/fake_fiskaly.py):
authentication and token renewal, sales whose receipt QR codes verify, revisions and the documented request
bodies, retries of 5xx and lost replies, timeouts and outages as TseUnavailable, refusals as TseError with fiskaly's
code and message, clients, restarts, the TAR export — and no secret in any log line."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.pos.fiskaly import FiskalySettings, FiskalyTse
from protocols.tse import crypto
from protocols.tse.api import TseDriver, ensure_ready
from protocols.tse.errors import (
    TseClientNotRegistered,
    TseError,
    TseInvalidArgument,
    TseUnavailable,
    TseUnknownTransaction,
)
from protocols.tse.fiskaly import FiskalyError, client_uuid
from protocols.tse.fiskaly_replies import FiskalyTransactionResult
from protocols.tse.logmsg import FINISH, START, UPDATE, decode_log_message
from protocols.tse.qr import parse_receipt_qr, verify_receipt_qr
from protocols.tse.verify_tar import verify_tar
from tests.fake_fiskaly import ADMIN_PIN, API_KEY, API_SECRET, FakeFiskaly, running_fake
from tests.tse_support import FakeClock
from tools.devservers import free_port

pytestmark = pytest.mark.integration

PTYPE = "Kassenbeleg-V1"
SALE = "Beleg^75.33_7.99_0.00_0.00_0.00^10.00:Bar_5.00:Bar:CHF"
FARM_SALE = "Beleg^0.00_0.00_107.00_55.00_0.00^162.00:Unbar"
KASSE = "KASSE-1"


class Sleeps(list[float]):
    """Records the driver's pauses instead of sleeping (retries and export polls are time-driven)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeFiskaly]:
    with running_fake() as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def settings_for(fake: FakeFiskaly, **changes: Any) -> FiskalySettings:
    options: dict[str, Any] = {
        "base_url": fake.base_url, "api_key": API_KEY, "api_secret": API_SECRET, "tss_id": fake.tss_id,
        "admin_pin": ADMIN_PIN, "timeout_s": 2.0, "max_retries": 2, "backoff_min_s": 0.25, "backoff_max_s": 1.0,
    }  # fmt: skip
    options.update(changes)
    return FiskalySettings(**options)


@pytest.fixture
def tse(fake: FakeFiskaly, sleeps: Sleeps) -> Iterator[FiskalyTse]:
    with FiskalyTse(settings_for(fake), sleep=sleeps) as driver:
        driver.register_client(KASSE)
        yield driver


def sale(tse: FiskalyTse, process_data: str = SALE) -> tuple[FiskalyTransactionResult, FiskalyTransactionResult]:
    start = tse.start_transaction(KASSE, b"", PTYPE)
    return start, tse.finish_transaction(KASSE, start.transaction_number, process_data, PTYPE)


def auth_kinds(fake: FakeFiskaly) -> list[str]:
    return ["refresh_token" if "refresh_token" in r.body else "api_key" for r in fake.calls("POST", "/auth")
            if r.path == "/auth"]  # fmt: skip


# --- the driver is a TSE ---------------------------------------------------------------------------------------------


def test_driver_is_a_tse_and_reads_the_tss(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    assert isinstance(tse, TseDriver)
    info = ensure_ready(tse)  # nothing due: the cloud TSS tests itself and keeps its time
    assert (info.serial_number, info.public_key, info.algorithm, info.curve, info.time_format) == (
        fake.serial, fake.public_key, "ecdsa-plain-SHA256", "P-256", "unixTime")
    assert info.algorithm_oid == crypto.ECDSA_PLAIN_SHA256.oid
    assert info.certificate_pem == fake.certificate_pem()
    assert info.certified is False  # a TEST TSS without a BSI certification id
    assert fake.tss_id in info.description
    assert info.clients == (KASSE,)
    assert (info.self_test_due, info.time_update_due) == (False, False)
    tse.self_test()
    tse.update_time(1_700_000_000)  # the cloud TSS keeps its own time: nothing sent
    assert not fake.calls("PUT", "/time")


# --- authentication --------------------------------------------------------------------------------------------------


def test_authenticates_once_and_reuses_the_token(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    for _ in range(3):
        sale(tse)
    tse.info()
    assert auth_kinds(fake) == ["api_key"]
    (auth,) = [r for r in fake.calls("POST", "/auth") if r.path == "/auth"]
    assert auth.body == {"api_key": API_KEY, "api_secret": API_SECRET}
    assert all(r.authorized for r in fake.requests if r.path != "/auth")


def test_expired_access_token_is_refreshed_once(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    fake.expire_access_tokens()
    _, finish = sale(tse)
    assert finish.verified
    assert auth_kinds(fake) == ["api_key", "refresh_token"]
    puts = fake.calls("PUT", "/tx/")
    assert [r.authorized for r in puts] == [False, True, True]  # the 401, then the same request again


def test_refused_refresh_token_falls_back_to_the_api_key(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    fake.expire_access_tokens()
    fake.expire_refresh_tokens()
    tse.info()
    assert auth_kinds(fake) == ["api_key", "refresh_token", "api_key"]


def test_token_is_renewed_before_it_expires(fake: FakeFiskaly, sleeps: Sleeps) -> None:
    clock = FakeClock(time.time())
    with FiskalyTse(settings_for(fake), clock=clock, sleep=sleeps) as driver:
        driver.info()
        clock.advance(600 - 30)  # within the margin before the 600 s access token runs out
        driver.info()
    assert auth_kinds(fake) == ["api_key", "refresh_token"]
    assert all(r.authorized for r in fake.requests if r.path != "/auth")  # renewed without a 401


def test_tokens_refused_for_good_are_unavailable(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    fake.refuse_tokens = True
    with pytest.raises(TseUnavailable, match=r"HTTP 401 E_UNAUTHORIZED.*refused again after a new authentication"):
        tse.start_transaction(KASSE, b"", PTYPE)
    assert auth_kinds(fake) == ["api_key", "refresh_token"]  # one renewal, no loop


def test_wrong_api_secret_is_unavailable_and_says_what_to_check(fake: FakeFiskaly, sleeps: Sleeps) -> None:
    wrong = settings_for(fake, api_secret="wrong-secret-1234")  # noqa: S106 — a test value
    with FiskalyTse(wrong, sleep=sleeps) as driver, pytest.raises(TseUnavailable) as caught:
        driver.info()
    assert "E_UNAUTHORIZED" in str(caught.value)
    assert "check api_key, api_secret and the environment" in str(caught.value)
    assert "wrong-secret-1234" not in str(caught.value)


# --- sales -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("process_data", [SALE, FARM_SALE])
def test_sale_gives_a_receipt_qr_code_that_verifies(fake: FakeFiskaly, tse: FiskalyTse, process_data: str) -> None:
    start, finish = sale(tse, process_data)
    assert (start.operation, finish.operation) == (START, FINISH)
    assert (start.state, finish.state) == ("ACTIVE", "FINISHED")
    assert (start.revision, finish.revision) == (1, 2)
    assert start.tx_id == finish.tx_id
    assert (start.process_type, start.process_data) == ("", b"")  # a start signs empty type and data
    assert (finish.process_type, finish.process_data) == (PTYPE, process_data.encode())
    assert finish.transaction_number == start.transaction_number == 1
    assert finish.start_time == start.log_time
    assert (finish.serial_number, finish.algorithm, finish.time_format) == (fake.serial, "ecdsa-plain-SHA256",
                                                                            "unixTime")
    report = verify_receipt_qr(finish.qr_code_data)
    assert report.valid, report.lines()
    assert finish.qr_code_data == fake.txs[finish.tx_id].revisions[-1][1]["qr_code_data"]  # fiskaly's own text
    qr = parse_receipt_qr(finish.qr_code_data)
    assert (qr.client_id, qr.process_data, qr.transaction_number, qr.signature_counter) == (
        KASSE, process_data, finish.transaction_number, finish.signature_counter)
    for result in (start, finish):  # each log message rebuilt from the reply verifies, and is the one fiskaly signed
        assert result.verified, result.problem
        assert result.log_message == next(m.encode() for m in fake.logs
                                          if m.signature_counter == result.signature_counter)  # fmt: skip


def test_update_signs_the_next_revision(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    start = tse.start_transaction(KASSE, b"", PTYPE)
    update = tse.update_transaction(KASSE, start.transaction_number, "Beleg^5.00_0.00_0.00_0.00_0.00^", PTYPE)
    finish = tse.finish_transaction(KASSE, start.transaction_number, SALE, PTYPE)
    assert [r.operation for r in (start, update, finish)] == [START, UPDATE, FINISH]
    assert [r.revision for r in (start, update, finish)] == [1, 2, 3]
    assert [r.query["tx_revision"] for r in fake.calls("PUT", "/tx/")] == ["1", "2", "3"]
    assert (update.verified, finish.verified) == (True, True)
    assert decode_log_message(update.log_message).transaction.process_data == b"Beleg^5.00_0.00_0.00_0.00_0.00^"
    assert verify_receipt_qr(finish.qr_code_data).valid


def test_numbers_and_counters_increase(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    results = [r for _ in range(3) for r in sale(tse)]
    assert [r.transaction_number for r in results] == [1, 1, 2, 2, 3, 3]
    counters = [r.signature_counter for r in results]
    assert counters == sorted(set(counters))  # strictly increasing
    info = tse.info()
    assert (info.signature_counter, info.transaction_number) == (counters[-1], 3)
    assert info.open_transactions == ()


def test_signature_counter_given_as_a_string(sleeps: Sleeps) -> None:
    with running_fake(counter_as_string=True) as server, FiskalyTse(settings_for(server), sleep=sleeps) as driver:
        driver.register_client(KASSE)
        _, finish = sale(driver)
        assert finish.signature_counter == 2
        assert verify_receipt_qr(finish.qr_code_data).valid


def test_request_bodies_follow_the_documented_shapes(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    sale(tse)
    client = client_uuid(fake.tss_id, KASSE)
    assert [(r.method, r.path) for r in fake.requests[:5]] == [
        ("POST", "/auth"), ("GET", f"/tss/{fake.tss_id}/client/{client}"), ("POST", f"/tss/{fake.tss_id}/admin/auth"),
        ("PUT", f"/tss/{fake.tss_id}/client/{client}"), ("POST", f"/tss/{fake.tss_id}/admin/logout")]  # fmt: skip
    assert fake.requests[2].body == {"admin_pin": ADMIN_PIN}
    assert fake.requests[3].body == {"serial_number": KASSE}
    assert fake.requests[4].body == {}
    start, finish = fake.calls("PUT", "/tx/")
    assert start.path == finish.path
    assert (start.query, finish.query) == ({"tx_revision": "1"}, {"tx_revision": "2"})
    assert start.body == {"state": "ACTIVE", "client_id": client}
    assert finish.body == {"state": "FINISHED", "client_id": client, "schema": {"standard_v1": {"receipt": {
        "receipt_type": "RECEIPT",
        "amounts_per_vat_rate": [{"vat_rate": "NORMAL", "amount": "75.33"},
                                 {"vat_rate": "REDUCED_1", "amount": "7.99"}],
        "amounts_per_payment_type": [{"payment_type": "CASH", "amount": "10.00"},
                                     {"payment_type": "CASH", "amount": "5.00", "currency_code": "CHF"}],
    }}}}  # fmt: skip


def test_fake_refuses_what_fiskaly_refuses(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    """The fake is only useful if it is strict: revisions, states and bodies as documented."""
    client = client_uuid(fake.tss_id, KASSE)
    token = httpx.post(fake.base_url + "/auth", json={"api_key": API_KEY, "api_secret": API_SECRET}).json()
    http = httpx.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {token['access_token']}"})
    tx = f"/tss/{fake.tss_id}/tx/6f1c0e2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    receipt = {"standard_v1": {"receipt": {"receipt_type": "RECEIPT",
                                           "amounts_per_vat_rate": [{"vat_rate": "NORMAL", "amount": "1.00"}]}}}

    def put(revision: int, body: dict[str, Any]) -> httpx.Response:
        return http.put(tx, params={"tx_revision": revision}, json=body)

    with http:
        finished_first = put(1, {"state": "FINISHED", "client_id": client, "schema": receipt})
        assert (finished_first.status_code, finished_first.json()["code"]) == (400, "E_TX_UPSERT")
        assert "starts with state ACTIVE" in finished_first.json()["message"]
        assert put(2, {"state": "ACTIVE", "client_id": client}).json()["code"] == "E_TX_UPSERT"  # no revision 1 yet
        first = put(1, {"state": "ACTIVE", "client_id": client})
        assert first.status_code == 200
        assert put(1, {"state": "ACTIVE", "client_id": client}).json() == first.json()  # idempotent: same answer
        skipped = put(3, {"state": "FINISHED", "client_id": client, "schema": receipt})
        assert skipped.json()["code"] == "E_TX_UPSERT"
        assert "the next one must be 2" in skipped.json()["message"]
        extra = put(2, {"state": "FINISHED", "client_id": client, "schema": receipt, "amount": 1})
        assert (extra.status_code, extra.json()["code"]) == (400, "E_FAILED_SCHEMA_VALIDATION")
        bad_rate = {"standard_v1": {"receipt": {"receipt_type": "RECEIPT",
                                                "amounts_per_vat_rate": [{"vat_rate": "19%", "amount": "1.00"}]}}}
        assert put(2, {"state": "FINISHED", "client_id": client, "schema": bad_rate}).status_code == 400
        assert put(2, {"state": "FINISHED", "client_id": client, "schema": receipt}).status_code == 200
        changed = put(3, {"state": "ACTIVE", "client_id": client, "schema": receipt})
        assert "is FINISHED and cannot change" in changed.json()["message"]
        unknown_client = put(4, {"state": "ACTIVE", "client_id": client_uuid(fake.tss_id, "KASSE-9")})
        assert (unknown_client.status_code, unknown_client.json()["code"]) == (400, "E_CLIENT_NOT_FOUND")
        not_a_uuid = http.put(f"/tss/{fake.tss_id}/tx/42", params={"tx_revision": 1},
                              json={"state": "ACTIVE", "client_id": client})  # fmt: skip
        assert not_a_uuid.json()["code"] == "E_FAILED_SCHEMA_VALIDATION"
    # no token, no answer: fiskaly's 401
    assert httpx.get(f"{fake.base_url}/tss/{fake.tss_id}").json()["code"] == "E_UNAUTHORIZED"


# --- retries, timeouts, outages -------------------------------------------------------------------------------------


def test_5xx_is_retried_with_backoff_then_succeeds(fake: FakeFiskaly, tse: FiskalyTse, sleeps: Sleeps) -> None:
    start = tse.start_transaction(KASSE, b"", PTYPE)
    fake.fail(2, status=500, method="PUT", path="/tx/")
    finish = tse.finish_transaction(KASSE, start.transaction_number, SALE, PTYPE)
    assert verify_receipt_qr(finish.qr_code_data).valid
    assert sleeps == [0.25, 0.5]  # backoff_min_s, doubling
    assert [r.query["tx_revision"] for r in fake.calls("PUT", "/tx/")] == ["1", "2", "2", "2"]
    assert finish.signature_counter == start.signature_counter + 1  # signed once


def test_retry_after_is_honoured_up_to_the_longest_backoff(fake: FakeFiskaly, tse: FiskalyTse,
                                                           sleeps: Sleeps) -> None:  # fmt: skip
    fake.fail(1, status=429, code="E_TOO_MANY_REQUESTS", retry_after="0.8", method="GET")
    fake.fail(1, status=503, code="E_TSS_LOCKED", retry_after="60", method="GET")
    tse.info()
    assert sleeps == [0.8, 1.0]


def test_persistent_5xx_is_unavailable(fake: FakeFiskaly, tse: FiskalyTse, sleeps: Sleeps) -> None:
    fake.fail(10, status=503, code="E_TSS_LOCKED", message="CSPL in maintenance", method="PUT")
    with pytest.raises(TseUnavailable) as caught:
        tse.start_transaction(KASSE, b"", PTYPE)
    assert str(caught.value) == ("fiskaly PUT /tss/{tss_id}/tx/{tx_id}?tx_revision=1: HTTP 503 E_TSS_LOCKED: CSPL in "
                                 "maintenance (after 3 attempt(s))")  # fmt: skip
    assert len(fake.calls("PUT", "/tx/")) == 3
    assert sleeps == [0.25, 0.5]


def test_timeouts_are_unavailable(fake: FakeFiskaly, sleeps: Sleeps) -> None:
    with FiskalyTse(settings_for(fake, timeout_s=0.5, max_retries=1), sleep=sleeps) as driver:
        driver.register_client(KASSE)
        fake.stall(2, seconds=1.5, method="PUT", path="/tx/")
        began = time.monotonic()
        with pytest.raises(TseUnavailable, match=r"not reachable after 2 attempt\(s\) \(ReadTimeout"):
            driver.start_transaction(KASSE, b"", PTYPE)
        assert time.monotonic() - began < 2.9  # two timeouts, not two stalls
    assert sleeps == [0.25]
    assert fake.transaction_counter == 0  # stalled requests were never processed


def test_a_lost_reply_is_retried_and_signed_once(fake: FakeFiskaly, sleeps: Sleeps) -> None:
    with FiskalyTse(settings_for(fake, timeout_s=0.5), sleep=sleeps) as driver:
        driver.register_client(KASSE)
        start = driver.start_transaction(KASSE, b"", PTYPE)
        fake.lose_reply(1, seconds=1.5, method="PUT", path="/tx/")  # processed, but the answer comes too late
        finish = driver.finish_transaction(KASSE, start.transaction_number, SALE, PTYPE)
    assert [r.query["tx_revision"] for r in fake.calls("PUT", "/tx/")] == ["1", "2", "2"]
    assert fake.signature_counter == finish.signature_counter == start.signature_counter + 1
    assert verify_receipt_qr(finish.qr_code_data).valid


def test_unreachable_server_is_unavailable(sleeps: Sleeps) -> None:
    settings = FiskalySettings(base_url=f"http://127.0.0.1:{free_port()}/api/v2", api_key=API_KEY,
                               api_secret=API_SECRET, tss_id="3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", max_retries=2,
                               timeout_s=1.0)  # fmt: skip
    with FiskalyTse(settings, sleep=sleeps) as driver, pytest.raises(TseUnavailable) as caught:
        driver.start_transaction(KASSE, b"", PTYPE)
    assert "fiskaly POST /auth: not reachable after 3 attempt(s) (ConnectError" in str(caught.value)
    assert sleeps == [0.25, 0.5]


def test_a_refused_request_is_a_tse_error_with_fiskalys_code_and_message(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    fake.fail(1, status=400, code="E_TX_LIMIT_REACHED", message="2000 open transactions", method="PUT")
    with pytest.raises(TseError) as caught:
        tse.start_transaction(KASSE, b"", PTYPE)
    error = caught.value
    assert isinstance(error, FiskalyError)
    assert not isinstance(error, TseUnavailable)
    assert (error.status_code, error.code, error.detail) == (400, "E_TX_LIMIT_REACHED", "2000 open transactions")
    assert str(error) == ("fiskaly PUT /tss/{tss_id}/tx/{tx_id}?tx_revision=1: HTTP 400 E_TX_LIMIT_REACHED: 2000 open "
                          "transactions")  # fmt: skip
    assert len(fake.calls("PUT", "/tx/")) == 1  # a 4xx is not retried


@pytest.mark.parametrize(("state", "code"), [("DEFECTIVE", "E_TSS_DEFECTIVE"), ("DISABLED", "E_TSS_DISABLED"),
                                             ("UNINITIALIZED", "E_TSS_NOT_INITIALIZED")])  # fmt: skip
def test_a_tss_out_of_service_is_unavailable(fake: FakeFiskaly, tse: FiskalyTse, state: str, code: str) -> None:
    fake.tss_state = state
    with pytest.raises(TseUnavailable, match=code):
        tse.start_transaction(KASSE, b"", PTYPE)
    with pytest.raises(TseUnavailable, match=f"is {state}, not INITIALIZED"):
        tse.self_test()


def test_secrets_never_reach_the_logs(fake: FakeFiskaly, sleeps: Sleeps, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with FiskalyTse(settings_for(fake), sleep=sleeps) as driver:
        driver.register_client(KASSE)  # admin PIN
        sale(driver)
        fake.expire_access_tokens()
        fake.expire_refresh_tokens()
        sale(driver)  # refresh refused, the API key again
        fake.fail(5, status=500, method="GET")
        fake.fail(1, status=400, code="E_TX_UPSERT", method="PUT")
        for call in (driver.info, lambda: driver.start_transaction(KASSE, b"", PTYPE)):
            with pytest.raises(TseError) as caught:
                call()
            errors.append(str(caught.value))
        fake.refuse_tokens = True
        with pytest.raises(TseUnavailable) as refused:
            driver.info()
        errors.append(str(refused.value))
        settings_text = repr(driver.settings)
    with FiskalyTse(settings_for(fake, api_secret=API_SECRET + "-wrong"), sleep=sleeps) as wrong:
        fake.refuse_tokens = False
        with pytest.raises(TseUnavailable) as bad_key:
            wrong.info()
        errors.append(str(bad_key.value))
    secrets = [API_KEY, API_SECRET, ADMIN_PIN, *fake.access_tokens, *fake.refresh_tokens]
    assert len(secrets) > 6
    logged = [record.getMessage() for record in caplog.records] + [
        record.exc_text or "" for record in caplog.records]  # fmt: skip
    assert any("fiskaly" in line for line in logged)  # the driver did log
    for secret in secrets:
        for line in [*logged, *errors, settings_text]:
            assert secret not in line, f"a secret in {line!r}"


# --- clients, transactions after a restart ---------------------------------------------------------------------------


def test_register_client_once_with_the_admin_pin(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    client = client_uuid(fake.tss_id, KASSE)
    assert fake.clients[client] == {"serial_number": KASSE, "state": "REGISTERED"}
    tse.register_client(KASSE)  # again: only looked up
    assert len(fake.calls("PUT", "/client/")) == 1
    assert len(fake.calls("POST", "/admin/auth")) == 1
    assert fake.admin_logged_in is False  # logged out after
    fake.clients[client]["state"] = "DEREGISTERED"
    tse.register_client(KASSE)
    assert [r.body for r in fake.calls("PATCH", "/client/")] == [{"state": "REGISTERED"}]
    assert fake.clients[client]["state"] == "REGISTERED"


def test_registering_without_the_admin_pin_says_so(fake: FakeFiskaly, sleeps: Sleeps) -> None:
    with FiskalyTse(settings_for(fake, admin_pin=None), sleep=sleeps) as driver:
        with pytest.raises(FiskalyError, match="needs the TSS admin PIN") as caught:
            driver.register_client(KASSE)
        assert caught.value.code == "E_ADMIN_PIN_MISSING"
        assert not fake.calls("PUT", "/client/")
        with pytest.raises(TseClientNotRegistered, match="E_CLIENT_NOT_FOUND"):
            driver.start_transaction(KASSE, b"", PTYPE)


def test_a_client_made_elsewhere_is_used_by_its_uuid(fake: FakeFiskaly, sleeps: Sleeps) -> None:
    made = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
    fake.clients[made] = {"serial_number": "KASSE-7", "state": "REGISTERED"}
    with FiskalyTse(settings_for(fake, admin_pin=None, client_ids={"KASSE-7": made}), sleep=sleeps) as driver:
        driver.register_client("KASSE-7")
        start = driver.start_transaction("KASSE-7", b"", PTYPE)
        finish = driver.finish_transaction("KASSE-7", start.transaction_number, SALE, PTYPE)
    assert fake.calls("PUT", "/tx/")[0].body["client_id"] == made
    assert parse_receipt_qr(finish.qr_code_data).client_id == "KASSE-7"


def test_unknown_transactions_and_other_clients(fake: FakeFiskaly, tse: FiskalyTse) -> None:
    tse.register_client("KASSE-2")
    with pytest.raises(TseUnknownTransaction):
        tse.update_transaction(KASSE, 99, SALE, PTYPE)
    start = tse.start_transaction(KASSE, b"", PTYPE)
    with pytest.raises(TseInvalidArgument, match="belongs to client 'KASSE-1'"):
        tse.finish_transaction("KASSE-2", start.transaction_number, SALE, PTYPE)
    tse.finish_transaction(KASSE, start.transaction_number, SALE, PTYPE)
    with pytest.raises(TseUnknownTransaction, match="is FINISHED"):
        tse.finish_transaction(KASSE, start.transaction_number, SALE, PTYPE)
    with pytest.raises(TseInvalidArgument, match="additionalExternalData"):
        tse.start_transaction(KASSE, b"", PTYPE, additional_data=b"x")


def test_an_open_transaction_is_finished_after_a_restart(fake: FakeFiskaly, sleeps: Sleeps) -> None:
    with FiskalyTse(settings_for(fake), sleep=sleeps) as before:
        before.register_client(KASSE)
        start = before.start_transaction(KASSE, b"", PTYPE)
        before.update_transaction(KASSE, start.transaction_number, "Beleg^1.00_0.00_0.00_0.00_0.00^", PTYPE)
    with FiskalyTse(settings_for(fake), sleep=sleeps) as after:
        finish = after.finish_transaction(KASSE, start.transaction_number, SALE, PTYPE)
    assert fake.calls("GET", f"/tx/{start.transaction_number}")  # found again by its number
    assert (finish.tx_id, finish.revision) == (start.tx_id, 3)
    assert verify_receipt_qr(finish.qr_code_data).valid


# --- export ----------------------------------------------------------------------------------------------------------


def test_export_is_a_tar_that_verifies(fake: FakeFiskaly, tse: FiskalyTse, sleeps: Sleeps) -> None:
    for _ in range(3):
        sale(tse)
    report = verify_tar(tse.export())
    assert report.valid, report.lines()
    assert sleeps == [5.0, 5.0]  # export_poll_s between the PENDING and WORKING answers
    (trigger,) = fake.calls("PUT", "/export/")
    assert (trigger.query, trigger.body) == ({}, {})
    part = verify_tar(tse.export(tx_range=(2, 3)), partial=True)
    assert part.valid, part.lines()
    assert fake.calls("PUT", "/export/")[-1].query == {"start_transaction_number": "2", "end_transaction_number": "3"}
    assert len([e for e in part.entries if e.kind == "log"]) == 4
    tse.export(time_range=(0, 2**40))
    assert fake.calls("PUT", "/export/")[-1].query == {"start_date": "0", "end_date": str(2**40)}
    by_client = verify_tar(tse.export(client_id=KASSE), partial=True)
    assert by_client.valid
    assert fake.calls("PUT", "/export/")[-1].query == {"client_id": client_uuid(fake.tss_id, KASSE)}
    with pytest.raises(TseInvalidArgument, match="client alone"):
        tse.export(client_id=KASSE, tx_range=(1, 2))
    with pytest.raises(TseInvalidArgument, match="tx_range"):
        tse.export(tx_range=(3, 2))


def test_an_export_that_does_not_complete_is_given_up(sleeps: Sleeps) -> None:
    clock = FakeClock(time.time())

    def wait(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    with running_fake(export_polls=10_000) as server:
        settings = settings_for(server, export_timeout_s=30.0, export_poll_s=10.0)
        with FiskalyTse(settings, clock=clock, sleep=wait) as driver, pytest.raises(TseUnavailable) as caught:
            driver.export()
        assert caught.value.code == "E_EXPORT_TIMEOUT"  # type: ignore[attr-defined]
        assert sleeps == [10.0, 10.0, 10.0]
        assert [r.method for r in server.calls("DELETE", "/export/")] == ["DELETE"]  # cancelled


async def test_the_node_sells_through_fiskaly_when_its_config_says_so(fake: FakeFiskaly, tmp_path: Path) -> None:
    """`tse: {driver: fiskaly, fiskaly: {...}}` in the node config: the counter's sale is signed by the (fake)
    fiskaly TSS, stored as a tse_transaction record, and its receipt QR code verifies on its own."""
    from decimal import Decimal

    from edge.pos.config import TseConfig
    from edge.pos.sales import PosService, Sale
    from protocols.tse.processdata import Kassenbeleg, Payment
    from protocols.tse.qr import verify_receipt_qr

    settings = settings_for(fake)
    cfg = TseConfig.model_validate({"id": "tse-1", "driver": "fiskaly", "clients": ["KASSE-1"],
                                    "fiskaly": settings.model_dump(mode="python")})
    emitted: list[Any] = []
    service = PosService(cfg, data_dir=tmp_path, emit=lambda stream, records: emitted.extend(records))
    try:
        beleg = Kassenbeleg(vat_7=Decimal("12.80"), vat_24_1_3=Decimal("3.20"),
                            payments=(Payment(Decimal("16.00"), True, "EUR"),))
        answer = await service.sale(Sale(client_id="KASSE-1", beleg=beleg, receipt_id="R-1"))
    finally:
        await service.drain()
    assert answer.tse_failed is False
    assert answer.qr is not None
    assert verify_receipt_qr(answer.qr).valid
    assert [r.kind for r in emitted] == ["tse_transaction"]
    assert emitted[0].data["signature_counter"] == answer.signature_counter


def test_a_fiskaly_driver_without_its_settings_is_a_config_error() -> None:
    from pydantic import ValidationError

    from edge.pos.config import TseConfig

    with pytest.raises(ValidationError, match="fiskaly: required with driver fiskaly"):
        TseConfig.model_validate({"id": "tse-1", "driver": "fiskaly", "clients": ["KASSE-1"]})
