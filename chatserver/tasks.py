"""Stopping background tasks: the one way every service's ``stop`` ends its tasks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks (None: not started) and wait for each to finish, so a stopped service
    leaves nothing running that could still write or publish. An exception other than the
    cancellation is raised to the caller."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task
