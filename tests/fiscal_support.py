"""TSE-signed sales as a node syncs them, for the tests of central's fiscal verification: ``Register`` rings sales up
on a real software TSE (``protocols.tse.software``), turns each into a ``tse_transaction`` record of the contract
(``central.fiscal.records``) and applies batches through central's real ``apply_batch``.

    register = Register(sessions, tmp_path)
    register.send(register.sale("12.50"), register.sale("3.20"))
    register.send(register.failed_sale("4.00", error="TSE not reachable"))

Central's TSE registry (``central.fiscal.registry``) is handed to the sessions as ``central run`` does it: the pins
are signed with a central signing key in ``directory``'s parent (``central-signing.key``, where a ``central.yaml``
written beside it finds it by default), and the register's TSE is listed as in ``fiscal.tse`` of the config
(``listed=False``: an unknown TSE, pinned unconfirmed on first sight).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import TseTransaction
from central.fiscal.config import FiscalSettings, ListedTse
from central.fiscal.registry import REGISTRY_KEY, Registry, use_registry
from central.ingest.apply import ApplyResult, apply_batch
from protocols.tse.api import TransactionResult, ensure_ready
from protocols.tse.processdata import PROCESS_TYPE
from protocols.tse.qr import ReceiptQr, iso_time
from protocols.tse.software import SoftwareTse
from sync.envelope import Batch, Record
from sync.signing import load_or_create_private_key
from tests.tse_support import FakeClock

T0 = 1_767_000_000.0  # the TSE's clock at the first sale: 2025-12-29 09:20 UTC


def beleg(amount: str) -> str:
    return f"Beleg^{amount}_0.00_0.00_0.00_0.00^{amount}:Bar"


def use_test_registry(sessions: sessionmaker[Session], key_file: Path, *listed: ListedTse) -> Registry:
    """Hand ``sessions`` a registry signing with ``key_file`` (made if missing) that lists ``listed`` besides what
    it listed before (with the same key)."""
    key, _ = load_or_create_private_key(key_file)
    before = (sessions.kw.get("info") or {}).get(REGISTRY_KEY)
    keep = dict(before.listed) if isinstance(before, Registry) and before.signer is not None and \
        before.signer.private_bytes_raw() == key.private_bytes_raw() else {}  # fmt: skip
    keep.update({t.serial: t for t in listed})
    registry = Registry.of(FiscalSettings(tse=list(keep.values())), signer=key)
    use_registry(sessions, registry)
    return registry


def confirm_tse(central_config: Path, tse: dict[str, Any]) -> None:
    """``floorgate central tse confirm`` the node's TSE as ``GET /pos/v1/tse`` shows it (serial, public key): what an
    admin does once the TSE is registered, so central trusts its transactions from the first sale on."""
    from tests.procs import floorgate

    run = floorgate(["central", "tse", "confirm", tse["serial"], "--public-key", tse["public_key"], "--reason",
                     "the test's TSE", "--config", str(central_config)])
    assert run.returncode == 0, run.stdout + run.stderr


class Register:
    """One node with a cash register ``client`` on its software TSE ``device``; a business stream of records."""

    def __init__(self, sessions: sessionmaker[Session], directory: Path, *, node: str = "shop-1",
                 device: str = "tse-1", client: str = "KASSE-01", curve: str = "P-256", listed: bool = True,
                 key_file: Path | None = None) -> None:
        self.sessions = sessions
        self.node = node
        self.device = device
        self.client = client
        self.clock = FakeClock(T0)
        self.tse = SoftwareTse(directory, curve=curve, clock=self.clock)
        self.info = ensure_ready(self.tse)
        self.tse.register_client(client)
        self.seq = 0
        self.serial = self.info.serial_hex
        self.public_key = base64.b64encode(self.info.public_key).decode()
        self.key_file = key_file or directory.parent / "central-signing.key"
        use_test_registry(sessions, self.key_file, *([ListedTse(serial=self.serial)] if listed else []))

    def close(self) -> None:
        self.tse.close()

    def _record(self, data: dict[str, Any]) -> Record:
        self.seq += 1
        return Record(seq=self.seq, record_id=f"{self.node}-s{self.seq}", kind="tse_transaction",
                      ts_ns=int(self.clock.now * 1e9), device=self.device, data=data)

    def signed(self, amount: str = "10.00") -> tuple[TransactionResult, TransactionResult]:
        """Start and finish one sale on the TSE (30 s apart on its clock)."""
        ensure_ready(self.tse)  # its self test is due every 24 h of the fake clock
        start = self.tse.start_transaction(self.client, b"", PROCESS_TYPE)
        self.clock.advance(30)
        finish = self.tse.finish_transaction(self.client, start.transaction_number, beleg(amount), PROCESS_TYPE)
        self.clock.advance(30)
        return start, finish

    def record_of(self, start: TransactionResult, finish: TransactionResult, **override: Any) -> Record:
        """The node's record of a signed sale, as the contract has it; ``override`` changes / adds fields."""
        amount = finish.process_data.decode().split("^")[1].split("_")[0]
        qr = ReceiptQr(
            client_id=finish.client_id, process_type=finish.process_type, process_data=finish.process_data.decode(),
            transaction_number=finish.transaction_number, signature_counter=finish.signature_counter,
            start=iso_time(finish.start_time), end=iso_time(finish.log_time), algorithm=finish.algorithm,
            log_time_format=finish.time_format, signature=finish.signature_value, public_key=self.info.public_key,
        ).build()  # fmt: skip
        data = {
            "tse_serial": self.serial, "public_key": base64.b64encode(self.info.public_key).decode(),
            "algorithm": finish.algorithm, "time_format": finish.time_format, "client_id": finish.client_id,
            "tx_number": finish.transaction_number, "signature_counter": finish.signature_counter,
            "start_counter": start.signature_counter, "started_at": iso_time(finish.start_time),
            "finished_at": iso_time(finish.log_time), "log_time": finish.log_time,
            "process_type": finish.process_type, "process_data": finish.process_data.decode(),
            "signature": base64.b64encode(finish.signature_value).decode(), "qr": qr, "total": amount,
            "currency": "EUR", "receipt_id": f"B-{finish.transaction_number}", "tse_failed": False,
        }  # fmt: skip
        data.update(override)
        return self._record(data)

    def sale(self, amount: str = "10.00", **override: Any) -> Record:
        return self.record_of(*self.signed(amount), **override)

    def failed_sale(self, amount: str = "4.00", *, error: str = "TSE not reachable: USB device gone",
                    **override: Any) -> Record:
        self.clock.advance(60)
        at = iso_time(int(self.clock.now))
        data = {  # as the node's sales API sends it when the TSE failed before it signed anything
            "tse_serial": self.serial, "public_key": base64.b64encode(self.info.public_key).decode(),
            "algorithm": None, "time_format": None, "client_id": self.client, "tx_number": None,
            "signature_counter": None, "start_counter": None, "started_at": at, "finished_at": at, "log_time": None,
            "process_type": PROCESS_TYPE, "process_data": beleg(amount), "signature": None, "qr": None,
            "total": amount, "currency": "EUR", "receipt_id": None, "tse_failed": True, "error": error, **override,
        }  # fmt: skip
        return self._record(data)

    def send(self, *records: Record, now: datetime | None = None) -> ApplyResult:
        batch = Batch(node=self.node, epoch="e1", stream="business", records=records)
        return apply_batch(self.sessions, batch, now=now or datetime.now(UTC))

    def rows(self) -> dict[int | None, TseTransaction]:
        """This TSE's rows by transaction number."""
        with self.sessions() as s:
            return {t.tx_number: t for t in s.execute(select(TseTransaction).where(
                TseTransaction.tse_serial == self.serial).order_by(TseTransaction.id)).scalars()}


__all__ = ["T0", "Register", "beleg", "confirm_tse", "use_test_registry"]
