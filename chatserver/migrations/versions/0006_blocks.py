"""blocks: who blocked whom

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-07 00:30:00

One row per (blocker, blocked) pair. The primary key answers "does A block B" (every send
asks) and lists a user's blocks; the index on blocked_id answers "who blocks me" for a page
of profiles. Either account's deletion removes the row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"  # re-chained after 0005 when both branches merged
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("blocker_id", sa.BigInteger(), nullable=False),
        sa.Column("blocked_id", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["blocker_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["blocked_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("blocker_id", "blocked_id"),
    )
    op.create_index("ix_blocks_blocked", "blocks", ["blocked_id", "blocker_id"])


def downgrade() -> None:
    op.drop_index("ix_blocks_blocked", table_name="blocks")
    op.drop_table("blocks")
