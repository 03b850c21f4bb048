"""Upstream accounts (their secrets encrypted) and the account each ledger row ran on.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create accounts; add usage_records.account."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("secret_hint", sa.String(64), nullable=True),
        sa.Column("base_url", sa.Text, nullable=True),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("source", sa.String(16), nullable=False, server_default="stored"),
        sa.Column("plan", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("account", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop accounts and usage_records.account."""
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("account")
    op.drop_table("accounts")
