"""How hard the proofs try: small in ``make test``, large in ``make fuzz`` / ``make chaos``.

Each knob is an environment variable (``PROOF_*``; not ``CHAT_*``, which the servers read)
with the bounded default the suite uses.
"""

from __future__ import annotations

import os


def knob(name: str, default: int) -> int:
    raw = os.environ.get(f"PROOF_{name}")
    return int(raw) if raw else default


# schemathesis: examples per operation and phase, steps per stateful scenario.
FUZZ_EXAMPLES = knob("FUZZ_EXAMPLES", 5)
FUZZ_STATEFUL_STEPS = knob("FUZZ_STATEFUL_STEPS", 5)
# With Basic credentials every request hashes a password: fewer.
FUZZ_BASIC_EXAMPLES = knob("FUZZ_BASIC_EXAMPLES", 1)
FUZZ_BASIC_STATEFUL_STEPS = knob("FUZZ_BASIC_STATEFUL_STEPS", 3)
# 1: the Basic run has the coverage phase too (make fuzz).
LONG_BASIC = bool(knob("FUZZ_BASIC_COVERAGE", 0))
# The Hypothesis state machine over the HTTP API: runs and steps per run.
MODEL_EXAMPLES = knob("MODEL_EXAMPLES", 4)
MODEL_STEPS = knob("MODEL_STEPS", 20)
# Crash consistency: kill -9 rounds per database, messages per writer per round.
CHAOS_ROUNDS = knob("CHAOS_ROUNDS", 2)
CHAOS_MESSAGES = knob("CHAOS_MESSAGES", 12)
