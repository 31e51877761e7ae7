"""Central's relational store (Postgres in production, SQLite for the demo): models, engine and migrations."""
