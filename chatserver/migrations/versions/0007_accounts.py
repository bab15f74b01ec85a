"""username skeletons and PRECIS keys, token last use

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-07 00:30:00

Usernames are compared by RFC 8265's UsernameCaseMapped profile (``username_key``, was a
casefold) and kept apart from look-alikes by their UTS #39 skeleton (``username_skeleton``,
unique). Existing rows are keyed again in id order; a row whose new key or skeleton an
older row already has keeps its old key, or no skeleton (NULL is never a duplicate).
Tokens get ``last_used_at``, for expiry after a time without use.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatserver import usernames

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("last_used_at", sa.BigInteger(), nullable=True))
    op.add_column("users", sa.Column("username_skeleton", sa.String(120), nullable=True))
    _backfill()
    op.create_index("ix_users_username_skeleton", "users", ["username_skeleton"], unique=True)


def _backfill() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, username, username_key FROM users ORDER BY id")
    ).fetchall()
    keys = {old_key for _, _, old_key in rows}
    skeletons: set[str | None] = set()
    for user_id, username, old_key in rows:
        key = usernames.key(username) or old_key
        if key != old_key and key in keys:
            key = old_key  # an older account already has this key: keep the old one
        keys.add(key)
        skeleton: str | None = usernames.skeleton(key)
        if skeleton in skeletons:
            skeleton = None  # an older account looks the same: this one keeps no skeleton
        else:
            skeletons.add(skeleton)
        conn.execute(
            sa.text("UPDATE users SET username_key = :k, username_skeleton = :s WHERE id = :i"),
            {"k": key, "s": skeleton, "i": user_id},
        )


def downgrade() -> None:
    op.drop_index("ix_users_username_skeleton", table_name="users")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("username_skeleton")
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.drop_column("last_used_at")
