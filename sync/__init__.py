"""The wire contract between edge and central: topics, envelope, encoding and acknowledgements, record kinds.

Pure code (stdlib and ``cryptography`` only): both sides import it, neither side's runtime lives here — what both
sides run (MQTT client, broker/TLS settings, the configuration base) is the separate ``sync.runtime``.
See ``sync.envelope`` for the message layouts, ``sync.records`` for what each kind of record holds and
``sync.topics`` for the topic tree.
"""

from sync.envelope import (
    ENVELOPE_VERSION,
    Ack,
    Batch,
    Heartbeat,
    Record,
    Replay,
    StreamBacklog,
    decode_ack,
    decode_batch,
    decode_heartbeat,
    decode_replay,
    encode_ack,
    encode_batch,
    encode_heartbeat,
    encode_replay,
    record_digest,
)
from sync.errors import DecodeError, SyncError
from sync.streams import STREAMS, Stream

__all__ = [
    "ENVELOPE_VERSION",
    "STREAMS",
    "Ack",
    "Batch",
    "DecodeError",
    "Heartbeat",
    "Record",
    "Replay",
    "Stream",
    "StreamBacklog",
    "SyncError",
    "decode_ack",
    "decode_batch",
    "decode_heartbeat",
    "decode_replay",
    "encode_ack",
    "encode_batch",
    "encode_heartbeat",
    "encode_replay",
    "record_digest",
]
