"""Node config of the cash register side: the node's TSE (``tse:``) and the counter's sales API (``pos:``).

    tse:
      id: tse-1                      # the device id of the TSE: its records carry it
      driver: software               # NOT CERTIFIED, tests and demos (later: fiskaly, swissbit)
      dir: /var/lib/floorgate/tse    # default <data_dir>/tse (relative paths: relative to the config file)
      algorithm: brainpoolP384r1     # or P-256; used only when the TSE is made (its key is never replaced)
      clients: [KASSE-1]             # the registers (TR-03151 client ids) that may sign
    pos:
      listen: "127.0.0.1:8282"       # loopback, or the LAN address the register reaches
      token_file: /etc/floorgate/pos-token   # default <data_dir>/pos-token, made (0600) on first start
      # token_env: FLOORGATE_POS_TOKEN       # or: the token in this environment variable (never made)
      max_body_bytes: 65536          # a larger request body is refused (413) while it is read, before the token
      receipt_retention_days: 7      # how long a receipt_id's answer is kept for retries (also across restarts)

The register authenticates with ``Authorization: Bearer <token>``. :func:`load_or_create_token` reads the token
(or makes a random one into a 0600 file); a token that is missing, empty or shorter than ``MIN_TOKEN_LENGTH`` is a
:class:`~sync.runtime.config.ConfigError` naming the key — a secret never has a working default.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, field_validator, model_validator

from edge.pos.fiskaly import FiskalySettings
from protocols.tse.errors import TseInvalidArgument
from protocols.tse.software import check_client_id
from sync.runtime.config import ConfigError, ConfigModel

log = logging.getLogger(__name__)

DEFAULT_POS_LISTEN: Final = "127.0.0.1:8282"
DEFAULT_TOKEN_FILE: Final = "pos-token"  # noqa: S105 — a file name in data_dir, not a secret
DEFAULT_TSE_DIR: Final = "tse"  # in data_dir
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024  # a sale with 100 payments is under 10 KiB
DEFAULT_RECEIPT_RETENTION_DAYS: Final = 7  # = edge.store.receipts.DEFAULT_RETENTION_DAYS
MIN_TOKEN_LENGTH: Final = 24
TOKEN_BYTES: Final = 32  # a made token: 32 random bytes, URL-safe base64 (43 characters)
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TSE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a device id (edge.config.DEVICE_ID_PATTERN)


def check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8282")
    return value


class TseConfig(ConfigModel):
    """The node's TSE. One per node: the registers of the node share it, one signature at a time."""

    id: Annotated[str, Field(pattern=TSE_ID_PATTERN, description="device id of the TSE (its records carry it)")]
    driver: Literal["software", "fiskaly"] = Field(
        "software", description="software: floorgate's software TSE, NOT CERTIFIED (tests and demos); fiskaly: a "
        "fiskaly SIGN DE v2 cloud TSS (settings under `fiskaly`)")
    fiskaly: FiskalySettings | None = Field(
        None, description="fiskaly: base_url, api_key, api_secret, tss_id, admin_pin, … (secrets: use ${ENV} in the "
        "file or keep the file 0600)")
    dir: Path | None = Field(None, description="software TSE: its directory (default <data_dir>/tse)")
    algorithm: Literal["brainpoolP384r1", "P-256"] | None = Field(
        None, description="software TSE: the curve of a new key — brainpoolP384r1 (ecdsa-plain-SHA384, as hardware "
        "TSEs; the default) or P-256 (ecdsa-plain-SHA256, as cloud TSEs); an existing key is kept")
    clients: list[str] = Field(min_length=1, description="client ids of the cash registers that may sign")

    @field_validator("clients")
    @classmethod
    def _clients(cls, clients: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, client in enumerate(clients):
            try:
                check_client_id(client)
            except TseInvalidArgument as exc:
                raise ValueError(f"clients[{i}]: {str(exc).removeprefix('client_id: ')}") from None
            if client in seen:
                raise ValueError(f"clients[{i}]: {client!r} is given twice")
            seen.add(client)
        return clients

    @model_validator(mode="after")
    def _driver_settings(self) -> TseConfig:
        if self.driver == "fiskaly" and self.fiskaly is None:
            raise ValueError("fiskaly: required with driver fiskaly (base_url, api_key, api_secret, tss_id)")
        if self.driver != "fiskaly" and self.fiskaly is not None:
            raise ValueError(f"fiskaly: given, but driver is {self.driver!r}")
        return self

    def directory(self, data_dir: Path) -> Path:
        return self.dir if self.dir is not None else data_dir / DEFAULT_TSE_DIR


class PosConfig(ConfigModel):
    """The counter's sales API on the node (``edge.pos.api``)."""

    listen: str = Field(DEFAULT_POS_LISTEN, description="HOST:PORT the cash registers call")
    token_file: Path | None = Field(
        None, description="file holding the bearer token (default <data_dir>/pos-token; made, 0600, if missing)")
    token_env: str | None = Field(
        None, description="name of an environment variable holding the token instead of a file")
    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024,
        description="largest request body taken (bytes); a larger one is refused with 413 while it is read — by its "
        "Content-Length before the token is checked, a chunked one as it streams")
    receipt_retention_days: int = Field(
        DEFAULT_RECEIPT_RETENTION_DAYS, ge=1, le=3650,
        description="days a sale's answer is kept under its receipt_id (a retry gets it, also after a restart); "
        "the same receipt_id after that is a new sale")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v)

    @field_validator("token_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise ValueError("expected the name of an environment variable, e.g. FLOORGATE_POS_TOKEN")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> PosConfig:
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("give token_file or token_env, not both")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def token_path(self, data_dir: Path) -> Path:
        return self.token_file if self.token_file is not None else data_dir / DEFAULT_TOKEN_FILE


def load_or_create_token(pos: PosConfig, data_dir: Path, *, source: str = "node config",
                         environ: dict[str, str] | None = None) -> str:
    """The bearer token the registers send: from ``pos.token_env``, else from the token file (made if missing)."""
    env = os.environ if environ is None else environ
    if pos.token_env is not None:
        token = env.get(pos.token_env, "").strip()
        if not token:
            raise ConfigError(source, [f"pos.token_env: the environment variable {pos.token_env} is not set or "
                                       "empty (it must hold the token the cash registers send)"])
        _check_token(token, source, "pos.token_env", f"the environment variable {pos.token_env}")
        return token
    path = pos.token_path(data_dir)
    key = "pos.token_file"
    if not path.exists():
        token = secrets.token_urlsafe(TOKEN_BYTES)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, (token + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileExistsError:  # made meanwhile by another process: read that one
            pass
        except OSError as exc:
            raise ConfigError(source, [f"{key}: cannot make the token file {path}: {exc.strerror}"]) from None
        else:
            log.warning("POS API token made at %s (mode 0600); the cash registers send it as "
                        "'Authorization: Bearer <token>' — read it with: cat %s", path, path)
            return token
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"{key}: cannot read the token file {path}: {exc}"]) from None
    if path.stat().st_mode & 0o077:
        log.warning("POS API token file %s can be read by others (mode %o); chmod 600 it", path,
                    path.stat().st_mode & 0o777)
    _check_token(token, source, key, str(path))
    return token


def _check_token(token: str, source: str, key: str, where: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(source, [f"{key}: the token in {where} has {len(token)} characters; at least "
                                   f"{MIN_TOKEN_LENGTH} are needed (e.g. python3 -c 'import secrets; "
                                   "print(secrets.token_urlsafe(32))')"])
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ConfigError(source, [f"{key}: the token in {where} must be printable and without spaces"])


__all__ = ["DEFAULT_POS_LISTEN", "MIN_TOKEN_LENGTH", "PosConfig", "TseConfig", "check_listen",
           "load_or_create_token"]
