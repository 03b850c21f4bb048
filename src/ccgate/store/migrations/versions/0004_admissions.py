"""Admissions: admitted requests that have no ledger row yet.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create admissions."""
    op.create_table(
        "admissions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("session_key", sa.String(256), nullable=True),
        sa.Column("windows", sa.Text, nullable=False, server_default="[]"),
        sa.Column("ledger", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("owner", sa.String(300), nullable=False),
        sa.Column("admitted_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cache_creation_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_admissions"),
    )
    op.create_index("ix_admissions_owner", "admissions", ["owner"])


def downgrade() -> None:
    """Drop admissions."""
    op.drop_table("admissions")
