"""What must last: SQLAlchemy Core tables, Alembic migrations and one store per concern.

``database`` opens the database (SQLite by default, Postgres for replicas) and
migrates it; ``records`` holds the plain records; ``keys``, ``usage``,
``admissions``, ``counters``, ``sessions`` and ``loops`` are the stores, each
a Protocol with its contract and its SQL implementation, checked by one
conformance suite on both databases; ``journal`` keeps the writes a locked
database could not take yet.
"""
