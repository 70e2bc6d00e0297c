"""Noisy neighbours, controller and event side: a workload that can never sync (over its
tenant's quota) backs off per key as client-go's rate-limited queues do, instead of retrying
as fast as its own status writes come back; repeated events are counted, similar ones
combined and spam dropped, as upstream's event recorder does (controllers and node agent).

Against the real multi-tenant API server, with the real controller manager and kubectl; the
rate limiters and the correlator are also checked alone, on a clock the test turns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from hypernetes.apiclient import ApiClient
from hypernetes.controllers.queue import (
    ItemExponentialBackoff,
    MaxOf,
    TokenBucket,
    WorkQueue,
    controller_rate_limiter,
)
from hypernetes.eventrecorder import COMBINED, EventCorrelator, EventRecorder
from hypernetes.node.agent import ClientNodeAPI
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread, Obj
from tests.support.tenantnodes import module_world, running_controllers
from tests.support.tenants import KIND, MERGE, TENANTS_PATH, TenantWorld
from tests.support.waiting import wait_for

QUOTA = {"pods": "1", "namespaces": "3"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    yield from module_world(tmp_path_factory, TenantWorld)


@pytest.fixture(scope="module")
def controllers(world: TenantWorld) -> Iterator[ControllersThread]:
    yield from running_controllers(world)


def requests(api: ApiServerThread, verb: str, resource: str, subresource: str = "") -> int:
    """Requests the API server has answered so far, by verb and resource (its /metrics counters)."""

    async def read() -> int:
        return api.server.metrics.request_count(verb, resource, subresource)

    return api.call(read())


def events_about(c: ControllersThread, ns: str, name: str) -> list[Obj]:
    return [e for e in c.items("v1", "events", ns) if e["involvedObject"]["name"] == name]


# -- the rate limiters, alone ------------------------------------------------------------------


def test_item_backoff_doubles_from_5ms_to_1000s() -> None:
    b = ItemExponentialBackoff()
    delays = [b.when("k") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[17] == 0.005 * 2**17 and delays[18] == delays[19] == 1000.0
    assert b.when("other") == 0.005 and b.retries("k") == 20
    b.forget("k")
    assert b.retries("k") == 0 and b.when("k") == 0.005
    assert all(b.when("x") <= 1000.0 for _ in range(2000))  # no float overflow, ever


def test_token_bucket_bounds_the_whole_queue() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 100, clock)
    assert [bucket.when(f"k{i}") for i in range(100)] == [0.0] * 100  # the burst
    assert bucket.when("k100") == pytest.approx(0.1) and bucket.when("k101") == pytest.approx(0.2)
    clock.now += 60  # refilled, up to the burst only
    assert sum(bucket.when(f"j{i}") == 0.0 for i in range(150)) == 100


def test_default_limiter_is_the_slower_of_both() -> None:
    clock = Clock()
    limiter = MaxOf(ItemExponentialBackoff(0.005, 1000.0), TokenBucket(10.0, 100, clock))
    assert limiter.when("a") == 0.005  # per key first
    for i in range(200):
        limiter.when(f"spam{i}")
    assert limiter.when("b") > 5.0  # then the shared bucket: 1000 failing keys cannot retry at once
    assert controller_rate_limiter(max_delay=60.0).when("x") == 0.005


async def test_delayed_keys_keep_their_earliest_time() -> None:
    q = WorkQueue(ItemExponentialBackoff(0.05, 10.0))
    for _ in range(50):
        q.add_after("k", 30.0)
    q.add_after("k", 0.05)
    q.add_after("k", 20.0)
    assert q.waiting == 1  # one timer, however many calls
    assert await asyncio.wait_for(q.get(), 1) == "k"
    q.done("k")
    assert q.waiting == 0 and len(q) == 0
    q.shutdown()


# -- the event correlator, alone ---------------------------------------------------------------


def event(message: str, reason: str = "FailedCreate", name: str = "rs") -> Obj:
    return {
        "metadata": {"name": f"{name}.{message[-4:]}", "namespace": "ns"},
        "involvedObject": {
            "kind": "ReplicaSet",
            "namespace": "ns",
            "name": name,
            "uid": "u1",
            "apiVersion": "apps/v1",
        },
        "reason": reason,
        "message": message,
        "type": "Warning",
        "source": {"component": "c"},
        "firstTimestamp": "t0",
        "lastTimestamp": "t1",
        "count": 1,
    }


def test_identical_events_patch_one_event() -> None:
    c = EventCorrelator(Clock())
    first = c.correlate(event("quota exceeded"))
    assert first is not None and first.patch is None  # created
    c.written(first.event)
    again = c.correlate({**event("quota exceeded"), "lastTimestamp": "t2"})
    assert again is not None and again.event["metadata"]["name"] == first.event["metadata"]["name"]
    assert again.patch == {"count": 2, "lastTimestamp": "t2", "message": "quota exceeded"}


def test_similar_events_are_combined_after_ten() -> None:
    clock = Clock()
    c = EventCorrelator(clock)
    outs = [c.correlate(event(f"pod x{i:04d} refused")) for i in range(14)]
    assert all(o is not None for o in outs)
    plain = [o for o in outs if o and not o.event["message"].startswith(COMBINED)]
    combined = [o for o in outs if o and o.event["message"].startswith(COMBINED)]
    assert len(plain) == 9 and len(combined) == 5
    assert combined[0].patch is None and {o.event["metadata"]["name"] for o in combined} == {
        combined[0].event["metadata"]["name"]
    }  # one Event, counted up
    assert combined[-1].patch == {
        "count": 5,
        "lastTimestamp": combined[-1].event["lastTimestamp"],
        "message": COMBINED + "pod x0013 refused",
    }
    clock.now += 601  # ten quiet minutes: messages stand alone again
    out = c.correlate(event("pod y0000 refused"))
    assert out is not None and out.event["message"] == "pod y0000 refused"


def test_spam_filter_25_then_one_per_5_minutes() -> None:
    clock = Clock()
    c = EventCorrelator(clock)
    kept = [c.correlate(event("same")) for _ in range(40)]
    assert sum(o is not None for o in kept) == 25
    assert c.correlate(event("same", name="other")) is not None  # per object
    clock.now += 299
    assert c.correlate(event("same")) is None
    clock.now += 1
    out = c.correlate(event("same"))
    assert out is not None and out.event["count"] == 42  # what was dropped is still counted


# -- a Deployment over its tenant's quota --------------------------------------------------------


def test_deployment_over_quota_backs_off(world: TenantWorld, controllers: ControllersThread) -> None:
    admin = world.fresh_tenant("noisy", {"quota": QUOTA})
    ns = "noisy-a"
    creates0, rs_writes0 = requests(world.api, "POST", "pods"), requests(world.api, "PUT", "replicasets")
    events0 = requests(world.api, "POST", "events") + requests(world.api, "PATCH", "events")
    proc = world.kubectl(
        admin, "create", "deployment", "web", "--image=registry.invalid/busybox:1", "--replicas=3", "-n", ns
    )
    assert proc.returncode == 0, proc.stderr
    start = time.monotonic()
    rs: Obj = wait_for(
        lambda: next(iter(controllers.items("apps/v1", "replicasets", ns)), None), what="the replica set"
    )
    key = f"{ns}/{rs['metadata']['name']}"
    queue = controllers.manager["replicaset"].queue
    wait_for(lambda: queue.failures(key) >= 10, what="ten refused attempts")
    time.sleep(max(0.0, 8.0 - (time.monotonic() - start)))
    seconds = time.monotonic() - start
    creates = requests(world.api, "POST", "pods") - creates0
    writes = requests(world.api, "POST", "events") + requests(world.api, "PATCH", "events") - events0
    # without back-off: ~60 refused creates, 60 status writes and 60 new Events a second
    assert 10 <= creates <= 25, f"{creates} pod creates in {seconds:.1f}s"  # counted: ten were refused
    assert writes <= 25, f"{writes} event writes in {seconds:.1f}s"
    assert requests(world.api, "PUT", "replicasets") - rs_writes0 <= 3
    assert queue.failures(key) <= 15
    status = controllers.get("apps/v1", "replicasets", rs["metadata"]["name"], ns)["status"]  # type: ignore[index]
    failure = next(c for c in status["conditions"] if c["type"] == "ReplicaFailure")
    assert failure["reason"] == "FailedCreate" and 'exceeded quota of tenant "noisy"' in failure["message"]
    # each refusal names its own pod: nine stand alone, the rest are one counted Event
    about = events_about(controllers, ns, rs["metadata"]["name"])
    failed = [e for e in about if e["reason"] == "FailedCreate"]
    combined = [e for e in failed if e["message"].startswith(COMBINED + "Error creating: pods")]
    assert len(failed) == 10 and len(combined) == 1 and combined[0]["count"] >= 2, failed
    described = world.kubectl(admin, "describe", "rs", rs["metadata"]["name"], "-n", ns).stdout
    assert "(combined from similar events)" in described

    # the quota grows: the next attempt (a few seconds away at most, this early) creates them
    r = world.http("operator").patch(
        f"{TENANTS_PATH}/noisy", json={"spec": {"quota": {"pods": "3"}}}, headers=MERGE
    )
    assert r.status_code == 200, r.text
    wait_for(lambda: len(controllers.pods(ns)) == 3, timeout=40, what="3 pods once the quota allows")
    wait_for(lambda: queue.failures(key) == 0, what="the key forgotten after a good sync")


def test_job_over_quota_writes_status_then_backs_off(
    world: TenantWorld, controllers: ControllersThread
) -> None:
    admin = world.fresh_tenant("batchy", {"quota": {**QUOTA, "pods": "0"}})
    ns = "batchy-a"
    job = KIND["jobs"].body("work", ns)
    job["spec"]["parallelism"] = 4
    r = world.http(admin).post(KIND["jobs"].path(ns), json=job)
    assert r.status_code == 201, r.text
    key = f"{ns}/work"
    queue = controllers.manager["job"].queue
    wait_for(lambda: queue.failures(key) >= 8, what="refused attempts")
    status = (controllers.get("batch/v1", "jobs", "work", ns) or {}).get("status") or {}
    assert status.get("startTime") and status.get("active") == 0, status  # as upstream's syncJob
    failed = [e for e in events_about(controllers, ns, "work") if e["reason"] == "FailedCreate"]
    assert sum(e["count"] for e in failed) >= 8 and len(failed) <= 10, failed


# -- the node agent's events -----------------------------------------------------------------------


async def test_node_events_are_counted_not_repeated(world: TenantWorld) -> None:
    admin = world.fresh_tenant("pully", {"quota": QUOTA})
    ns = "pully-a"
    pod = KIND["pods"].body("stuck", ns)
    r = world.http(admin).post(KIND["pods"].path(ns), json=pod)
    assert r.status_code == 201, r.text
    pod = r.json()
    api = world.api
    async with ApiClient(api.url, token=api.token, ca_file=api.ca.ca_cert) as client:
        node = ClientNodeAPI(client, "node-x")
        for _ in range(40):  # a worker that retries a pull 40 times
            await node.event(pod, "Warning", "Failed", 'Failed to pull image "x": connection refused')
        recorder = node._recorder
        assert isinstance(recorder, EventRecorder)
        assert recorder.written == 25 and recorder.dropped == 15
        listed = await client.list("v1", "events", ns)
    events = [e for e in listed["items"] if e["involvedObject"]["name"] == "stuck"]
    assert len(events) == 1, events
    e = events[0]
    assert e["count"] == 25 and e["source"] == {"component": "kubelet", "host": "node-x"}
    assert e["involvedObject"]["kind"] == "Pod" and e["involvedObject"]["uid"] == pod["metadata"]["uid"]
    described = world.kubectl(admin, "describe", "pod", "stuck", "-n", ns).stdout
    assert "x25 over" in described and "Failed to pull image" in described, described


def test_deployment_whose_replica_set_is_refused(world: TenantWorld, controllers: ControllersThread) -> None:
    admin = world.fresh_tenant("rolly", {"quota": {**QUOTA, "pods": "4", "count/replicasets.apps": "1"}})
    ns = "rolly-a"
    proc = world.kubectl(admin, "create", "deployment", "web", "--image=registry.invalid/busybox:1", "-n", ns)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: controllers.items("apps/v1", "replicasets", ns), what="the first replica set")
    proc = world.kubectl(
        admin, "set", "image", "deployment/web", "busybox=registry.invalid/busybox:2", "-n", ns
    )
    assert proc.returncode == 0, proc.stderr
    queue = controllers.manager["deployment"].queue
    wait_for(lambda: queue.failures(f"{ns}/web") >= 5, what="refused attempts")
    d = controllers.get("apps/v1", "deployments", "web", ns) or {}
    progressing = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ReplicaSetCreateError"), progressing
    assert "count/replicasets.apps" in progressing["message"]
    warned = [e for e in events_about(controllers, ns, "web") if e["reason"] == "ReplicaSetCreateError"]
    assert len(warned) == 1 and warned[0]["count"] >= 5 and warned[0]["type"] == "Warning", warned


def test_endpoints_refused_warn_and_back_off(world: TenantWorld, controllers: ControllersThread) -> None:
    admin = world.fresh_tenant("servy", {"quota": {**QUOTA, "count/endpoints": "0"}})
    ns = "servy-a"
    service = (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\n"
        "spec: {selector: {app: web}, ports: [{port: 80}]}\n"
    )
    proc = world.kubectl(admin, "apply", "-f", "-", input=service)
    assert proc.returncode == 0, proc.stderr
    queue = controllers.manager["endpoints"].queue
    wait_for(lambda: queue.failures(f"{ns}/web") >= 5, what="refused attempts")
    warned = [e for e in events_about(controllers, ns, "web") if e["reason"] == "FailedToCreateEndpoint"]
    assert len(warned) == 1 and warned[0]["count"] >= 5, warned
    assert warned[0]["message"].startswith(f"Failed to create endpoint for service {ns}/web: ")


def test_namespace_held_by_a_finalizer_backs_off(world: TenantWorld, controllers: ControllersThread) -> None:
    limiter = controllers.manager["namespace"].rate_limiter()
    assert max(limiter.when("k") for _ in range(30)) == 60.0  # upstream's namespace controller cap
    ns = controllers.namespace("held")
    held = {"metadata": {"name": "cm", "finalizers": ["example.com/hold"]}}
    controllers.create("v1", "configmaps", held, ns)
    controllers.delete("v1", "namespaces", ns)
    queue = controllers.manager["namespace"].queue
    wait_for(lambda: queue.failures(ns) >= 5, what="the namespace controller backing off")
    status = (controllers.get("v1", "namespaces", ns) or {}).get("status") or {}
    cond = next(c for c in status["conditions"] if c["type"] == "NamespaceFinalizersRemaining")
    assert cond["status"] == "True" and "example.com/hold in 1 resource instances" in cond["message"]
    controllers.patch("v1", "configmaps", "cm", {"metadata": {"finalizers": None}}, ns)
    wait_for(lambda: controllers.get("v1", "namespaces", ns) is None, timeout=40, what="the namespace gone")


async def test_a_deleted_event_is_created_again(world: TenantWorld) -> None:
    """An Event expires after an hour (or someone deletes it): the next repeat writes it anew."""
    api = world.api
    async with ApiClient(api.url, token=api.token, ca_file=api.ca.ca_cert) as client:
        recorder = EventRecorder(client, "test-controller")
        ref = {"kind": "ConfigMap", "apiVersion": "v1", "namespace": "default", "name": "cfg", "uid": "u-cfg"}
        await recorder.record(ref, "Normal", "Checked", "all good")
        first = [
            e
            for e in (await client.list("v1", "events", "default"))["items"]
            if e["involvedObject"]["name"] == "cfg"
        ]
        assert len(first) == 1 and first[0]["count"] == 1
        await client.delete("v1", "events", first[0]["metadata"]["name"], "default")
        await recorder.record(ref, "Normal", "Checked", "all good")
        again = [
            e
            for e in (await client.list("v1", "events", "default"))["items"]
            if e["involvedObject"]["name"] == "cfg"
        ]
    assert len(again) == 1 and again[0]["count"] == 2 and recorder.written == 2, again
    assert again[0]["metadata"]["name"] == first[0]["metadata"]["name"]
