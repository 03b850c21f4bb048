"""A transcript's later turns as parts appended to it, instead of the whole file again.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create transcript_parts."""
    op.create_table(
        "transcript_parts",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "seq", name="pk_transcript_parts"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["transcripts.session_id"],
            name="fk_transcript_parts_session_id_transcripts",
            ondelete="CASCADE",
        ),
    )
    op.add_column("transcripts", sa.Column("parts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop transcript_parts."""
    op.drop_column("transcripts", "parts")
    op.drop_table("transcript_parts")
