"""The alibi entry format and the chain check (sync.alibi), table-driven over every way a stored copy can be
tampered with: each is named with the right entry number and kind; an untouched chain has no problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from sync.alibi import (
    ZERO_HASH,
    AlibiError,
    StoredEntry,
    body_hash,
    check_chain,
    make_entry,
    parse_part,
)
from sync.signing import canonical_json, generate_key, sign

KEY = generate_key()
FORGER = generate_key()
NODE = "mill-01"


def chain(n: int = 8) -> list[StoredEntry]:
    out, prev = [], ZERO_HASH
    for no in range(1, n + 1):
        part = make_entry(KEY, node=NODE, alibi_no=no, record_id=f"w-{no}", device="bridge-1",
                          weighed_at_ns=1_700_000_000_000_000_000 + no,
                          data={"gross": str(24000 + no), "tare": "8420.5", "tare_preset": False, "net": None,
                                "unit": "kg", "scale_serial": "B1", "instrument_alibi": f"A{no}"}, prev_hash=prev)
        out.append(StoredEntry(position=no, body=part.body, hash=part.hash, sig=part.sig))
        prev = part.hash
    return out


def kinds(entries: list[StoredEntry], **kw: object) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.kind, p.entries) for p in check_chain(entries, KEY.public_key(), node=NODE, **kw).problems]  # type: ignore[arg-type]


def forged(position: int, prev: str, no: int | None = None, key: object = FORGER) -> StoredEntry:
    body = canonical_json({"v": 1, "node": NODE, "alibi_no": no or position, "record_id": "fake", "device": "bridge-1",
                           "weighed_at_ns": 1, "gross": "1", "tare": None, "tare_preset": None, "net": None,
                           "unit": "kg", "scale_serial": None, "instrument_alibi": None, "prev_hash": prev}).decode()
    return StoredEntry(position=position, body=body, hash=body_hash(body), sig=sign(key, body.encode()))  # type: ignore[arg-type]


def alter_body(c: list[StoredEntry]) -> list[StoredEntry]:
    c[2] = replace(c[2], body=c[2].body.replace('"gross":"24003"', '"gross":"29003"'))
    return c


def alter_body_and_hash(c: list[StoredEntry]) -> list[StoredEntry]:
    body = c[2].body.replace('"gross":"24003"', '"gross":"29003"')
    c[2] = replace(c[2], body=body, hash=body_hash(body))
    return c


def alter_last_body_and_hash(c: list[StoredEntry]) -> list[StoredEntry]:
    body = c[7].body.replace('"gross":"24008"', '"gross":"29008"')
    c[7] = replace(c[7], body=body, hash=body_hash(body))
    return c


def change_sig(c: list[StoredEntry]) -> list[StoredEntry]:
    c[4] = replace(c[4], sig=sign(FORGER, c[4].body.encode()))
    return c


def change_hash_column(c: list[StoredEntry]) -> list[StoredEntry]:
    c[1] = replace(c[1], hash="f" * 64)
    return c


def delete_middle(c: list[StoredEntry]) -> list[StoredEntry]:
    del c[3]
    return c


def delete_and_renumber(c: list[StoredEntry]) -> list[StoredEntry]:
    del c[3]
    return [replace(e, position=e.position - 1) if e.position > 4 else e for e in c]


def delete_first(c: list[StoredEntry]) -> list[StoredEntry]:
    return c[1:]


def append_forged(c: list[StoredEntry]) -> list[StoredEntry]:
    return [*c, forged(9, c[7].hash)]


def insert_and_renumber(c: list[StoredEntry]) -> list[StoredEntry]:
    shifted = [replace(e, position=e.position + 1) if e.position >= 4 else e for e in c]
    return [*shifted[:3], forged(4, c[2].hash), *shifted[3:]]


def swap(c: list[StoredEntry]) -> list[StoredEntry]:
    c[2], c[5] = replace(c[5], position=3), replace(c[2], position=6)
    return c


def copy_twice(c: list[StoredEntry]) -> list[StoredEntry]:
    return [*c, replace(c[4], position=9)]


CASES: dict[str, tuple[Callable[[list[StoredEntry]], list[StoredEntry]], list[tuple[str, tuple[int, ...]]]]] = {
    "untouched": (lambda c: c, []),
    "body altered": (alter_body, [("altered", (3,))]),
    "body altered, hash recomputed": (alter_body_and_hash, [("altered", (3,))]),
    "last body altered, hash recomputed": (alter_last_body_and_hash, [("inserted", (8,))]),
    "signature replaced": (change_sig, [("altered", (5,))]),
    "hash column changed": (change_hash_column, [("altered", (2,))]),
    "entry deleted": (delete_middle, [("removed", (4,))]),
    "entry deleted, rest renumbered": (delete_and_renumber, [("reordered", (5, 6, 7, 8)), ("removed", (4,))]),
    "first entry deleted": (delete_first, [("removed", (1,))]),
    "forged entry appended": (append_forged, [("inserted", (9,))]),
    "forged entry inserted, rest renumbered": (insert_and_renumber,
                                               [("inserted", (4,)), ("reordered", (4, 5, 6, 7, 8))]),
    "two entries swapped": (swap, [("reordered", (3, 6))]),
    "an entry copied": (copy_twice, [("inserted", (5,))]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_tampering_is_named_with_entry_and_kind(case: str) -> None:
    tamper, expected = CASES[case]
    assert kinds(tamper(chain())) == expected


def test_an_altered_last_entry_is_altered_when_central_received_its_weighing_with_that_number() -> None:
    c = alter_last_body_and_hash(chain())
    assert kinds(c, claimed={n: f"w-{n}" for n in range(1, 9)}) == [("altered", (8,))]


def test_a_deleted_last_entry_is_named_from_the_weighings_that_arrived_with_its_number() -> None:
    c = chain()[:-1]
    assert kinds(c) == []  # nothing in the chain itself shows it …
    problems = check_chain(c, KEY.public_key(), node=NODE, claimed={n: f"w-{n}" for n in range(1, 9)}).problems
    assert [(p.kind, p.entries) for p in problems] == [("removed", (8,))]  # … the weighings table does
    assert "record w-8" in problems[0].message


def test_messages_name_the_entry() -> None:
    problems = check_chain(delete_middle(chain()), KEY.public_key(), node=NODE).problems
    assert problems[0].message == ("entry 4 missing: entry 5's prev_hash is the hash of an entry central does not "
                                   "have")
    problems = check_chain(swap(chain()), KEY.public_key(), node=NODE).problems
    assert problems[0].message == "entries 3 and 6 swapped: each is stored under the other's number"


def test_a_pruned_chain_verifies_from_its_oldest_entry() -> None:
    c = chain()[5:]
    assert kinds(c, pruned=True) == []
    assert kinds(c) == [("removed", (1, 2, 3, 4, 5))]
    check = check_chain(c, KEY.public_key(), node=NODE, pruned=True)
    assert check.head_hash == c[-1].hash


def test_entries_of_another_node_are_not_the_nodes() -> None:
    c = chain(3)
    assert kinds([*c[:2], forged(3, c[1].hash, key=KEY)]) == []  # the node's key, the node's name: fine
    other = check_chain(c, KEY.public_key(), node="mill-02").problems  # signed, but as entries of mill-01
    assert {p.kind for p in other} <= {"inserted", "altered"}
    assert sorted(n for p in other for n in p.entries) == [1, 2, 3]


def test_the_part_travels_as_json_and_parses_back() -> None:
    c = chain(2)
    part = make_entry(KEY, node=NODE, alibi_no=2, record_id="w-2", device="d", weighed_at_ns=5,
                      data={"gross": "24560", "unit": "kg"}, prev_hash=c[0].hash)
    got, body = parse_part(json.loads(json.dumps(part.to_json())))
    assert got == part
    assert body["gross"] == "24560"
    assert body["tare"] is None
    assert body["prev_hash"] == c[0].hash
    assert part.hash == body_hash(part.body)


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda p: "not a dict", "expected an object"),
    (lambda p: {**p, "no": 0}, "data.alibi.no"),
    (lambda p: {**p, "no": True}, "data.alibi.no"),
    (lambda p: {k: v for k, v in p.items() if k != "sig"}, "missing sig"),
    (lambda p: {**p, "sig": "abc"}, "data.alibi.sig"),
    (lambda p: {**p, "hash": "F" * 64}, "data.alibi.hash: expected 64 lowercase"),
    (lambda p: {**p, "hash": "0" * 64}, "not the SHA-256 of the body"),
    (lambda p: {**p, "body": "{"}, "not JSON"),
    (lambda p: {**p, "body": p["body"].replace(",", ", ", 1)}, "canonical"),
    (lambda p: {**p, "no": 3}, "is not the entry's number 3"),
])
def test_a_malformed_part_is_refused_with_the_reason(mutate: Callable[[dict[str, object]], object],
                                                     reason: str) -> None:
    part = make_entry(KEY, node=NODE, alibi_no=1, record_id="w-1", device="d", weighed_at_ns=5,
                      data={"gross": "1", "unit": "kg"}, prev_hash=ZERO_HASH).to_json()
    with pytest.raises(AlibiError) as info:
        parse_part(mutate(part))
    assert reason in info.value.reason
