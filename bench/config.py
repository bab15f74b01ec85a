"""Command-line options and the sizes each mode uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

SCENARIOS = (
    "startup",
    "idle-sockets",
    "send",
    "inbox",
    "conversation",
    "sync",
    "user",
    "mixed",
    "login",
    "read",
    "edit",
    "big-inbox",
    "search",
    "conversations",
    "resume",
    "presence",
    "fanout",
    "in-process",
    "overhead",
)
HTTP_SCENARIOS = (
    "send",
    "inbox",
    "conversation",
    "sync",
    "user",
    "mixed",
    "login",
    "read",
    "edit",
)
SOCKET_SCENARIOS = ("idle-sockets", "fanout")


@dataclass(frozen=True)
class Options:
    db: str = "sqlite"
    redis: bool = False
    workers: int = 1
    server: str | None = None  # None: the server's default ASGI server
    quick: bool = False
    scenarios: tuple[str, ...] = SCENARIOS
    write_docs: bool = False
    rate_limits: str = "on"
    metrics: str = "off"
    duration: float | None = None  # seconds per measured wrk run; None: the size's own

    @property
    def default_setup(self) -> bool:
        """The configuration the performance targets are stated for."""
        return self.db == "sqlite" and self.workers == 1 and not self.redis

    @property
    def sizes(self) -> Sizes:
        sizes = QUICK if self.quick else FULL
        return (
            sizes if self.duration is None else dataclasses.replace(sizes, duration=self.duration)
        )


@dataclass(frozen=True)
class Sizes:
    users: int
    messages_per_user: int
    partners: int
    duration: float  # seconds per measured wrk run
    warmup: float
    connections: int
    wrk_threads: int
    login_connections: int
    big_count: int
    small_count: int
    big_duration: float
    big_warmup: float
    big_connections: int
    fanout_sockets: tuple[int, ...]
    fanout_rate: float
    fanout_duration: float
    fanout_grace: float
    idle_sockets: int
    startup_repeats: int
    inprocess_calls: int
    inprocess_warmup: int
    overhead_rounds: int  # alternating rounds per feature and route (overhead)
    overhead_calls: int  # calls per round
    conversations_big: int  # conversations of the big user (the small one has 10)
    resume_behind: int  # events a resuming stream is behind
    resume_repeats: int
    presence_conversations: int  # conversations of the user who connects and disconnects
    presence_watchers: int  # of their peers, how many stream
    presence_cycles: int
    ceiling_connections: int = 64
    notes: tuple[str, ...] = field(default_factory=tuple)


FULL = Sizes(
    users=1000,
    messages_per_user=20,
    partners=5,
    duration=10,
    warmup=2,
    connections=64,
    wrk_threads=2,
    login_connections=16,
    big_count=1_000_000,
    small_count=100,
    big_duration=5,
    big_warmup=1,
    big_connections=8,
    fanout_sockets=(1000, 10_000),
    fanout_rate=500,
    fanout_duration=10,
    fanout_grace=5,
    idle_sockets=10_000,
    startup_repeats=3,
    inprocess_calls=20_000,
    inprocess_warmup=500,
    overhead_rounds=20,
    overhead_calls=1000,
    conversations_big=10_000,
    resume_behind=1000,
    resume_repeats=20,
    presence_conversations=5000,
    presence_watchers=50,
    presence_cycles=10,
)

QUICK = Sizes(
    users=50,
    messages_per_user=5,
    partners=5,
    duration=2,
    warmup=1,
    connections=64,
    wrk_threads=2,
    login_connections=8,
    big_count=20_000,
    small_count=100,
    big_duration=1,
    big_warmup=0,
    big_connections=8,
    fanout_sockets=(200,),
    fanout_rate=500,
    fanout_duration=3,
    fanout_grace=2,
    idle_sockets=1000,
    startup_repeats=1,
    inprocess_calls=1_000,
    inprocess_warmup=100,
    overhead_rounds=4,
    overhead_calls=200,
    conversations_big=1000,
    resume_behind=1000,
    resume_repeats=5,
    presence_conversations=500,
    presence_watchers=5,
    presence_cycles=3,
    notes=(
        "quick mode: 50 users, 2 s runs, big-inbox at 20,000 messages, 1,000 conversations, "
        "presence at 500 conversations, "
        "fan-out at 200 sockets, idle sockets at 1,000; numbers are indicative, the point is "
        "zero errors",
    ),
)
