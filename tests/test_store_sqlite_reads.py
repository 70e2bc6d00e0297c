"""Point reads of the SQLite store do not queue behind scans (issue 12): another tenant's lists of
thousands of rows can keep the reader pool busy, and every tenant's get and every request's
current-revision read would wait behind them. The real store on a real file; what is asserted is
the order reads finish in, not how long they take (a shared machine's timings say little)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypernetes.store import open_store

ROWS = 3000
PREFIX = "/registry/configmaps/big/"


async def test_a_get_does_not_wait_for_the_scans_queued_before_it(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        value = b'{"metadata":{"name":"x"},"data":{"k":"' + b"v" * 1000 + b'"}}'
        for i in range(ROWS):
            await store.create(f"{PREFIX}cm{i:05d}", value)
        done: list[str] = []

        async def scan(i: int) -> None:
            res = await store.list(PREFIX)
            assert len(res.items) == ROWS
            done.append(f"scan{i}")

        async def get() -> None:
            kv = await store.get(f"{PREFIX}cm00007")
            assert kv is not None and kv.value == value
            assert await store.current_revision() >= ROWS
            done.append("get")

        scans = [asyncio.create_task(scan(i)) for i in range(6)]  # two run, four wait
        await asyncio.sleep(0)
        await asyncio.gather(get(), *scans)
        # one pool: the get (queued after six scans) ended after at least four of them
        assert done.index("get") < 3, done
    finally:
        await store.close()
