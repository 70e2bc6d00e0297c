"""One request must not hold the API server's event loop (issue 12): the server is one asyncio
loop, a step of a coroutine cannot be preempted, so every other tenant's request waits for
whichever step is running. A list of thousands of objects and a watch's initial events are
decoded, filtered and encoded a slice at a time (hypernetes/api/loopslice.py); the watch cache
keeps its events encoded and a watch does not keep its first list, so that full garbage
collections (which stop every request) have little to walk.

A real API server on the real SQLite store, raw HTTP. The loop's steps are measured in CPU time
of its thread, collections apart (tests/support/loopsteps.py): robust on a loaded machine, where
wall-clock lag mostly measures the neighbours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hypernetes.api import schema
from hypernetes.api.objects import key_prefix
from hypernetes.api.routing import Target
from hypernetes.api.watch import CachedEvent, WatchCaches, WatchRequest, stream
from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.apiserver import ApiServerThread
from tests.support.loopsteps import LoopSteps

NS = "slices"
OBJECTS = 2000
# CPU ms one step may take: a slice (2 ms) plus what follows the last one (joining the body,
# encrypting it) with room for a slow, shared machine. Unsliced, these lists took 45-100 ms.
# The best of three requests is what is bounded: in this virtual machine a thread's CPU time
# also counts moments the hypervisor took the CPU away (a 12 ms "step" once in a few runs).
BOUND_MS = 12.0
TRIES = 3
CMS = f"/api/v1/namespaces/{NS}/configmaps"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PARTIAL = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"


def configmap(i: int) -> dict[str, object]:
    return {
        "metadata": {
            "name": f"slice-{i:05d}",
            "labels": {"app": "slices", "shard": str(i % 7)},
            "annotations": {"note": "x" * 64},
        },
        "data": {f"k{j}": f"value-{i}-{j}" for j in range(4)},
    }


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    tmp = Path(tmp_path_factory.mktemp("slices"))

    async def sqlite() -> Store:
        return open_store(f"sqlite:///{tmp}/state.db")

    server = ApiServerThread(tmp, store_factory=sqlite).start()

    async def seed() -> None:
        """As the server's own bootstrap writes: prepared as a create (defaults, managedFields),
        straight into the store (thousands of HTTP creates would cost the suite seconds)."""
        s = server.server
        ns_kind, cm_kind = schema.kind_for("", "v1", "namespaces"), schema.kind_for("", "v1", "configmaps")
        assert ns_kind is not None and cm_kind is not None
        ns = Target(ns_kind, None, NS, None)
        namespace = await s.resources.prepare_create(ns, {"metadata": {"name": NS}}, "test")
        await s.store.create(s.resources.key(ns), json.dumps(namespace).encode())
        for i in range(OBJECTS):
            t = Target(cm_kind, NS, f"slice-{i:05d}", None)
            obj = await s.resources.prepare_create(t, configmap(i), "test")
            await s.store.create(s.resources.key(t), json.dumps(obj).encode())

    server.call(seed(), timeout=120)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(api: ApiServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api.url,
        verify=str(api.ca.ca_cert),
        headers={"Authorization": f"Bearer {api.token}"},
        timeout=60,
    ) as c:
        c.get(CMS, params={"limit": "1"}).raise_for_status()  # a connection, handshake done
        yield c


def server_thread(api: ApiServerThread) -> int:
    ident = api._thread.ident
    assert ident is not None
    return ident


@pytest.mark.parametrize(("accept", "field"), [(None, "items"), (TABLE, "rows"), (PARTIAL, "items")])
def test_a_large_list_is_served_in_slices(
    api: ApiServerThread, http: httpx.Client, accept: str | None, field: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    tries = []
    for _ in range(TRIES):
        with LoopSteps(server_thread(api)) as steps:
            r = http.get(CMS, headers=headers)
        tries.append(steps)
    assert r.status_code == 200, r.text
    body = r.json()
    names = [(o.get("object") or o)["metadata"]["name"] for o in body[field]]
    assert names == [f"slice-{i:05d}" for i in range(OBJECTS)]
    assert body["metadata"]["resourceVersion"]
    if accept is None:  # what the sliced encoder wrote is what json.dumps would have
        assert body["kind"] == "ConfigMapList" and body["items"][5]["data"]["k3"] == "value-5-3"
        assert list(body) == ["kind", "apiVersion", "metadata", "items"]
    best = min(tries, key=LoopSteps.longest_ms)
    assert best.longest_ms() < BOUND_MS, best.report()


def test_a_watch_sends_its_initial_events_in_slices_and_keeps_none_of_them(
    api: ApiServerThread, http: httpx.Client
) -> None:
    watches, tries = [], []
    for _ in range(TRIES):
        with LoopSteps(server_thread(api)) as steps:
            cm = http.stream("GET", CMS, params={"watch": "true", "timeoutSeconds": "60"})
            resp = cm.__enter__()
            watches.append((cm, resp))
            lines = resp.iter_lines()
            added = sum(1 for _, line in zip(range(OBJECTS), lines, strict=False) if '"ADDED"' in line)
            assert added == OBJECTS
        tries.append(steps)
    try:
        best = min(tries, key=LoopSteps.longest_ms)
        assert best.longest_ms() < BOUND_MS, best.report()
        # the three watches are open, their first lists sent: none of them holds those objects
        gc.collect()
        held = api.call(_decoded_seeds())
        assert held < OBJECTS // 10, f"{held} decoded seed objects still alive with 3 watches open"
    finally:
        for cm, _ in watches:
            cm.__exit__(None, None, None)


async def _decoded_seeds() -> int:
    return sum(
        1
        for o in gc.get_objects()
        if type(o) is dict
        and o.get("kind") == "ConfigMap"
        and str((o.get("metadata") or {}).get("name", "")).startswith("slice-")
    )


def test_the_watch_cache_keeps_events_encoded(api: ApiServerThread, http: httpx.Client) -> None:
    """Each cached event is one object for the collector, not a tree of decoded dicts."""
    with http.stream(
        "GET", CMS, params={"watch": "true", "resourceVersion": _rv(http), "timeoutSeconds": "60"}
    ) as w:
        for i in range(200):
            http.patch(
                f"{CMS}/slice-{i:05d}",
                json={"data": {"k0": f"patched-{i}"}},
                headers={"Content-Type": "application/merge-patch+json"},
            ).raise_for_status()
        lines = w.iter_lines()
        assert sum(1 for _, line in zip(range(200), lines, strict=False) if '"MODIFIED"' in line) == 200

        async def tracked_per_event() -> float:
            cache = api.server.caches.cache(key_prefix("", "configmaps", None))
            events = [ev for ev in cache.buffer if ev.key.startswith(key_prefix("", "configmaps", NS))]
            assert len(events) >= 200
            return _tracked_reachable(events) / len(events)

        assert api.call(tracked_per_event()) <= 1.0


def _rv(http: httpx.Client) -> str:
    return str(http.get(CMS, params={"limit": "1"}).json()["metadata"]["resourceVersion"])


def _tracked_reachable(events: list[CachedEvent]) -> int:
    """Objects the garbage collector would walk, reachable from `events` (themselves included)."""
    seen: set[int] = set()
    todo: list[object] = list(events)
    while todo:
        o = todo.pop()
        if id(o) in seen or not gc.is_tracked(o):
            continue
        seen.add(id(o))
        todo.extend(r for r in gc.get_referents(o) if not isinstance(r, type))
    return len(seen)


# -- watch fan-out -----------------------------------------------------------------------------


async def test_a_write_wakes_only_the_watches_of_its_namespace(tmp_path: Path) -> None:
    """Another tenant's writes cost none of this tenant's watches a step."""
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    caches = WatchCaches(store)
    prefix = key_prefix("", "configmaps", None)
    try:
        quiet = [await caches.subscribe(prefix, 0, key_prefix("", "configmaps", "a")) for _ in range(50)]
        busy, c = await caches.subscribe(prefix, 0, key_prefix("", "configmaps", "b"))
        for i in range(5):
            await store.create(key_prefix("", "configmaps", "b") + f"cm{i}", b'{"metadata":{}}')
        assert len(await busy.next_batch(5)) >= 1
        assert all(not s.queue and not s.wake.is_set() for s, _ in quiet)
        await store.create(key_prefix("", "configmaps", "a") + "cm", b'{"metadata":{}}')
        assert [len(await s.next_batch(5)) for s, _ in quiet] == [1] * 50
        for s, cache in [*quiet, (busy, c)]:
            caches.release(s, cache)
    finally:
        await caches.close()
        await store.close()


class _Wire:
    """Stands in for a watch response's connection: each write costs `cost` seconds of CPU (TLS
    and the socket, for a real one) and the first one lets a request in, as one arriving mid
    fan-out would."""

    def __init__(self, cost: float, log: list[str], request: Callable[[], None]) -> None:
        self.cost, self.log, self.request = cost, log, request

    async def write(self, data: bytes) -> None:
        if not self.log:
            asyncio.get_running_loop().call_soon(self.request)
        t0 = time.thread_time()
        while time.thread_time() - t0 < self.cost:
            pass
        self.log.append("watch")


async def test_a_fan_out_takes_turns_with_requests(tmp_path: Path) -> None:
    """One write to a resource with 100 watches: a request that becomes ready during the
    deliveries waits for a slice of them (api/loopslice.py Turnstile), not for all 100."""
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    caches = WatchCaches(store)
    log: list[str] = []
    prefix = key_prefix("", "configmaps", None)
    wr = WatchRequest(prefix, prefix, await store.current_revision(), [], None, None, None, 10.0)
    wires = [_Wire(0.0005, log, lambda: log.append("request")) for _ in range(100)]
    streams = [asyncio.create_task(stream(w, caches, dataclasses.replace(wr))) for w in wires]
    try:
        await asyncio.sleep(0.1)  # all subscribed
        await store.create(prefix + "ns/cm", b'{"metadata":{"namespace":"ns"}}')
        for _ in range(200):
            if log.count("watch") == 100:
                break
            await asyncio.sleep(0.05)
        assert log.count("watch") == 100 and "request" in log
        # 100 writes of 0.5 ms: unsliced, the request came after all 50 ms of them
        before = log.index("request")
        assert before * 0.5 < 8, f"the request waited for {before} deliveries"
    finally:
        for t in streams:
            t.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        await caches.close()
        await store.close()


def test_full_collections_are_rare_once_a_server_runs(api: ApiServerThread) -> None:
    """Beside a flood they came every 3-4 s for 10-26 ms of CPU each; the server makes them a
    tenth as frequent, and keeps what it set up out of them (hypernetes/api/server.py)."""
    assert gc.get_threshold()[2] >= 100
    assert gc.get_freeze_count() > 0
