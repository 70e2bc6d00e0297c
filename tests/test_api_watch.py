"""Watch: kubectl get -w, the Python client's watch, resume from a resourceVersion, 410 after
compaction, selector transitions, slow watchers, and fan-out latency to 100 watchers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from hypernetes.api.client import ApiException
from tests.support.apifixtures import API_STORES, on_store, running_api
from tests.support.apiserver import ApiServerThread, async_client


@pytest.fixture(scope="module", params=API_STORES)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServerThread]:
    yield from running_api(tmp_path_factory, **on_store(request))


client = async_client


def cm(name: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": {"k": "v"},
    }


def test_kubectl_get_watch_prints_rows(api: ApiServerThread) -> None:
    api.kubectl("run", "watched", "--image=nginx")
    proc = api.kubectl_popen("get", "pods", "-w", "--request-timeout=0")
    try:
        time.sleep(1.5)
        api.kubectl("label", "pod", "watched", "seen=yes")
        api.kubectl("run", "second", "--image=nginx")
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0].split()[0] == "NAME"
    assert sum(1 for ln in lines if ln.startswith("NAME")) == 1, out
    assert [ln.split()[0] for ln in lines[1:]] == ["watched", "watched", "second"], out


def test_python_client_watch_with_bookmarks(api: ApiServerThread) -> None:
    from kubernetes import client as kc
    from kubernetes import watch

    v1 = kc.CoreV1Api(api.python_client())
    api.kubectl("create", "namespace", "pyw")
    rv = v1.list_namespaced_config_map("pyw").metadata.resource_version
    v1.create_namespaced_config_map("pyw", cm("one"))
    v1.patch_namespaced_config_map("one", "pyw", {"data": {"k": "w"}})
    v1.delete_namespaced_config_map("one", "pyw")
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            v1.list_namespaced_config_map,
            "pyw",
            resource_version=rv,
            timeout_seconds=2,
            allow_watch_bookmarks=True,
        )
        if e["type"] != "BOOKMARK"
    ]
    assert seen == [("ADDED", "one"), ("MODIFIED", "one"), ("DELETED", "one")]


async def test_resume_and_410_after_compaction(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "resume"}})
        a = await c.create(
            "v1", "secrets", {"metadata": {"name": "a"}, "stringData": {"x": "1"}}, namespace="resume"
        )
        await c.create("v1", "secrets", {"metadata": {"name": "b"}}, namespace="resume")
        await c.patch("v1", "secrets", "a", {"metadata": {"labels": {"l": "1"}}}, namespace="resume")
        events = []
        rv = a["metadata"]["resourceVersion"]
        async for ev in c.watch(
            "v1", "secrets", namespace="resume", resource_version=rv, timeout_seconds=1, bookmarks=False
        ):
            events.append((ev.type, ev.object["metadata"]["name"]))
        assert events == [("ADDED", "b"), ("MODIFIED", "a")]
        old = int(a["metadata"]["resourceVersion"]) - 1
        store = api.store
        assert store is not None
        api.call(store.compact(api.call(store.current_revision())))
        # endpoints were never watched: no cache window covers the old revision
        with pytest.raises(ApiException) as err:
            async for _ in c.watch("v1", "endpoints", namespace="resume", resource_version=str(old)):
                pass
        assert err.value.status == 410 and err.value.reason == "Expired"
        assert "too old resource version" in err.value.message


async def test_selector_transitions(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "trans"}})
        listed = await c.list("v1", "configmaps", namespace="trans")
        rv = listed["metadata"]["resourceVersion"]
        await c.create("v1", "configmaps", cm("x"), namespace="trans")
        await c.patch("v1", "configmaps", "x", {"metadata": {"labels": {"app": "in"}}}, namespace="trans")
        await c.patch("v1", "configmaps", "x", {"data": {"k": "2"}}, namespace="trans")
        await c.patch("v1", "configmaps", "x", {"metadata": {"labels": {"app": "out"}}}, namespace="trans")
        await c.delete("v1", "configmaps", "x", namespace="trans")
        events = [
            (ev.type, ev.object["metadata"].get("labels"))
            async for ev in c.watch(
                "v1",
                "configmaps",
                namespace="trans",
                resource_version=rv,
                label_selector="app=in",
                timeout_seconds=1,
                bookmarks=False,
            )
        ]
        assert events == [("ADDED", {"app": "in"}), ("MODIFIED", {"app": "in"}), ("DELETED", {"app": "in"})]


async def test_watch_without_rv_sends_current_state_then_bookmark(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "initial"}})
        await c.create("v1", "configmaps", cm("there"), namespace="initial")
        events = [ev async for ev in c.watch("v1", "configmaps", namespace="initial", timeout_seconds=1)]
        assert [e.type for e in events] == ["ADDED", "BOOKMARK"]
        assert int(events[1].resource_version) >= int(events[0].resource_version)


async def test_fanout_to_100_watchers(api: ApiServerThread) -> None:
    """One write reaches 100 watchers (p99 over 20 writes). Client and server share this process
    here; test_api_perf.py measures with the server in a process of its own."""
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "fan"}})
        start = await c.list("v1", "configmaps", namespace="fan")
        rv = start["metadata"]["resourceVersion"]
        n, writes = 100, 20
        arrivals: dict[str, list[float]] = {}

        async def watcher() -> None:
            async for ev in c.watch(
                "v1", "configmaps", namespace="fan", resource_version=rv, timeout_seconds=30, bookmarks=False
            ):
                arrivals.setdefault(ev.object["metadata"]["name"], []).append(time.monotonic())
                if ev.object["metadata"]["name"] == f"w{writes - 1}":
                    return

        tasks = [asyncio.create_task(watcher()) for _ in range(n)]
        await asyncio.sleep(1.0)
        sent: dict[str, float] = {}
        for i in range(writes):
            sent[f"w{i}"] = time.monotonic()
            await c.create("v1", "configmaps", cm(f"w{i}"), namespace="fan")
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        lat = sorted(t - sent[name] for name, ts in arrivals.items() for t in ts)
        assert len(lat) == n * writes
        p99 = lat[int(len(lat) * 0.99) - 1]
        print(
            json.dumps(
                {
                    "watchers": n,
                    "events": writes,
                    "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
                    "p99_ms": round(p99 * 1000, 1),
                }
            )
        )  # timing: bench/api_latency.py
