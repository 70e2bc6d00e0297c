"""The time share of per-tenant fairness (hypernetes/api/fairness.py, issue 12): while several
flows are active, a flood that held a seat waits in proportion before its next start; a flow
that sends one request at a time never waits for its own earlier requests. Beside a flood, the
quiet tenant's requests take longer in wall time (they wait for the loop), and charging that
to it held one request in ten back by 12-40 ms in bench/noisy_neighbour.py."""

from __future__ import annotations

import asyncio

from hypernetes.api.fairness import PriorityLevel


async def test_a_flood_waits_its_turn_but_one_request_at_a_time_does_not() -> None:
    level = PriorityLevel("workload", seats=2, queue_length=200, queue_timeout=15)
    quiet_started = await level.acquire("tenant:quiet")
    # the flood: many requests at once; one executes (the seats are shared by two active flows)
    flood_started = await level.acquire("tenant:noisy")
    waiting = [asyncio.create_task(level.acquire("tenant:noisy")) for _ in range(10)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    await asyncio.sleep(0.3)  # both requests are slow in wall time (they wait for the loop)
    level.release("tenant:quiet", quiet_started)
    level.release("tenant:noisy", flood_started)

    # the quiet tenant's next request starts at once: within the loop iteration it comes in
    again = asyncio.create_task(level.acquire("tenant:quiet"))
    await asyncio.sleep(0)
    assert again.done(), "the quiet tenant waited for the time share of its own last request"
    level.release("tenant:quiet", again.result())

    # the flood's next request waits about as long as its last one held the seat
    assert not any(t.done() for t in waiting)
    await asyncio.sleep(0.45)
    assert sum(t.done() for t in waiting) == 1
    for t in waiting:
        t.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
