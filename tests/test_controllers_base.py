"""The controllers' shared parts (work queue, expectations, selectors, informer cache), alone and
in the controller manager (tests/support/controllers.py is the harness the controller tests use)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from hypernetes.apiclient import ApiClient
from hypernetes.controllers.base import Expectations
from hypernetes.controllers.informer import Informer
from hypernetes.controllers.queue import ItemExponentialBackoff, WorkQueue
from hypernetes.metrics import REGISTRY, exposition
from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread, controllers  # noqa: F401
from tests.support.waiting import wait_for

# -- the shared parts, alone -------------------------------------------------------------------


async def test_queue_dedups_and_never_hands_a_key_to_two_workers() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    q.add("a")  # while it is being processed: comes back after done()
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")
    assert await q.get() == "a"
    q.done("a")
    q.done("b")
    q.shutdown()
    assert await q.get() is None


async def test_queue_rate_limited_backoff() -> None:
    q = WorkQueue(ItemExponentialBackoff(0.05, 1.0))
    q.add_rate_limited("k")
    q.add_rate_limited("k")
    assert q.failures("k") == 2
    t0 = time.monotonic()
    assert await asyncio.wait_for(q.get(), 1) == "k"
    assert time.monotonic() - t0 >= 0.04
    q.forget("k")
    assert q.failures("k") == 0
    q.shutdown()


def test_expectations() -> None:
    e = Expectations()
    assert e.satisfied("rs")
    e.expect("rs", adds=2)
    assert not e.satisfied("rs")
    e.created("rs")
    e.created("rs")
    assert e.satisfied("rs")
    e.expect("rs", deletes=["u1"])
    assert not e.satisfied("rs")
    e.deleted("rs", "u1")
    assert e.satisfied("rs")


async def test_informer_keeps_our_newer_write(api: ApiServerThread) -> None:
    async with ApiClient(api.url, token=api.token, ca_file=api.ca.ca_cert) as c:
        cm = await c.create("v1", "configmaps", {"metadata": {"name": "inf"}, "data": {"k": "1"}}, "default")
        inf = Informer(c, "v1", "configmaps")
        task = asyncio.create_task(inf.run())
        await asyncio.wait_for(inf.synced.wait(), 10)
        assert inf.get("default/inf") is not None
        newer = await c.patch("v1", "configmaps", "inf", {"data": {"k": "2"}}, "default")
        inf.written(newer)
        assert inf.get("default/inf") == newer
        inf.written(cm)  # older: ignored
        assert (inf.get("default/inf") or {})["data"] == {"k": "2"}
        await c.delete("v1", "configmaps", "inf", "default")
        for _ in range(100):
            if inf.get("default/inf") is None:
                break
            await asyncio.sleep(0.05)
        assert inf.get("default/inf") is None and inf.list("default") == []
        task.cancel()


def test_manager_metrics(controllers: ControllersThread) -> None:
    """Upstream's workqueue metrics per controller and ours per sync, on the process's registry
    while the manager runs (what /metrics serves), parsed as Prometheus text."""
    controllers.namespace("metrics")
    wait_for(lambda: controllers.get("v1", "serviceaccounts", "default", "metrics"), what="default sa")
    text = exposition(REGISTRY).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["hypernetes_controller_syncs"].type == "counter"

    def value(family: str, sample: str, **labels: str) -> float:
        return next(s.value for s in families[family].samples if s.name == sample and s.labels == labels)

    assert (
        value("hypernetes_controller_syncs", "hypernetes_controller_syncs_total", controller="serviceaccount")
        >= 1
    )
    assert value("workqueue_adds", "workqueue_adds_total", name="serviceaccount") >= 1
    assert value("workqueue_depth", "workqueue_depth", name="garbagecollector") >= 0
    assert value("workqueue_retries", "workqueue_retries_total", name="replicaset") >= 0
    assert value("hypernetes_workqueue_delayed", "hypernetes_workqueue_delayed", name="replicaset") >= 0
    assert (
        value(
            "hypernetes_controller_events_dropped",
            "hypernetes_controller_events_dropped_total",
            controller="replicaset",
        )
        >= 0
    )
    assert 'workqueue_depth{name="namespace"}' in controllers.manager.metrics()  # its own, alone
