"""Waiting and stopping in asyncio without losing a cancellation (a leaf: every room may use it).

On Python 3.11, `asyncio.wait_for(event.wait(), t)` returns normally when the event is set at the
moment its task is cancelled, and the cancellation is gone (gh-86296, fixed in 3.12): a loop that
waits that way can outlive its own cancellation, and whoever awaits it hangs. `hypernetes up`
once hung on SIGINT that way, a pod worker looping on in its back-off. `asyncio.timeout` keeps
the cancellation; and stopping tasks is bounded whatever they do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass (None: no limit); True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *, within: float = 10.0) -> None:
    """Cancel the tasks and wait for them to end, cancelling again any that swallowed the
    cancellation, for at most `within` seconds; what is still running then is left (and logged)
    rather than hanging the caller. Their results and errors are dropped: the caller is stopping."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(1.0, max(0.0, deadline - loop.time())))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: asyncio would otherwise log it as never retrieved
    if pending:
        log.warning(
            "still running after %.0f s of cancelling: %s",
            within,
            ", ".join(sorted(t.get_name() for t in pending)),
        )
