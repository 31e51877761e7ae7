"""MQTT topic tree of the sync protocol.

    floorgate/v1/<node>/up/<stream>   edge → central   a batch of records (QoS 1)
    floorgate/v1/<node>/ack           central → edge   application acknowledgement (QoS 1)
    floorgate/v1/<node>/heartbeat     edge → central   backlog per stream, alarms, clocks (QoS 1, not stored)
    floorgate/v1/<node>/replay        central → edge   "send stream S again from seq N" (QoS 1)
    floorgate/v1/<node>/cmd           central → edge   a device command (QoS 1; ``sync.commands``)
    floorgate/v1/<node>/cmd/result    edge → central   the signed result of a command (QoS 1)

Several central ingest workers share ``$share/<group>/floorgate/v1/+/up/+`` (MQTT 5 shared subscription), and the
same way ``…/+/heartbeat`` and ``…/+/cmd/result``.

A node may publish only below its own ``<node>``; central takes the node identity from the topic and checks that
the payload names the same node.
"""

from __future__ import annotations

import re

from sync.errors import DecodeError
from sync.streams import STREAMS

PREFIX = "floorgate/v1"
NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_node_id(node_id: str) -> str:
    """Return ``node_id`` if it can be used in a topic, else raise DecodeError."""
    if not NODE_ID_RE.match(node_id):
        raise DecodeError(
            f"{node_id!r} is not a valid node id (letters, digits, '_', '.', '-'; at most 64; no MQTT wildcards)",
            field="node",
        )
    return node_id


def batch_topic(node_id: str, stream: str) -> str:
    return f"{PREFIX}/{check_node_id(node_id)}/up/{stream}"


def ack_topic(node_id: str) -> str:
    return f"{PREFIX}/{check_node_id(node_id)}/ack"


def heartbeat_topic(node_id: str) -> str:
    return f"{PREFIX}/{check_node_id(node_id)}/heartbeat"


def replay_topic(node_id: str) -> str:
    return f"{PREFIX}/{check_node_id(node_id)}/replay"


def command_topic(node_id: str) -> str:
    return f"{PREFIX}/{check_node_id(node_id)}/cmd"


def command_result_topic(node_id: str) -> str:
    return f"{PREFIX}/{check_node_id(node_id)}/cmd/result"


def batch_subscription(share_group: str | None = None) -> str:
    """What central subscribes to for batches of every node (shared among workers when ``share_group`` is set)."""
    topic = f"{PREFIX}/+/up/+"
    return f"$share/{share_group}/{topic}" if share_group else topic


def heartbeat_subscription() -> str:
    return f"{PREFIX}/+/heartbeat"


def command_result_subscription(share_group: str | None = None) -> str:
    """What central subscribes to for command results of every node (shared like batches)."""
    topic = f"{PREFIX}/+/cmd/result"
    return f"$share/{share_group}/{topic}" if share_group else topic


def parse_command_result_topic(topic: str) -> str:
    """The node of ``floorgate/v1/<node>/cmd/result``; DecodeError for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX or parts[3:] != ["cmd", "result"]:
        raise DecodeError(f"not a command result topic: {topic!r}", field="topic")
    return check_node_id(parts[2])


def parse_node_topic(topic: str, leaf: str) -> str:
    """The node of ``floorgate/v1/<node>/<leaf>``; DecodeError for anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != PREFIX or parts[3] != leaf:
        raise DecodeError(f"not a {leaf} topic: {topic!r}", field="topic")
    return check_node_id(parts[2])


def parse_batch_topic(topic: str) -> tuple[str, str]:
    """Split a batch topic into ``(node, stream)``; raise DecodeError for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX or parts[3] != "up":
        raise DecodeError(f"not a batch topic: {topic!r}", field="topic")
    node, stream = parts[2], parts[4]
    check_node_id(node)
    if stream not in STREAMS:
        raise DecodeError(f"unknown stream {stream!r} (expected one of {sorted(STREAMS)})", field="topic")
    return node, stream
