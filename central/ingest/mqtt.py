"""Central's MQTT client, MQTT 5 or 3.1.1; over TLS with central's client certificate (CN ``floorgate:central``)
for ``mqtts://``.

A single consumer is durable: persistent session, never Clean Start, so the broker queues batches while central
restarts. A member of a shared-subscription group is **not**: its session ends with its connection (Clean Start,
session expiry 0), because a dead member whose session lives on keeps being dealt its share of the messages, which
then wait for it instead of going to the living members. Whatever was in flight to a member that died is sent again
by the node (no ack), so nothing depends on that session.
"""

from __future__ import annotations

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.config import BrokerSettings
from sync.runtime.broker import tls_context
from sync.runtime.mqtt import fail_connect_on_close

SESSION_EXPIRY_S = 7 * 24 * 3600


def make_client(broker: BrokerSettings, *, client_id: str, durable: bool = True) -> aiomqtt.Client:
    common = {
        "identifier": client_id,
        "username": broker.username,
        "password": broker.password,
        "keepalive": 30,
        "timeout": 10,
        "tls_context": tls_context(broker),
        "max_queued_incoming_messages": 10_000,
    }
    if broker.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S if durable else 0
        return fail_connect_on_close(aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, clean_start=not durable, properties=props,
            **common,  # type: ignore[arg-type]
        ))
    return fail_connect_on_close(aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V311, clean_session=not durable,
        **common,  # type: ignore[arg-type]
    ))
