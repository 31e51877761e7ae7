"""The edge agent: polls devices, keeps every record in an SQLite outbox and syncs it to central over MQTT."""
