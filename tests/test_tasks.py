"""chatserver.tasks: stopping background tasks."""

from __future__ import annotations

import asyncio

import pytest

from chatserver.tasks import cancel_and_wait

WAIT = 5.0  # bound on waiting for a task to start


async def started(*events: asyncio.Event) -> None:
    """Wait until each task has set its event, i.e. is running inside its ``try``."""
    async with asyncio.timeout(WAIT):
        for event in events:
            await event.wait()


async def test_every_task_is_cancelled_and_finished_before_it_returns() -> None:
    cleaned: list[str] = []
    running = {name: asyncio.Event() for name in ("a", "b")}

    async def service(name: str) -> None:
        try:
            running[name].set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # the clean-up itself suspends: cancel_and_wait waits it out
            cleaned.append(name)

    tasks = [asyncio.create_task(service(name)) for name in running]
    await started(*running.values())
    await cancel_and_wait(tasks[0], None, tasks[1])  # None: a service never started
    assert all(task.done() for task in tasks)
    assert cleaned == ["a", "b"]


async def test_a_task_that_fails_while_stopping_raises_to_the_caller() -> None:
    running = asyncio.Event()

    async def service() -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("could not flush")

    task = asyncio.create_task(service())
    await started(running)
    with pytest.raises(RuntimeError, match="could not flush"):
        await cancel_and_wait(task)
