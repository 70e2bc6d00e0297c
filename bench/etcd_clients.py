"""Python etcd v3 clients side by side on one real etcd: single-key put and get latency, and how
fast a watch delivers a history of events. One JSON object per result.

The candidates are not all project dependencies; install them into a scratch venv first:
    python3 -m venv /tmp/etcdbench
    /tmp/etcdbench/bin/pip install etcd3aio aetcd etcd3 etcd3gw etcd-client-py pytest cryptography
    PYTHONPATH=. /tmp/etcdbench/bin/python bench/etcd_clients.py [--ops 500] [--events 5000]

Each client runs in a process of its own (etcd3 needs the pure-Python protobuf runtime, a
process-wide switch), twice, in ABBA order, against a single-member etcd started here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

CLIENTS = ("etcd3aio", "aetcd", "etcd3gw", "etcd3", "etcd-client-py", "hypernetes-EtcdStore")
VALUE = b'{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"x"}}' + b" " * 1000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def summary(client: str, what: str, lat: list[float]) -> dict[str, Any]:
    return {
        "client": client,
        "what": what,
        "n": len(lat),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(pct(lat, 99) * 1000, 3),
    }


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append(time.perf_counter() - t)
    return out


def timed_sync(n: int, op: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        op(i)
        out.append(time.perf_counter() - t)
    return out


# -- one runner per client: put, get, then a watch replaying `events` puts from a revision --------


async def run_etcd3aio(ep: str, pre: bytes, ops: int, events: int, start: int) -> tuple[Any, ...]:
    from etcd3aio import Etcd3Client
    from etcd3aio.kv import prefix_range_end

    async with Etcd3Client([ep]) as c:
        assert c.kv is not None and c.watch is not None
        kv, watch = c.kv, c.watch
        puts = await timed(ops, lambda i: kv.put(pre + b"k%d" % i, VALUE))
        gets = await timed(ops, lambda i: kv.get(pre + b"k%d" % i))
        w = pre + b"w/"
        t, got = time.perf_counter(), 0
        async for resp in watch.watch(w, prefix_range_end(w), start_revision=start, prev_kv=True):
            got += len(resp.events)
            if got >= events:
                break
        return puts, gets, time.perf_counter() - t


async def run_aetcd(ep: str, pre: bytes, ops: int, events: int, start: int) -> tuple[Any, ...]:
    import aetcd

    host, port = ep.rsplit(":", 1)
    async with aetcd.Client(host, int(port)) as c:
        puts = await timed(ops, lambda i: c.put(pre + b"k%d" % i, VALUE))
        gets = await timed(ops, lambda i: c.get(pre + b"k%d" % i))
        t, got = time.perf_counter(), 0
        it = await c.watch_prefix(pre + b"w/", start_revision=start, prev_kv=True)
        async for _ in it:
            got += 1
            if got >= events:
                break
        await it.cancel()
        return puts, gets, time.perf_counter() - t


def run_etcd3gw(ep: str, pre: bytes, ops: int, events: int, start: int) -> tuple[Any, ...]:
    from etcd3gw.client import Etcd3Client
    from etcd3gw.utils import _increment_last_byte

    host, port = ep.rsplit(":", 1)
    c = Etcd3Client(host, int(port))
    puts = timed_sync(ops, lambda i: c.put(pre + b"k%d" % i, VALUE))
    gets = timed_sync(ops, lambda i: c.get(pre + b"k%d" % i))
    t, got = time.perf_counter(), 0
    w = pre + b"w/"
    it, cancel = c.watch(w, range_end=_increment_last_byte(w), start_revision=start, prev_kv=True)
    for got, _ in enumerate(it, 1):
        if got >= events:
            break
    cancel()
    return puts, gets, time.perf_counter() - t


def run_etcd3(ep: str, pre: bytes, ops: int, events: int, start: int) -> tuple[Any, ...]:
    import etcd3

    host, port = ep.rsplit(":", 1)
    c = etcd3.client(host, int(port))
    puts = timed_sync(ops, lambda i: c.put(pre + b"k%d" % i, VALUE))
    gets = timed_sync(ops, lambda i: c.get(pre + b"k%d" % i))
    t, got = time.perf_counter(), 0
    it, cancel = c.watch_prefix(pre + b"w/", start_revision=start, prev_kv=True)
    for got, _ in enumerate(it, 1):
        if got >= events:
            break
    cancel()
    return puts, gets, time.perf_counter() - t


async def run_etcd_client_py(ep: str, pre: bytes, ops: int, events: int, start: int) -> tuple[Any, ...]:
    from etcd_client import Client

    client = Client([f"http://{ep}"])
    async with client.connect() as c:
        puts = await timed(ops, lambda i: c.put(pre + b"k%d" % i, VALUE))
        gets = await timed(ops, lambda i: c.get(pre + b"k%d" % i))
    return puts, gets, None  # its watch has no start revision (nor a prefix range): not comparable


async def run_hypernetes(ep: str, pre: bytes, ops: int, events: int, start: int) -> tuple[Any, ...]:
    """Our EtcdStore on etcd3aio: a put is a create transaction, a get the same Range."""
    from hypernetes.store.etcd import EtcdStore
    from hypernetes.store.etcdconfig import parse_etcd_url

    s = EtcdStore(parse_etcd_url(f"etcd://{ep}?compaction-interval=0"))
    p = pre.decode()
    puts = await timed(ops, lambda i: s.create(f"{p}k{i}", VALUE))
    gets = await timed(ops, lambda i: s.get(f"{p}k{i}"))
    t, got = time.perf_counter(), 0
    async for _ in s.watch(p + "w/", start - 1):
        got += 1
        if got >= events:
            break
    elapsed = time.perf_counter() - t
    await s.close()
    return puts, gets, elapsed


RUNNERS: dict[str, Callable[..., Any]] = {
    "hypernetes-EtcdStore": run_hypernetes,
    "etcd3aio": run_etcd3aio,
    "aetcd": run_aetcd,
    "etcd3gw": run_etcd3gw,
    "etcd3": run_etcd3,
    "etcd-client-py": run_etcd_client_py,
}


def child(client: str, ep: str, ops: int, events: int, start: int, prefix: str) -> None:
    runner = RUNNERS[client]
    result = runner(ep, prefix.encode(), ops, events, start)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    puts, gets, watch_s = result
    print(json.dumps(summary(client, "put", puts)))
    print(json.dumps(summary(client, "get", gets)))
    if watch_s is not None:
        print(
            json.dumps(
                {
                    "client": client,
                    "what": "watch replay",
                    "events": events,
                    "seconds": round(watch_s, 3),
                    "events_per_s": round(events / watch_s),
                }
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=500)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--child", nargs=4, metavar=("CLIENT", "ENDPOINT", "START", "PREFIX"))
    args = ap.parse_args()
    if args.child:
        c, ep, start, prefix = args.child
        child(c, ep, args.ops, args.events, int(start), prefix)
        return

    from tests.support.etcd import etcd_cluster

    clients = args.clients.split(",")
    with tempfile.TemporaryDirectory() as tmp, etcd_cluster(Path(tmp)) as cluster:
        ep = cluster.members[0].endpoint
        for rnd, order in enumerate((clients, list(reversed(clients)))):
            for c in order:
                prefix = f"/bench/{rnd}/{c}/"
                start = _fill(cluster, prefix + "w/", args.events)
                env = {**os.environ}
                if c == "etcd3":  # its generated code predates protobuf 4's runtime
                    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--ops",
                        str(args.ops),
                        "--events",
                        str(args.events),
                        "--child",
                        c,
                        ep,
                        str(start),
                        prefix,
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=600,
                )
                if out.returncode != 0:
                    print(
                        json.dumps({"client": c, "round": rnd, "error": out.stderr.strip().splitlines()[-1:]})
                    )
                    continue
                for line in out.stdout.splitlines():
                    print(json.dumps({**json.loads(line), "round": rnd}), flush=True)


def _fill(cluster: Any, prefix: str, n: int) -> int:
    """`n` puts under `prefix` (with etcdctl, outside every measured client); the first one's
    revision, from which the watches replay."""
    from tests.support.etcd import ETCDCTL

    ep = cluster.members[0].client_url
    first = None
    batch = "".join(f"put {prefix}{i:06d} v\n" for i in range(n))
    # one etcdctl per put would take minutes: a txn of 100 puts (one revision, 100 events)
    lines = batch.splitlines()
    for i in range(0, n, 100):
        txn = "\n" + "\n".join(lines[i : i + 100]) + "\n\n\n"  # no compares; puts; no else
        r = subprocess.run(
            [ETCDCTL, f"--endpoints={ep}", "txn", "-w", "json"],
            input=txn,
            capture_output=True,
            text=True,
            check=True,
        )
        rev = json.loads(r.stdout)["header"]["revision"]
        first = first or rev
    assert first is not None
    return int(first)


if __name__ == "__main__":
    main()
