"""Sartorius SBI codec (the line forms of the device reference), command framing, and the scale simulator."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DeviceErrorResponse, FrameError
from protocols.sartorius import (
    COMMANDS,
    SbiCommandFramer,
    SbiStatus,
    SbiWeight,
    format_error,
    format_sbi,
    format_status,
    format_text,
    format_weight,
    parse_sbi,
    parse_sbi_text,
)
from protocols.sim.sartorius import SartoriusScale
from protocols.sim.weighbridge import GARBAGE_LINE


# ---------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"+   123.56 g  \r\n", SbiWeight(Decimal("123.56"), "g")),
        (b"+   123.56    \r\n", SbiWeight(Decimal("123.56"), None)),  # unit blank: not stable
        (b"-     0.50 kg \r\n", SbiWeight(Decimal("-0.50"), "kg")),
        (b"+      253 pcs\r\n", SbiWeight(Decimal(253), "pcs")),  # no decimal point: none in the value
        (b"     12.30 g  \r\n", SbiWeight(Decimal("12.30"), "g")),  # blank sign: positive
        (b"+123456.78 g  \r\n", SbiWeight(Decimal("123456.78"), "g")),  # value from position 2
        (b"+   123.56 g  ", SbiWeight(Decimal("123.56"), "g")),  # without CR LF
        (b"      High    \r\n", SbiStatus("high")),
        (b"      Low     \r\n", SbiStatus("low")),
        (b"G#    +   123.56 g  \r\n", SbiWeight(Decimal("123.56"), "g", id="G#")),
        (b"N     +    98.06 g  \r\n", SbiWeight(Decimal("98.06"), "g", id="N")),
        (b"T     +    25.50 g  \r\n", SbiWeight(Decimal("25.50"), "g", id="T")),
        (b"PT2   +    25.50 g  \r\n", SbiWeight(Decimal("25.50"), "g", id="PT2")),
        (b"N     +    98.06    \r\n", SbiWeight(Decimal("98.06"), None, id="N")),
        (b"Stat        High    \r\n", SbiStatus("high", id="Stat")),
        (b"Stat        Low     \r\n", SbiStatus("low", id="Stat")),
    ],
)
def test_parse(line: bytes, expected: SbiWeight | SbiStatus) -> None:
    parsed = parse_sbi(line)
    assert parsed == expected
    assert parsed.raw == line
    assert str(getattr(parsed, "value", "")) == str(getattr(expected, "value", ""))  # "0.50" stays "0.50"


def test_weight_properties() -> None:
    stable = parse_sbi(b"N     +    98.06 g  \r\n")
    assert isinstance(stable, SbiWeight)
    assert (stable.stable, stable.kind) == (True, "net")
    moving = parse_sbi(b"+   123.56    \r\n")
    assert isinstance(moving, SbiWeight)
    assert (moving.stable, moving.kind, moving.unit) == (False, None, None)
    assert [parse_sbi(f"{i.ljust(6)}+     1.00 g  ".encode()).kind for i in ("G#", "N", "T", "PT2")] == [  # type: ignore[union-attr]
        "gross", "net", "tare", "preset_tare"
    ]  # fmt: skip
    high = parse_sbi(b"      High    \r\n")
    assert isinstance(high, SbiStatus)
    assert (high.overload, high.underload) == (True, False)


@pytest.mark.parametrize(
    ("line", "code"),
    [(b"   Err 101    \r\n", "Err 101"), (b"   Err  54    \r\n", "Err 54"), (b"Stat     Err 101    \r\n", "Err 101")],
)
def test_error_lines_raise_device_error(line: bytes, code: str) -> None:
    with pytest.raises(DeviceErrorResponse) as info:
        parse_sbi(line)
    assert info.value.code == code
    assert info.value.raw == line


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"+   123.56 g \r\n", "13 characters before CR LF, expected 14 or 20"),
        (b"", "0 characters"),
        (b"*   123.56 g  \r\n", "sign '\\*'"),
        (b"+   12a.56 g  \r\n", "value field"),
        (b"+   123.56 g  x\r\n", "15 characters"),
        (b"+  123.56  g  \r\n", "value field"),  # not right-aligned
        (b"+   123.5.6 g \r\n", "value field"),
        (b"+   123.56xg  \r\n", "position 11"),
        (b"+   123.56  g \r\n", "unit field"),  # not left-aligned
        (b"+   123.56 k g\r\n", "unit field"),
        (b"+   12\x0056 g  \r\n", "byte 0x00 at offset 6"),
        (b"+   123.56 \xb5g \r\n", "byte 0xB5"),
        (b"      HIGH    \r\n", "value field"),
        (b"   Err 1O1    \r\n", "value field"),
        (b"XX    +   123.56 g  \r\n", "id 'XX'"),
        (b"      +   123.56 g  \r\n", "id ''"),
        (b"N        Err 101    \r\n", "error line with id 'N'"),
        (b"N           High    \r\n", "status line with id 'N'"),
        (b"Stat  +   123.56 g  \r\n", "'Stat' on a line that is no status"),
    ],
)
def test_parse_rejects(line: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message) as info:
        parse_sbi(line)
    assert info.value.raw == line


def test_identification_text() -> None:
    assert parse_sbi_text(b"SIWADCP-1-    \r\n") == "SIWADCP-1-"
    assert format_text("SIM-SBI 150kg") == b"SIM-SBI 150kg \r\n"
    assert format_text("91234567", long_form=True) == b"91234567            \r\n"
    with pytest.raises(FrameError, match="empty"):
        parse_sbi_text(b"              \r\n")
    with pytest.raises(ValueError, match="1 to 14"):
        format_text("x" * 15)


# ---------------------------------------------------------------------------------------------- encoding
def test_format_reproduces_the_reference_lines() -> None:
    assert format_weight(Decimal("123.56"), "g") == b"+   123.56 g  \r\n"
    assert format_weight(Decimal("123.56"), None) == b"+   123.56    \r\n"
    assert format_status("high") == b"      High    \r\n"
    assert format_status("low") == b"      Low     \r\n"
    assert format_error(101) == b"   Err 101    \r\n"
    assert format_error(54) == b"   Err  54    \r\n"
    assert format_weight(Decimal("123.56"), "g", id="G#") == b"G#    +   123.56 g  \r\n"
    assert format_weight(Decimal("25.50"), "g", id="PT2") == b"PT2   +    25.50 g  \r\n"
    assert format_status("high", long_form=True) == b"Stat        High    \r\n"
    assert format_error(101, long_form=True) == b"Stat     Err 101    \r\n"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: format_weight(Decimal("123456.789"), "g"), "does not fit"),
        (lambda: format_weight(Decimal("1"), "kg g"), "unit"),
        (lambda: format_weight(Decimal("1"), ""), "unit"),
        (lambda: format_weight(Decimal("1"), "g", id="X"), "id 'X'"),
        (lambda: format_weight(Decimal("Inf"), "g"), "finite"),
        (lambda: format_error(1000), "error code"),
        (lambda: format_status("over"), "status"),  # type: ignore[arg-type]
        (lambda: format_sbi(SbiStatus("high", id="N")), "status id"),
    ],
)
def test_format_rejects(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


units = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=3)
values = st.decimals(min_value=-99999, max_value=99999, places=2, allow_nan=False, allow_infinity=False)
readings = st.one_of(
    st.builds(SbiWeight, values, st.none() | units, st.none() | st.sampled_from(["G#", "N", "T", "PT2"])),
    st.builds(SbiStatus, st.sampled_from(["high", "low"]), st.sampled_from([None, "Stat"])),
)


@given(readings)
def test_format_parse_round_trip(reading: SbiWeight | SbiStatus) -> None:
    line = format_sbi(reading)
    assert len(line) == (22 if reading.id else 16)
    assert line.endswith(b"\r\n")
    parsed = parse_sbi(line)
    assert parsed == reading
    assert format_sbi(parsed) == line
    if isinstance(reading, SbiWeight):
        assert str(parsed.value) == str(reading.value)  # type: ignore[union-attr]


@given(st.binary(max_size=24))
def test_parse_raises_only_protocol_errors(line: bytes) -> None:
    with contextlib.suppress(FrameError, DeviceErrorResponse):
        parse_sbi(line)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=14, max_size=14))
def test_every_parsed_line_formats_back(text: str) -> None:
    try:
        parsed = parse_sbi(text.encode())
    except (FrameError, DeviceErrorResponse):
        return
    again = parse_sbi(format_sbi(parsed))
    assert again == parsed


# ---------------------------------------------------------------------------------------------- commands
def test_command_bytes() -> None:
    assert COMMANDS == {
        "print": b"\x1bP", "tare_zero": b"\x1bT", "tare": b"\x1bU", "zero": b"\x1bV",
        "model": b"\x1bx1_", "serial": b"\x1bx2_",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "commands", "dropped"),
    [
        (b"\x1bP", [b"P"], 0),
        (b"\x1bP\r\n\x1bx1_\r\n\x1bx2_", [b"P", b"x1_", b"x2_"], 0),  # CR LF optional, not counted
        (b"junk\x1bT", [b"T"], 4),
        (b"\x1bx1\x1bP", [b"P"], 3),  # format 2 cut off by the next ESC
        (b"\x1b\x1bV", [b"V"], 1),
        (b"\x1b1\x1bU", [b"U"], 2),  # ESC + digit: no command
        (b"\x1bx" + b"1" * 25 + b"_\x1bP", [b"P"], 28),  # longer than 20 bytes
        (b"\x1bp_\x1bs9_", [b"p_", b"s9_"], 0),
        (b"\x1bxA_\x1bP", [b"P"], 4),
    ],
)
def test_command_framer(data: bytes, commands: list[bytes], dropped: int) -> None:
    framer = SbiCommandFramer()
    assert framer.feed(data) == commands
    assert framer.dropped_bytes == dropped


@given(st.lists(st.sampled_from(list(COMMANDS.values())), max_size=10), st.integers(1, 7), st.booleans())
def test_command_framer_in_any_pieces(sent: list[bytes], piece: int, crlf: bool) -> None:
    stream = b"".join(command + (b"\r\n" if crlf else b"") for command in sent)
    framer = SbiCommandFramer()
    got = [c for i in range(0, len(stream), piece) for c in framer.feed(stream[i : i + piece])]
    assert got == [command[1:] for command in sent]
    assert framer.dropped_bytes == 0


@given(st.binary(max_size=60))
def test_command_framer_never_raises(data: bytes) -> None:
    for command in SbiCommandFramer().feed(data):
        assert 1 <= len(command) < 20


# ---------------------------------------------------------------------------------------------- simulator
class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    def at(self, offset_s: float) -> None:
        self.now = 50.0 + offset_s


SETTLED, CYCLE = 6.0, 11.0  # default cycle: empty 3 s, on 2 s, settled 4 s, off 2 s


def _scale(clock: FakeClock, **options: object) -> SartoriusScale:
    options.setdefault("loads", [Decimal("25.50")])
    options.setdefault("seed", 1)
    return SartoriusScale(clock=clock, **options)  # type: ignore[arg-type]


def _print(scale: SartoriusScale) -> list[bytes]:
    return scale.handle_command(b"P")


def test_scale_prints_stable_and_unstable_weights() -> None:
    clock = FakeClock()
    scale = _scale(clock)
    clock.at(1.0)
    assert _print(scale) == [b"+     0.00 kg \r\n"]
    clock.at(4.0)  # the sack is being put on
    (moving,) = _print(scale)
    parsed = parse_sbi(moving)
    assert isinstance(parsed, SbiWeight)
    assert (parsed.unit, parsed.stable) == (None, False)
    clock.at(SETTLED)
    assert _print(scale) == [b"+    25.50 kg \r\n"]
    assert scale.handle_command(b"x1_") == [b"SIM-SBI 150kg \r\n"]
    assert scale.handle_command(b"x2_") == [b"91234567      \r\n"]
    assert scale.handle_command(b"Q") == []  # beep: nothing printed


def test_scale_tare_then_net_in_both_forms() -> None:
    clock = FakeClock()
    short = _scale(clock, loads=[Decimal("25.50"), Decimal("40.00")])
    long = _scale(clock, loads=[Decimal("25.50"), Decimal("40.00")], form=22)
    clock.at(4.0)  # moving: both tare once the sack lies still
    assert short.handle_command(b"U") == []
    assert long.handle_command(b"T") == []  # outside the zero range: T tares
    clock.at(SETTLED)
    assert _print(short) == [b"+     0.00 kg \r\n"]
    clock.at(CYCLE + SETTLED)
    assert _print(short) == [b"+    14.50 kg \r\n"]
    assert _print(long) == [b"G#    +    40.00 kg \r\n", b"T     +    25.50 kg \r\n", b"N     +    14.50 kg \r\n"]
    clock.at(CYCLE + 1.0)  # empty again
    assert _print(short) == [b"-    25.50 kg \r\n"]


def test_scale_preset_tare_overload_underload_and_errors() -> None:
    clock = FakeClock()
    scale = _scale(clock, loads=[Decimal(2), Decimal(200)], form=22, preset_tare_kg=Decimal("1.5"))
    clock.at(SETTLED)
    assert _print(scale) == [b"G#    +     2.00 kg \r\n", b"PT2   +     1.50 kg \r\n", b"N     +     0.50 kg \r\n"]
    scale.handle_command(b"V")  # 2 kg is within the zero range: zeroed, tare cleared
    assert _print(scale) == [b"G#    +     0.00 kg \r\n"]
    clock.at(CYCLE + 1.0)  # the 2 kg are gone: 2 kg below zero is more than 20 steps
    assert _print(scale) == [b"Stat        Low     \r\n"]
    clock.at(CYCLE + SETTLED)  # 200 kg on a 150 kg scale
    assert _print(scale) == [b"Stat        High    \r\n"]
    noisy = _scale(FakeClock(), error_every=2, garbage_every=3)
    assert [_print(noisy) for _ in range(4)] == [
        [b"+     0.00 kg \r\n"], [b"   Err 101    \r\n"], [GARBAGE_LINE], [b"   Err 101    \r\n"]
    ]  # fmt: skip


@given(st.floats(min_value=0, max_value=120, allow_nan=False), st.integers(0, 3), st.sampled_from([16, 22]))
def test_every_print_parses(offset_s: float, seed: int, form: int) -> None:
    clock = FakeClock()
    scale = SartoriusScale(seed=seed, form=form, clock=clock, random_max_kg=200)  # some loads overload it
    clock.at(offset_s)
    for line in _print(scale):
        parsed = parse_sbi(line)
        assert (parsed.id is not None) == (form == 22)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"form": 20}, "form must be 16 or 22"),
        ({"unit": "lb"}, "unit 'lb'"),
        ({"error_code": 5}, "error code 5"),
        ({"model": "x" * 15}, "1 to 14"),
        ({"error_every": -1}, "error_every"),
        ({"preset_tare_kg": 500}, "preset_tare_kg"),
        ({"loads": [0]}, "load weights"),
    ],
)
def test_scale_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _scale(FakeClock(), **options)
