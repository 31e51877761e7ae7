"""Property-based fuzzing of the device frame parsers: what a scale or meter sends is untrusted bytes too.

Property: a parser returns a value or raises its documented error — ``FrameError`` (or ``DeviceErrorResponse`` for a
well-formed error answer; ``ValueError`` where the codec documents it for a caller's mistake, e.g. the wrong number
of registers) — for any bytes, and for valid frames mutated byte by byte; framers never raise; valid frames round-trip.
Budget: the hypothesis profile (``ci`` / ``fuzz``, tests/conftest.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocols import mtsics, sartorius, siwarex, toledo
from protocols.errors import DeviceErrorResponse, FrameError, ProtocolError
from protocols.modbus.plan import ReadBlock, decode_block
from protocols.modbus.points import Point
from protocols.modbus.values import decode_point, encode_point


@st.composite
def mutate(draw: st.DrawFn, frame: bytes) -> bytes:
    out = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if op == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[pos] = draw(st.sampled_from([0x00, 0x02, 0x0D, 0x0A, 0x20, 0x2D, 0x2E, 0x39, 0x7F, 0xFF, 0xD9]))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=4) | st.just("١٢".encode()))
        elif op == "delete" and out:
            del out[pos]
    return bytes(out)


def _documented(parse: Any, raw: Any, *errors: type[BaseException]) -> Any:
    try:
        return parse(raw)
    except (FrameError, *errors):
        return None


# -- MT-SICS -------------------------------------------------------------------------------------------------------
WEIGHTS = st.decimals(min_value=-99999, max_value=99999, places=2, allow_nan=False, allow_infinity=False)


@given(value=WEIGHTS, form=st.sampled_from(sorted(mtsics.WEIGHT_FORMS)), unit=st.sampled_from(["kg", "g", "t", "lb"]))
def test_fuzz_mtsics_weights_round_trip(value: Decimal, form: tuple[str, str], unit: str) -> None:
    line = mtsics.encode_weight_response(*form, value, unit)
    parsed = mtsics.parse_response(line.rstrip(b"\r\n"))
    assert isinstance(parsed, mtsics.WeightResponse)
    assert (parsed.value, parsed.unit) == (value, unit)


@given(data=st.data())
def test_fuzz_mtsics_parse_raises_only_frame_error(data: st.DataObject) -> None:
    valid = mtsics.encode_weight_response("S", "S", data.draw(WEIGHTS), "kg").rstrip(b"\r\n")
    line = data.draw(st.binary(max_size=200) | mutate(valid))
    parsed = _documented(mtsics.parse_response, line)
    if isinstance(parsed, mtsics.WeightResponse):
        assert parsed.value.is_finite()
        assert all(c in "+-.0123456789" for c in str(parsed.value).replace("E", ""))


@given(chunks=st.lists(st.binary(max_size=300), max_size=10), limit=st.integers(1, 100))
def test_fuzz_mtsics_framer_never_raises_and_bounds_lines(chunks: list[bytes], limit: int) -> None:
    framer = mtsics.LineFramer(max_line_bytes=limit)
    for chunk in chunks:
        for line in framer.feed(chunk):
            assert len(line) <= limit
            _documented(mtsics.parse_response, line)
        assert framer.pending_bytes <= limit + 2


# -- Sartorius SBI -------------------------------------------------------------------------------------------------
@given(value=st.decimals(min_value=-9999, max_value=9999, places=2, allow_nan=False, allow_infinity=False),
       unit=st.none() | st.sampled_from(["kg", "g", "t"]), ident=st.none() | st.sampled_from(["G#", "N", "T"]))
def test_fuzz_sartorius_round_trip(value: Decimal, unit: str | None, ident: str | None) -> None:
    parsed = sartorius.parse_sbi(sartorius.format_weight(value, unit, id=ident))
    assert isinstance(parsed, sartorius.SbiWeight)
    assert (parsed.value, parsed.unit, parsed.id) == (value, unit, ident)


@given(data=st.data())
def test_fuzz_sartorius_parse_raises_only_frame_error(data: st.DataObject) -> None:
    valid = sartorius.format_weight(Decimal(data.draw(st.integers(-9999, 9999))), "kg",
                                    id=data.draw(st.none() | st.just("N")))
    line = data.draw(st.binary(max_size=80) | mutate(valid) | mutate(sartorius.format_error(101, long_form=True)))
    _documented(sartorius.parse_sbi, line, DeviceErrorResponse)
    _documented(sartorius.parse_sbi_text, line)


@given(chunks=st.lists(st.binary(max_size=60), max_size=10))
def test_fuzz_sartorius_command_framer_never_raises(chunks: list[bytes]) -> None:
    framer = sartorius.SbiCommandFramer()
    for chunk in chunks:
        framer.feed(chunk)


# -- Mettler Toledo continuous -------------------------------------------------------------------------------------
@given(weight=st.integers(0, 999999), code=st.sampled_from([2, 3, 4]), motion=st.booleans())
def test_fuzz_toledo_round_trip(weight: int, code: int, motion: bool) -> None:
    value = Decimal(weight).scaleb(2 - code)
    frame = toledo.encode_frame(value, decimal_code=code, motion=motion)
    decoded = toledo.decode_frame(frame)
    assert (decoded.weight, decoded.motion) == (value, motion)


@given(data=st.data())
def test_fuzz_toledo_decode_raises_only_frame_error(data: st.DataObject) -> None:
    valid = toledo.encode_frame(Decimal(data.draw(st.integers(0, 99999))))
    stream = data.draw(st.binary(max_size=100) | mutate(valid) | mutate(valid + valid))
    _documented(toledo.decode_frame, stream)
    framer = toledo.ToledoFramer()
    for cut in range(0, len(stream), 7):
        for frame in framer.feed(stream[cut:cut + 7]):
            assert len(frame) == toledo.FRAME_LENGTH
            _documented(toledo.decode_frame, frame)


# -- SIWAREX log string --------------------------------------------------------------------------------------------
@given(data=st.data())
def test_fuzz_siwarex_log_raises_only_frame_error(data: st.DataObject) -> None:
    entry = siwarex.LogEntry(kind=data.draw(st.sampled_from(["gross", "net"])),
                             weight=str(data.draw(st.integers(0, 99999))), unit="kg",
                             tare_kind=data.draw(st.sampled_from([None, "tare"])))
    if entry.tare_kind is not None:
        entry = siwarex.LogEntry(kind=entry.kind, weight=entry.weight, unit="kg", tare_kind="tare", tare="120")
    valid = siwarex.format_log(entry)
    assert siwarex.parse_log(valid) == entry
    text = data.draw(st.text(max_size=60) | mutate(valid.encode()).map(lambda b: b.decode("latin-1"))
                     | st.just(valid.replace("0", "٠")))
    parsed = _documented(siwarex.parse_log, text)
    if parsed is not None:
        assert parsed.weight.isascii()


# -- Modbus registers ----------------------------------------------------------------------------------------------
NUMERIC_TYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32",
                 "float64", "bcd16", "bcd32"]
POINTS = st.builds(
    lambda data_type, order, scale: Point("p", 0, "holding", data_type, scale=scale, word_order=order),
    st.sampled_from(NUMERIC_TYPES), st.sampled_from(["ABCD", "DCBA", "BADC", "CDAB"]),
    st.sampled_from([1.0, 0.1, 10.0])) | st.builds(
    lambda length: Point("s", 0, "holding", "string", length=length), st.integers(1, 8))


@given(point=POINTS, data=st.data())
def test_fuzz_modbus_decode_raises_only_frame_error(point: Point, data: st.DataObject) -> None:
    registers = data.draw(st.lists(st.integers(0, 0xFFFF) | st.integers(-5, 2**20), min_size=point.count,
                                   max_size=point.count))
    value = _documented(lambda r: decode_point(point, r), registers)
    block = ReadBlock("holding", 0, point.count, (point,))
    answer = data.draw(st.just(registers) | st.lists(st.integers(-1, 0x10000), max_size=point.count + 2))
    _documented(lambda r: decode_block(block, r), answer)
    if isinstance(value, float) and value == value and abs(value) < 1e30 and point.data_type != "float16":
        try:
            again = encode_point(point, value)
        except (ValueError, ProtocolError):
            return  # the value does not fit the point's range after scaling: nothing to round-trip
        assert decode_point(point, again) == value or point.scale != 1.0
