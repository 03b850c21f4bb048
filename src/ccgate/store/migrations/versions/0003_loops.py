"""Loops and the idempotency records of their messages.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create loops and loop_requests."""
    op.create_table(
        "loops",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
        sa.Column("permission_mode", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("archived_at", sa.Float, nullable=True),
        sa.Column("last_turn_at", sa.Float, nullable=True),
        sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_loops"),
    )
    op.create_index("ix_loops_namespace_created_at", "loops", ["namespace", "created_at"])
    op.create_table(
        "loop_requests",
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("loop_id", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("events", sa.Text, nullable=False, server_default="[]"),
        sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "key", name="pk_loop_requests"),
    )
    op.create_index("ix_loop_requests_created_at", "loop_requests", ["created_at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("loop_requests")
    op.drop_table("loops")
