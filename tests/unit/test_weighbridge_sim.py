"""Weighbridge simulator state machine, driven by a fake clock (no sleeping)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import FrameError
from protocols.mtsics import StatusResponse, WeightResponse, parse_response
from protocols.sim.weighbridge import GARBAGE_LINE, Phase, Weighbridge

TRUCK = 24560
# default durations: empty 3 s, drive on 2 s, settled 4 s, drive off 2 s -> 11 s a truck
EMPTY_AT, ON_AT, SETTLED_AT, OFF_AT, CYCLE_S = 0.0, 3.0, 5.0, 9.0, 11.0


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.start = start

    def __call__(self) -> float:
        return self.now

    def at(self, offset_s: float) -> None:
        self.now = self.start + offset_s


def _bridge(clock: FakeClock, **options: object) -> Weighbridge:
    options.setdefault("trucks", [TRUCK])
    options.setdefault("seed", 1)
    return Weighbridge(clock=clock, **options)  # type: ignore[arg-type]


def _ask(bridge: Weighbridge, command: bytes) -> bytes:
    replies = bridge.handle_line(command)
    assert len(replies) == 1, replies
    assert replies[0].endswith(b"\r\n")
    return replies[0]


def _weight(reply: bytes) -> WeightResponse:
    parsed = parse_response(reply)
    assert isinstance(parsed, WeightResponse), reply
    return parsed


def _steps(start: float, stop: float, step: float = 0.1) -> list[float]:
    return [start + i * step for i in range(round((stop - start) / step))]


def test_full_truck_cycle() -> None:
    clock = FakeClock()
    bridge = _bridge(clock)

    clock.at(EMPTY_AT + 0.5)
    assert bridge.current_phase is Phase.EMPTY
    assert _ask(bridge, b"SI\r\n") == b"S S          0 kg\r\n"
    assert _ask(bridge, b"S\r\n") == b"S S          0 kg\r\n"

    rising: list[Decimal] = []
    for t in _steps(ON_AT + 0.05, SETTLED_AT - 0.05):
        clock.at(t)
        assert bridge.current_phase is Phase.DRIVE_ON
        reading = _weight(_ask(bridge, b"SI"))
        assert (reading.command, reading.status, reading.unit) == ("S", "D", "kg")
        assert 0 <= reading.value <= TRUCK * Decimal("1.04")
        assert reading.value % 20 == 0
        rising.append(reading.value)
        assert _ask(bridge, b"S") == b"S I\r\n"  # S wants a stable weight: not now
    assert rising[-1] > rising[0]  # it goes up, noise and all

    for t in _steps(SETTLED_AT, OFF_AT):
        clock.at(t)
        assert bridge.current_phase is Phase.SETTLED
        assert _ask(bridge, b"SI") == b"S S      24560 kg\r\n"
        assert _ask(bridge, b"S") == b"S S      24560 kg\r\n"

    for t in _steps(OFF_AT + 0.05, CYCLE_S - 0.05):
        clock.at(t)
        assert bridge.current_phase is Phase.DRIVE_OFF
        assert _weight(_ask(bridge, b"SI")).status == "D"
        assert bridge.completed_trucks == 0

    clock.at(CYCLE_S + 0.01)
    assert bridge.current_phase is Phase.EMPTY
    assert bridge.completed_trucks == 1
    assert _ask(bridge, b"SI") == b"S S          0 kg\r\n"
    clock.at(3 * CYCLE_S + 0.5)
    assert bridge.completed_trucks == 3


def test_time_scale_shrinks_every_phase() -> None:
    clock = FakeClock()
    bridge = _bridge(clock, time_scale=0.01)
    assert bridge.cycle_s == pytest.approx(0.11)
    clock.at(0.04)
    assert bridge.current_phase is Phase.DRIVE_ON
    clock.at(0.06)
    assert _ask(bridge, b"SI") == b"S S      24560 kg\r\n"
    clock.at(0.111)
    assert bridge.completed_trucks == 1


def test_trucks_in_order_then_seeded_random_ones() -> None:
    clock = FakeClock()
    bridge = _bridge(clock, trucks=[24561, 18420], seed=7)
    assert bridge.truck_weight(0) == 24560  # rounded to the 20 kg increment
    assert bridge.truck_weight(1) == 18420
    randoms = [bridge.truck_weight(i) for i in range(2, 40)]
    assert all(8000 <= w <= 40000 and w % 20 == 0 for w in randoms)
    assert len(set(randoms)) > 10
    again = _bridge(FakeClock(), trucks=[24561, 18420], seed=7)
    assert [again.truck_weight(i) for i in range(2, 40)] == randoms
    other = _bridge(FakeClock(), trucks=[24561, 18420], seed=8)
    assert [other.truck_weight(i) for i in range(2, 40)] != randoms

    clock.at(CYCLE_S + SETTLED_AT + 1)  # second truck standing on the bridge
    assert _ask(bridge, b"S") == b"S S      18420 kg\r\n"


def test_overload_while_on_the_bridge() -> None:
    clock = FakeClock()
    bridge = _bridge(clock, trucks=[70000, TRUCK])
    clock.at(ON_AT + 0.2)  # first tenth of the ramp: 7 t on the bridge, not overloaded yet
    assert _weight(_ask(bridge, b"SI")).status == "D"
    clock.at(SETTLED_AT + 1)
    assert _ask(bridge, b"S") == b"S +\r\n"
    assert _ask(bridge, b"SI") == b"S +\r\n"
    assert _ask(bridge, b"T") == b"T +\r\n"
    assert _ask(bridge, b"Z") == b"Z +\r\n"
    overload = parse_response(_ask(bridge, b"SI"))
    assert isinstance(overload, StatusResponse)
    assert overload.overload
    clock.at(CYCLE_S + SETTLED_AT + 1)  # next truck is fine
    assert _ask(bridge, b"S") == b"S S      24560 kg\r\n"


def test_zero() -> None:
    clock = FakeClock()
    bridge = _bridge(clock)
    clock.at(1.0)
    assert _ask(bridge, b"Z") == b"Z A\r\n"  # stable, empty
    clock.at(ON_AT + 1)
    assert _ask(bridge, b"Z") == b"Z I\r\n"  # moving
    clock.at(SETTLED_AT + 1)
    assert _ask(bridge, b"Z") == b"Z +\r\n"  # stable, but 24.5 t is outside the zero range


def test_tare_then_net() -> None:
    clock = FakeClock()
    bridge = _bridge(clock, trucks=[TRUCK, 30000])
    clock.at(ON_AT + 1)
    assert _ask(bridge, b"T") == b"T I\r\n"  # cannot tare while moving
    clock.at(SETTLED_AT + 1)
    assert _ask(bridge, b"T") == b"T S      24560 kg\r\n"
    assert bridge.tare_kg == TRUCK
    assert _ask(bridge, b"SI") == b"S S          0 kg\r\n"  # net = gross - tare
    assert _ask(bridge, b"TA") == b"TA A      24560 kg\r\n"
    clock.at(CYCLE_S + 1)  # bridge empty again
    assert _ask(bridge, b"S") == b"S S     -24560 kg\r\n"
    clock.at(CYCLE_S + SETTLED_AT + 1)
    assert _ask(bridge, b"S") == b"S S       5440 kg\r\n"
    assert _ask(bridge, b"TAC") == b"TAC A\r\n"
    assert _ask(bridge, b"S") == b"S S      30000 kg\r\n"


def test_preset_tare_and_zero_clears_it() -> None:
    clock = FakeClock()
    bridge = _bridge(clock)
    clock.at(1.0)
    assert _ask(bridge, b"TA 1000 kg") == b"TA A       1000 kg\r\n"
    assert _ask(bridge, b"SI") == b"S S      -1000 kg\r\n"
    assert _ask(bridge, b"TA 1000 t") == b"ES\r\n"  # wrong unit
    assert _ask(bridge, b"TA abc kg") == b"ES\r\n"
    assert _ask(bridge, b"TA 90000 kg") == b"TA L\r\n"  # beyond capacity
    assert _ask(bridge, b"Z") == b"Z A\r\n"
    assert _ask(bridge, b"SI") == b"S S          0 kg\r\n"


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"@", b'I4 A "0123456789"\r\n'),
        (b"I4", b'I4 A "0123456789"\r\n'),
        (b"I2", b'I2 A "floorgate SIM-WB 60t"\r\n'),
        (b"I3", b'I3 A "floorgate-sim 1.0"\r\n'),
        (b"XYZ", b"ES\r\n"),
        (b"si", b"ES\r\n"),  # MT-SICS commands are upper case
        (b"SI 5", b"ES\r\n"),
        (b"SIR", b"ES\r\n"),  # repeat mode is not simulated
        (b"S\xffI", b"ET\r\n"),
        (b"S\x00", b"ET\r\n"),
    ],
)
def test_other_commands(command: bytes, reply: bytes) -> None:
    assert _ask(_bridge(FakeClock()), command + b"\r\n") == reply


def test_empty_line_gets_no_reply() -> None:
    assert _bridge(FakeClock()).handle_line(b"\r\n") == []


def test_reset_clears_tare() -> None:
    clock = FakeClock()
    bridge = _bridge(clock)
    clock.at(SETTLED_AT + 1)
    _ask(bridge, b"T")
    assert _ask(bridge, b"@") == bridge.power_up_line()
    assert _ask(bridge, b"S") == b"S S      24560 kg\r\n"


def test_identity_options_and_power_up_line() -> None:
    bridge = _bridge(FakeClock(), serial="WB-0042", model="Test 30t")
    assert bridge.power_up_line() == b'I4 A "WB-0042"\r\n'
    assert _ask(bridge, b"I2") == b'I2 A "Test 30t"\r\n'


def test_garbage_every_nth_reply() -> None:
    clock = FakeClock()
    bridge = _bridge(clock, garbage_every=3)
    replies = [_ask(bridge, b"SI") for _ in range(7)]
    assert [r == GARBAGE_LINE for r in replies] == [False, False, True, False, False, True, False]
    for reply in replies:
        if reply == GARBAGE_LINE:
            with pytest.raises(FrameError):
                parse_response(reply)
        else:
            assert reply == b"S S          0 kg\r\n"
    assert bridge.power_up_line() == b'I4 A "0123456789"\r\n'  # never garbled


def test_tonne_display() -> None:
    clock = FakeClock()
    bridge = _bridge(clock, unit="t")
    clock.at(SETTLED_AT + 1)
    assert _ask(bridge, b"SI") == b"S S      24.56 t\r\n"
    clock.at(1)
    assert _ask(bridge, b"SI") == b"S S       0.00 t\r\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_scale": 0}, "time_scale"),
        ({"unit": "lb"}, "unit 'lb'"),
        ({"increment_kg": 0}, "increment_kg"),
        ({"capacity_kg": -1}, "capacity_kg"),
        ({"ramp_s": 0}, "ramp_s"),
        ({"garbage_every": -1}, "garbage_every"),
        ({"trucks": [0]}, "truck weights"),
        ({"serial": 'a"b'}, "without quotes"),
    ],
)
def test_invalid_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _bridge(FakeClock(), **options)


@given(offset_s=st.floats(min_value=0, max_value=200, allow_nan=False), seed=st.integers(0, 5))
def test_every_si_reply_is_a_valid_frame(offset_s: float, seed: int) -> None:
    clock = FakeClock()
    bridge = _bridge(clock, trucks=None, seed=seed)
    clock.at(offset_s)
    parsed = parse_response(_ask(bridge, b"SI"))
    if isinstance(parsed, WeightResponse):
        assert parsed.stable == (bridge.current_phase in (Phase.EMPTY, Phase.SETTLED))
        assert parsed.value >= 0
    else:
        assert isinstance(parsed, StatusResponse)
        assert parsed.overload


def test_a_scripted_scenario_puts_the_bridge_where_it_wants_it() -> None:
    """Visits in order (the same truck loaded, then empty), driven by ``time_of``: a truck rolling on answers S I
    and S D (never a weighing), standing S S, a truck over capacity S +, a preset tare gives the net."""
    clock = FakeClock()
    bridge = _bridge(clock, trucks=[24560, 11980, 64000, 31000])
    clock.now = bridge.time_of(0, Phase.DRIVE_ON)
    assert bridge.current_phase is Phase.DRIVE_ON
    assert _ask(bridge, b"S") == b"S I\r\n"
    assert _weight(_ask(bridge, b"SI")).status == "D"
    clock.now = bridge.time_of(0, Phase.SETTLED)
    assert _ask(bridge, b"S") == b"S S      24560 kg\r\n"
    clock.now = bridge.time_of(1, Phase.SETTLED, fraction=0.0)
    assert (bridge.current_phase, _ask(bridge, b"S")) == (Phase.SETTLED, b"S S      11980 kg\r\n")
    clock.now = bridge.time_of(2, Phase.SETTLED)
    assert _ask(bridge, b"S") == b"S +\r\n"
    clock.now = bridge.time_of(3, Phase.SETTLED, fraction=0.99)
    assert _ask(bridge, b"TA 14960 kg") == b"TA A      14960 kg\r\n"
    assert _ask(bridge, b"S") == b"S S      16040 kg\r\n"
    assert bridge.time_of(1, Phase.EMPTY, fraction=0.0) == clock.start + CYCLE_S
    with pytest.raises(ValueError, match="fraction"):
        bridge.time_of(0, Phase.SETTLED, fraction=1.0)
