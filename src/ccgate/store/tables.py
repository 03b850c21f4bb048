"""The database schema as SQLAlchemy Core tables (migrations live in ``migrations/``).

Designed for the records that join later (keys, usage, loops, idempotency):
every row that belongs to a client carries its ``namespace`` (the client key's
id, or ``local`` in ``auth_mode=none``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["metadata", "session_fingerprints", "sessions"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("key", String(256), nullable=False),
    Column("model", String(128), nullable=False),
    Column("cli_session_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Column("turns", Integer, nullable=False, server_default="0"),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("transcript", Text, nullable=True),
    UniqueConstraint("namespace", "key", name="uq_sessions_namespace_key"),
)
Index("ix_sessions_last_used_at", sessions.c.last_used_at)

session_fingerprints = Table(
    "session_fingerprints",
    metadata,
    Column(
        "session_id",
        String(64),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("fingerprint", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("message_count", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index(
    "ix_session_fingerprints_namespace_fingerprint",
    session_fingerprints.c.namespace,
    session_fingerprints.c.fingerprint,
)
