"""MT-SICS codec: every response form of the device reference, garbage, framing, and round-trip properties."""

from __future__ import annotations

import string
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DeviceErrorResponse, FrameError
from protocols.mtsics import (
    WEIGHT_FORMS,
    ErrorResponse,
    IdentResponse,
    LineFramer,
    OverlongLine,
    StatusResponse,
    WeightResponse,
    encode_command,
    encode_error,
    encode_ident_response,
    encode_status_response,
    encode_weight_response,
    format_weight,
    parse_response,
)


def _weight(line: bytes, command: str, status: str, value: str, unit: str) -> tuple[bytes, WeightResponse]:
    return line, WeightResponse(command, status, Decimal(value), unit, line)


def _status(line: bytes, command: str, status: str) -> tuple[bytes, StatusResponse]:
    return line, StatusResponse(command, status, line)


# Every response form in devices.md §1 (MT-SICS), written exactly as there.
RESPONSES = [
    _weight(b"S S     100.00 g", "S", "S", "100.00", "g"),
    _weight(b"S D     129.07 g", "S", "D", "129.07", "g"),
    _status(b"S I", "S", "I"),
    _status(b"S +", "S", "+"),
    _status(b"S -", "S", "-"),
    _status(b"Z A", "Z", "A"),
    _status(b"Z I", "Z", "I"),
    _status(b"Z +", "Z", "+"),
    _status(b"Z -", "Z", "-"),
    _status(b"ZI D", "ZI", "D"),
    _status(b"ZI S", "ZI", "S"),
    _weight(b"T S      2.486 g", "T", "S", "2.486", "g"),
    _status(b"T I", "T", "I"),
    _status(b"T +", "T", "+"),
    _status(b"T -", "T", "-"),
    _weight(b"TI D      2.486 g", "TI", "D", "2.486", "g"),
    _weight(b"TA A      2.486 g", "TA", "A", "2.486", "g"),
    _status(b"TAC A", "TAC", "A"),
    _status(b"TAC I", "TAC", "I"),
    (
        b'I2 A "XS204 Excellence 220.0090 g"',
        IdentResponse("I2", "A", "XS204 Excellence 220.0090 g", b'I2 A "XS204 Excellence 220.0090 g"'),
    ),
    (b'I4 A "0123456789"', IdentResponse("I4", "A", "0123456789", b'I4 A "0123456789"')),
    (b"ES", ErrorResponse("ES", b"ES")),
    (b"ET", ErrorResponse("ET", b"ET")),
    (b"EL", ErrorResponse("EL", b"EL")),
    # weighbridge forms and odd-but-valid values
    _weight(b"S S      24560 kg", "S", "S", "24560", "kg"),
    _weight(b"S S     -12.50 g", "S", "S", "-12.50", "g"),
    _weight(b"S D          0 kg", "S", "D", "0", "kg"),
    _weight(b"S S      24.56 t", "S", "S", "24.56", "t"),
]


@pytest.mark.parametrize(("line", "expected"), RESPONSES, ids=[r[0].decode() for r in RESPONSES])
def test_parse_every_reference_response(line: bytes, expected: object) -> None:
    assert parse_response(line) == expected


@pytest.mark.parametrize(("line", "expected"), RESPONSES[:3], ids=["S S", "S D", "S I"])
def test_parse_accepts_the_terminator(line: bytes, expected: WeightResponse | StatusResponse) -> None:
    parsed = parse_response(line + b"\r\n")
    assert parsed.raw == line + b"\r\n"
    assert type(parsed) is type(expected)
    assert parsed.status == expected.status


def test_value_is_kept_exactly_as_delivered() -> None:
    parsed = parse_response(b"S S     100.00 g")
    assert isinstance(parsed, WeightResponse)
    assert isinstance(parsed.value, Decimal)
    assert str(parsed.value) == "100.00"  # not 100.0, not 100
    assert parsed.stable
    dynamic = parse_response(b"S D     129.07 g")
    assert isinstance(dynamic, WeightResponse)
    assert not dynamic.stable


def test_status_and_error_helpers() -> None:
    overload = parse_response(b"S +")
    assert isinstance(overload, StatusResponse)
    assert overload.overload
    assert not overload.underload
    error = parse_response(b"EL")
    assert isinstance(error, ErrorResponse)
    assert "logical" in error.description
    exc = error.to_exception(device="scale-1")
    assert isinstance(exc, DeviceErrorResponse)
    assert exc.code == "EL"
    assert exc.raw == b"EL"
    assert str(exc).startswith("scale-1: MT-SICS EL")


def test_ident_with_several_fields() -> None:
    parsed = parse_response(b'I1 A "0" "2.20" "2.22" "" ""')
    assert isinstance(parsed, IdentResponse)
    assert parsed.fields == ("0", "2.20", "2.22", "", "")


GARBAGE = [
    (b"\x15#?!garbage", "control character 0x15 at offset 0"),
    (b"S S     100.00 \xb5g", "non-ASCII byte 0xB5 at offset 15"),
    (b"S S     1OO.00 g", "weight field '1OO.00' is not a number"),
    (b"S S        NaN g", "weight field 'NaN' is not a number"),
    (b"S S        1E3 g", "weight field '1E3' is not a number"),
    (b"S S    100.00.0 g", "is not a number"),
    (b"S S     100.00", "needs a weight and a unit, got 1 field(s)"),
    (b"S S", "needs a weight and a unit, got 0 field(s)"),
    (b"S S     100.00 g extra", "needs a weight and a unit, got 3 field(s)"),
    (b"S S     100.00 5", "unit '5' is not a unit"),
    (b"S I 12", "unexpected data '12' after 'S I'"),
    (b"S X", "unknown response 'S X'"),
    (b"XY 1 g", "unknown response 'XY 1'"),
    (b"XY", "neither an error code"),
    (b"I2 A", "'I2 A' without text"),
    (b"", "empty line"),
    (b"   ", "empty line"),
    (b"Z A\rZ A", "control character 0x0D at offset 3"),
]


@pytest.mark.parametrize(("line", "reason"), GARBAGE, ids=[repr(g[0]) for g in GARBAGE])
def test_garbage_raises_frame_error_with_precise_reason(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_response(line)
    assert reason in info.value.reason
    assert info.value.raw == line
    assert info.value.reason in str(info.value)
    assert repr(line) in str(info.value)


def test_frame_error_names_the_device() -> None:
    with pytest.raises(FrameError) as info:
        parse_response(b"S S  abc g")
    named = info.value.with_device("weighbridge-1")
    assert str(named).startswith("weighbridge-1: MT-SICS: 'S S' weight field 'abc'")
    assert named.raw == b"S S  abc g"


@given(st.binary(max_size=40))
def test_parse_raises_nothing_but_frame_error(data: bytes) -> None:
    error: FrameError | None = None
    try:
        parse_response(data)
    except FrameError as exc:
        error = exc
    if error is not None:
        assert error.raw == data


# ---------------------------------------------------------------------------------------------- encoding
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("SI",), b"SI\r\n"),
        (("S",), b"S\r\n"),
        (("@",), b"@\r\n"),
        (("I4",), b"I4\r\n"),
        (("TA", "2.486", "g"), b"TA 2.486 g\r\n"),
    ],
)
def test_encode_command(args: tuple[str, ...], expected: bytes) -> None:
    assert encode_command(*args) == expected


@pytest.mark.parametrize("args", [("si",), ("",), ("S\r",), ("S I",), ("TA", "2\n"), ("TA", ""), ("TA", "2,5°")])
def test_encode_command_rejects_bad_input(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="MT-SICS command"):
        encode_command(*args)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (encode_weight_response("S", "S", Decimal("100.00"), "g"), b"S S     100.00 g\r\n"),
        (encode_weight_response("S", "D", Decimal("129.07"), "g"), b"S D     129.07 g\r\n"),
        (encode_weight_response("T", "S", Decimal("2.486"), "g"), b"T S      2.486 g\r\n"),
        (encode_weight_response("TA", "A", Decimal("2.486"), "g"), b"TA A      2.486 g\r\n"),
        (encode_weight_response("S", "S", Decimal(24560), "kg"), b"S S      24560 kg\r\n"),
        (encode_status_response("S", "I"), b"S I\r\n"),
        (encode_status_response("TAC", "A"), b"TAC A\r\n"),
        (encode_ident_response("I4", "0123456789"), b'I4 A "0123456789"\r\n'),
        (encode_ident_response("I2", "XS204 Excellence 220.0090 g"), b'I2 A "XS204 Excellence 220.0090 g"\r\n'),
        (encode_error("ES"), b"ES\r\n"),
    ],
)
def test_encoders_reproduce_reference_frames(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


def test_encoders_reject_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        format_weight(Decimal("12345678901"))
    with pytest.raises(ValueError, match="not a finite number"):
        format_weight(Decimal("NaN"))
    with pytest.raises(ValueError, match="not an MT-SICS weight response"):
        encode_weight_response("Z", "A", Decimal(1), "g")
    with pytest.raises(ValueError, match="not an MT-SICS status response"):
        encode_status_response("S", "S")
    with pytest.raises(ValueError, match="without quotes"):
        encode_ident_response("I2", 'say "hi"')
    with pytest.raises(ValueError, match="error code"):
        encode_error("EX")


_DECIMALS = st.builds(
    lambda digits, places: Decimal(digits).scaleb(-places),
    st.integers(min_value=-99_999_999, max_value=999_999_999),
    st.integers(min_value=0, max_value=6),
).filter(lambda value: len(format(value, "f")) <= 10)
_UNITS = st.sampled_from(["g", "kg", "t", "lb", "oz", "ct", "mg"]) | st.text(
    alphabet=string.ascii_letters + "%/", min_size=1, max_size=4
)


@given(form=st.sampled_from(sorted(WEIGHT_FORMS)), value=_DECIMALS, unit=_UNITS)
def test_weight_line_round_trips(form: tuple[str, str], value: Decimal, unit: str) -> None:
    command, status = form
    line = encode_weight_response(command, status, value, unit)
    assert len(line) == len(command) + len(status) + 2 + 10 + 1 + len(unit) + 2
    parsed = parse_response(line)
    assert isinstance(parsed, WeightResponse)
    assert (parsed.command, parsed.status, parsed.unit) == (command, status, unit)
    assert parsed.value == value
    assert format(parsed.value, "f") == format(value, "f")  # same digits, same decimal places


# ---------------------------------------------------------------------------------------------- framing
def test_framer_joins_chunks_and_keeps_partial_data() -> None:
    framer = LineFramer()
    assert framer.feed(b"S S    ") == []
    assert framer.pending_bytes == 7
    assert framer.feed(b" 100.00 g\r\nS I\r") == [b"S S     100.00 g"]
    assert framer.feed(b"\n") == [b"S I"]
    assert framer.pending_bytes == 0


def test_framer_tolerates_lone_lf_and_skips_empty_lines() -> None:
    framer = LineFramer()
    assert framer.feed(b"Z A\n\r\n\nS I\r\n") == [b"Z A", b"S I"]


def test_framer_line_of_exactly_max_bytes_passes_even_with_cr_pending() -> None:
    framer = LineFramer(max_line_bytes=8)
    assert framer.feed(b"12345678\r") == []
    assert framer.feed(b"\n") == [b"12345678"]


def test_framer_overlong_line_is_a_marker_in_stream_order() -> None:
    framer = LineFramer(max_line_bytes=8)
    lines = framer.feed(b"S I\r\n" + b"X" * 20 + b"\r\nZ A\r\n")
    assert lines == [b"S I", b"X" * 8, b"Z A"]
    assert [isinstance(line, OverlongLine) for line in lines] == [False, True, False]
    with pytest.raises(FrameError) as info:
        parse_response(lines[1])
    assert info.value.raw == b"X" * 8
    assert type(info.value.raw) is bytes
    assert "longer than 8 bytes" in info.value.reason
    assert parse_response(lines[2]) == StatusResponse("Z", "A", b"Z A")


def test_framer_overlong_line_across_chunks_is_dropped_up_to_its_lf() -> None:
    framer = LineFramer(max_line_bytes=8)
    assert framer.feed(b"S I\r\n" + b"Y" * 9) == [b"S I", b"Y" * 8]  # reported as soon as the limit is passed
    assert framer.pending_bytes == 0
    assert framer.feed(b"YYYY") == []  # still inside the overlong line: dropped, reported once
    assert framer.feed(b"YY\r\nS I\r\n") == [b"S I"]
    second = framer.feed(b"Z" * 12 + b"\r\nT I\r\n")  # the next overlong line is reported again
    assert second == [b"Z" * 8, b"T I"]
    assert isinstance(second[0], OverlongLine)


def test_framer_rejects_nonsense_limit() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineFramer(max_line_bytes=0)


@given(
    lines=st.lists(st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b and not b.endswith(b"\r"))),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_framer_result_does_not_depend_on_chunking(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\r\n" for line in lines)
    framer = LineFramer()
    out: list[bytes] = []
    start = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        out += framer.feed(stream[start:cut])
        start = max(start, cut)
    out += framer.feed(stream[start:])
    assert out == lines
    assert framer.pending_bytes == 0
