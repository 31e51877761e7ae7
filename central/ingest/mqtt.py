"""Central's MQTT client: a durable consumer (persistent session, never Clean Start), MQTT 5 or 3.1.1."""

from __future__ import annotations

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.config import BrokerSettings

SESSION_EXPIRY_S = 7 * 24 * 3600


def make_client(broker: BrokerSettings, *, client_id: str) -> aiomqtt.Client:
    common = {
        "identifier": client_id,
        "username": broker.username,
        "password": broker.password,
        "keepalive": 30,
        "timeout": 10,
        "max_queued_incoming_messages": 10_000,
    }
    if broker.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        return aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props,
            **common,  # type: ignore[arg-type]
        )
    return aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False,
        **common,  # type: ignore[arg-type]
    )
