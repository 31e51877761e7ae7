"""The edge agent: polls devices, keeps every record in an SQLite outbox and syncs it to central over MQTT."""

__version__ = "0.1.0"
