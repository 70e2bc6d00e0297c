"""Micro-benchmark of the SQLite store: ops/s and latency percentiles, one JSON object per result.

Sequential ops measure per-op latency (each write is one fsync'd transaction); `--concurrency`
runs that many coroutines at once to show throughput with the writer thread kept busy.
`.venv/bin/python bench/store_sqlite.py [--n 1000] [--concurrency 1] [--dir /var/tmp]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hypernetes.store.sqlite import CompactionPolicy, SqliteStore

VALUE = b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}' + b" " * 1500  # ~1.5 KiB


async def measure(name: str, n: int, concurrency: int, op: Callable[[int], Awaitable[object]]) -> None:
    latencies: list[float] = []

    async def worker(start: int) -> None:
        for i in range(start, n, concurrency):
            t = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        json.dumps(
            {
                "op": name,
                "n": n,
                "concurrency": concurrency,
                "ops_per_s": round(n / elapsed),
                "p50_ms": round(q[49] * 1e3, 3),
                "p99_ms": round(q[98] * 1e3, 3),
                "max_ms": round(max(latencies) * 1e3, 3),
            }
        )
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where to put the database (default: a tmp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = SqliteStore(Path(tmp) / "state.db", compaction=CompactionPolicy(interval=0))
        n, c = args.n, args.concurrency
        revs: dict[int, int] = {}

        async def create(i: int) -> None:
            revs[i] = await store.create(f"/registry/pods/default/p{i:06d}", VALUE)

        async def update(i: int) -> None:
            revs[i] = await store.update(f"/registry/pods/default/p{i:06d}", VALUE, revs[i])

        await measure("create", n, c, create)
        await measure("get", n, c, lambda i: store.get(f"/registry/pods/default/p{i:06d}"))
        await measure("update", n, c, update)
        await measure(f"list {n} keys", 20, 1, lambda i: store.list("/registry/pods/default/"))
        await measure("list 500 (page)", 20, 1, lambda i: store.list("/registry/pods/default/", limit=500))
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
