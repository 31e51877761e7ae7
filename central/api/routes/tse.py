"""``/api/v1/tse-transactions``: sales signed by a TSE (KassenSichV), as the nodes synced them. Read-only.

They arrive by sync from the nodes' cash registers (nobody creates them through the API) and central verifies each
one as it arrives (``central.fiscal.verify``; ``verified``: valid / invalid with the reasons in ``verify_error``;
tse_failed for a sale the node made while its TSE had failed; pending until verified). ``gap_before`` counts the
transaction numbers of the TSE missing right below a transaction. Reading them needs ``fiscal:read``; the CSV needs
``export``. The TSEs' TAR exports are under ``/api/v1/tse-exports`` (``tse_exports``).

``GET /api/v1/tse-transactions.csv`` has the columns of the DSFinV-K table ``TSE_Transaktionen``
(``transactions_tse.csv`` of the DSFinV-K export), in its order::

    Z_KASSE_ID  Z_ERSTELLUNG  Z_NR  BON_ID  TSE_ID  TSE_TANR  TSE_TA_START  TSE_TA_ENDE  TSE_TA_VORGANGSART
    TSE_TA_SIGZ  TSE_TA_SIG  TSE_TA_FEHLER  TSE_TA_VORGANGSDATEN

filled from a transaction as: Z_KASSE_ID = ``client_id`` (the register's serial number), TSE_ID = ``tse_serial``
(DSFinV-K numbers the TSEs in its table ``TSE``; floorgate has no such table, so the TSE's serial — the SHA-256 of
its public key — stands for it), TSE_TANR = ``tx_number``, TSE_TA_START / TSE_TA_ENDE = ``started_at`` /
``finished_at`` (ISO 8601, UTC), TSE_TA_VORGANGSART = ``process_type``, TSE_TA_SIGZ = ``signature_counter``,
TSE_TA_SIG = ``signature`` (base64), TSE_TA_FEHLER = ``TSE ausgefallen`` (with the node's reason after a colon)
when the TSE failed and the sale went on without a signature, TSE_TA_VORGANGSDATEN = ``process_data``, BON_ID =
``receipt_id`` (the register's receipt number, when the node sent one).

Left **empty**, because floorgate does not hold them: Z_ERSTELLUNG and Z_NR (the daily closing, Kassenabschluss,
the transaction belongs to — there are no closings yet).

``/api/v1/tse-registry``: the TSE registry (``central.fiscal.registry``) — each TSE central pinned with its key,
``unconfirmed`` / ``confirmed`` / ``rejected``, and TSEs with transactions but no valid pin. Every transaction is
verified against the pinned key; under an unconfirmed or rejected pin, or none, it is ``invalid`` with
``untrusted_key: …``. Reading needs ``fiscal:read``; confirming or rejecting (signed with central's key, audited,
then the TSE's transactions are re-verified in the background) is the admin's::

    GET  /api/v1/tse-registry[?status=unconfirmed]
    POST /api/v1/tse-registry/{serial}/confirm   {"reason": "registered with the tax office 2026-01-05"}
    POST /api/v1/tse-registry/{serial}/reject    {"reason": "not one of ours"}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from central.api.csvexport import CsvResponse, RawCsv, csv_openapi, iso, stream_csv
from central.api.deps import SessionDep, StateDep
from central.api.errors import ERROR_RESPONSES, NOT_FOUND, ApiError, ErrorResponse
from central.api.pagination import DEFAULT_LIMIT
from central.api.params import (
    Cursor,
    IdPath,
    Limit,
    Since,
    Until,
    page,
    sort_param,
    text_filter,
    where_equal,
    where_time,
)
from central.api.security import CanExport, CanReadFiscal, IsAdmin
from central.db.models import TseTransaction
from central.db.values import NO_NUL, plain
from central.fiscal import registry
from central.fiscal.sweep import sweep

router = APIRouter(tags=["TSE transactions"])
Verified = Literal["pending", "valid", "invalid", "tse_failed"]
SORTABLE = {"finished_at": TseTransaction.finished_at, "tx_number": TseTransaction.tx_order,
            "id": TseTransaction.id}
TSE_FAILED = "TSE ausgefallen"


class TseTransactionOut(BaseModel):
    id: int = Field(examples=[1])
    node_id: str = Field(examples=["shop-1"])
    record_id: str | None = Field(None, description="the node's id of the sync record")
    device_id: str | None = Field(None, description="the TSE's id on the node")
    tse_serial: str | None = Field(description="the TSE's serial number: hex SHA-256 of its public key (a failed "
                                               "sale may not know it)")
    client_id: str = Field(description="the cash register (Kassen-Seriennummer)", examples=["KASSE-01"])
    receipt_id: str | None = Field(None, description="the register's receipt number (DSFinV-K BON_ID)")
    tx_number: int | None = Field(description="the TSE's transaction number (null: the TSE failed before it gave "
                                              "one)", examples=[31])
    signature_counter: int | None = Field(description="the TSE's signature counter at FinishTransaction",
                                          examples=[64])
    start_counter: int | None = Field(None, description="the signature counter of its StartTransaction",
                                      examples=[63])
    process_type: str = Field(examples=["Kassenbeleg-V1"])
    process_data: str = Field(examples=["Beleg^21.42_0.00_0.00_0.00_0.00^21.42:Unbar"])
    started_at: datetime = Field(description="log time of StartTransaction (the TSE's clock)")
    finished_at: datetime = Field(description="log time of FinishTransaction (the TSE's clock)")
    signature: str | None = Field(description="base64 of r ‖ s; null when the TSE failed")
    algorithm: str | None = Field(examples=["ecdsa-plain-SHA256"])
    time_format: str = Field(examples=["unixTime"])
    total: str | None = Field(None, description="the receipt's total, exact decimal string", examples=["21.42"])
    currency: str = Field(examples=["EUR"])
    qr: str | None = Field(None, description="the receipt's QR code content (V0;…)")
    tse_failed: bool = Field(description="the TSE failed: the sale went on without a signature")
    tse_error: str | None = Field(None, description="why the TSE failed, as the node reported it")
    verified: Verified = Field(description="central's verification: signature, serial, QR code, times, total, "
                                           "counters against the TSE's other transactions")
    verify_error: str | None = Field(None, description="every failed check, `name: reason; …`",
                                     examples=["signature: does not verify over the FinishTransaction …"])
    gap_before: int | None = Field(None, description="transaction numbers of this TSE missing right below this one")
    received_at: datetime = Field(description="when central received it")


class TsePage(BaseModel):
    items: list[TseTransactionOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


def _out(t: TseTransaction) -> TseTransactionOut:
    return TseTransactionOut(
        id=t.id, node_id=t.node_id, record_id=t.record_id, device_id=t.device_id, tse_serial=t.tse_serial,
        client_id=t.client_id, receipt_id=t.receipt_id, tx_number=t.tx_number, signature_counter=t.signature_counter,
        start_counter=t.start_counter, process_type=t.process_type,
        process_data=t.process_data, started_at=t.started_at, finished_at=t.finished_at,
        signature=t.signature, algorithm=t.algorithm, time_format=t.time_format, total=plain(t.total),
        currency=t.currency, qr=t.qr, tse_failed=t.tse_failed, tse_error=t.tse_error,
        verified=t.verified,  # type: ignore[arg-type]
        verify_error=t.verify_error, gap_before=t.gap_before, received_at=t.received_at,
    )


def tse_filters(
    node_id: Annotated[str | None, text_filter("only from this node", 64)] = None,
    tse_serial: Annotated[str | None, text_filter("only signed by this TSE", 128)] = None,
    client_id: Annotated[str | None, text_filter("only from this cash register", 64)] = None,
    verified: Verified | None = None,
    since: Since = None,
    until: Until = None,
) -> Select[Any]:
    """Filters on what was synced; since / until compare ``finished_at`` (the TSE's time of the sale)."""
    q = where_equal(select(TseTransaction), (
        (TseTransaction.node_id, node_id), (TseTransaction.tse_serial, tse_serial),
        (TseTransaction.client_id, client_id), (TseTransaction.verified, verified)))
    return where_time(q, TseTransaction.finished_at, since, until)


TseQuery = Annotated[Select[Any], Depends(tse_filters)]


@router.get("/api/v1/tse-transactions", response_model=TsePage, responses=ERROR_RESPONSES,
            summary="List TSE-signed transactions (newest first)")
def list_tse_transactions(
    session: SessionDep, principal: CanReadFiscal, query: TseQuery,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("finished_at, tx_number or id", "-finished_at")] = "-finished_at",
) -> TsePage:
    rows, nxt = page(session, query, SORTABLE, TseTransaction.id, sort=sort, limit=limit, cursor=cursor)
    return TsePage(items=[_out(t) for t in rows], next_cursor=nxt)


DSFINVK_HEADER = ("Z_KASSE_ID", "Z_ERSTELLUNG", "Z_NR", "BON_ID", "TSE_ID", "TSE_TANR", "TSE_TA_START",
                  "TSE_TA_ENDE", "TSE_TA_VORGANGSART", "TSE_TA_SIGZ", "TSE_TA_SIG", "TSE_TA_FEHLER",
                  "TSE_TA_VORGANGSDATEN")
CSV_EXAMPLE = (",".join(DSFINVK_HEADER) + "\r\nKASSE-01,,,,3c1f…e9,31,2021-08-23T14:36:27Z,2021-08-23T14:36:33Z,"
               "Kassenbeleg-V1,1,TGnWiq3ZW7gi4Vs+…==,,Beleg^21.42_0.00_0.00_0.00_0.00^21.42:Unbar\r\n")

CSV_DESCRIPTION = ("The DSFinV-K table TSE_Transaktionen (transactions_tse.csv): a header row, then one row per "
                   "transaction the filters select. Z_ERSTELLUNG and Z_NR are empty (no daily closings are held); "
                   "BON_ID is the register's receipt number when the node sent one.")


def _csv_rows(session: Session, rows: list[TseTransaction]) -> Iterable[Sequence[object]]:
    for t in rows:
        failed = f"{TSE_FAILED}: {t.tse_error}" if t.tse_failed and t.tse_error else TSE_FAILED if t.tse_failed else ""
        yield (t.client_id, "", "", t.receipt_id, t.tse_serial, t.tx_number, iso(t.started_at), iso(t.finished_at),
               t.process_type, t.signature_counter, t.signature, failed, t.process_data)


@router.get("/api/v1/tse-transactions.csv", response_class=CsvResponse,
            responses=csv_openapi(CSV_DESCRIPTION, CSV_EXAMPLE, ERROR_RESPONSES),
            summary="Export TSE transactions as DSFinV-K TSE_Transaktionen CSV (streamed)")
def export_tse_transactions(
    session: SessionDep, state: StateDep, principal: CanExport, query: TseQuery,
    sort: Annotated[str, sort_param("finished_at, tx_number or id", "finished_at: oldest first")] = "finished_at",
    raw: RawCsv = False,
) -> CsvResponse:
    return stream_csv(session, state.sessions, query, SORTABLE, TseTransaction.id, sort=sort,
                      header=DSFINVK_HEADER, render=_csv_rows, filename="transactions_tse.csv", raw=raw)


@router.get("/api/v1/tse-transactions/{transaction_id}", response_model=TseTransactionOut,
            responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="Get a TSE-signed transaction")
def get_tse_transaction(transaction_id: IdPath, session: SessionDep, principal: CanReadFiscal) -> TseTransactionOut:
    row = session.get(TseTransaction, transaction_id)
    if row is None:
        raise ApiError(404, "not_found", f"no TSE transaction with id {transaction_id}", field="transaction_id")
    return _out(row)


# -- the TSE registry ----------------------------------------------------------------------------------------------

PinStatus = Literal["unconfirmed", "confirmed", "rejected", "not pinned"]
SerialPath = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{64}$", description="the TSE's serial: hex SHA-256 of its "
                                                                          "public key")]


class TsePinOut(BaseModel):
    serial: str = Field(description="hex SHA-256 of the TSE's public key")
    status: str = Field(description="unconfirmed / confirmed / rejected; `not pinned` for a TSE with transactions "
                                    "but no pin; `… (pin invalid)` for a pin central did not sign or that was changed")
    source: str | None = Field(description="seen (pinned on first sight), config (fiscal.tse), admin")
    trusted: bool = Field(description="its transactions are verified as trusted (confirmed, or listed in the config)")
    problem: str | None = Field(description="why not trusted, or what is wrong with the pin")
    node_id: str | None = Field(description="where it was first seen")
    device_id: str | None
    algorithm: str | None
    first_seen_at: datetime | None
    decided_at: datetime | None = Field(description="when it was last confirmed or rejected")
    decided_by: str | None = Field(examples=["user:anna", "cli:tse-confirm", "system:config"])
    transactions: int = Field(description="transactions held of it")
    key_sha256: str | None = Field(description="SHA-256 of the pinned key (the serial, for an intact pin)")


class TseRegistryPage(BaseModel):
    items: list[TsePinOut]


class TseDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500, pattern=NO_NUL, description="kept in the audit log")
    public_key: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9+/=]+$",
                                   description="base64 of the TSE's uncompressed point, to pin a TSE central holds "
                                               "no transaction of (its SHA-256 must be the serial)")


def _pin_out(state: registry.PinState) -> TsePinOut:
    return TsePinOut(**{k: getattr(state, k) for k in TsePinOut.model_fields})


@router.get("/api/v1/tse-registry", response_model=TseRegistryPage, responses=ERROR_RESPONSES,
            summary="List the TSE registry: pinned TSEs and TSEs seen without a pin")
def list_tse_registry(session: SessionDep, principal: CanReadFiscal, status: PinStatus | None = None
                      ) -> TseRegistryPage:  # fmt: skip
    return TseRegistryPage(items=[_pin_out(s) for s in registry.states(session, registry.registry_of(session),
                                                                      status=status)])


def _decide(serial: str, status: str, body: TseDecision | None, session: Session, state: Any, principal: Any,
            tasks: BackgroundTasks) -> TsePinOut:  # fmt: skip
    serial = serial.lower()
    try:
        registry.decide(session, serial, status, actor=principal.actor, now=datetime.now(UTC),
                        registry=registry.registry_of(session), public_key=body.public_key if body else None,
                        reason=body.reason if body else None)
        session.commit()
    except registry.NoSuchTse as exc:
        session.rollback()
        raise ApiError(404, "not_found", str(exc), field="serial") from None
    except registry.RegistryError as exc:  # a key that is not the serial's, no signing key
        session.rollback()
        raise ApiError(422, "invalid_request", str(exc), field="public_key" if body and body.public_key else "serial"
                       ) from None
    tasks.add_task(sweep, state.sessions, serial)  # its transactions re-verified with the decision
    [found] = registry.states(session, registry.registry_of(session), serial=serial)
    return _pin_out(found)


DECISION_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorResponse, "description": "Central neither pinned the TSE nor holds a transaction of it (give "
                                                 "public_key to pin it)"},
    422: {"model": ErrorResponse, "description": "A public_key that is not the serial's, a pin whose key is not the "
                                                 "serial's and no public_key, no signing key; or a bad parameter"}}


@router.post("/api/v1/tse-registry/{serial}/confirm", response_model=TsePinOut, responses=DECISION_ERRORS,
             summary="Confirm a TSE: its transactions are trusted (admin; signed, audited)")
def confirm_tse(serial: SerialPath, session: SessionDep, state: StateDep, principal: IsAdmin, tasks: BackgroundTasks,
                body: TseDecision | None = None) -> TsePinOut:  # fmt: skip
    return _decide(serial, registry.CONFIRMED, body, session, state, principal, tasks)


@router.post("/api/v1/tse-registry/{serial}/reject", response_model=TsePinOut, responses=DECISION_ERRORS,
             summary="Reject a TSE: its transactions are invalid (admin; signed, audited)")
def reject_tse(serial: SerialPath, session: SessionDep, state: StateDep, principal: IsAdmin, tasks: BackgroundTasks,
               body: TseDecision | None = None) -> TsePinOut:  # fmt: skip
    return _decide(serial, registry.REJECTED, body, session, state, principal, tasks)
