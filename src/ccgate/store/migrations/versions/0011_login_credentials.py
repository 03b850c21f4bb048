"""Claude Code's OAuth login, shared by the replicas that keep it fresh.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create login_credentials."""
    op.create_table(
        "login_credentials",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("refreshing_until", sa.Float, nullable=True),
        sa.Column("refreshing_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_login_credentials"),
    )


def downgrade() -> None:
    """Drop login_credentials."""
    op.drop_table("login_credentials")
