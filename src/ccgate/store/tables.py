"""The database schema as SQLAlchemy Core tables (migrations live in ``migrations/``).

Designed for the records that join later (keys, usage, loops, idempotency):
every row that belongs to a client carries its ``namespace`` (the client key's
id, or ``local`` in ``auth_mode=none``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)

__all__ = [
    "accounts",
    "admissions",
    "api_keys",
    "console_sessions",
    "login_credentials",
    "loop_requests",
    "loops",
    "metadata",
    "quota_counters",
    "responses",
    "session_fingerprints",
    "sessions",
    "transcript_parts",
    "transcripts",
    "usage_records",
]

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

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    # SHA-256 of the key: keys are 190+ random bits, so a fast hash is enough.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("preview", String(32), nullable=False),
    Column("quota", Text, nullable=False, server_default="{}"),
    Column("models", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(128), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("session_key", String(256), nullable=True),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_read_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_creation_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_usd", Float, nullable=False, server_default="0"),
    Column("ttft_ms", Float, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Column("status", String(32), nullable=False),
    Column("cached", Boolean, nullable=False, server_default=false()),
    Column("created_at", Float, nullable=False),
    Column("day", String(10), nullable=False),
    # The upstream account the request ran on (``None``: cached, refused, or before 0007).
    Column("account", String(64), nullable=True),
)
Index(
    "ix_usage_records_namespace_created_at", usage_records.c.namespace, usage_records.c.created_at
)
Index("ix_usage_records_created_at", usage_records.c.created_at)

#: Admitted requests that have no ledger row yet (``store.admissions``): deleted, in the
#: transaction that writes the row, when the request ends or is found interrupted.
admissions = Table(
    "admissions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("session_key", String(256), nullable=True),
    # Where the request's tokens and cost are charged: JSON [[kind, start], ...].
    Column("windows", Text, nullable=False, server_default="[]"),
    Column("ledger", Boolean, nullable=False, server_default=true()),
    Column("owner", String(300), nullable=False),
    Column("admitted_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_read_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_creation_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_usd", Float, nullable=False, server_default="0"),
)
Index("ix_admissions_owner", admissions.c.owner)

quota_counters = Table(
    "quota_counters",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("window", String(16), primary_key=True),
    Column("start", BigInteger, primary_key=True),
    Column("requests", BigInteger, nullable=False, server_default="0"),
    Column("tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_usd", Float, nullable=False, server_default="0"),
)

loops = Table(
    "loops",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("title", String(200), nullable=False),
    Column("metadata", Text, nullable=False, server_default="{}"),
    Column("permission_mode", String(32), nullable=False),
    Column("model", String(128), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("archived_at", Float, nullable=True),
    Column("last_turn_at", Float, nullable=True),
    Column("turns", Integer, nullable=False, server_default="0"),
)
Index("ix_loops_namespace_created_at", loops.c.namespace, loops.c.created_at)

loop_requests = Table(
    "loop_requests",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("loop_id", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("turn_id", String(64), nullable=False),
    Column("events", Text, nullable=False, server_default="[]"),
    Column("done", Boolean, nullable=False, server_default=false()),
    Column("created_at", Float, nullable=False),
)
Index("ix_loop_requests_created_at", loop_requests.c.created_at)

console_sessions = Table(
    "console_sessions",
    metadata,
    # SHA-256 of the cookie's token: a stolen database holds no usable sign-in.
    Column("token_hash", String(64), primary_key=True),
    # admin (the admin key), shared (the shared key), client (a client key), local (no auth).
    Column("role", String(16), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("name", String(128), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
Index("ix_console_sessions_expires_at", console_sessions.c.expires_at)

#: Upstream accounts: the credentials Claude Code runs with (``store.accounts``).
accounts = Table(
    "accounts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    # login (Claude Code's own login), oauth_token (claude setup-token) or api_key.
    Column("kind", String(16), nullable=False),
    # The credential, encrypted (``accounts.secrets``); NULL for a login or the settings'.
    Column("secret", Text, nullable=True),
    Column("secret_hint", String(64), nullable=True),
    Column("base_url", Text, nullable=True),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    # stored (added by a person) or settings (the credential of ccgate's settings).
    Column("source", String(16), nullable=False, server_default="stored"),
    # What the plan meter knows (JSON of ``accounts.meter.PlanState``).
    Column("plan", Text, nullable=False, server_default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

#: Stored responses of the OpenAI Responses API (``store.responses``).
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    # The response this one continues (``previous_response_id``).
    Column("previous_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    # The request's new input items (JSON list, the API's own shape).
    Column("input", Text, nullable=False),
    # The response object as last answered (JSON).
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_responses_namespace_created_at", responses.c.namespace, responses.c.created_at)

#: Claude Code's session transcripts, shared by every replica (``store.transcripts``).
transcripts = Table(
    "transcripts",
    metadata,
    # The Claude Code session id (a conversation's ``cli_session_id``, a loop's session).
    Column("session_id", String(64), primary_key=True),
    # The transcript's JSONL, zlib-compressed.
    Column("content", LargeBinary, nullable=False),
    # Its uncompressed size in bytes and SHA-256 (hex): which version this is.
    Column("size", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
    # How many parts were appended to ``content`` since it was last stored whole.
    Column("parts", Integer, nullable=False, server_default="0"),
)

transcript_parts = Table(
    "transcript_parts",
    metadata,
    Column(
        "session_id",
        String(64),
        ForeignKey("transcripts.session_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # 1, 2, ...: the order in which the parts follow the transcript's ``content``.
    Column("seq", Integer, primary_key=True),
    # The bytes a turn added to the file, zlib-compressed, and their uncompressed size.
    Column("content", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
)

#: Claude Code's OAuth login, shared by the replicas that keep it fresh (``store.logins``).
login_credentials = Table(
    "login_credentials",
    metadata,
    # Which login: ``login``, the Claude Code login of the user running ccgate.
    Column("name", String(64), primary_key=True),
    # Claude Code's ``claudeAiOauth`` object (JSON), encrypted (``accounts.secrets``).
    Column("sealed", Text, nullable=False),
    # When its access token expires (Unix milliseconds, as Claude Code writes it).
    Column("expires_at", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The replica that stored it.
    Column("updated_by", String(128), nullable=False),
    # Until when (Unix seconds) a replica has claimed the renewal of this login, and which.
    Column("refreshing_until", Float, nullable=True),
    Column("refreshing_by", String(128), nullable=True),
)
