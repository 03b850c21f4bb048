"""Conversation sessions and their history fingerprints.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the sessions and session_fingerprints tables."""
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("cli_session_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=False),
        sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
        sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("transcript", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("namespace", "key", name="uq_sessions_namespace_key"),
    )
    op.create_index("ix_sessions_last_used_at", "sessions", ["last_used_at"])
    op.create_table(
        "session_fingerprints",
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("message_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "fingerprint", name="pk_session_fingerprints"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_session_fingerprints_session_id_sessions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_session_fingerprints_session_id", "session_fingerprints", ["session_id"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("session_fingerprints")
    op.drop_table("sessions")
