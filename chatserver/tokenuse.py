"""``tokens.last_used_at``: noted on every Bearer request, written at most once per
resolution per token by a background task (``batched.py``, as for users' last_seen_at).

Expiry reads the column in the token look-up it already makes (``find_token_user``), so a
request costs no write and no extra read; the price is that ``last_used_at`` lags up to
one resolution plus one flush period behind, which is nothing next to a TTL in days.
"""

from __future__ import annotations

from chatserver import store
from chatserver.batched import BatchedTimes
from chatserver.db import Database

# Tokens not noted for this many resolutions are forgotten, so the table stays small.
FORGET_AFTER_RESOLUTIONS = 2


class TokenUse(BatchedTimes[str]):
    def __init__(self, db: Database, resolution_seconds: float) -> None:
        super().__init__(
            db,
            resolution_seconds,
            store.set_tokens_used,
            # A write at most a minute late, and never more often than a token is noted.
            period=min(resolution_seconds, 60.0),
            forget_after=FORGET_AFTER_RESOLUTIONS * resolution_seconds,
            what="tokens' last_used_at",
        )
