"""What a device profile says, once validated: frozen dataclasses, and the names a profile may use.

``Profile`` holds one device model: its protocol, the transport defaults, poll groups, and either its Modbus options
and points (``ProfilePoint``: the codec ``Point`` at its wire address, the address as written, the access) or its
scale settings. ``Profile.modbus_points()`` gives the ``protocols.modbus.Point`` records to poll (or to write) with
the address base applied and the profile's default word order filled in; ``read_plan()`` plans their reads.

Profiles are read from YAML and validated by ``edge.devices.profiles``; the driver of a profile's protocol is found
in ``edge.devices.registry``.

**Legal weights** (devices.md §4: never recompute or round a legal value): a point named ``gross``, ``net``, ``tare``
or ``preset_tare`` (:data:`LEGAL_WEIGHT_POINTS`) is a weight a weighing terminal delivers as a legal value
(``edge.devices.terminal``: Laumas' display counts). It is taken exactly as the register holds it, so ``scale`` and
``offset`` — which turn the count into a rounded float — are refused on it (:func:`legal_point_problems`), whatever
their value. A terminal's weights in another unit or with a decimal point are its display's business, not a factor's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from protocols.modbus import DEFAULT_MAX_GAP, AddressBase, Point, ReadBlock, WordOrder, plan_reads

ProtocolName = Literal["modbus", "mtsics", "sartorius-sbi", "toledo-continuous"]
TransportKind = Literal["rtu", "tcp", "rtu-over-tcp", "serial"]
Access = Literal["read", "write", "read-write"]

PROTOCOLS: Final[tuple[str, ...]] = get_args(ProtocolName)
SCALE_PROTOCOLS: Final = ("mtsics", "sartorius-sbi", "toledo-continuous")
TRANSPORTS_OF_PROTOCOL: Final[dict[str, tuple[str, ...]]] = {
    "modbus": ("rtu", "tcp", "rtu-over-tcp"),
    "mtsics": ("serial", "tcp"),
    "sartorius-sbi": ("serial", "tcp"),
    "toledo-continuous": ("serial", "tcp"),
}
POLL_COMMANDS: Final[dict[str, tuple[str, ...]]] = {
    "mtsics": ("SI", "S"),
    "sartorius-sbi": ("print",),
    "toledo-continuous": ("stream",),
}
DEFAULT_POLL_GROUP: Final = "default"
DEFAULT_SBI_FORM: Final = 16
# points whose value a weighing terminal delivers as a legal weight: taken exactly as the register holds it
LEGAL_WEIGHT_POINTS: Final = ("gross", "net", "tare", "preset_tare")
NOT_ON_LEGAL_WEIGHTS: Final = ("scale", "offset")  # both make the codec compute a rounded float


def legal_point_problems(where: str, raw: Mapping[str, Any]) -> list[str]:
    """One line per key a legal weight point (``raw``, a profile's point as written, at ``where`` such as
    ``points[13]``) must not have: ``points[13].scale: not allowed on 'gross', a legal weight …``."""
    name = raw.get("name")
    if name not in LEGAL_WEIGHT_POINTS:
        return []
    return [f"{where}.{key}: not allowed on {name!r}, a legal weight: it is taken exactly as the instrument delivers "
            f"it, and {key} would turn it into a computed, rounded float (got {key}: {raw[key]!r}; remove the key)"
            for key in NOT_ON_LEGAL_WEIGHTS if key in raw]


@dataclass(frozen=True)
class TransportDefaults:
    """How to reach the device unless the node config says otherwise (serial settings are ignored on TCP)."""

    kind: TransportKind
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = 1.0
    retries: int = 1


@dataclass(frozen=True)
class ModbusOptions:
    """Register numbering, defaults for points, read planning, and workarounds for awkward devices."""

    address_base: AddressBase = 0
    word_order: WordOrder = "ABCD"
    max_gap: int = DEFAULT_MAX_GAP
    max_registers: int = 100
    close_after_poll: bool = False  # some gateways only answer on a fresh connection
    pause_between_requests_s: float = 0.0  # slow devices
    one_request_per_point: bool = False  # devices that refuse multi-register reads


@dataclass(frozen=True)
class PollGroup:
    name: str
    interval_s: float


@dataclass(frozen=True)
class ScaleOptions:
    """Scale protocols: the unit the scale is set to, how it is polled, and (SBI) the line form."""

    unit: str
    poll_command: Literal["SI", "S", "print", "stream"]
    form: Literal[16, 22] | None = None  # sartorius-sbi only (default 16)


@dataclass(frozen=True)
class ProfilePoint:
    """A point as the profile gives it: the codec ``Point`` (wire address), the address as written, access."""

    point: Point
    address_as_written: int
    access: Access = "read"
    description: str = ""

    @property
    def readable(self) -> bool:
        return self.access != "write"

    @property
    def writable(self) -> bool:
        return self.access != "read"


@dataclass(frozen=True)
class Profile:
    """One device model, validated. ``modbus`` and ``points`` only for protocol modbus, ``scale`` only for scales."""

    profile: str
    vendor: str
    model: str
    protocol: ProtocolName
    transport: TransportDefaults
    poll_groups: tuple[PollGroup, ...]
    description: str = ""
    modbus: ModbusOptions | None = None
    points: tuple[ProfilePoint, ...] = ()
    scale: ScaleOptions | None = None
    source: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.profile

    def poll_group(self, name: str) -> PollGroup:
        """The poll group called ``name``; ``KeyError`` naming the defined ones if there is none."""
        for group in self.poll_groups:
            if group.name == name:
                return group
        raise KeyError(f"profile {self.profile}: no poll group {name!r} (defined: {self._group_names()})")

    def _group_names(self) -> str:
        return ", ".join(g.name for g in self.poll_groups)

    def modbus_points(self, *, writable: bool = False) -> tuple[Point, ...]:
        """The register map as codec points: wire addresses, the profile's word order filled in.

        By default the points to poll (access ``read`` / ``read-write``); ``writable=True``: the points that may be
        written (``write`` / ``read-write``), e.g. a scale terminal's command register. Empty for scale protocols.
        """
        return tuple(p.point for p in self.points if (p.writable if writable else p.readable))

    def read_plan(self, poll_group: str | None = None) -> list[ReadBlock]:
        """The reads of one poll (of ``poll_group``, or of every polled point), planned with the profile's options."""
        if self.modbus is None:
            raise ValueError(f"profile {self.profile}: protocol {self.protocol} has no register map")
        if poll_group is not None:
            self.poll_group(poll_group)
        points = [p for p in self.modbus_points() if poll_group is None or p.poll_group == poll_group]
        return plan_reads(
            points,
            max_gap=self.modbus.max_gap,
            max_count=self.modbus.max_registers,
            one_request_per_point=self.modbus.one_request_per_point,
        )


__all__ = [
    "DEFAULT_POLL_GROUP",
    "LEGAL_WEIGHT_POINTS",
    "NOT_ON_LEGAL_WEIGHTS",
    "PROTOCOLS",
    "SCALE_PROTOCOLS",
    "ModbusOptions",
    "PollGroup",
    "Profile",
    "ProfilePoint",
    "ScaleOptions",
    "TransportDefaults",
    "legal_point_problems",
]
