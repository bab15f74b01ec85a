"""passwords.py: the shipped common-password list, rehash detection and the hash gate
(at most N hashes at once, waiting requests served in turn by client address)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from argon2 import PasswordHasher

from chatserver import passwords
from chatserver.passwords import HASHER, HashGate
from tests.helpers import PASSWORD


@pytest.mark.parametrize("password", ["password", "Password", "123456789", "qwertyuiop"])
def test_common_passwords_are_on_the_list(password: str) -> None:
    assert passwords.is_common(password)


@pytest.mark.parametrize("password", [PASSWORD, "s3cret-pass", "bench-Pass-2024", "pw-123456"])
def test_the_passwords_the_tests_use_are_not(password: str) -> None:
    assert not passwords.is_common(password)


def test_hashes_with_other_parameters_need_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("x")
    assert passwords.needs_rehash(weak)
    assert not passwords.needs_rehash(HASHER.hash("x"))
    assert passwords.needs_rehash("not a hash")


def test_the_hasher_is_argon2id_at_owasp_strength_or_more() -> None:
    params = HASHER.hash("x").split("$")
    assert params[1] == "argon2id"
    fields = dict(p.split("=") for p in params[3].split(","))
    # OWASP: m=19 MiB with t=2, or m=46 MiB with t=1 (p=1); 64 MiB with t=3 is above both.
    assert int(fields["m"]) >= 46 * 1024
    assert int(fields["t"]) >= 2


@pytest.fixture
def in_flight(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wraps the real verification to record how many run at once (each at its start)."""
    seen: list[int] = []
    running = 0
    lock = threading.Lock()
    real = passwords._verify

    def counted(password_hash: str, password: str) -> bool:
        nonlocal running
        with lock:
            running += 1
            seen.append(running)
        try:
            return real(password_hash, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(passwords, "_verify", counted)
    return seen


async def test_the_gate_runs_at_most_its_slots_at_once(in_flight: list[int]) -> None:
    gate = HashGate(2)
    results = await asyncio.gather(
        *(gate.verify("10.0.0.1", passwords.DUMMY_HASH, f"guess-{i}") for i in range(8))
    )
    assert results == [False] * 8
    assert len(in_flight) == 8
    assert max(in_flight) <= 2


async def test_another_address_waits_for_one_turn_not_for_the_whole_burst() -> None:
    gate = HashGate(1)
    finished: list[str] = []

    async def check(client: str, i: int) -> None:
        await gate.verify(client, passwords.DUMMY_HASH, f"guess-{i}")
        finished.append(client)

    burst = [asyncio.create_task(check("attacker", i)) for i in range(6)]
    await asyncio.sleep(0)  # the burst queues first
    await asyncio.gather(*burst, check("someone", 0))
    # The attacker's first check holds the slot; the next turn is someone's, whatever is
    # still queued behind the attacker.
    assert finished.index("someone") == 1


async def test_a_request_that_goes_away_gives_its_turn_back() -> None:
    gate = HashGate(1)
    first = asyncio.create_task(gate.verify("a", passwords.DUMMY_HASH, "x"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(gate.verify("b", passwords.DUMMY_HASH, "y"))
    await asyncio.sleep(0)
    waiting.cancel()
    assert await first is False
    started = time.monotonic()
    assert await asyncio.wait_for(gate.verify("c", passwords.DUMMY_HASH, "z"), 30) is False
    assert time.monotonic() - started < 30  # the slot was not lost with the cancelled one
