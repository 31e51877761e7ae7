"""What the alibi tests share: a fleet CA in a directory, central.yaml pointing at it, a head signed by the node in
a real heartbeat (encoded, decoded and kept by central's ``store_heads``), and a forger who re-signs central's copy
of a chain with another key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import AlibiEntry, Node, Weighing
from central.fleet.heads import store_heads
from central.fleet.pki import CertificateAuthority, init_ca
from edge.store.alibi import read_head
from sync.alibi import ZERO_HASH, body_hash
from sync.envelope import Heartbeat, decode_heartbeat, encode_heartbeat
from sync.heads import Heads
from sync.signing import canonical_json, sign

ROOT = Path(__file__).resolve().parents[1]


def fleet_ca(directory: Path) -> CertificateAuthority:
    """A fleet CA (ca.key, ca.crt, crl.pem) in ``directory`` — what `floorgate central ca init` makes."""
    return init_ca(directory)


def central_yaml(tmp_path: Path, url: str, ca_dir: Path | None) -> Path:
    cfg = tmp_path / "central.yaml"
    pki = f"pki: {{dir: {ca_dir}}}\n" if ca_dir is not None else ""
    cfg.write_text(f"database_url: {url}\nmetrics: {{kind: sqlite, path: {tmp_path / 'm.db'}}}\n{pki}")
    return cfg


def verify_cli(cfg: Path, node: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floorgate_cli", "central", "verify-alibi", "--node", node,
                           "--config", str(cfg), *extra], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def sql(sessions: sessionmaker[Session], statement: str, **params: object) -> None:
    with sessions.begin() as s:
        s.execute(text(statement), params)


def store_signed_head(sessions: sessionmaker[Session], node: str, key: Ed25519PrivateKey, outbox: Path, *,
                      bno: int = 1) -> Heads:
    """The outbox's alibi head in a heartbeat signed with ``key``, through the wire format, kept by central."""
    head = read_head(outbox)
    assert head is not None
    heads = Heads(alibi=head)
    wire = encode_heartbeat(Heartbeat(node=node, epoch=head.epoch, bno=bno, sent_at_ns=time.time_ns(), mono_ns=1,
                                      boot_id="boot-1", version="test", streams={}, heads=heads),
                            signer=lambda body: sign(key, body))
    hb = decode_heartbeat(wire)
    with sessions.begin() as s:
        row = s.get(Node, node)
        assert row is not None
        store_heads(s, row, hb, datetime.now(UTC))
    return heads


@dataclass
class Forgery:
    """What ``resign_chain`` did: the forger's key and the numbers whose gross it changed."""

    key: Ed25519PrivateKey
    changed: dict[int, str]


def resign_chain(sessions: sessionmaker[Session], node: str, forger: Ed25519PrivateKey, *,
                 gross: dict[int, str]) -> Forgery:
    """Re-sign every entry of ``node`` at central with ``forger`` (hashes and links made anew), the gross of the
    entries in ``gross`` changed — in the entry and in its weighing row, as someone with the database would."""
    with sessions.begin() as s:
        prev = ZERO_HASH
        for e in s.execute(select(AlibiEntry).where(AlibiEntry.node_id == node).order_by(AlibiEntry.alibi_no)
                           ).scalars():
            body: dict[str, Any] = {**json.loads(e.body), "prev_hash": prev}
            if e.alibi_no in gross:
                body["gross"] = gross[e.alibi_no]
                w = s.execute(select(Weighing).where(Weighing.node_id == node, Weighing.alibi_no == e.alibi_no)
                              ).scalar_one()
                w.gross = Decimal(gross[e.alibi_no])
            e.body = canonical_json(body).decode()
            e.hash = body_hash(e.body)
            e.prev_hash = prev
            e.sig = sign(forger, e.body.encode())
            prev = e.hash
    return Forgery(forger, gross)


__all__ = ["Forgery", "central_yaml", "fleet_ca", "resign_chain", "sql", "store_signed_head", "verify_cli"]
