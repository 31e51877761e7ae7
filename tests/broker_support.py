"""The broker exactly as the Ansible role ``ansible/roles/broker`` deploys it, as a throwaway process for tests.

``render_role`` renders the role's templates with Jinja2 the way Ansible's ``template`` module does
(``trim_blocks``), from the role's own ``defaults/main.yml`` plus the few variables a test has to set (port, paths
in a temporary directory, the node list). ``RoleBroker`` is a Mosquitto started with a main configuration like
Debian's ``/etc/mosquitto/mosquitto.conf`` (persistence, log, ``include_dir conf.d``) and the rendered
``conf.d/floorgate.conf`` and ``dynamic-security.json`` — the certificate files copied next to them as the role's
copy task does. ``mqtt_client`` connects a paho client over TLS with a given certificate and records what comes
back (SUBACK / PUBACK reason codes, messages).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
import yaml

from tools.devservers import LOCALHOST
from tools.devservers.mosquitto import MosquittoServer

ROLE = Path(__file__).resolve().parents[1] / "ansible" / "roles" / "broker"
DYNSEC_GLOB = "/usr/lib/*/mosquitto_dynamic_security.so"


def dynsec_plugin() -> str:
    """The plugin on this machine (Debian's mosquitto package ships it); a missing one fails the test loudly."""
    found = sorted(glob.glob(DYNSEC_GLOB))
    if not found:
        raise RuntimeError(f"mosquitto_dynamic_security.so not found ({DYNSEC_GLOB}): install the Debian package "
                           "mosquitto (2.0 or newer)")
    return found[0]


def role_defaults() -> dict[str, Any]:
    data = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert isinstance(data, dict)
    return data


def render_role(overrides: dict[str, Any]) -> dict[str, str]:
    """``{"floorgate.conf": …, "dynamic-security.json": …}`` rendered from the role's templates with its defaults
    and ``overrides`` (what the inventory or a ``set_fact`` of the role would set)."""
    variables = {**role_defaults(), "ansible_managed": "Ansible managed (rendered by tests/broker_support.py)",
                 **overrides}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=False)  # noqa: S701 - configuration files, not HTML
    return {name.removesuffix(".j2"): env.get_template(name).render(**variables)
            for name in ("floorgate.conf.j2", "dynamic-security.json.j2")}


class RoleBroker(MosquittoServer):
    """Mosquitto with the role's configuration on 127.0.0.1 and a random port.

    ``files``: the controller files the role copies — ``ca.crt``, ``crl.pem``, ``server.crt``, ``server.key`` —
    as paths. ``update_crl(path)`` copies a new CRL in (the role's copy task); ``reload()`` sends SIGHUP,
    ``restart()`` stops (SIGTERM) and starts again on the same port (the role's handler)."""

    name = "mosquitto-role"

    def __init__(self, files: dict[str, Path], *, nodes: list[str], central_identities: list[str] | None = None,
                 port: int | None = None) -> None:
        super().__init__(port=port)
        self._files = files
        self._vars: dict[str, Any] = {"broker_nodes": nodes}
        if central_identities is not None:
            self._vars["broker_central_identities"] = central_identities
        self.rendered: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"mqtts://{LOCALHOST}:{self.port}"

    @property
    def cert_dir(self) -> Path:
        return self.directory / "floorgate"

    def update_crl(self, crl: Path) -> None:
        shutil.copyfile(crl, self.cert_dir / "crl.pem")

    def reload(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _write_config(self, port: int) -> None:
        self.persistence_dir.mkdir(exist_ok=True)
        conf_d = self.directory / "conf.d"
        conf_d.mkdir(exist_ok=True)
        self.cert_dir.mkdir(mode=0o750, exist_ok=True)
        for name, src in self._files.items():
            if not (self.cert_dir / name).exists():  # a restart keeps what update_crl put there
                shutil.copyfile(src, self.cert_dir / name)
        self.rendered = render_role({
            **self._vars,
            "broker_port": port,
            "broker_listen_address": LOCALHOST,
            "broker_cert_dir": str(self.cert_dir),
            "broker_conf_file": str(conf_d / "floorgate.conf"),
            "broker_dynsec_file": str(self.cert_dir / "dynamic-security.json"),
            "broker_dynsec_plugin_path": dynsec_plugin(),  # the role's set_fact
        })
        (conf_d / "floorgate.conf").write_text(self.rendered["floorgate.conf"])
        (self.cert_dir / "dynamic-security.json").write_text(self.rendered["dynamic-security.json"])
        main = [  # Debian's /etc/mosquitto/mosquitto.conf, with our paths
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            f"log_dest file {self.log_file}",
            "log_type all",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            main.append("user root")  # otherwise it drops to `mosquitto`, which cannot read our 0700 temp dir
        main.append(f"include_dir {conf_d}")
        self.config_file.write_text("\n".join(main) + "\n")


# -- a paho client that records the broker's answers -----------------------------------------------------------------
@dataclass
class Recorder:
    client: mqtt.Client
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    subacks: dict[int, list[str]] = field(default_factory=dict)
    pubacks: dict[int, str] = field(default_factory=dict)
    disconnects: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, topic: str, timeout_s: float = 3) -> str:
        _, mid = self.client.subscribe(topic, qos=1)
        return _wait(lambda: self.subacks.get(mid), timeout_s, f"SUBACK for {topic}")[0]

    def publish(self, topic: str, payload: bytes = b"x", timeout_s: float = 3) -> str:
        info = self.client.publish(topic, payload, qos=1)
        return _wait(lambda: self.pubacks.get(info.mid), timeout_s, f"PUBACK for {topic}")

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(probe, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {timeout_s} s")


def tls_context(ca_file: Path, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def tls_probe(port: int, ca_file: Path, cert: tuple[Path, Path] | None, *, timeout_s: float = 3) -> str:
    """Connect over TLS and send an MQTT 5 CONNECT: ``"connack"`` if the broker answered with one, else what went
    wrong (the TLS error, or the connection closed). The socket is always closed."""
    client_id = b"tls-probe"
    variable = b"\x00\x04MQTT\x05\x02\x00\x3c\x00"  # protocol name, level 5, clean start, keepalive 60, no props
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    connect = bytes([0x10, len(body)]) + body
    ctx = tls_context(ca_file, cert)
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout_s) as raw, \
                ctx.wrap_socket(raw, server_hostname=LOCALHOST) as tls:
            tls.sendall(connect)
            answer = tls.recv(4)
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if answer[:1] == b"\x20":
        return "connack"
    return f"closed ({answer!r})"


def mqtt_client(port: int, ca_file: Path, cert: tuple[Path, Path] | None, *, client_id: str,
                timeout_s: float = 5) -> Recorder:
    """A connected MQTT 5 client over TLS with a clean session that ends with the connection (the broker makes the
    client id the certificate's CN, so a kept session would be resumed by the next test with that certificate), or
    ConnectionError / ssl.SSLError naming why not."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set_context(tls_context(ca_file, cert))
    rec = Recorder(client)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c, _u, _f, rc, _p):  # type: ignore[no-untyped-def]
        if rc.is_failure:
            refused.append(str(rc))
        connected.set()

    def on_message(_c, _u, msg):  # type: ignore[no-untyped-def]
        with rec.lock:
            rec.messages.append((msg.topic, msg.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = lambda _c, _u, mid, rcs, _p: rec.subacks.__setitem__(mid, [str(r) for r in rcs])
    client.on_publish = lambda _c, _u, mid, rc, _p: rec.pubacks.__setitem__(mid, str(rc))
    client.on_disconnect = lambda _c, _u, _f, rc, _p: rec.disconnects.append(str(rc))
    client.connect(LOCALHOST, port, keepalive=30, clean_start=True)  # TLS errors raise here
    client.loop_start()
    if not connected.wait(timeout_s) or refused:
        client.loop_stop()
        raise ConnectionError(f"{client_id}: not connected ({refused[0] if refused else 'no CONNACK'})")
    return rec
