"""edits, deletions, replies and full-text search of messages

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-07 00:30:00

Messages gain ``edited_at``, ``deleted_at`` and ``reply_to``; an Idempotency-Key row notes
the message it stored (so deleting the message can rewrite the stored response). The
search index is each engine's own:

- SQLite: ``message_search``, an FTS5 table without content of its own (the text lives in
  ``messages`` only), kept in step by triggers on ``messages``: insert, an update of the
  body (edit, delete) and the deletion of a row (an account's messages).
- PostgreSQL: ``messages.search``, a generated ``tsvector`` column with a GIN index.

Both index, beside the words of the body, the message's people ("u<id>" for the sender and
the recipient, "c<lo>x<hi>" for the conversation) in a column (SQLite) or with weight A
(PostgreSQL) that no word of a body can reach, so a search is one index lookup for the
caller's messages. Existing messages are indexed by the migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

# The people of a message, as index tokens (SQLite's || turns integers into text).
SQLITE_PEOPLE = (
    "'u' || {t}.sender_id || ' u' || {t}.recipient_id || ' c' || {t}.peer_lo || 'x' || {t}.peer_hi"
)
PG_SEARCH = (
    "setweight(to_tsvector('simple', 'u' || sender_id::text || ' u' || recipient_id::text"
    " || ' c' || peer_lo::text || 'x' || peer_hi::text), 'A') || to_tsvector('simple', body)"
)


def upgrade() -> None:
    for column in ("edited_at", "deleted_at", "reply_to"):
        op.add_column("messages", sa.Column(column, sa.BigInteger(), nullable=True))
    op.add_column("idempotency_keys", sa.Column("message_id", sa.BigInteger(), nullable=True))
    op.create_index("ix_idempotency_keys_message_id", "idempotency_keys", ["message_id"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("UPDATE idempotency_keys SET message_id = json_extract(response, '$.id')")
        _sqlite_search()
    else:
        op.execute("UPDATE idempotency_keys SET message_id = (response::json->>'id')::bigint")
        op.execute(
            f"ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS ({PG_SEARCH})"
            " STORED"
        )
        op.execute("CREATE INDEX ix_messages_search ON messages USING gin (search)")


def _sqlite_search() -> None:
    # detail=full: any word a tokenizer splits further still matches as a phrase.
    op.execute(
        "CREATE VIRTUAL TABLE message_search USING fts5(people, body, content='',"
        " tokenize='unicode61 remove_diacritics 2')"
    )
    new, old = SQLITE_PEOPLE.format(t="new"), SQLITE_PEOPLE.format(t="old")
    insert_new = (
        f"INSERT INTO message_search (rowid, people, body) SELECT new.id, {new}, new.body"
        " WHERE new.deleted_at IS NULL;"
    )
    delete_old = (
        "INSERT INTO message_search (message_search, rowid, people, body)"
        f" SELECT 'delete', old.id, {old}, old.body WHERE old.deleted_at IS NULL;"
    )
    op.execute(
        f"CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN {insert_new} END"
    )
    # An edit replaces the words; a tombstone (deleted_at set, body emptied) leaves the index.
    op.execute(
        "CREATE TRIGGER messages_search_update AFTER UPDATE OF body ON messages"
        f" BEGIN {delete_old} {insert_new} END"
    )
    op.execute(
        f"CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN {delete_old} END"
    )
    people = SQLITE_PEOPLE.format(t="messages")
    # Existing messages are indexed here; from now on the triggers keep the index.
    index_all = f"INSERT INTO message_search (rowid, people, body) SELECT id, {people}, body"
    op.execute(f"{index_all} FROM messages WHERE deleted_at IS NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER messages_search_{trigger}")
        op.execute("DROP TABLE message_search")
    else:
        op.execute("DROP INDEX ix_messages_search")
        op.execute("ALTER TABLE messages DROP COLUMN search")
    op.drop_index("ix_idempotency_keys_message_id", table_name="idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_column("message_id")
    with op.batch_alter_table("messages") as batch_op:
        for column in ("edited_at", "deleted_at", "reply_to"):
            batch_op.drop_column(column)
