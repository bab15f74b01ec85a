"""The per-process Bearer cache: a revocation wins over a look-up that was already running."""

from __future__ import annotations

from chatserver.auth import TokenCache


def test_a_cached_token_is_served_until_evicted() -> None:
    cache = TokenCache(ttl=30)
    cache.put("hash", 7)
    assert cache.get("hash") == 7
    cache.evict_token("hash")
    assert cache.get("hash") is None


def test_a_lookup_finishing_after_a_revocation_cannot_put_the_token_back() -> None:
    cache = TokenCache(ttl=30)
    cache.evict_token("hash")  # the revocation committed and evicted first …
    cache.put("hash", 7)  # … then a look-up that read the database before it finishes
    assert cache.get("hash") is None


def test_a_lookup_finishing_after_the_user_was_deleted_cannot_put_a_token_back() -> None:
    cache = TokenCache(ttl=30)
    cache.put("other", 8)
    cache.evict_user(7)
    cache.put("hash", 7)
    assert cache.get("hash") is None
    assert cache.get("other") == 8


def test_entries_expire_after_the_ttl() -> None:
    cache = TokenCache(ttl=0)
    cache.put("hash", 7)
    assert cache.get("hash") is None
