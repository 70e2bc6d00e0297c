"""Regressions of the object model through the API server: quantities as upstream reads them in
admission and quotas, the scheduler and the node's sizing (`512m` of memory is 0.512 bytes,
rounded up to 1, not docker's 512 MiB; `1k` is 1000, not 1024), and a Scale's status.selector
with the selector's matchExpressions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernetes.node.podspec import container_env, container_spec
from hypernetes.objects import Obj
from hypernetes.runtime.podsize import pod_vm
from hypernetes.runtime.sizing import GUEST_OVERHEAD, MiB, vm_size
from hypernetes.scheduler.loop import Scheduler
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread, async_client
from tests.support.controllers import ControllersThread
from tests.support.tenants import KIND, TenantWorld
from tests.support.waiting import wait_for, wait_for_async

PODS = KIND["pods"]
# the VM of a pod whose one container asks for 1 byte: the guest overhead, rounded up to a MiB
SMALLEST_VM = GUEST_OVERHEAD + MiB


def milli_memory_pod(name: str, namespace: str) -> Obj:
    body = PODS.body(name, namespace)
    body["spec"]["containers"][0]["resources"] = {"limits": {"memory": "512m", "cpu": "100m"}}
    return body


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TenantWorld, ControllersThread]]:
    api = ApiServerThread(Path(tmp_path_factory.mktemp("objects")), tenancy=True).start()
    world = TenantWorld(api)
    controllers = ControllersThread(api, only=["tenant"], kubelet=False).start()
    try:
        yield world, controllers
    finally:
        controllers.stop()
        world.close()
        api.stop()


def tenant_used(controllers: ControllersThread, tenant: str, key: str) -> Any:
    return (
        ((controllers.get("hypernetes.io/v1", "tenants", tenant) or {}).get("status") or {})
        .get("used", {})
        .get(key)
    )


def test_admission_sizes_a_milli_byte_pod_as_upstream(tenants: tuple[TenantWorld, ControllersThread]) -> None:
    """A 512m memory limit (valid Kubernetes: 0.512 bytes) is not docker's 512 MiB: the pod's VM
    is the smallest one, well inside a 100Mi quota, and counts so in the tenant's usage."""
    world, controllers = tenants
    h = world.http(world.fresh_tenant("milli", {"quota": {"memory": "100Mi"}}))
    r = h.post(PODS.path("milli-a"), json=milli_memory_pod("tiny", "milli-a"))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512m"
    wait_for(lambda: tenant_used(controllers, "milli", "memory") == "33Mi", what="the tenant's memory usage")


def test_a_kilo_is_1000_bytes_in_quotas(tenants: tuple[TenantWorld, ControllersThread]) -> None:
    """`1k` is 1000 everywhere: a scratch emptyDir of sizeLimit 1k counts 1000 bytes (`1k`), not
    1024 (`1Ki`), against the tenant's ephemeral-storage, and a 1k quota holds exactly it."""
    world, controllers = tenants
    h = world.http(world.fresh_tenant("kilo", {"quota": {"ephemeral-storage": "1k"}}))

    def pod(name: str, size: str) -> Obj:
        body = PODS.body(name, "kilo-a")
        body["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": size}}]
        return body

    r = h.post(PODS.path("kilo-a"), json=pod("exact", "1k"))
    assert r.status_code == 201, r.text
    wait_for(lambda: tenant_used(controllers, "kilo", "ephemeral-storage") == "1k", what="1000 bytes used")
    r = h.post(PODS.path("kilo-a"), json=pod("one-byte", "1"))
    assert r.status_code == 403
    assert "ephemeral-storage: requested 1, used 1k, limited 1k (over by 1)" in r.json()["message"]


async def test_the_scheduler_places_a_milli_byte_pod_by_its_real_size(tmp_path: Path) -> None:
    """A node with 48Mi allocatable fits the smallest VM; a 544Mi one (docker's reading of 512m)
    would be unschedulable there."""
    api = ApiServerThread(tmp_path).start()
    try:
        async with async_client(api) as admin:
            await admin.create("v1", "nodes", {"metadata": {"name": "small"}})
            alloc = {"cpu": "1", "memory": "48Mi", "pods": "10"}
            ready = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
            status = {"capacity": alloc, "allocatable": alloc, "conditions": [ready]}
            await admin.patch("v1", "nodes", "small", {"status": status}, subresource="status")
            await admin.create("v1", "pods", milli_memory_pod("tiny", "default"), "default")
            scheduler = asyncio.create_task(Scheduler(admin).run())
            try:

                async def bound() -> str | None:
                    pod = await admin.get("v1", "pods", "tiny", "default")
                    node: str | None = pod["spec"].get("nodeName")
                    return node

                assert await wait_for_async(bound, what="the pod bound") == "small"
            finally:
                scheduler.cancel()
                await asyncio.gather(scheduler, return_exceptions=True)
    finally:
        api.stop()


def test_the_node_boots_the_vm_admission_and_the_scheduler_sized() -> None:
    """The node agent's container spec (what the runtime sizes the VM from) reads the limits as
    admission and the scheduler do: one byte, so the smallest VM."""
    pod = milli_memory_pod("tiny", "default")
    spec = container_spec(pod, pod["spec"]["containers"][0], lookup=lambda *_: None)
    assert spec.memory_limit == 1 and spec.cpu_limit_millis == 100
    assert vm_size([spec]) == pod_vm(pod)
    assert pod_vm(pod).memory == SMALLEST_VM


def test_the_downward_api_divides_by_upstream_quantities() -> None:
    """resourceFieldRef divisors are quantities too: 1M of memory in units of 1k is 1000 (1024
    would make it 977), 512m of memory in bytes is 1, and 1500m of CPU in 1m units is 1500."""
    pod = milli_memory_pod("tiny", "default")
    container = pod["spec"]["containers"][0]
    container["resources"]["limits"] = {"memory": "1M", "cpu": "1500m", "ephemeral-storage": "512m"}
    container["env"] = [
        {"name": n, "valueFrom": {"resourceFieldRef": {"resource": r, "divisor": d}}}
        for n, r, d in (
            ("MEM", "limits.memory", "1k"),
            ("DISK", "limits.ephemeral-storage", "1"),
            ("CPU", "limits.cpu", "1m"),
        )
    ]
    env = dict(container_env(pod, container, lookup=lambda *_: None))
    assert (env["MEM"], env["DISK"], env["CPU"]) == ("1000", "1", "1500")


@pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")
def test_scale_status_selector_keeps_match_expressions(tmp_path: Path) -> None:
    """`kubectl get --subresource=scale`: status.selector is the whole selector in its string
    form (LabelSelectorAsSelector(...).String()), what an autoscaler lists pods by."""
    api = ApiServerThread(tmp_path).start()
    try:
        selector = {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
        labels = {"app": "web", "tier": "front"}
        deploy = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": selector,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                },
            },
        }
        (tmp_path / "deploy.json").write_text(json.dumps(deploy))
        api.kubectl("apply", "-f", str(tmp_path / "deploy.json"))
        out = api.kubectl("get", "deployment", "web", "--subresource=scale", "-o", "json").stdout
        scale = json.loads(out)
        assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
        assert scale["status"]["selector"] == "app=web,!canary,tier in (edge,front)"
    finally:
        api.stop()
