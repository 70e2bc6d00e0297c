"""Load and latency measurements of the API server, in a process of its own (serve_api.py):
single-object request latency at a fixed request rate, and watch fan-out latency.
Used by tests/test_api_perf.py (short runs) and bench/api_latency.py (longer runs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from hypernetes.api.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def server_process(workdir: Path, store_url: str = "memory") -> Iterator[tuple[str, str, Path]]:
    """(url, token, ca file) of a server running in a child process."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.serve_api", str(workdir), store_url],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    with proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"API server did not start: {line!r}")
        port = int(line.split()[1])
        try:
            yield f"https://127.0.0.1:{port}", (workdir / "pki" / "admin.token").read_text().strip(), \
                workdir / "pki" / "ca.crt"
        finally:
            proc.terminate()
            proc.wait(10)


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))] if s else 0.0


def _ms(x: float) -> float:
    return round(x * 1000, 1)


async def request_latency(url: str, token: str, ca: Path, *, rate: float = 200, seconds: float = 10,
                          namespace: str = "load") -> dict[str, Any]:
    """Open-loop load at `rate` requests/s: 50% get, 25% create, 25% merge patch of configmaps."""
    async with ApiClient(url, token=token, ca_file=ca) as c:
        with contextlib.suppress(Exception):
            await c.create("v1", "namespaces", {"metadata": {"name": namespace}})
        names = [f"seed-{i}" for i in range(50)]
        for n in names:
            await c.create("v1", "configmaps", {"metadata": {"name": n}, "data": {"v": "0"}}, namespace)
        lat: dict[str, list[float]] = {"get": [], "create": [], "patch": []}
        errors = 0
        counter = 0

        async def one(verb: str) -> None:
            nonlocal errors, counter
            t0 = time.monotonic()
            try:
                if verb == "get":
                    await c.get("v1", "configmaps", random.choice(names), namespace)
                elif verb == "create":
                    counter += 1
                    obj = {"metadata": {"name": f"c-{counter}"}, "data": {"v": "1"}}
                    await c.create("v1", "configmaps", obj, namespace)
                else:
                    patch = {"data": {"v": str(t0)}}
                    await c.patch("v1", "configmaps", random.choice(names), patch, namespace)
            except Exception:
                errors += 1
                return
            lat[verb].append(time.monotonic() - t0)

        tasks = []
        start = time.monotonic()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            verb = random.choices(("get", "create", "patch"), (2, 1, 1))[0]
            tasks.append(asyncio.create_task(one(verb)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
        every = [x for v in lat.values() for x in v]
        out: dict[str, Any] = {"rate": rate, "achieved_rate": round(n / elapsed, 1), "requests": n,
                               "errors": errors, "p50_ms": _ms(percentile(every, 50)),
                               "p99_ms": _ms(percentile(every, 99))}
        for verb, xs in lat.items():
            out[f"{verb}_p99_ms"] = _ms(percentile(xs, 99))
        return out


async def watch_fanout(url: str, token: str, ca: Path, *, watchers: int = 100, events: int = 20,
                       namespace: str = "fanout") -> dict[str, Any]:
    """Latency from a write's request to its event's arrival at each of `watchers` watches."""
    async with ApiClient(url, token=token, ca_file=ca) as c:
        with contextlib.suppress(Exception):
            await c.create("v1", "namespaces", {"metadata": {"name": namespace}})
        rv = (await c.list("v1", "configmaps", namespace))["metadata"]["resourceVersion"]
        arrivals: list[tuple[str, float]] = []
        name_re = re.compile(rb'"name":"(w\d+)"')
        headers = {"Authorization": f"Bearer {token}"}
        conn = aiohttp.TCPConnector(ssl=c._ssl, limit=0)
        last = f"w{events - 1}"
        async with aiohttp.ClientSession(connector=conn, headers=headers) as http:
            ready = 0

            async def watcher() -> None:
                nonlocal ready
                q = f"watch=true&resourceVersion={rv}&timeoutSeconds=60"
                async with http.get(f"{url}/api/v1/namespaces/{namespace}/configmaps?{q}") as resp:
                    ready += 1
                    async for line in resp.content:
                        m = name_re.search(line)  # no JSON parsing: measure the server, not the client
                        if m:
                            name = m.group(1).decode()
                            arrivals.append((name, time.monotonic()))
                            if name == last:
                                return

            tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
            while ready < watchers:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            sent: dict[str, float] = {}
            for i in range(events):
                sent[f"w{i}"] = time.monotonic()
                await c.create("v1", "configmaps", {"metadata": {"name": f"w{i}"}}, namespace)
                await asyncio.sleep(0.05)
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
            finally:
                for t in tasks:
                    t.cancel()
        lat = [t - sent[name] for name, t in arrivals]
        return {"watchers": watchers, "events": events, "delivered": len(lat),
                "p50_ms": _ms(percentile(lat, 50)), "p99_ms": _ms(percentile(lat, 99))}


def main() -> None:
    import argparse
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", default="memory", help="memory or sqlite")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url_store = "memory" if args.store == "memory" else f"sqlite:///{d}/state.db"
        with server_process(Path(d), url_store) as (url, token, ca):
            print(json.dumps({"store": args.store, **asyncio.run(
                request_latency(url, token, ca, rate=args.rate, seconds=args.seconds))}))
            print(json.dumps({"store": args.store, **asyncio.run(watch_fanout(url, token, ca))}))
