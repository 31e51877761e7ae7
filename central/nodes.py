"""Node enrolment at central: register (or replace) a node's Ed25519 public key, list the nodes.

The key pair is made on the node (``floorgate edge enrol`` or the first ``floorgate edge run``); only the public
key travels. Until a node is registered, everything it sends lands in the quarantine ("not enrolled").
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import Node
from sync.signing import fingerprint, parse_public_key, public_key_text
from sync.topics import check_node_id

log = logging.getLogger(__name__)


def register_node(sessions: sessionmaker[Session], node_id: str, public_key: str) -> tuple[str, bool]:
    """Store ``public_key`` for ``node_id`` (SigningKeyError / DecodeError for bad input). Returns (fingerprint,
    replaced) — replaced is True when the node had another key before."""
    check_node_id(node_id)
    key = parse_public_key(public_key)
    text = public_key_text(key)
    fp = fingerprint(key)
    with sessions.begin() as session:
        node = session.get(Node, node_id)
        replaced = node is not None and node.public_key not in (None, text)
        if node is None:
            node = Node(node_id=node_id)
            session.add(node)
        node.public_key = text
        node.key_fingerprint = fp
        node.enrolled_at = datetime.now(UTC)
    log.info("node %s enrolled with key %s%s", node_id, fp, " (replacing its previous key)" if replaced else "")
    return fp, replaced


def list_nodes(sessions: sessionmaker[Session]) -> list[Node]:
    with sessions() as session:
        return list(session.execute(select(Node).order_by(Node.node_id)).scalars())
