"""Drop sessions.transcript: a column nothing ever wrote (transcripts are Claude Code's files).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the column (SQLite rebuilds the table)."""
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("transcript")


def downgrade() -> None:
    """Bring the column back, empty."""
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("transcript", sa.Text, nullable=True))
