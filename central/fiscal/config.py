"""``FiscalSettings``: the ``fiscal:`` block of central.yaml — the TSEs the operator vouches for.

    fiscal:
      tse:                                   # each TSE registered with the tax office for one of our registers
        - serial: 3c1f…e9                    # hex SHA-256 of its public key (the TSE's serial number, 64 digits)
          public_key: BCq3…==                # optional: base64 of the uncompressed point; must hash to the serial
          algorithm: ecdsa-plain-SHA384      # optional: the signature algorithm its transactions must use

A TSE listed here is trusted without an admin's confirmation: the first time central sees it, its pin in the TSE
registry (``central.fiscal.registry``) is ``confirmed`` with source ``config``. Every other TSE is pinned
``unconfirmed`` on first sight and its transactions are ``invalid`` (``untrusted_key: …``) until an admin runs
``floorgate central tse confirm SERIAL``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from pydantic import Field, field_validator, model_validator

from sync.runtime.config import ConfigModel

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
ALGORITHMS = ("ecdsa-plain-SHA256", "ecdsa-plain-SHA384")  # protocols.tse.crypto.ALGORITHMS


class ListedTse(ConfigModel):
    """One TSE of ``fiscal.tse``."""

    serial: str = Field(description="hex SHA-256 of the TSE's public key (its serial number)")
    public_key: str | None = Field(None, description="base64 of the TSE's uncompressed public point (optional); "
                                                     "its SHA-256 must be the serial")
    algorithm: str | None = Field(None, description=f"one of {', '.join(ALGORITHMS)} (optional)")

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str) -> str:
        if not _HEX64.fullmatch(v):
            raise ValueError("expected 64 hex digits (the SHA-256 of the TSE's public key)")
        return v.lower()

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, v: str | None) -> str | None:
        if v is not None and v not in ALGORITHMS:
            raise ValueError(f"expected one of {', '.join(ALGORITHMS)}")
        return v

    @model_validator(mode="after")
    def _key_fits_serial(self) -> ListedTse:
        if self.public_key is None:
            return self
        try:
            point = base64.b64decode(self.public_key, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("public_key: not base64") from None
        own = hashlib.sha256(point).hexdigest()
        if own != self.serial:
            raise ValueError(f"public_key: its SHA-256 is {own}, not the serial {self.serial}")
        return self


class FiscalSettings(ConfigModel):
    """``fiscal:`` in central.yaml."""

    tse: list[ListedTse] = Field(default_factory=list, description="the TSEs trusted without an admin's "
                                 "confirmation (floorgate central tse confirm)")

    @field_validator("tse")
    @classmethod
    def _unique(cls, v: list[ListedTse]) -> list[ListedTse]:
        seen: set[str] = set()
        for i, entry in enumerate(v):
            if entry.serial in seen:
                raise ValueError(f"entry {i}: TSE {entry.serial} is listed twice")
            seen.add(entry.serial)
        return v


__all__ = ["ALGORITHMS", "FiscalSettings", "ListedTse"]
