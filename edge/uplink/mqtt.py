"""Builds the agent's MQTT client: a persistent session (never Clean Start after the first connect — see
``shared/reference/mqtt-and-sync.md``), MQTT 5 or 3.1.1 as configured; over TLS with the node's client
certificate for ``mqtts://`` (the broker takes the certificate's CN, the node id, as user name)."""

from __future__ import annotations

from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import BrokerConfig
from sync.runtime.broker import tls_context
from sync.runtime.mqtt import fail_connect_on_close

SESSION_EXPIRY_S = 7 * 24 * 3600


def make_client(broker: BrokerConfig, *, client_id: str) -> aiomqtt.Client:
    common: dict[str, Any] = {
        "identifier": client_id,
        "username": broker.username,
        "password": broker.password,
        "keepalive": broker.keepalive_s,
        "timeout": 10,
        "tls_context": tls_context(broker),
    }
    if broker.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        return fail_connect_on_close(aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props,
            **common))
    return fail_connect_on_close(aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False, **common))
