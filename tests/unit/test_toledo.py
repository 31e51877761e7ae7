"""Toledo Continuous codec (vectors of the device reference, byte for byte), framer, and the indicator simulator."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import FrameError
from protocols.sim.toledo import GARBAGE, TRUNCATED_BYTES, ToledoIndicator
from protocols.toledo import ToledoFrame, ToledoFramer, checksum, decode_frame, encode_frame


def frame(swa: int, swb: int, swc: int, weight: bytes, tare: bytes, chk: int | None = None) -> bytes:
    body = bytes((0x02, swa, swb, swc)) + weight + tare + b"\r"
    return body + bytes((checksum(body) if chk is None else chk,))


# the device reference's vectors, checksums written out as printed there
GROSS_24560 = bytes.fromhex("02 2A 30 20 30 32 34 35 36 30 30 30 30 30 30 30 0D 26")
NET_18420 = bytes.fromhex("02 2A 31 20") + b"018420" + b"014960" + bytes.fromhex("0D 13")
MOTION_120_5 = bytes.fromhex("02 2B 38 20") + b"001205" + b"000000" + bytes.fromhex("0D 26")
NEGATIVE = frame(0x2A, 0x32, 0x20, b"000500", b"000000")
OUT_OF_RANGE = frame(0x2A, 0x34, 0x20, b"070000", b"000000")


# ---------------------------------------------------------------------------------------------- vectors
@pytest.mark.parametrize(
    ("raw", "weight", "gross", "tare", "net", "flags"),
    [
        (GROSS_24560, "24560", "24560", "0", "24560", {"stable"}),
        (NET_18420, "18420", "33380", "14960", "18420", {"stable", "is_net"}),
        (MOTION_120_5, "120.5", "120.5", "0.0", "120.5", {"motion"}),
        (NEGATIVE, "-500", "-500", "0", "-500", {"stable", "negative"}),
        (OUT_OF_RANGE, "70000", "70000", "0", "70000", {"out_of_range"}),
    ],
    ids=["gross-24560", "net-18420-tare-14960", "motion-120.5", "negative", "out-of-range"],
)
def test_reference_vectors(raw: bytes, weight: str, gross: str, tare: str, net: str, flags: set[str]) -> None:
    assert len(raw) == 18
    decoded = decode_frame(raw)
    assert (decoded.weight, decoded.gross, decoded.tare, decoded.net) == tuple(
        Decimal(v) for v in (weight, gross, tare, net)
    )
    assert str(decoded.weight) == weight  # exactly as delivered: "120.5", not 120.50 or 1.205E+2
    for flag in ("stable", "is_net", "motion", "negative", "out_of_range"):
        assert getattr(decoded, flag) == (flag in flags), flag
    assert decoded.unit == "kg"
    assert decoded.increment == 1
    assert (decoded.not_zeroed, decoded.print_request, decoded.expanded) == (False, False, False)
    assert decoded.raw == raw
    assert decoded.encode() == raw  # and back, byte for byte


def test_encode_reproduces_the_vectors() -> None:
    assert encode_frame(Decimal(24560)) == GROSS_24560
    assert encode_frame(Decimal(18420), tare=Decimal(14960), net=True) == NET_18420
    assert encode_frame(Decimal("120.5"), decimal_code=3, motion=True) == MOTION_120_5
    assert encode_frame(Decimal(-500))[2] == 0x32
    assert encode_frame(Decimal(70000), out_of_range=True)[2] == 0x34


@pytest.mark.parametrize(
    ("code", "digits", "value"),
    [
        (0, b"000246", "24600"),  # XXXX00: two dummy zeros, not sent
        (1, b"002456", "24560"),  # XXXXX0
        (2, b"024560", "24560"),  # XXXXXX
        (3, b"001205", "120.5"),  # XXXXX.X
        (4, b"000000", "0.00"),  # XXXX.XX
        (5, b"012345", "12.345"),
        (6, b"012345", "1.2345"),
        (7, b"123456", "1.23456"),
    ],
)
def test_decimal_point_codes(code: int, digits: bytes, value: str) -> None:
    decoded = decode_frame(frame(0x28 | code, 0x30, 0x20, digits, b"000000"))
    assert str(decoded.weight) == value
    assert decoded.decimal_code == code
    assert encode_frame(Decimal(value), decimal_code=code)[4:10] == digits


@pytest.mark.parametrize(
    ("swa", "swb", "swc", "attribute", "expected"),
    [
        (0x32, 0x30, 0x20, "increment", 2),
        (0x3A, 0x30, 0x20, "increment", 5),
        (0x2A, 0x20, 0x20, "unit", "lb"),
        (0x2A, 0x70, 0x20, "not_zeroed", True),
        (0x2A, 0x30, 0x28, "print_request", True),
        (0x2A, 0x30, 0x30, "expanded", True),
    ],
)
def test_status_bits(swa: int, swb: int, swc: int, attribute: str, expected: object) -> None:
    assert getattr(decode_frame(frame(swa, swb, swc, b"001000", b"000000")), attribute) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (GROSS_24560[:-1] + b"\x27", "checksum expected 0x26, got 0x27"),
        (GROSS_24560[:17], "a frame has 18 bytes, got 17"),
        (b"\x03" + GROSS_24560[1:], "expected STX"),
        (GROSS_24560[:16] + b"\n" + GROSS_24560[17:], "byte 16 is 0x0A, expected CR"),
        (frame(0x2A, 0x30, 0x20, b"02A560", b"000000"), "weight field b'02A560' is not 6 digits"),
        (frame(0x2A, 0x30, 0x20, b"024560", b"00 000"), "tare field"),
        (frame(0x0A, 0x30, 0x20, b"024560", b"000000"), "SWA 0x0A lacks bit 5"),
        (frame(0x2A, 0x10, 0x20, b"024560", b"000000"), "SWB 0x10 lacks bit 5"),
        (frame(0x2A, 0x30, 0x00, b"024560", b"000000"), "SWC 0x00 lacks bit 5"),
        (frame(0x6A, 0x30, 0x20, b"024560", b"000000"), "bit 6 set"),
        (frame(0x22, 0x30, 0x20, b"024560", b"000000"), "increment bits 3-4 are 00"),
        (bytes(b | 0x80 if i == 2 else b for i, b in enumerate(GROSS_24560)), "bit 7 set (parity"),
    ],
)
def test_bad_frames(raw: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message.replace("(", r"\(")) as info:
        decode_frame(raw)
    assert info.value.raw == raw


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": Decimal("1.25"), "decimal_code": 3}, "too many decimals"),
        ({"weight": Decimal(1_000_000)}, "more than 6 digits"),
        ({"weight": Decimal(24560), "decimal_code": 0}, "too many decimals"),  # not a multiple of 100
        ({"weight": Decimal(1), "tare": Decimal(-1)}, "must not be negative"),
        ({"weight": Decimal(1), "increment": 3}, "increment 3"),
        ({"weight": Decimal(1), "decimal_code": 8}, "decimal_code 8"),
        ({"weight": Decimal("NaN")}, "not a finite number"),
    ],
)
def test_encode_rejects_what_does_not_fit(kwargs: dict[str, object], message: str) -> None:
    weight = kwargs.pop("weight")
    with pytest.raises(ValueError, match=message):
        encode_frame(weight, **kwargs)  # type: ignore[arg-type]


frames = st.builds(
    lambda code, digits, tare_digits, negative, **flags: ToledoFrame(
        weight=_value(digits, code, negative), tare=_value(tare_digits, code, False), decimal_code=code, **flags
    ),
    st.integers(0, 7),
    st.integers(0, 999_999),
    st.integers(0, 999_999),
    st.booleans(),
    is_net=st.booleans(),
    increment=st.sampled_from([1, 2, 5]),
    motion=st.booleans(),
    out_of_range=st.booleans(),
    unit=st.sampled_from(["kg", "lb"]),
    not_zeroed=st.booleans(),
    print_request=st.booleans(),
    expanded=st.booleans(),
)


def _value(digits: int, code: int, negative: bool) -> Decimal:
    value = Decimal(digits * 10 ** (2 - code)) if code <= 2 else Decimal(digits).scaleb(2 - code)
    return value.copy_negate() if negative else value


@given(frames)
def test_encode_decode_round_trip(original: ToledoFrame) -> None:
    raw = original.encode()
    assert len(raw) == 18
    assert (sum(raw) & 0x7F) == 0  # the checksum makes the 7-bit sum zero
    assert all(byte < 0x80 for byte in raw)
    decoded = decode_frame(raw)
    assert decoded == original
    assert decoded.encode() == raw
    assert decoded.gross - decoded.tare == decoded.net


@given(st.binary(min_size=18, max_size=18))
def test_decode_raises_only_frame_errors(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(raw)


# ---------------------------------------------------------------------------------------------- framer
def test_framer_resyncs_after_garbage_and_truncation() -> None:
    framer = ToledoFramer()
    stream = b"\xff\x00zz" + GROSS_24560 + NET_18420[:9] + MOTION_120_5 + b"\r\n" + NET_18420
    got = []
    for i in range(0, len(stream), 5):  # in odd pieces
        got += framer.feed(stream[i : i + 5])
    assert got == [GROSS_24560, MOTION_120_5, NET_18420]
    assert framer.dropped_bytes == 4 + 9 + 2
    assert framer.pending_bytes == 0
    assert framer.frames == 3


def test_framer_hands_bad_checksums_to_the_decoder() -> None:
    bad = GROSS_24560[:-1] + b"\x00"
    framer = ToledoFramer()
    assert framer.feed(bad + NET_18420) == [bad, NET_18420]
    with pytest.raises(FrameError, match="checksum"):
        decode_frame(bad)


def test_framer_checksum_byte_may_look_like_stx() -> None:
    tricky = encode_frame(Decimal(999998))  # digit sum 53: its checksum is 0x02, the value of STX
    assert tricky[17] == 0x02
    framer = ToledoFramer()
    assert framer.feed(tricky + GROSS_24560) == [tricky, GROSS_24560]
    assert framer.dropped_bytes == 0


valid_frames = st.lists(st.sampled_from([GROSS_24560, NET_18420, MOTION_120_5, NEGATIVE, OUT_OF_RANGE]), max_size=8)
noise = st.binary(max_size=12).map(lambda b: bytes(x for x in b if x != 0x02))  # garbage without STX


@given(st.lists(st.tuples(noise, st.sampled_from([GROSS_24560, NET_18420, MOTION_120_5])), max_size=8),
       st.lists(st.integers(1, 40), min_size=1, max_size=10))  # fmt: skip
def test_framer_finds_every_frame_between_garbage(pieces: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    stream = b"".join(garbage + raw for garbage, raw in pieces)
    framer = ToledoFramer()
    got: list[bytes] = []
    position, index = 0, 0
    while position < len(stream):
        size = cuts[index % len(cuts)]
        got += framer.feed(stream[position : position + size])
        position, index = position + size, index + 1
    assert got == [raw for _, raw in pieces]
    assert framer.dropped_bytes == sum(len(garbage) for garbage, _ in pieces)


@given(st.binary(max_size=200))
def test_framer_never_raises_and_keeps_less_than_a_frame(data: bytes) -> None:
    framer = ToledoFramer()
    for candidate in framer.feed(data):
        assert len(candidate) == 18
        assert candidate[0] == 0x02
        assert candidate[16] == 0x0D
    assert framer.pending_bytes < 18


# ---------------------------------------------------------------------------------------------- simulator
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def at(self, offset_s: float) -> None:
        self.now = 100.0 + offset_s


# default load cycle: empty 3 s, driving on 2 s, settled 4 s, driving off 2 s -> 11 s a truck
SETTLED, CYCLE = 6.0, 11.0


def test_indicator_reproduces_the_reference_frames() -> None:
    clock = FakeClock()
    indicator = ToledoIndicator(trucks=[14960, 33380, 500], seed=1, clock=clock)
    clock.at(1.0)
    assert decode_frame(indicator.frame()).weight == 0
    clock.at(SETTLED)
    assert indicator.frame() == encode_frame(Decimal(14960))
    indicator.handle_command(ord("T"))  # tare the first truck
    clock.at(CYCLE + SETTLED)
    assert indicator.frame() == NET_18420  # the next one: net 18420, tare 14960
    indicator.handle_command(ord("C"))
    assert indicator.frame() == frame(0x2A, 0x30, 0x20, b"033380", b"000000")
    clock.at(2 * CYCLE + SETTLED)  # 500 kg on the bridge, within the zero range: Z zeroes it
    indicator.handle_command(ord("Z"))
    assert decode_frame(indicator.frame()).weight == 0
    clock.at(3 * CYCLE + 1.0)  # empty bridge: 500 kg below zero
    assert indicator.frame() == NEGATIVE


def test_indicator_motion_overload_and_not_zeroed() -> None:
    clock = FakeClock()
    indicator = ToledoIndicator(trucks=[24560, 70000], seed=2, clock=clock, zeroed_at_power_up=False)
    clock.at(4.0)  # driving on
    moving = decode_frame(indicator.frame())
    assert (moving.motion, moving.stable) == (True, False)
    assert moving.raw[2] & 0x08
    assert moving.not_zeroed
    clock.at(SETTLED)
    assert indicator.frame() == frame(0x2A, 0x70, 0x20, b"024560", b"000000")  # bit 6: not zeroed
    clock.at(CYCLE + 1.0)
    indicator.handle_command(ord("Z"))
    clock.at(CYCLE + SETTLED)  # 70 t on a 60 t bridge
    assert indicator.frame() == OUT_OF_RANGE


def test_indicator_tare_waits_for_stability() -> None:
    clock = FakeClock()
    indicator = ToledoIndicator(trucks=[24560], seed=3, clock=clock)
    clock.at(4.0)  # moving: the tare happens once the truck stands still
    indicator.handle_command(ord("T"))
    assert not decode_frame(indicator.frame()).is_net
    clock.at(SETTLED)
    settled = decode_frame(indicator.frame())
    assert (settled.is_net, settled.weight, settled.tare) == (True, 0, 24560)


def test_indicator_garbage_every_nth_frame_and_pace() -> None:
    clock = FakeClock()
    indicator = ToledoIndicator(trucks=[24560], clock=clock, garbage_every=3, baudrate=9600)
    assert indicator.frame_interval_s == pytest.approx(0.01875)
    assert ToledoIndicator(baudrate=19200, bits_per_byte=11).frame_interval_s == pytest.approx(18 * 11 / 19200)
    sent = [indicator.frame() for _ in range(7)]
    assert [len(f) for f in sent] == [18, 18, 12, 18, 18, 12, 18]
    assert sent[2] == sent[0][:TRUNCATED_BYTES] + GARBAGE
    framer = ToledoFramer()
    assert len(framer.feed(b"".join(sent))) == 5
    assert framer.dropped_bytes == 2 * (TRUNCATED_BYTES + len(GARBAGE))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decimal_code": 9}, "decimal_code 9"),
        ({"increment": 4}, "increment 4"),
        ({"baudrate": 0}, "baudrate 0"),
        ({"garbage_every": -1}, "garbage_every"),
        ({"trucks": [0]}, "truck weights"),
    ],
)
def test_indicator_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ToledoIndicator(**options)  # type: ignore[arg-type]
