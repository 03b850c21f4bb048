"""Claude Code's session transcripts in the database, so every replica can resume a session.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create transcripts."""
    op.create_table(
        "transcripts",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_transcripts"),
    )


def downgrade() -> None:
    """Drop transcripts."""
    op.drop_table("transcripts")
