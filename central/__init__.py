"""The central service: MQTT ingest into Postgres (business records) and InfluxDB (readings), and the REST API."""

__version__ = "0.1.0"
