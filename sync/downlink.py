"""Authenticated downlink: what central sends to a node (acks, replay requests, commands) is signed by central, and
the node verifies it before it deletes, replays or acts.

Every downlink message carries, besides its own fields::

    "issued_at_ns": 1732400000000000000,   central's wall clock when it signed
    "nonce": "<32 hex digits>",            random, never used twice
    "kid": "<fingerprint of central's signing key>",   sync.signing.fingerprint
    "sig": "<base64 Ed25519 over the canonical JSON without sig>"   (sync.signing.canonical_json, like a batch)

Central signs with its own Ed25519 key (``DownlinkSigner``); a node trusts a short list of central public keys
(normally one, two while a rotation is under way) and looks the key up by ``kid``. ``DownlinkVerifier`` applies the
rules every node-side handler shares, in this order, and rejects with one of ``REASONS``:

    unsigned        no ``sig`` / ``kid``: not from central
    unknown_key     ``kid`` is none of the trusted keys (forged, or central rotated before the node learnt the key)
    bad_signature   the signature does not verify with the key ``kid`` names
    wrong_node      the message names another node (misdirected)
    wrong_epoch     an ack / replay request for another outbox epoch (an old database of this node)
    replayed        the nonce was seen before, or the message is older than what the bounded nonce cache still
                    remembers (see ``NonceCache``)

The handlers add their own (``malformed`` for what does not decode, ``beyond_sent`` for an ack of seqs the node never
sent, ``expired`` commands). A rejected message changes nothing; the handler logs and counts it
(``DownlinkVerifier.counts``).

Only the standard library and ``cryptography`` here: both sides import it.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.errors import SyncError
from sync.signing import SigningKeyError, fingerprint, parse_public_key, public_key_text, sign, verify

REASONS: Final = ("malformed", "unsigned", "unknown_key", "bad_signature", "wrong_node", "wrong_epoch", "replayed",
                  "beyond_sent", "expired")
NONCE_CACHE_SIZE: Final = 8192  # nonces remembered per node process (~1 MB at most)
MAX_NONCE_CHARS: Final = 64
MAX_KID_CHARS: Final = 64


class DownlinkRejected(SyncError):
    """A downlink message the node must not act on; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class DownlinkSigner:
    """Central's side: stamps and signs downlink messages with central's key."""

    def __init__(self, key: Ed25519PrivateKey, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.key = key
        self.kid = fingerprint(key)
        self.clock_ns = clock_ns

    def stamp(self) -> dict[str, Any]:
        """The fields every downlink message carries besides ``sig``: a fresh nonce, the time, the key id."""
        return {"issued_at_ns": self.clock_ns(), "nonce": secrets.token_hex(16), "kid": self.kid}

    def __call__(self, body: bytes) -> str:
        """A ``sync.envelope.Signer``: canonical body → base64 signature."""
        return sign(self.key, body)


class NonceCache:
    """The nonces of the last ``size`` accepted messages, in memory, bounded.

    A nonce that falls out of the cache could be replayed unseen, so the cache also keeps a *floor*: the newest
    ``issued_at_ns`` among the nonces it has forgotten. A message issued at or before the floor is refused as a
    possible replay. Both sides of the comparison are central's clock (the stamp is signed), so a node whose own clock
    is wrong is not affected; a genuine message delayed behind ``size`` newer ones is refused (and simply sent again:
    the node resends its batches, central answers with a fresh ack).

    The cache starts empty with each agent start: an older genuine ack or replay request replayed then can only
    repeat what central said before (an ack never goes beyond what was sent, a replay request makes the node resend),
    and a replayed command is caught by the durable command log and its expiry.
    """

    def __init__(self, size: int = NONCE_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError("a nonce cache needs room for at least one nonce")
        self.size = size
        self.floor_ns = -1
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: str, issued_at_ns: int) -> str | None:
        """None if ``nonce`` is new and the message younger than the floor; else why it is a replay."""
        if nonce in self._seen:
            return f"nonce {nonce[:40]!r} was used before"
        if issued_at_ns <= self.floor_ns:
            return (f"issued at {issued_at_ns}, not after {self.floor_ns}: older than the {self.size} messages "
                    "the node remembers")
        return None

    def add(self, nonce: str, issued_at_ns: int) -> None:
        self._seen[nonce] = issued_at_ns
        while len(self._seen) > self.size:
            _, forgotten = self._seen.popitem(last=False)
            self.floor_ns = max(self.floor_ns, forgotten)


class DownlinkVerifier:
    """The node's side: the trusted central keys, the node's identity and the nonce cache; counts rejections."""

    def __init__(self, node_id: str, keys: Iterable[Ed25519PublicKey], *, nonce_cache_size: int = NONCE_CACHE_SIZE,
                 log: Callable[[str, str], None] | None = None) -> None:
        self.node_id = node_id
        self.keys: dict[str, Ed25519PublicKey] = {fingerprint(k): k for k in keys}
        if not self.keys:
            raise ValueError("a downlink verifier needs at least one trusted central key")
        self.nonces = NonceCache(nonce_cache_size)
        self.counts: dict[str, int] = {}
        self.accepted = 0
        self._log = log

    def reject(self, reason: str, detail: str) -> DownlinkRejected:
        """Count a rejection (``reason`` one of REASONS) and return the exception to raise."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self._log is not None:
            self._log(reason, detail)
        return DownlinkRejected(reason, detail)

    @property
    def rejected(self) -> int:
        return sum(self.counts.values())

    def verify(self, what: str, *, node: str, kid: str, nonce: str, issued_at_ns: int, signed_body: bytes,
               sig: str | None, epoch: str | None = None, expected_epoch: str | None = None,
               check_nonce: bool = True) -> None:
        """Raise DownlinkRejected (counted) unless the message ``what`` (``ack``, ``replay``, ``command``) is signed
        by a trusted central key, is for this node (and ``expected_epoch`` when given) and, with ``check_nonce``,
        was not seen before. An accepted message's nonce is remembered."""
        if not sig or not kid:
            raise self.reject("unsigned", f"{what} without central's signature")
        key = self.keys.get(kid)
        if key is None:
            raise self.reject("unknown_key", f"{what} signed with key {kid[:MAX_KID_CHARS]!r}, which this node does "
                              f"not trust (trusted: {', '.join(sorted(self.keys))})")
        problem = verify(key, signed_body, sig)
        if problem is not None:
            raise self.reject("bad_signature", f"{what}: {problem.replace('node', 'central')}")
        if node != self.node_id:
            raise self.reject("wrong_node", f"{what} for node {node!r} received by node {self.node_id!r}")
        if expected_epoch is not None and epoch != expected_epoch:
            raise self.reject("wrong_epoch", f"{what} for epoch {epoch!r}, the outbox's epoch is {expected_epoch!r}")
        if check_nonce:
            self.fresh(what, nonce, issued_at_ns)
        self.accepted += 1

    def fresh(self, what: str, nonce: str, issued_at_ns: int) -> None:
        """Raise DownlinkRejected (``replayed``, counted) unless ``nonce`` is new; remember it."""
        if not nonce:
            raise self.reject("replayed", f"{what} without a nonce")
        replay = self.nonces.check(nonce, issued_at_ns)
        if replay is not None:
            raise self.reject("replayed", f"{what}: {replay}")
        self.nonces.add(nonce, issued_at_ns)


# -- trusted keys on the node -----------------------------------------------------------------------------------------
def parse_trusted_keys(lines: Iterable[str], *, source: str) -> list[Ed25519PublicKey]:
    """Public keys, one ``ed25519:<base64>`` per line (blank lines and ``#`` comments skipped); a SigningKeyError
    names ``source`` and the line."""
    keys: list[Ed25519PublicKey] = []
    for no, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            keys.append(parse_public_key(text))
        except SigningKeyError as exc:
            raise SigningKeyError(f"{source}: line {no}: {exc}") from None
    return keys


def load_trusted_keys(path: str | Path) -> list[Ed25519PublicKey]:
    """The central keys in ``path`` (``central.pub``); SigningKeyError naming the file when it is missing,
    unreadable, holds a bad line or no key at all."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SigningKeyError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    keys = parse_trusted_keys(text.splitlines(), source=str(p))
    if not keys:
        raise SigningKeyError(f"{p}: holds no key (expected one 'ed25519:<base64>' per line)")
    return keys


def keys_file_text(keys: Iterable[Ed25519PublicKey | str], *, comment: str = "") -> str:
    """The text of a ``central.pub``: an optional comment line, then one key per line."""
    out = [f"# {comment}"] if comment else []
    for key in keys:
        out.append(public_key_text(parse_public_key(key) if isinstance(key, str) else key))
    return "\n".join(out) + "\n"


def counts_json(counts: Mapping[str, int]) -> dict[str, int]:
    """Rejection counts for the heartbeat / health: every known reason, 0 when none."""
    return {reason: int(counts.get(reason, 0)) for reason in REASONS}


__all__ = [
    "NONCE_CACHE_SIZE",
    "REASONS",
    "DownlinkRejected",
    "DownlinkSigner",
    "DownlinkVerifier",
    "NonceCache",
    "counts_json",
    "keys_file_text",
    "load_trusted_keys",
    "parse_trusted_keys",
]
