"""What both sides run but the wire contract does not need: the MQTT client, broker and TLS settings, the
configuration base and its errors. Unlike the rest of ``sync`` (stdlib and cryptography only) this subpackage may
import paho-mqtt, pydantic and PyYAML; nothing in ``sync`` outside it imports it.
"""
