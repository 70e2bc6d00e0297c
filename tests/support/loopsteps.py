"""How long one callback holds an event loop: the CPU time its thread spends in each step (a
task's step, a protocol's data_received, a timer), without the garbage collections that ran
inside it.

CPU time of the loop's own thread, not wall time: on a shared machine the whole process may be
descheduled for tens of milliseconds at any moment, which says nothing about the code; the CPU
a step consumed is what every other request on that loop waited for. Collections are counted
apart (`gc_ms`) because where they strike is chance.

    with LoopSteps(thread_ident) as steps:
        ... drive the server ...
    assert steps.longest_ms() < 10, steps.report()
"""

from __future__ import annotations

import asyncio.events
import gc
import threading
import time
from typing import Any


class LoopSteps:
    def __init__(self, thread_ident: int | None = None) -> None:
        self.thread = thread_ident if thread_ident is not None else threading.get_ident()
        self.steps: list[tuple[float, str]] = []  # (CPU ms without collections, what ran)
        self.gc_ms: list[float] = []  # each collection's CPU ms on that thread
        self._gc_total = 0.0
        self._gc_start = 0.0
        self._run: Any = None

    def __enter__(self) -> LoopSteps:
        original = self._run = asyncio.events.Handle._run
        me = self

        def run(handle: asyncio.events.Handle) -> None:
            if threading.get_ident() != me.thread:
                original(handle)
                return
            resumed = _describe(handle)
            gc0, t0 = me._gc_total, time.thread_time()
            original(handle)
            spent = (time.thread_time() - t0) - (me._gc_total - gc0)
            if spent > 0.001:
                me.steps.append((spent * 1000, f"{resumed} -> {_describe(handle)}"))

        asyncio.events.Handle._run = run  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._run  # type: ignore[method-assign]
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self.thread:
            return
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            spent = time.thread_time() - self._gc_start
            self._gc_total += spent
            self.gc_ms.append(spent * 1000)

    def longest_ms(self) -> float:
        return max((ms for ms, _ in self.steps), default=0.0)

    def report(self, n: int = 8) -> str:
        top = sorted(self.steps, reverse=True)[:n]
        return "; ".join(f"{ms:.1f} ms in {what}" for ms, what in top)


def _describe(handle: asyncio.events.Handle) -> str:
    """The task's coroutine and where it is suspended (before a step: where it resumes; after:
    where it ended), or the callback."""
    cb = getattr(handle, "_callback", None)
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        where = [getattr(coro, "__qualname__", "?")]
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        return "task " + ">".join(where[-5:])
    return repr(cb)[:120]
