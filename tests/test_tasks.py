"""chatserver.tasks: stopping background tasks."""

from __future__ import annotations

import asyncio

import pytest

from chatserver.tasks import cancel_and_wait


async def test_every_task_is_cancelled_and_finished_before_it_returns() -> None:
    cleaned: list[str] = []

    async def service(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # its clean-up takes a turn of the loop
            cleaned.append(name)

    tasks = [asyncio.create_task(service(name)) for name in ("a", "b")]
    await asyncio.sleep(0)  # both started
    await cancel_and_wait(tasks[0], None, tasks[1])  # None: a service never started
    assert all(task.done() for task in tasks)
    assert cleaned == ["a", "b"]


async def test_a_task_that_fails_while_stopping_raises_to_the_caller() -> None:
    async def service() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("could not flush")

    task = asyncio.create_task(service())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="could not flush"):
        await cancel_and_wait(task)
