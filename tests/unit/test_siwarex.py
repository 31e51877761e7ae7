"""SIWAREX WP231 legal log codec (``protocols.siwarex``): the DR46 protocol string and its checksum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import siwarex
from protocols.errors import FrameError
from protocols.modbus import plan_reads

LogEntry = siwarex.LogEntry


@pytest.mark.parametrize(("entry", "text"), [
    (LogEntry("gross", "24560", "kg"), "G ;   24560;kg  ;  ;        "),
    (LogEntry("net", "18420", "kg", "preset_tare", "14960"), "N ;   18420;kg  ;pT;   14960"),
    (LogEntry("net", "-500", "kg", "tare", "500"), "N ;    -500;kg  ;T ;     500"),
    (LogEntry("gross", "8420.5", "t"), "G ;  8420.5;t   ;  ;        "),
])
def test_log_strings(entry: LogEntry, text: str) -> None:
    assert siwarex.format_log(entry) == text
    assert len(text) == siwarex.LOG_CHARS
    assert siwarex.parse_log(text) == entry
    assert siwarex.parse_log(text.rstrip()) == entry  # as the Modbus string codec hands it over (padding stripped)


@pytest.mark.parametrize(("text", "reason"), [
    ("X ;   24560;kg  ;  ;        ", "gross/net id 'X'"),
    ("G ;   24560;kg  ;  ", "4 fields"),
    ("G ;  24 560;kg  ;  ;        ", "is not a number"),
    ("N ;   18420;kg  ;PT;   14960", "tare id 'PT'"),
    ("N ;   18420;kg  ;pT;        ", "tare id 'pT' with tare ''"),
    ("G ;   24560;kg  ;  ;   14960", "tare id '' with tare '14960'"),
    ("G ;   24560;    ;  ;        ", "unit ''"),
])
def test_a_bad_log_string_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        siwarex.parse_log(text)


def test_checksum_is_crc16_modbus_of_the_padded_string() -> None:
    text = "N ;   18420;kg  ;pT;   14960"
    assert siwarex.checksum(text) == "B17A"
    assert siwarex.checksum(text.rstrip()) == "B17A"
    assert siwarex.checksum("G ;   24560;kg  ;  ;        ") != "B17A"


def test_the_log_registers_read_in_one_request() -> None:
    (block,) = plan_reads(siwarex.LOG_POINTS, max_gap=32)
    assert (block.address, block.count) == (siwarex.OLDEST_ID, 44)  # 6104-6147; 6110-6131 read as 0


@given(kind=st.sampled_from(["gross", "net"]),
       weight=st.from_regex(r"-?[0-9]{1,5}(\.[0-9])?", fullmatch=True),
       tare=st.one_of(st.none(), st.from_regex(r"[0-9]{1,6}(\.[0-9])?", fullmatch=True)),
       preset=st.booleans())
def test_round_trip(kind: str, weight: str, tare: str | None, preset: bool) -> None:
    tare_kind = None if tare is None else "preset_tare" if preset else "tare"
    entry = LogEntry(kind, weight, "kg", tare_kind, tare)  # type: ignore[arg-type]
    assert siwarex.parse_log(siwarex.format_log(entry).rstrip()) == entry
