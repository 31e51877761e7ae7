"""Central's relational store (Postgres in production, SQLite for the demo) — the layer below everything else in
central (it imports nothing of ``central`` outside ``central.db``):

    models.py   the tables (SQLAlchemy models)
    types.py    column types with a rule: ``UtcDateTime`` (aware UTC in and out), ``ExactDecimal``; ``as_utc``
    values.py   what a stored value may hold (no NUL, codes, exact decimals) and how it is written out
    audit.py    the audit log, written in the transaction of each change
    engine.py   engine and session factory
    migrate.py  Alembic (``central/migrations``): ``floorgate central migrate``
"""
