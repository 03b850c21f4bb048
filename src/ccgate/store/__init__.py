"""What must last: SQLAlchemy Core tables, Alembic migrations and one store per concern.

``database`` opens the database (SQLite by default, Postgres for replicas) and
migrates it; ``records`` holds the plain records; ``keys``, ``usage``,
``admissions``, ``counters``, ``sessions``, ``transcripts`` and ``loops`` are
the stores, each a Protocol with its contract and its SQL implementation,
checked by one conformance suite on both databases; ``redis_counters`` keeps
the counters' contract in Redis, for replicas (``redis_url``); ``journal``
keeps the writes a locked database (or an unreachable Redis) could not take yet.
"""
