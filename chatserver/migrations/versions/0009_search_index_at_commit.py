"""SQLite: new messages enter the search index at each group COMMIT, not in each send

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 04:10:00

Until now an FTS5 trigger indexed every message inside its send, on the event loop's
thread, and FTS5 writes out its pending words at every SAVEPOINT (each send is one): a
third of a send's database time. Now the group commit indexes the batch's new messages on
its own thread just before the COMMIT (``searchindex.index_new_messages``), in the same
transaction, so a committed message is always searchable. ``search_indexed.up_to`` is the
highest message id indexed (ids are never reused: ``messages`` is AUTOINCREMENT); the
triggers for edits and deletions touch the index only for messages already in it.
PostgreSQL is unchanged (its generated ``tsvector`` column).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# As in migration 0005, whose triggers these replace.
PEOPLE = (
    "'u' || {t}.sender_id || ' u' || {t}.recipient_id || ' c' || {t}.peer_lo || 'x' || {t}.peer_hi"
)
INDEXED = "(SELECT up_to FROM search_indexed)"


def _only_indexed(t: str, indexed_only: bool) -> str:
    return f" AND {t}.id <= {INDEXED}" if indexed_only else ""


def _insert(t: str, indexed_only: bool) -> str:
    condition = _only_indexed(t, indexed_only)
    return (
        f"INSERT INTO message_search (rowid, people, body) SELECT -{t}.id,"
        f" {PEOPLE.format(t=t)}, {t}.body WHERE {t}.deleted_at IS NULL{condition};"
    )


def _delete(t: str, indexed_only: bool) -> str:
    condition = _only_indexed(t, indexed_only)
    return (
        "INSERT INTO message_search (message_search, rowid, people, body) SELECT 'delete',"
        f" -{t}.id, {PEOPLE.format(t=t)}, {t}.body WHERE {t}.deleted_at IS NULL{condition};"
    )


def _replace_triggers(indexed_only: bool) -> None:
    op.execute("DROP TRIGGER messages_search_update")
    op.execute("DROP TRIGGER messages_search_delete")
    op.execute(
        "CREATE TRIGGER messages_search_update AFTER UPDATE OF body ON messages"
        f" BEGIN {_delete('old', indexed_only)} {_insert('new', indexed_only)} END"
    )
    op.execute(
        "CREATE TRIGGER messages_search_delete AFTER DELETE ON messages"
        f" BEGIN {_delete('old', indexed_only)} END"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE TABLE search_indexed (up_to INTEGER NOT NULL)")
    # Every message so far was indexed by the insert trigger.
    op.execute("INSERT INTO search_indexed SELECT coalesce(max(id), 0) FROM messages")
    op.execute("DROP TRIGGER messages_search_insert")
    _replace_triggers(indexed_only=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO message_search (rowid, people, body) SELECT -m.id,"
        f" {PEOPLE.format(t='m')}, m.body FROM messages m"
        f" WHERE m.deleted_at IS NULL AND m.id > {INDEXED}"
    )
    _replace_triggers(indexed_only=False)
    insert_new = _insert("new", indexed_only=False)
    op.execute(
        f"CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN {insert_new} END"
    )
    op.execute("DROP TABLE search_indexed")
