"""Writing external checkpoints (``central.fleet.checkpoint``) to places outside central's database, now
(``floorgate central checkpoint``) or on a schedule (``CheckpointSchedule``, a task of every central process).

Destinations (``checkpoint:`` in central.yaml): a directory (``checkpoint-<UTC time>.json``, never overwritten) and
alert channels of ``alerts.rules_file`` by name — a webhook receives the signed document as its JSON body, an e-mail
carries it as the attachment ``checkpoint-<UTC time>.json`` (sent with ``central.alerts.notify``'s senders). Each
checkpoint is also kept in the ``checkpoints`` table with where it went (destination → ``ok`` or the error) and an
audit entry (resource ``checkpoint``).

Several central processes: on PostgreSQL a transaction-level advisory lock lets one of them write at a time, and a
checkpoint is due ``interval_s`` after the newest one in the table, whoever wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from central.alerts.config import EmailChannel, WebhookChannel, load_rules
from central.alerts.notify import NotifyError, post_json, send_message
from central.db import audit
from central.db.models import Checkpoint
from central.db.types import as_utc
from central.fleet.checkpoint import CheckpointError, document_bytes, file_name, make
from sync.runtime.config import ConfigError
from sync.signing import canonical_json

if TYPE_CHECKING:
    from central.config import CentralSettings

log = logging.getLogger(__name__)

LOCK_KEY = int.from_bytes(hashlib.sha256(b"floorgate.checkpoint").digest()[:8], "big", signed=True)
RETRY_S = 60.0  # after a failure (database, no destination reached), try again this soon (at most interval_s)


@dataclass(frozen=True)
class Destinations:
    directory: Path | None = None
    channels: dict[str, WebhookChannel | EmailChannel] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.directory is None and not self.channels


def destinations(settings: CentralSettings, *, directory: Path | None = None) -> Destinations:
    """Where checkpoints go by ``settings`` (``directory`` instead of ``checkpoint.directory`` when given); the
    channels are looked up in the alert rules file. ``CheckpointError`` names a channel or file that is not there."""
    cp = settings.checkpoint
    channels: dict[str, WebhookChannel | EmailChannel] = {}
    if cp.channels:
        rules_file = settings.alerts.rules_file
        if rules_file is None:
            raise CheckpointError(f"checkpoint.channels ({', '.join(cp.channels)}) are alert channels, but "
                                  "alerts.rules_file (where they are defined) is not set")
        try:
            rules = load_rules(rules_file)
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint.channels: {exc}") from None
        for name in cp.channels:
            if name not in rules.channels:
                raise CheckpointError(f"checkpoint.channels: {name!r} is not a channel of {rules_file} (defined: "
                                      f"{', '.join(sorted(rules.channels)) or 'none'})")
            channels[name] = rules.channels[name]
    return Destinations(directory=directory or cp.directory, channels=channels)


# -- delivering -------------------------------------------------------------------------------------------------------


def write_file(directory: Path, doc: dict[str, Any]) -> Path:
    """``directory/checkpoint-<UTC time>.json`` (``-2``, ``-3`` … when that name exists: nothing is overwritten),
    written to a temporary file first and linked into place complete."""
    directory.mkdir(parents=True, exist_ok=True)
    base = file_name(doc["made_at"]).removesuffix(".json")
    tmp = directory / f".{base}.{os.getpid()}.tmp"
    with tmp.open("wb") as f:
        f.write(document_bytes(doc))
        f.flush()
        os.fsync(f.fileno())
    try:
        for i in range(1, 1000):
            path = directory / (f"{base}.json" if i == 1 else f"{base}-{i}.json")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            return path
        raise OSError(f"{directory}: {base}.json and 998 more names are taken")
    finally:
        tmp.unlink(missing_ok=True)


def email_message(channel: EmailChannel, doc: dict[str, Any]) -> EmailMessage:
    made_at = datetime.fromisoformat(doc["made_at"])
    name = file_name(doc["made_at"])
    msg = EmailMessage()
    msg["Subject"] = (f"floorgate checkpoint {made_at:%Y-%m-%d %H:%M:%S} UTC: {len(doc['alibi'])} node(s), "
                      f"{len(doc['tse'])} TSE(s)")
    msg["From"] = channel.from_
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = format_datetime(made_at)
    msg["Message-ID"] = make_msgid(idstring="checkpoint", domain="floorgate")
    msg["X-Floorgate-Checkpoint"] = doc["made_at"]
    lines = [f"Central's chain heads at {doc['made_at']}, signed with central's key {doc['kid']}.", "",
             f"Keep the attachment {name} where central's administrators cannot change it. It proves later what",
             "central's database held then:", "",
             f"  floorgate central verify-alibi --config central.yaml --checkpoint {name}",
             f"  floorgate central verify-tse --config central.yaml --checkpoint {name}", "", "-- floorgate central"]
    msg.set_content("\n".join(lines) + "\n")
    msg.add_attachment(document_bytes(doc), maintype="application", subtype="json", filename=name)
    return msg


def deliver(doc: dict[str, Any], dest: Destinations, *, http: httpx.Client) -> dict[str, str]:
    """Write ``doc`` to every destination; destination → ``ok`` or the error (no secrets: ``NotifyError``)."""
    out: dict[str, str] = {}
    if dest.directory is not None:
        try:
            out[f"file:{write_file(dest.directory, doc)}"] = "ok"
        except OSError as exc:
            out[f"file:{dest.directory}"] = f"{type(exc).__name__}: {exc}"[:500]
    for name, channel in dest.channels.items():
        try:
            if isinstance(channel, WebhookChannel):
                post_json(http, channel, doc)
            else:
                send_message(channel, email_message(channel, doc))
        except NotifyError as exc:
            out[f"{channel.kind}:{name}"] = str(exc)
        else:
            out[f"{channel.kind}:{name}"] = "ok"
    return out


# -- writing one ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    id: int
    doc: dict[str, Any]
    delivered: dict[str, str]

    @property
    def failed(self) -> dict[str, str]:
        return {k: v for k, v in self.delivered.items() if v != "ok"}


def write_in(session: Session, key: Ed25519PrivateKey, dest: Destinations, *, actor: str, http: httpx.Client,
             now: datetime | None = None) -> Written:
    """Make a checkpoint of what ``session`` sees, deliver it, and add its row and audit entry to ``session``."""
    if dest.empty:
        raise CheckpointError("no destination for the checkpoint: set checkpoint.directory and/or checkpoint.channels "
                              "in the config")
    doc = make(session, key, now=now)
    delivered = deliver(doc, dest, http=http)
    row = Checkpoint(made_at=datetime.fromisoformat(doc["made_at"]), statement=canonical_json(doc).decode(),
                     sig=doc["sig"], kid=doc["kid"], delivered=delivered)
    session.add(row)
    session.flush()
    audit.record(session, actor, "create", "checkpoint", row.id,
                 after={"made_at": doc["made_at"], "kid": doc["kid"], "nodes": len(doc["alibi"]),
                        "tses": len(doc["tse"]), "delivered": delivered})
    return Written(row.id, doc, delivered)


def write(sessions: sessionmaker[Session], key: Ed25519PrivateKey, dest: Destinations, *, actor: str,
          now: datetime | None = None) -> Written:
    """One checkpoint now, in one transaction (``floorgate central checkpoint``)."""
    with httpx.Client(follow_redirects=False) as http, sessions.begin() as session:
        return write_in(session, key, dest, actor=actor, http=http, now=now)


# -- the schedule -----------------------------------------------------------------------------------------------------


class CheckpointSchedule:
    """Writes a checkpoint whenever the newest one in the table is ``interval_s`` old (a task of ``central run`` and
    ``central ingest``; on PostgreSQL one process at a time)."""

    ACTOR = "system:checkpoint"

    def __init__(self, settings: CentralSettings, sessions: sessionmaker[Session], key: Ed25519PrivateKey) -> None:
        interval = settings.checkpoint.interval_s
        if interval is None:
            raise ValueError("checkpoint.interval_s is not set")
        self.interval_s = interval
        self.dest = destinations(settings)  # a mistake stops central at start, naming the channel
        self.sessions = sessions
        self.key = key
        engine = sessions.kw.get("bind")
        self._postgres = engine is not None and engine.dialect.name == "postgresql"
        self._http = httpx.Client(follow_redirects=False)
        self.written = 0

    async def run(self) -> None:
        """Write checkpoints until cancelled; a cancel while one is written lets it finish first."""
        log.info("checkpoints: one every %g s to %s", self.interval_s, ", ".join(
            ([f"file:{self.dest.directory}"] if self.dest.directory else [])
            + [f"{c.kind}:{n}" for n, c in self.dest.channels.items()]))
        try:
            while True:
                current = asyncio.ensure_future(asyncio.to_thread(self.tick))
                try:
                    wait = await asyncio.shield(current)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await current
                    raise
                await asyncio.sleep(wait)
        finally:
            self._http.close()

    def tick(self, now: datetime | None = None) -> float:
        """Write one if due; the seconds until the next look."""
        try:
            return self._tick(now)
        except Exception as exc:  # the database away, a bug: the loop goes on
            log.error("checkpoints: not written: %s: %s", type(exc).__name__, exc, exc_info=True)
            return min(self.interval_s, RETRY_S)

    def _tick(self, now: datetime | None) -> float:
        with self.sessions.begin() as session:
            if self._postgres and not session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                                                      {"k": LOCK_KEY}).scalar():
                return min(self.interval_s, RETRY_S)  # another process writes one right now
            newest = session.execute(select(func.max(Checkpoint.made_at))).scalar()
            at = now or datetime.now(UTC)
            if newest is not None:
                age = (at - as_utc(newest)).total_seconds()
                if age < self.interval_s:
                    return min(self.interval_s, max(1.0, self.interval_s - age))
            written = write_in(session, self.key, self.dest, actor=self.ACTOR, http=self._http, now=at)
        self.written += 1
        if written.failed and len(written.failed) == len(written.delivered):
            log.error("checkpoints: checkpoint %d reached no destination: %s", written.id,
                      "; ".join(f"{k}: {v}" for k, v in written.failed.items()))
        elif written.failed:
            log.warning("checkpoints: checkpoint %d not delivered to %s", written.id,
                        "; ".join(f"{k}: {v}" for k, v in written.failed.items()))
        else:
            log.info("checkpoints: checkpoint %d (%d node(s), %d TSE(s)) written to %s", written.id,
                     len(written.doc["alibi"]), len(written.doc["tse"]), ", ".join(written.delivered))
        return self.interval_s


__all__ = ["CheckpointSchedule", "Destinations", "Written", "deliver", "destinations", "email_message", "write",
           "write_file", "write_in"]
