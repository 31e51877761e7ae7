"""What an alert rule of kind ``integrity`` observes: what the legal and fiscal records' trust rests on
(``central.alerts.engine`` evaluates it).

=================== ==================================== ==========================================================
check               subject                              beyond (fires) while
=================== ==================================== ==========================================================
``alibi_truncated`` ``<node>/alibi``                     the node's signed alibi head names entries central
                                                         acknowledged but does not hold — its end, or entries
                                                         below it (``central.fleet.heads``; value: how many)
``tse_truncated``   ``<node>/<serial>``                  the node's signed TSE head names transactions central
                                                         acknowledged but does not hold (value: how many numbers)
``untrusted_key``   ``<node>/key/<fingerprint>``         a key of the node (``node_keys``, or ``nodes.public_key``)
                                                         that the fleet CA did not bind (``central.fleet.keys``
                                                         with ``pki.dir``/ca.crt; without a CA no key is bound)
                    ``<node>/<serial>/untrusted_key``    TSE transactions whose key is not the TSE's pinned key
                                                         (``verify_error`` ``untrusted_key: …``; value: how many)
``tse_unconfirmed`` ``<node>/<serial>/unconfirmed``      a TSE pinned in the registry (``tse_registry``) that no
                                                         admin or config confirmed yet (``-`` for no node)
=================== ==================================== ==========================================================

A finding that is gone (the entries arrived after all, the key was bound, the TSE confirmed) is reported back within
(``beyond=False``), so its alert resolves with a notification. Nothing is kept between evaluations; the queries are
index lookups per node and per TSE. When the CA certificate cannot be read, the node-key subjects are "no data"
(their alerts stay as they are) and the reason is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from central.alerts.observation import SUBJECT_MAX, Observation
from central.alerts.rules import IntegrityRule, matches
from central.db.models import Node, TsePin, TseTransaction
from central.fleet.heads import alibi_shortfall, tse_shortfalls
from central.fleet.keys import CaCertError, key_history, load_ca_cert
from sync.signing import SigningKeyError, fingerprint

log = logging.getLogger(__name__)

_reported_ca_errors: set[str] = set()  # logged once per process and message


def _subject(*parts: str) -> str:
    return "/".join(parts)[:SUBJECT_MAX]


def _ob(subject: str, value: float, since: datetime | None, node: str, detail: str, check: str,
        device: str = "", **details: Any) -> Observation:
    return Observation(subject, True, value, since=since, context={"node": node, "device": device, "detail": detail},
                       details={"check": check, **details})


def _alibi(rule: IntegrityRule, session: Session, nodes: list[Node]) -> list[Observation]:
    out = []
    for node in nodes:
        short = alibi_shortfall(session, node.node_id, node=node)
        if short is None:
            continue
        out.append(_ob(_subject(node.node_id, "alibi"), float(short.missing_count), short.reported_at,
                       node.node_id, short.describe(), "alibi_truncated", head_no=short.head_no,
                       head_hash=short.head_hash, held_no=short.held_no, missing=short.missing_count,
                       missing_ranges=[list(r) for r in short.missing_ranges], epoch=short.epoch, seq=short.seq,
                       acked_seq=short.acked_seq))
    return out


def _tse(rule: IntegrityRule, session: Session) -> list[Observation]:
    out = []
    for short in tse_shortfalls(session):
        if not (matches(rule.node, short.node) and matches(rule.tse, short.serial)):
            continue
        missing = max(len(short.missing_tx), 1)  # transaction numbers (a counter-only shortfall: 1)
        out.append(_ob(_subject(short.node, short.serial), float(missing), short.reported_at, short.node,
                       short.describe(), "tse_truncated", tse_serial=short.serial, head_tx=short.head_tx,
                       head_counter=short.head_counter, held_tx=short.held_tx, held_counter=short.held_counter))
    return out


def _node_keys(session: Session, nodes: list[Node], pki_dir: Path | None) -> list[Observation] | None:
    """The node keys the CA did not bind (None: the CA certificate cannot be read — no data)."""
    try:
        ca = load_ca_cert(pki_dir)
    except CaCertError as exc:
        if str(exc) not in _reported_ca_errors:
            _reported_ca_errors.add(str(exc))
            log.error("alerts: integrity: node keys not checked: %s", exc)
        return None
    out = []
    for node in nodes:
        history = key_history(session, node.node_id, ca)
        found = {(u.fingerprint, u.public_key): u.why.removeprefix("not bound by the fleet CA: ")
                 for u in history.untrusted}
        current = node.public_key
        if current and not any(p.public_key == current for p in history.periods) and not any(
                key == current for _, key in found):
            try:
                fp = node.key_fingerprint or fingerprint(current)
            except SigningKeyError:
                fp = node.key_fingerprint or "?"
            found[(fp, current)] = ("it is the key in nodes.public_key but in no node_keys row the fleet CA bound: "
                                    "written into the database without the CA")
        for (fp, _key), why in found.items():
            detail = (f"node {node.node_id}: key {fp} is not anchored in the fleet CA ({why}); nothing it signed is "
                      f"trusted — `floorgate central node add {node.node_id} --reissue` binds a new key with the CA")
            out.append(_ob(_subject(node.node_id, "key", fp), 1.0, None, node.node_id, detail, "untrusted_key",
                           fingerprint=fp, why=why))
    return out


def _tse_keys(rule: IntegrityRule, session: Session) -> list[Observation]:
    t = TseTransaction
    out = []
    rows = session.execute(
        select(t.node_id, t.tse_serial, func.count(), func.min(t.tx_number), func.max(t.tx_number),
               func.min(t.received_at), func.max(t.verify_error))
        .where(t.verified == "invalid", t.verify_error.like("%untrusted_key%"))
        .group_by(t.node_id, t.tse_serial))
    for node, serial, count, first, last, since, error in rows:
        if not (matches(rule.node, node) and matches(rule.tse, serial or "")):
            continue
        span = f"{first}" if first == last else f"{first}…{last}"
        detail = (f"node {node}: {count} transaction(s) of TSE {serial} (numbers {span}) signed with a key that is "
                  f"not the TSE's pinned key: {error}")
        out.append(_ob(_subject(node, serial or "?", "untrusted_key"), float(count), since, node, detail,
                       "untrusted_key", tse_serial=serial, transactions=int(count)))
    return out


def _unconfirmed(rule: IntegrityRule, session: Session) -> list[Observation]:
    out = []
    for pin in session.execute(select(TsePin).where(TsePin.status == "unconfirmed")
                               .order_by(TsePin.tse_serial)).scalars():
        node = pin.node_id or "-"
        if not (matches(rule.node, pin.node_id or "") and matches(rule.tse, pin.tse_serial)):
            continue
        detail = (f"TSE {pin.tse_serial} (node {node}, device {pin.device_id or '?'}) was pinned at its first sight "
                  f"({pin.first_seen_at.isoformat()}, {pin.source}) but no admin or config confirmed it yet: its "
                  "transactions are not trusted until then")
        out.append(_ob(_subject(node, pin.tse_serial, "unconfirmed"), 1.0, pin.first_seen_at, node, detail,
                       "tse_unconfirmed", device=pin.device_id or "", tse_serial=pin.tse_serial))
    return out


def observe_integrity(rule: IntegrityRule, sessions: sessionmaker[Session], now: datetime,
                      firing: Collection[str], *, pki_dir: Path | None = None) -> list[Observation]:
    """Every subject of ``rule`` and whether it is beyond at ``now``; ``firing``: its subjects with a firing alert;
    ``pki_dir``: central's ``pki.dir`` (its ca.crt anchors the node keys)."""
    out: list[Observation] = []
    unknown = False  # the node keys could not be checked: their alerts stay as they are
    with sessions() as session:
        nodes = [n for n in session.execute(select(Node).order_by(Node.node_id)).scalars()
                 if matches(rule.node, n.node_id)]
        if "alibi_truncated" in rule.checks:
            out += _alibi(rule, session, nodes)
        if "tse_truncated" in rule.checks:
            out += _tse(rule, session)
        if "untrusted_key" in rule.checks:
            keys = _node_keys(session, nodes, pki_dir)
            unknown = keys is None
            out += keys or []
            out += _tse_keys(rule, session)
        if "tse_unconfirmed" in rule.checks:
            out += _unconfirmed(rule, session)
    seen = {o.subject for o in out}
    for subject in firing:  # gone: back within, so the alert resolves with its notification
        if subject in seen:
            continue
        if unknown and "/key/" in subject:
            out.append(Observation(subject, None, None))
        else:
            out.append(Observation(subject, False, None, context={"detail": f"{subject}: resolved"}))
    return out


__all__ = ["observe_integrity"]
