"""Waiting without losing a cancellation, and stopping tasks whatever they do."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from hypernetes.asyncwait import cancel_and_wait, wait_event


async def _lost_cancellations(wait: object) -> list[int]:
    """Set the event a task waits on, then cancel the task after 0, 1, 2 or 3 turns of the loop
    (a shutdown beside a pod update); the turns after which a cancel the task accepted (cancel()
    returned True: it had not finished) was lost (the task ended with a result)."""
    lost = []
    for turns in range(4):
        event = asyncio.Event()
        task = asyncio.create_task(wait(event))  # type: ignore[operator]
        await asyncio.sleep(0)  # the task waits on the event now
        event.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        accepted = task.cancel()
        await asyncio.wait([task])
        if accepted and not task.cancelled():
            lost.append(turns)
    return lost


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the race was fixed in Python 3.12")
@pytest.mark.allow_skip_on_ci("CI runs the project's Python, 3.11, where the race exists")
async def test_wait_for_loses_the_cancellation_on_311() -> None:
    """Why wait_event exists: the race is real on the Python this project runs on."""
    assert await _lost_cancellations(lambda e: asyncio.wait_for(e.wait(), 30))


async def test_wait_event_keeps_the_cancellation() -> None:
    assert await _lost_cancellations(lambda e: wait_event(e, 30)) == []
    assert await wait_event(asyncio.Event(), 0.01) is False
    done = asyncio.Event()
    done.set()
    assert await wait_event(done, None) is True


async def test_cancel_and_wait_cancels_again_and_is_bounded() -> None:
    swallowed = 0

    async def swallows_one() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed += 1  # as a loop that lost its cancellation goes on
        await asyncio.sleep(30)

    stop = False

    async def never_ends() -> None:  # until the test lets it, whatever cancels it
        while not stop:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.1)

    stubborn, forever = asyncio.create_task(swallows_one()), asyncio.create_task(never_ends(), name="forever")
    await asyncio.sleep(0)  # both are running
    loop = asyncio.get_running_loop()
    start = loop.time()
    await cancel_and_wait([stubborn, forever], within=1.5)
    assert stubborn.cancelled() and swallowed == 1
    assert not forever.done() and loop.time() - start < 3  # left running, the caller not hung
    stop = True
    await forever  # it ends: nothing outlives the test's loop
