"""Load and latency measurements of the API server, in a process of its own (serve_api.py, or the
multi-tenant server `python -m tests.support.apiload serve WORKDIR STORE_URL` runs): single-object
request latency at a fixed request rate, maximum throughput with N clients in a closed loop, lists
and watch fan-out latency. Used by tests/test_api_load.py (short runs), bench/api_latency.py and
bench/authz_cost.py (longer runs)."""

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hypernetes.api.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServerProcess:
    url: str
    admin_token: str
    ca: Path
    pid: int
    workdir: Path


@contextlib.contextmanager
def _child_server(workdir: Path, store_url: str, tenancy: bool) -> Iterator[ServerProcess]:
    """tests/support/serve_api.py in a child process, until the block ends."""
    cmd = [sys.executable, "-m", "tests.support.serve_api", str(workdir), store_url]
    proc = subprocess.Popen(
        [*cmd, "--tenancy"] if tenancy else cmd,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    with proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"API server did not start: {line!r}")
        port = int(line.split()[1])
        try:
            token = (workdir / "pki" / "admin.token").read_text().strip()
            yield ServerProcess(
                f"https://127.0.0.1:{port}", token, workdir / "pki" / "ca.crt", proc.pid, workdir
            )
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def server_process(workdir: Path, store_url: str = "memory") -> Iterator[tuple[str, str, Path]]:
    """(url, token, ca file) of a server (the admin alone) running in a child process."""
    with _child_server(workdir, store_url, False) as srv:
        yield srv.url, srv.admin_token, srv.ca


@contextlib.contextmanager
def tenant_server_process(workdir: Path, store_url: str = "memory") -> Iterator[ServerProcess]:
    """The multi-tenant server `hypernetes up` runs (tenant authenticator, authorizer, admission,
    identity endpoints, audit log; no node, scheduler or controllers) in a child process."""
    with _child_server(workdir, store_url, True) as srv:
        yield srv


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))] if s else 0.0


def _ms(x: float) -> float:
    return round(x * 1000, 1)


SEEDS = [f"seed-{i}" for i in range(50)]
MIX = (("get", "create", "patch"), (2, 1, 1))  # 50% get, 25% create, 25% merge patch


async def seed_configmaps(c: ApiClient, namespace: str, *, create_namespace: bool = True) -> None:
    """The namespace (unless it exists or the caller may not create it) and the 50 configmaps the
    request mix gets and patches."""
    if create_namespace:
        with contextlib.suppress(Exception):
            await c.create("v1", "namespaces", {"metadata": {"name": namespace}})
    for n in SEEDS:
        await c.create("v1", "configmaps", {"metadata": {"name": n}, "data": {"v": "0"}}, namespace)


class RequestMix:
    """One request of the single-object mix on configmaps in `namespace`; creates are named
    `<prefix>-<n>` (a distinct prefix per run: the names must be new)."""

    def __init__(self, c: ApiClient, namespace: str, prefix: str = "c") -> None:
        self.c, self.namespace, self.prefix = c, namespace, prefix
        self.counter = 0

    async def one(self, verb: str) -> None:
        if verb == "get":
            await self.c.get("v1", "configmaps", random.choice(SEEDS), self.namespace)
        elif verb == "create":
            self.counter += 1
            obj = {"metadata": {"name": f"{self.prefix}-{self.counter}"}, "data": {"v": "1"}}
            await self.c.create("v1", "configmaps", obj, self.namespace)
        else:
            patch = {"data": {"v": str(time.monotonic())}}
            await self.c.patch("v1", "configmaps", random.choice(SEEDS), patch, self.namespace)

    @staticmethod
    def verb() -> str:
        return random.choices(*MIX)[0]


async def request_latency(
    url: str,
    token: str,
    ca: Path,
    *,
    rate: float = 200,
    seconds: float = 10,
    namespace: str = "load",
    seed: bool = True,
    prefix: str = "c",
) -> dict[str, Any]:
    """Open-loop load at `rate` requests/s: 50% get, 25% create, 25% merge patch of configmaps.
    `seed=False`: the namespace and its seed configmaps exist already (seed_configmaps)."""
    async with ApiClient(url, token=token, ca_file=ca) as c:
        if seed:
            await seed_configmaps(c, namespace)
        mix = RequestMix(c, namespace, prefix)
        lat: dict[str, list[float]] = {"get": [], "create": [], "patch": []}
        errors = 0

        async def one(verb: str) -> None:
            nonlocal errors
            t0 = time.monotonic()
            try:
                await mix.one(verb)
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
            tasks.append(asyncio.create_task(one(mix.verb())))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
        every = [x for v in lat.values() for x in v]
        out: dict[str, Any] = {
            "rate": rate,
            "achieved_rate": round(n / elapsed, 1),
            "requests": n,
            "errors": errors,
            "p50_ms": _ms(percentile(every, 50)),
            "p99_ms": _ms(percentile(every, 99)),
        }
        for verb, xs in lat.items():
            out[f"{verb}_p99_ms"] = _ms(percentile(xs, 99))
        return out


async def _burst(mix: RequestMix, clients: int, seconds: float) -> tuple[list[float], int]:
    """`clients` concurrent callers, each sending its next request of the mix as soon as the last
    one is answered, until `seconds` have passed: the latencies of the answered ones, errors."""
    deadline = time.monotonic() + seconds
    lat: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                await mix.one(mix.verb())
            except Exception:
                errors += 1
                continue
            lat.append(time.monotonic() - t0)

    await asyncio.gather(*(client() for _ in range(clients)))
    return lat, errors


async def closed_loop(
    url: str,
    tokens: dict[str, str],
    ca: Path,
    *,
    order: list[str],
    namespace: str,
    clients: int = 16,
    seconds: float = 2,
    warmup: float = 2,
    prefix: str = "t",
    server_pid: int | None = None,
) -> list[dict[str, Any]]:
    """Maximum throughput of the request mix from `clients` concurrent callers in a closed loop,
    in slices of `seconds`, one per entry of `order` naming whose token (of `tokens`) the slice's
    callers use. Short alternating slices see the same machine (other work on it comes and goes);
    each caller's connections are warmed for `warmup` seconds first. With `server_pid`, the
    server's CPU time per request too (less sensitive than throughput to what else runs), and the
    load generator's own, to see which side is the limit."""
    async with contextlib.AsyncExitStack() as stack:
        mixes = {}
        for who, token in tokens.items():
            c = await stack.enter_async_context(ApiClient(url, token=token, ca_file=ca))
            mixes[who] = RequestMix(c, namespace, f"{prefix}{who}")
            await _burst(mixes[who], clients, warmup)
        out: list[dict[str, Any]] = []
        for i, who in enumerate(order):
            cpu0 = process_cpu(server_pid) if server_pid else 0.0
            mine0, t0 = time.process_time(), time.monotonic()
            lat, errors = await _burst(mixes[who], clients, seconds)
            elapsed = time.monotonic() - t0
            cpu = process_cpu(server_pid) - cpu0 if server_pid else 0.0
            n = len(lat)
            res: dict[str, Any] = {
                "slice": i,
                "as": who,
                "clients": clients,
                "seconds": round(elapsed, 3),
                "requests": n,
                "errors": errors,
                "req_per_s": round(n / elapsed, 1),
                "p50_ms": _ms(percentile(lat, 50)),
                "p99_ms": _ms(percentile(lat, 99)),
                "client_cpu_us_per_req": round((time.process_time() - mine0) / max(n, 1) * 1e6),
            }
            if server_pid:
                res["server_cpu_s"] = round(cpu, 3)
                res["server_cpu_us_per_req"] = round(cpu / max(n, 1) * 1e6)
                res["server_cpu_util"] = round(cpu / elapsed, 2)
            out.append(res)
        return out


async def list_latency(
    url: str, token: str, ca: Path, *, plural: str = "pods", repeats: int = 30, server_pid: int | None = None
) -> dict[str, Any]:
    """`GET /api/v1/<plural>` (all namespaces; the server filters it to what the caller may see),
    one at a time: latency, items returned and the server's CPU time per list."""
    async with ApiClient(url, token=token, ca_file=ca) as c:
        await c.list("v1", plural)  # warm the connection
        lat: list[float] = []
        items = 0
        cpu0 = process_cpu(server_pid) if server_pid else 0.0
        for _ in range(repeats):
            t0 = time.monotonic()
            items = len((await c.list("v1", plural))["items"])
            lat.append(time.monotonic() - t0)
        cpu = process_cpu(server_pid) - cpu0 if server_pid else 0.0
    out: dict[str, Any] = {
        "list": plural,
        "items": items,
        "repeats": repeats,
        "p50_ms": _ms(percentile(lat, 50)),
        "p99_ms": _ms(percentile(lat, 99)),
    }
    if server_pid:
        out["server_cpu_ms_per_list"] = round(cpu / repeats * 1000, 1)
    return out


async def watch_fanout(
    url: str,
    token: str,
    ca: Path,
    *,
    watchers: int = 100,
    events: int = 20,
    namespace: str = "fanout",
    prefix: str = "w",
    all_namespaces: bool = False,
    create_namespace: bool = True,
) -> dict[str, Any]:
    """Latency from a write's request to its event's arrival at each of `watchers` watches of
    `namespace`'s configmaps (of every namespace's with `all_namespaces`; the server filters them
    for each watcher). The writes are configmaps `<prefix><i>` in `namespace`."""
    async with ApiClient(url, token=token, ca_file=ca) as c:
        if create_namespace:
            with contextlib.suppress(Exception):
                await c.create("v1", "namespaces", {"metadata": {"name": namespace}})
        rv = (await c.list("v1", "configmaps", namespace))["metadata"]["resourceVersion"]
        arrivals: list[tuple[str, float]] = []
        name_re = re.compile(b'"name":"(' + re.escape(prefix.encode()) + rb'\d+)"')
        headers = {"Authorization": f"Bearer {token}"}
        conn = aiohttp.TCPConnector(ssl=c._ssl, limit=0)
        last = f"{prefix}{events - 1}"
        where = "" if all_namespaces else f"/namespaces/{namespace}"
        async with aiohttp.ClientSession(connector=conn, headers=headers) as http:
            ready = 0

            async def watcher() -> None:
                nonlocal ready
                q = f"watch=true&resourceVersion={rv}&timeoutSeconds=60"
                async with http.get(f"{url}/api/v1{where}/configmaps?{q}") as resp:
                    resp.raise_for_status()
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
                sent[f"{prefix}{i}"] = time.monotonic()
                await c.create("v1", "configmaps", {"metadata": {"name": f"{prefix}{i}"}}, namespace)
                await asyncio.sleep(0.05)
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
            finally:
                for t in tasks:
                    t.cancel()
        lat = [t - sent[name] for name, t in arrivals]
        return {
            "watchers": watchers,
            "events": events,
            "all_namespaces": all_namespaces,
            "delivered": len(lat),
            "p50_ms": _ms(percentile(lat, 50)),
            "p99_ms": _ms(percentile(lat, 99)),
        }


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
            print(
                json.dumps(
                    {
                        "store": args.store,
                        **asyncio.run(request_latency(url, token, ca, rate=args.rate, seconds=args.seconds)),
                    }
                )
            )
            print(json.dumps({"store": args.store, **asyncio.run(watch_fanout(url, token, ca))}))
