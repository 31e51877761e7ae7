"""MQTT ingest: decode batches, apply them exactly once, write readings, acknowledge."""
