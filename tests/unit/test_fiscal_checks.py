"""Central's TSE sequence checks (``central.fiscal.verify.sequence_checks``), table-driven and without a database:
a row against the nearest rows of its TSE that have a start counter, and the rows sharing one of its counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from central.fiscal.verify import TIME_TOLERANCE_S, SeqRow, sequence_checks, verdict
from protocols.tse.report import Check

T = datetime(2025, 12, 29, 9, 0, tzinfo=UTC)


def row(n: int, start: int | None, finish: int | None, *, minutes: float | None = None) -> SeqRow:
    """Transaction ``n`` started ``minutes`` (default ``n``) after T."""
    return SeqRow(id=n, tx_number=n, start_counter=start, signature_counter=finish,
                  started_at=T + timedelta(minutes=n if minutes is None else minutes))


def failed(checks: list[Check]) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in checks if c.ok is False]


CASES = [
    # (row, previous, following, twins) → the failed checks
    (row(5, 9, 10), row(4, 7, 8), row(6, 11, 12), [], []),
    (row(5, 9, 12), row(4, 7, 10), row(6, 11, 14), [], []),  # interleaved finishes: only starts must increase
    (row(5, None, 10), row(4, 7, 8), None, [], []),  # no start counter: the sequence is not checked
    (row(5, 10, 10), None, None, [], ["counters: the start's signature counter 10 is not below the finish's 10"]),
    (row(5, 7, 10), row(4, 7, 8), None, [],
     ["sequence: counter regression: start counter 7 of transaction 5 is not above 7 of transaction 4"]),
    (row(5, 9, 10), row(4, 3, 4), row(6, 8, 12), [],
     ["sequence: counter regression: start counter 9 of transaction 5 is not below 8 of transaction 6"]),
    (row(5, 9, 10), row(4, 7, 8), None, [row(9, 10, 20), row(8, 1, 9)],
     ["duplicate: signature counter used twice: 9 also in transaction 8; 10 also in transaction 9"]),
    (row(5, 9, 10, minutes=0), row(4, 7, 8, minutes=6), None, [],
     ["start_time: transaction 5 started at 2025-12-29T09:00:00Z, out of order with transaction 4 started at "
      "2025-12-29T09:06:00Z"]),
]


@pytest.mark.parametrize(("me", "previous", "following", "twins", "expected"), CASES)
def test_sequence_checks(me: SeqRow, previous: SeqRow | None, following: SeqRow | None, twins: list[SeqRow],
                         expected: list[str]) -> None:
    assert failed(sequence_checks(me, previous, following, twins)) == expected


def test_start_times_may_go_back_within_the_tolerance() -> None:
    back = TIME_TOLERANCE_S / 60 - 1  # minutes: the TSE's clock was set back a little
    assert failed(sequence_checks(row(5, 9, 10, minutes=10), row(4, 7, 8, minutes=10 + back), None)) == []


def test_a_row_is_valid_only_with_a_verified_signature_and_no_failed_check() -> None:
    good = [Check("signature", True, "verifies"), Check("qr", None, "no QR code")]
    assert verdict(good) == ("valid", None)
    assert verdict([Check("signature", None, "not checked: no key"), Check("public_key", False, "missing")]) == (
        "invalid", "signature: not checked: no key; public_key: missing")
    assert verdict([*good, Check("total", False, "11 is not 10.00")]) == ("invalid", "total: 11 is not 10.00")
