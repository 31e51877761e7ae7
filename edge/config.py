"""The node configuration (YAML), validated on load.

Example (see ``firmware-config/examples/node.yaml``)::

    node_id: mill-01
    data_dir: /var/lib/floorgate
    broker: {url: "mqtt://127.0.0.1:1883", protocol: "5"}
    # or over TLS with the bundle of `floorgate central node add` (certificate CN = node id):
    # broker: {url: "mqtts://broker.example:8883", tls: {ca_file: ca.crt, cert_file: tls.crt, key_file: tls.key}}
    devices:
      - {id: bridge-1, type: mtsics-scale, address: "tcp://127.0.0.1:4001", interval_s: 0.5,
         weighing: {threshold: 500}}
      - {id: meter-1, type: sdm630, address: "tcp://127.0.0.1:5020", unit_id: 1, interval_s: 5}
    tse: {id: tse-1, driver: software, clients: [KASSE-1]}      # edge.pos.config
    pos: {listen: "127.0.0.1:8282"}                             # the counter's sales API (edge.pos.api)

Errors name the file, the key path and what was expected (``sync.runtime.config``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from edge.devices.profiles import DEFAULT_PROFILES_DIR, PROFILE_SUFFIX
from edge.pos.config import PosConfig, TseConfig
from sync.runtime.broker import BrokerBase
from sync.runtime.config import ConfigModel, parse_model
from sync.runtime.limits import read_yaml
from sync.signing import SigningKeyError, parse_public_key
from sync.topics import NODE_ID_RE

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _check_address(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"expected an address starting with {' or '.join(s + '://' for s in schemes)}")
    if parts.scheme == "tcp" and (not parts.hostname or parts.port is None):
        raise ValueError("expected tcp://HOST:PORT")
    if parts.scheme == "serial" and not parts.path:
        raise ValueError("expected serial:///dev/ttyXXX")
    return value


class BrokerConfig(BrokerBase):
    url: str = Field(description="mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS)")
    keepalive_s: int = Field(30, gt=0)


class UplinkConfig(ConfigModel):
    batch_max_records: int = Field(200, gt=0, le=10_000)
    ack_timeout_s: float = Field(10.0, gt=0)
    max_in_flight: int = Field(4, gt=0, description="unacknowledged batches per stream")
    retry_min_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)


class OutboxConfig(ConfigModel):
    quota_mb: float | None = Field(
        None, gt=0, description="disk quota of the outbox; when reached, readings are thinned, then the oldest "
        "dropped (counted as loss); business records are never dropped (default: no quota)")
    readings_commit_ms: float = Field(
        200.0, ge=0, description="readings and health are committed together at most this often (0: each at once)")

    @property
    def quota_bytes(self) -> int | None:
        return None if self.quota_mb is None else int(self.quota_mb * 1024 * 1024)


class AlibiConfig(ConfigModel):
    """The alibi mirror (edge.store.alibi): a hash-chained, signed log of every weighing, kept on the node."""

    retention_days: int = Field(
        90, ge=1, le=36_500, description="entries older than this are given up once central has acknowledged "
        "their weighing (the newest entry is always kept); central keeps its copy for at least two years")

    @field_validator("retention_days", mode="before")
    @classmethod
    def _days(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("expected a number of days, e.g. 90")
        return v


class HttpConfig(ConfigModel):
    listen: str | None = Field(
        "127.0.0.1:8181", description="HOST:PORT of the node's local /health and /metrics (null: off)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8181")
        return v

    @property
    def host(self) -> str:
        return (self.listen or "").rpartition(":")[0]

    @property
    def port(self) -> int:
        return int((self.listen or ":0").rpartition(":")[2])


class WeighingConfig(ConfigModel):
    auto: bool = Field(True, description="take weighings by themselves (stable above the threshold after motion); "
                       "false: only when a weigh command asks (a weighbridge run by the ERP)")
    threshold: Decimal = Field(Decimal(200), ge=0, description="stable weight above this after motion = weighing")
    empty_below: Decimal | None = Field(
        None, ge=0, description="the bridge counts as empty again below this (default: threshold)"
    )


class BusConfig(ConfigModel):
    """One physical bus: an RS-485 / serial line or one TCP endpoint. One scheduler each."""

    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    kind: Literal["rtu", "tcp", "rtu-over-tcp", "line"] = Field(
        description="rtu: Modbus RTU on a serial line; tcp: Modbus TCP; rtu-over-tcp: RTU frames through a TCP "
        "serial server; line: a serial scale's ASCII line (serial or TCP)")
    address: str = Field(description="serial:///dev/ttyUSB0 or tcp://HOST:PORT")
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(1.0, gt=0, description="per request")
    skip_after: int = Field(3, ge=1, description="failed polls in a row before a device sits out")
    skip_base_s: float = Field(5.0, gt=0, description="first sit-out; doubles per episode")
    skip_max_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _address_fits_kind(self) -> BusConfig:
        schemes = {"rtu": ("serial",), "tcp": ("tcp",), "rtu-over-tcp": ("tcp",), "line": ("serial", "tcp")}
        _check_address(self.address, schemes[self.kind])
        return self


class ProfileDevice(ConfigModel):
    """A device described by a profile in firmware-config/profiles, on one of the node's buses."""

    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    profile: str = Field(description="profile name (file name without .yaml) or a path to a profile file")
    bus: str = Field(description="id of one of the node's buses")
    unit_id: int = Field(1, ge=0, le=247)
    poll_groups: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="poll group → interval_s, overriding the profile's")
    weighing: WeighingConfig = WeighingConfig()
    report_every_s: float = Field(
        300.0, ge=0, description="report every point at least this often (0: every point on every poll)")

    def placement(self, buses: dict[str, BusConfig]) -> tuple[ProfileDevice, BusConfig]:
        """The device and the bus it is on (``buses``: the node's buses by id)."""
        return self, buses[self.bus]


# Device types: ``{id: …, type: T, address: …, interval_s: …}`` is the shipped profile DEVICE_TYPE_PROFILES[T] (from
# firmware-config/profiles, whatever the node's ``profiles_dir``) on a bus of its own, named after the device, polled
# every ``interval_s`` (the poll group ``default``, the only one of these profiles). The short form of the first
# releases, kept so that their node configs work unchanged.
DEVICE_TYPE_PROFILES: dict[str, str] = {
    "mtsics-scale": "mettler-toledo-mtsics",
    "sdm630": "sdm630",
    "th-probe": "th-probe",
}


def _shipped_profile(device_type: str) -> str:
    return str(DEFAULT_PROFILES_DIR / f"{DEVICE_TYPE_PROFILES[device_type]}{PROFILE_SUFFIX}")


class _TypedDevice(ConfigModel):
    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    address: str
    interval_s: float = Field(gt=0)
    timeout_s: float = Field(2.0, gt=0)


class ScaleDevice(_TypedDevice):
    """``type: mtsics-scale``: the profile mettler-toledo-mtsics on a line of its own (``address``)."""

    type: Literal["mtsics-scale"]
    baudrate: int = Field(9600, gt=0)
    interval_s: float = Field(0.5, gt=0)
    weighing: WeighingConfig = WeighingConfig()

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        return _check_address(v, ("tcp", "serial"))

    def placement(self, buses: dict[str, BusConfig]) -> tuple[ProfileDevice, BusConfig]:
        """The scale as its profile on a line of its own, named after it."""
        device = ProfileDevice(id=self.id, profile=_shipped_profile(self.type), bus=self.id,
                               poll_groups={"default": self.interval_s}, weighing=self.weighing)
        return device, BusConfig(id=self.id, kind="line", address=self.address, baudrate=self.baudrate,
                                 timeout_s=self.timeout_s)


class ModbusDevice(_TypedDevice):
    """``type: sdm630`` / ``th-probe``: the profile of that name on a Modbus TCP endpoint of its own (``address``);
    every poll reports every point (no deadband), as these types always did."""

    type: Literal["sdm630", "th-probe"]
    unit_id: int = Field(1, ge=0, le=247)

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        return _check_address(v, ("tcp",))

    def placement(self, buses: dict[str, BusConfig]) -> tuple[ProfileDevice, BusConfig]:
        """The device as its profile on a TCP endpoint of its own, named after it."""
        device = ProfileDevice(id=self.id, profile=_shipped_profile(self.type), bus=self.id, unit_id=self.unit_id,
                               poll_groups={"default": self.interval_s}, report_every_s=0.0)
        return device, BusConfig(id=self.id, kind="tcp", address=self.address, timeout_s=self.timeout_s)


def _device_tag(v: object) -> str:
    if isinstance(v, dict):
        return "profile" if "profile" in v else str(v.get("type", "profile"))
    return "profile" if hasattr(v, "profile") else str(getattr(v, "type", ""))


DeviceConfig = Annotated[
    Annotated[ProfileDevice, Tag("profile")] | Annotated[ScaleDevice, Tag("mtsics-scale")]
    | Annotated[ModbusDevice, Tag("sdm630")] | Annotated[ModbusDevice, Tag("th-probe")],
    Discriminator(_device_tag),
]
DEVICE_TYPES = frozenset({*DEVICE_TYPE_PROFILES, "profile"})


AnyDevice = ProfileDevice | ScaleDevice | ModbusDevice


class NodeConfig(ConfigModel):
    node_id: str
    data_dir: Path = Path("./var/edge")
    broker: BrokerConfig
    uplink: UplinkConfig = UplinkConfig()
    outbox: OutboxConfig = OutboxConfig()
    alibi: AlibiConfig = AlibiConfig()
    http: HttpConfig = HttpConfig()
    key_file: Path | None = Field(
        None, description="the node's Ed25519 signing key (default: <data_dir>/node.key; made on first start)")
    central_keys_file: Path | None = Field(
        None, description="central's public signing key(s), one 'ed25519:…' per line (default: central.pub beside "
        "key_file; written by `floorgate edge enrol --central-key …` or the bundle of `central node add`): the "
        "agent acts only on acks, replay requests and commands signed with one of them")
    central_keys: list[str] = Field(
        default_factory=list, description="central's public signing key(s) inline, besides central_keys_file")
    health_interval_s: float = Field(30.0, gt=0)
    heartbeat_interval_s: float = Field(5.0, gt=0, description="backlog and alarms to central this often")
    profiles_dir: Path | None = Field(
        None, description="where profiles are looked up (default: firmware-config/profiles)")
    buses: list[BusConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    tse: TseConfig | None = Field(None, description="the node's TSE for the cash registers (edge.pos.config)")
    pos: PosConfig | None = Field(None, description="the counter's sales API on the node (needs tse)")

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "node.key"

    @property
    def central_keys_path(self) -> Path:
        return self.central_keys_file or self.key_path.parent / "central.pub"

    @field_validator("central_keys")
    @classmethod
    def _central_keys(cls, keys: list[str]) -> list[str]:
        for i, text in enumerate(keys):
            try:
                parse_public_key(text)
            except SigningKeyError as exc:
                raise ValueError(f"[{i}]: {exc}") from None
        return keys

    @field_validator("node_id")
    @classmethod
    def _node(cls, v: str) -> str:
        if not NODE_ID_RE.match(v):
            raise ValueError("expected letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)")
        return v

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[AnyDevice]) -> list[AnyDevice]:
        seen: dict[str, int] = {}
        for i, dev in enumerate(devices):
            if dev.id in seen:
                raise ValueError(f"id {dev.id!r} of devices[{i}] is already used by devices[{seen[dev.id]}]")
            seen[dev.id] = i
        return devices

    @field_validator("buses")
    @classmethod
    def _unique_buses(cls, buses: list[BusConfig]) -> list[BusConfig]:
        seen: dict[str, int] = {}
        for i, bus in enumerate(buses):
            if bus.id in seen:
                raise ValueError(f"id {bus.id!r} of buses[{i}] is already used by buses[{seen[bus.id]}]")
            seen[bus.id] = i
        return buses

    @model_validator(mode="after")
    def _buses_exist(self) -> NodeConfig:
        known = {b.id for b in self.buses}
        for i, dev in enumerate(self.devices):
            if isinstance(dev, ProfileDevice) and dev.bus not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ValueError(f"devices[{i}].bus: {dev.bus!r} is not one of the node's buses ({names})")
        return self

    @model_validator(mode="after")
    def _pos_needs_tse(self) -> NodeConfig:
        if self.pos is not None and self.tse is None:
            raise ValueError("pos: the sales API needs a tse section (the TSE the sales are signed with)")
        if self.tse is not None:
            for i, dev in enumerate(self.devices):
                if dev.id == self.tse.id:
                    raise ValueError(f"tse.id: {self.tse.id!r} is already the id of devices[{i}]")
        return self


def parse_config(data: object, *, source: str, base_dir: Path | None = None) -> NodeConfig:
    """Validate ``data``; relative ``broker.tls`` paths are taken relative to ``base_dir`` (the config file's
    directory) and must exist."""
    return parse_model(NodeConfig, data, source=source, expected="a mapping of keys (node_id, broker, devices, …)",
                       context={"base_dir": base_dir}, tags=DEVICE_TYPES)


def load_config(path: str | Path) -> NodeConfig:
    """Read (``sync.runtime.limits.read_yaml``) and validate a node config; its relative paths (``data_dir``,
    ``key_file``, ``central_keys_file``, ``profiles_dir``, ``tse.dir``, ``pos.token_file``, ``broker.tls``) are
    taken relative to the file."""
    p = Path(path)
    cfg = parse_config(read_yaml(p), source=str(p), base_dir=p.resolve().parent)

    def beside_file(v: Path) -> Path:
        return v if v.is_absolute() else (p.parent / v).resolve()

    paths = {"data_dir": cfg.data_dir, "key_file": cfg.key_file, "central_keys_file": cfg.central_keys_file,
             "profiles_dir": cfg.profiles_dir}
    update: dict[str, object] = {name: beside_file(v) for name, v in paths.items() if v is not None}
    if cfg.tse is not None and cfg.tse.dir is not None:
        update["tse"] = cfg.tse.model_copy(update={"dir": beside_file(cfg.tse.dir)})
    if cfg.pos is not None and cfg.pos.token_file is not None:
        update["pos"] = cfg.pos.model_copy(update={"token_file": beside_file(cfg.pos.token_file)})
    return cfg.model_copy(update=update)
