"""``sync.alibi.check_chain`` with a node's key history: each entry checked with the keys valid when it was made (a
re-enrolled node's chain verifies across the rotation), and entries that verify only with a key the check does not
trust named ``untrusted_key`` — never ``altered`` — consecutive ones in one problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.alibi import ZERO_HASH, StoredEntry, body_hash, check_chain, make_entry
from sync.signing import generate_key

NODE = "mill-01"
T0 = 1_700_000_000_000_000_000
OLD, NEW, FORGER = generate_key(), generate_key(), generate_key()
ROTATION = T0 + 5  # entries 1–4 before, 5–8 after


def chain(signer: Any, n: int = 8, *, gross: Mapping[int, str] | None = None) -> list[StoredEntry]:
    """``signer(no)`` → the key that signs entry ``no``."""
    out, prev = [], ZERO_HASH
    for no in range(1, n + 1):
        part = make_entry(signer(no), node=NODE, alibi_no=no, record_id=f"w-{no}", device="bridge-1",
                          weighed_at_ns=T0 + no, data={"gross": (gross or {}).get(no, str(24000 + no)), "unit": "kg"},
                          prev_hash=prev)
        out.append(StoredEntry(no, part.body, part.hash, part.sig))
        prev = part.hash
    return out


def rotated(no: int) -> Ed25519PrivateKey:
    return OLD if T0 + no < ROTATION else NEW


def history(body: Mapping[str, Any]) -> Sequence[Ed25519PublicKey]:
    t = body.get("weighed_at_ns")
    assert isinstance(t, int)
    return [OLD.public_key()] if t < ROTATION else [NEW.public_key()]


def suspects(body: Mapping[str, Any]) -> Sequence[tuple[Ed25519PublicKey, str]]:
    t = body.get("weighed_at_ns")
    assert isinstance(t, int)
    out = [(FORGER.public_key(), "key F, which the fleet CA did not bind")]
    out.append((NEW.public_key(), "key N, valid only from the rotation") if t < ROTATION else
               (OLD.public_key(), "key O, valid only until the rotation"))
    return out


def kinds(entries: list[StoredEntry], **kw: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.kind, p.entries) for p in check_chain(entries, history, node=NODE, suspects=suspects, **kw).problems]


def test_a_chain_across_a_rotation_verifies_with_the_key_history() -> None:
    check = check_chain(chain(rotated), history, node=NODE, suspects=suspects)
    assert (check.ok, [e.signed for e in check.entries]) == (True, [True] * 8)
    # one key for all, as before: the entries of the other key look altered
    assert [p.kind for p in check_chain(chain(rotated), NEW.public_key(), node=NODE).problems] != []


def test_a_chain_re_signed_with_an_untrusted_key_is_untrusted_not_altered() -> None:
    forged = chain(lambda _no: FORGER, gross={3: "20000"})
    check = check_chain(forged, history, node=NODE, suspects=suspects)
    assert [(p.kind, p.entries) for p in check.problems] == [("untrusted_key", tuple(range(1, 9)))]
    assert check.problems[0].message == ("entries 1…8: signed only with key F, which the fleet CA did not bind")
    assert check.head_hash is None
    # without suspects the same chain is a chain of forgeries
    assert {p.kind for p in check_chain(forged, history, node=NODE).problems} <= {"altered", "inserted", "removed"}


def test_an_entry_signed_outside_its_keys_interval_is_untrusted() -> None:
    late_old = chain(lambda _no: OLD)  # entries 5–8 signed with the key rotated away
    assert kinds(late_old) == [("untrusted_key", (5, 6, 7, 8))]
    mixed = chain(lambda no: FORGER if no == 2 else rotated(no))
    found = check_chain(mixed, history, node=NODE, suspects=suspects).problems
    assert [(p.kind, p.entries) for p in found] == [("untrusted_key", (2,))]
    assert found[0].message == "entry 2: signed only with key F, which the fleet CA did not bind"


def test_untrusted_runs_are_split_by_key_and_gaps() -> None:
    entries = chain(lambda no: FORGER if no in (2, 3, 6) else (OLD if no == 7 else rotated(no)))
    assert kinds(entries) == [("untrusted_key", (2, 3)), ("untrusted_key", (6,)), ("untrusted_key", (7,))]


def test_an_untrusted_entry_changed_afterwards_is_altered() -> None:
    entries = chain(lambda no: FORGER if no == 4 else rotated(no))
    e = entries[3]
    body = e.body.replace('"gross":"24004"', '"gross":"24104"')
    entries[3] = StoredEntry(4, body, body_hash(body), e.sig)
    assert kinds(entries) == [("altered", (4,))]


def test_a_removed_entry_among_untrusted_ones_is_still_named() -> None:
    entries = [e for e in chain(lambda _no: FORGER) if e.position != 4]
    assert sorted(kinds(entries)) == [("removed", (4,)), ("untrusted_key", (1, 2, 3)),
                                      ("untrusted_key", (5, 6, 7, 8))]
