"""Full-text search of a user's messages, with each engine's own index (migration 0005).

SQLite: the FTS5 table ``message_search`` (columns ``people`` and ``body``): new messages
enter it at each group COMMIT (``index_new_messages``), edits and deletions through
triggers (migration 0009). PostgreSQL: the generated ``tsvector`` column
``messages.search`` (people with weight A, body words with D) behind a GIN index. Both
answer "every word, the last one as a prefix, among this user's (or this conversation's)
messages", newest first; a deleted message is not in either index.
"""

from __future__ import annotations

import re
import sqlite3
from typing import NamedTuple

from chatserver.db import Conn

# A word is a run of letters and digits: what both engines' tokenizers keep as one token.
WORD_RE = re.compile(r"[^\W_]+")


class SearchQuery(NamedTuple):
    user_id: int
    words: tuple[str, ...]  # at least one; the last one matches as a prefix
    with_user: int | None = None


def words_of(text: str) -> tuple[str, ...]:
    return tuple(WORD_RE.findall(text))


def _people_token(q: SearchQuery) -> str:
    """Whose messages: the user's, or the conversation's (which is one of the user's)."""
    if q.with_user is None:
        return f"u{q.user_id}"
    lo, hi = sorted((q.user_id, q.with_user))
    return f"c{lo}x{hi}"


def fts5_expression(q: SearchQuery) -> str:
    """An FTS5 query: the people column holds the token; the body every word."""
    terms = [f'body : "{word.replace(chr(34), chr(34) * 2)}"' for word in q.words]
    terms[-1] += " *"
    return " AND ".join([f'people : "{_people_token(q)}"', *terms])


def tsquery_text(q: SearchQuery) -> str:
    """A PostgreSQL tsquery: the people lexeme with weight A, body words with weight D
    (a body's lexemes have D), the last one a prefix."""
    lexemes = [f"'{_quote(word.lower())}':D" for word in q.words]
    lexemes[-1] = lexemes[-1].removesuffix(":D") + ":*D"
    return " & ".join([f"'{_people_token(q)}':A", *lexemes])


def _quote(word: str) -> str:
    return word.replace("\\", "\\\\").replace("'", "''")


_SQLITE_MATCH = "FROM message_search WHERE message_search MATCH $1"
_PG_MATCH = "FROM messages WHERE search @@ to_tsquery('simple', $1)"


async def search_page(
    conn: Conn, dialect: str, q: SearchQuery, offset: int, limit: int
) -> tuple[int, list[int]]:
    """How many messages match, and a page of their ids, newest first.

    A page that is not full ends the matches, so its place is their count: a search that
    finds a few messages (the usual one) runs the index query once. Only a full page, or
    one past the end, asks for the count as well."""
    if dialect == "sqlite":
        # The index's rowid is minus the message id (see migration 0005).
        match, key, order, query = _SQLITE_MATCH, "-rowid", "rowid", fts5_expression(q)
    else:
        match, key, order, query = _PG_MATCH, "id", "id DESC", tsquery_text(q)
    rows = await conn.fetch_all(
        f"SELECT {key} {match} ORDER BY {order} LIMIT $2 OFFSET $3", query, limit, offset
    )
    ids = [int(row[0]) for row in rows]
    ends_here = 0 < len(ids) < limit or (not ids and not offset)
    if ends_here:
        return offset + len(ids), ids
    return int(await conn.fetch_val(f"SELECT count(*) {match}", query)), ids


# ---------------------------------------------------------------- SQLite: new messages

_INDEXED = "SELECT up_to, (SELECT max(id) FROM messages) FROM search_indexed"
# Newest first, so that the rowids (minus the ids) ascend: FTS5 writes its pending words
# out as a new segment whenever a rowid is lower than the one before, which in id order
# would be at every message (three times the CPU of a batch written out once).
_INDEX_RANGE = (
    "INSERT INTO message_search (rowid, people, body) SELECT -id, 'u' || sender_id || ' u' ||"
    " recipient_id || ' c' || peer_lo || 'x' || peer_hi, body FROM messages"
    " WHERE id > ? AND id <= ? AND deleted_at IS NULL ORDER BY id DESC"
)


def index_new_messages(conn: sqlite3.Connection) -> tuple[int, int]:
    """SQLite: index the messages above ``search_indexed.up_to``, in the open transaction;
    how many were indexed before, and how many now (the ids are the count, near enough).

    Synchronous, on the raw connection: ``SearchIndexer`` runs it on the commit thread, where
    the COMMIT runs, with every writer held."""
    up_to, latest = conn.execute(_INDEXED).fetchone()
    if latest is None or latest <= up_to:
        return up_to, up_to
    conn.execute(_INDEX_RANGE, (up_to, latest))
    conn.execute("UPDATE search_indexed SET up_to = ?", (latest,))
    return up_to, latest


def merge_search_index(conn: sqlite3.Connection) -> None:
    """SQLite: merge the FTS5 index into one segment ('optimize'), in the open transaction.

    A search reads each segment's list of a word's messages, so a long history split over
    many segments costs a search several times what one segment does. The merge also drops
    the words of edited and deleted messages, which FTS5 (before SQLite 3.44's
    ``secure-delete``) keeps in older segments. Never the incremental ``'merge', -N``: on
    SQLite 3.40 its steps, interleaved with inserts, corrupt the index."""
    conn.execute("INSERT INTO message_search (message_search) VALUES ('optimize')")


class SearchIndexer:
    """SQLite: the work due before each group COMMIT (``GroupCommit``'s ``before_commit``).

    Indexes the batch's new messages in its transaction, so a committed message is always
    searchable while no send pays for the index on the event loop (FTS5 writes its pending
    words out at every SAVEPOINT, and each send is one). Once the index has grown by a
    quarter (and at least ``min_growth`` messages) since its last merge, it merges it into
    one segment: each message is rewritten a few times in all, whatever the history's
    length, and a search reads one long segment and a few short ones."""

    GROWTH = 0.25
    MIN_GROWTH = 20_000

    def __init__(self, min_growth: int = MIN_GROWTH) -> None:
        self._min_growth = min_growth
        self._merged: int | None = None  # messages indexed at the last merge (or start)
        self._since = 0  # messages indexed since then

    def __call__(self, conn: sqlite3.Connection) -> None:
        before, now = index_new_messages(conn)
        if self._merged is None:
            self._merged = before
        self._since += now - before
        if self._since >= max(self._min_growth, self.GROWTH * self._merged):
            merge_search_index(conn)
            self._merged += self._since
            self._since = 0


async def search_index_behind(conn: Conn) -> bool:
    """SQLite: whether messages were committed without the group commit's indexing (a bulk
    load, another tool); one write transaction then catches the index up."""
    row = await conn.fetch_one(_INDEXED)
    return row is not None and row[1] is not None and int(row[1]) > int(row[0])
