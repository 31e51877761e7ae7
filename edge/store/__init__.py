"""The node's durable memory: the SQLite outbox (every record is committed here before anything is acknowledged),
the alibi mirror of legal weighings, and the POS receipt answers (idempotency of the sales API) — one database,
its tables and their migrations in ``edge.store.schema``.
"""
