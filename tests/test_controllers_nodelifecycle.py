"""The node lifecycle and taint eviction controllers against the real API server, with the real
scheduler and ReplicaSet controller, and fake nodes: API clients that register a Node, renew its
Lease and run (report Running, finalize deleted) the pods bound to them. Stopping a fake node is a
real fault for the control plane: its Lease stops being renewed. Grace periods are shortened."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import ControllerManager
from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig, desired_taints
from hypernetes.controllers.tainteviction import FOREVER, eviction_delay
from hypernetes.objects.taints import NOT_READY, UNREACHABLE, UNSCHEDULABLE
from hypernetes.scheduler.loop import Scheduler
from hypernetes.scheduler.placement import SPREADING
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread
from tests.support.waiting import wait_for

Obj = dict[str, Any]
GRACE = 2.0  # node-monitor-grace-period
TOLERATION = 3.0  # default-unreachable-toleration-seconds
CONFIG = NodeLifecycleConfig(
    monitor_grace_period=GRACE,
    startup_grace_period=GRACE,
    monitor_period=0.3,
    not_ready_toleration=TOLERATION,
    unreachable_toleration=TOLERATION,
)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeNode:
    """One node as the control plane sees it: Node, Lease renewed every `period`, its pods run."""

    def __init__(self, client: ApiClient, name: str, period: float = 0.3) -> None:
        self.client, self.name, self.period = client, name, period
        self.finalized: list[str] = []

    async def run(self) -> None:
        if await self.client.get_or_none("v1", "nodes", self.name) is None:
            await self.client.create("v1", "nodes", {"metadata": {"name": self.name}})
        with contextlib.suppress(ApiException):
            await self.client.create("v1", "namespaces", {"metadata": {"name": "kube-node-lease"}})
        await asyncio.gather(self._heartbeat(), self._pods())

    async def _heartbeat(self) -> None:
        while True:
            renew = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": renew}
            try:
                await self.client.patch(
                    "coordination.k8s.io/v1", "leases", self.name, {"spec": spec}, "kube-node-lease"
                )
            except ApiException:
                body = {"metadata": {"name": self.name}, "spec": spec}
                await self.client.create("coordination.k8s.io/v1", "leases", body, "kube-node-lease")
            t = now()
            conditions = [
                {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                }
                for ctype, status, reason in (
                    ("Ready", "True", "KubeletReady"),
                    ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                    ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                    ("PIDPressure", "False", "KubeletHasSufficientPID"),
                )
            ]
            status = {
                "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                "conditions": conditions,
            }
            await self.client.patch("v1", "nodes", self.name, {"status": status}, subresource="status")
            await asyncio.sleep(self.period)

    async def _pods(self) -> None:
        async for ev in self.client.informer("v1", "pods", field_selector=f"spec.nodeName={self.name}"):
            for pod in ev.object.get("items") or [] if ev.type == "SYNC" else [ev.object]:
                if ev.type != "DELETED":
                    with contextlib.suppress(ApiException):
                        await self._handle(pod)

    async def _handle(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):  # the agent stops the VM, then finalizes
            self.finalized.append(meta["name"])
            body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
            await self.client.delete("v1", "pods", meta["name"], meta["namespace"], body)
            return
        if (pod.get("status") or {}).get("phase") == "Running":
            return
        t = now()
        status = {
            "phase": "Running",
            "conditions": [
                {"type": c, "status": "True", "lastTransitionTime": t}
                for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
        }
        await self.client.patch(
            "v1", "pods", meta["name"], {"status": status}, meta["namespace"], subresource="status"
        )


class Cluster:
    """The API server, the controller manager (replicaset, nodelifecycle, tainteviction) and the
    scheduler on one loop, and fake nodes that can be stopped and started."""

    def __init__(self, api: ApiServerThread) -> None:
        self.api = api
        self.ctl = ControllersThread(api, only=[], kubelet=False).start()
        self.ctl.manager = self.ctl.call(self._manager())
        self.nodes: dict[str, tuple[FakeNode, asyncio.Task[None]]] = {}

    async def _manager(self) -> ControllerManager:
        manager = ControllerManager(
            self.ctl.client, ["replicaset", "nodelifecycle", "tainteviction"], node_lifecycle=CONFIG
        )
        self.tasks = [
            asyncio.create_task(manager.run()),
            asyncio.create_task(Scheduler(self.ctl.client, SPREADING).run()),
        ]
        return manager

    def start_node(self, name: str) -> FakeNode:
        async def start() -> tuple[FakeNode, asyncio.Task[None]]:
            node = FakeNode(self.ctl.client, name)
            return node, asyncio.create_task(node.run())

        self.nodes[name] = self.ctl.call(start())
        return self.nodes[name][0]

    def stop_node(self, name: str) -> float:
        async def stop() -> None:
            task = self.nodes.pop(name)[1]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.ctl.call(stop())
        return time.monotonic()

    def stop(self) -> None:
        async def stop() -> None:
            for t in [*self.tasks, *(t for _, t in self.nodes.values())]:
                t.cancel()
            await asyncio.gather(*self.tasks, *(t for _, t in self.nodes.values()), return_exceptions=True)

        self.ctl.call(stop())
        self.ctl.stop()

    # -- reads ---------------------------------------------------------------------------------

    def node(self, name: str) -> Obj:
        got = self.ctl.get("v1", "nodes", name)
        assert got is not None
        return got

    def condition(self, name: str, ctype: str) -> Obj:
        return next(c for c in self.node(name)["status"]["conditions"] if c["type"] == ctype)

    def taints(self, name: str) -> set[tuple[str, str]]:
        return {(t["key"], t["effect"]) for t in (self.node(name).get("spec") or {}).get("taints") or []}

    def pods_on(self, ns: str, node: str) -> list[Obj]:
        return [p for p in self.ctl.pods(ns) if p["spec"].get("nodeName") == node]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    api = ApiServerThread(tmp_path).start()
    c = Cluster(api)
    try:
        yield c
    finally:
        c.stop()
        api.stop()


def replicaset(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    container = {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def bare_pod(name: str, node: str, tolerations: list[Obj]) -> Obj:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": tolerations,
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }


def ready(pod: Obj) -> str:
    return next((c["status"] for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"), "")


def test_a_silent_node_goes_unknown_its_pods_move_and_it_comes_back(cluster: Cluster) -> None:
    ctl = cluster.ctl
    alive = cluster.start_node("alive")
    cluster.start_node("dead")
    wait_for(lambda: len(ctl.items("v1", "nodes")) == 2, what="two nodes")
    ns = ctl.namespace("lifecycle")
    ctl.create("apps/v1", "replicasets", replicaset("web", 4), ns)
    wait_for(
        lambda: len(cluster.pods_on(ns, "alive")) == 2 and len(cluster.pods_on(ns, "dead")) == 2,
        what="two pods on each node (spreading)",
    )
    forever = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    ctl.create("v1", "pods", bare_pod("stays", "dead", [forever]), ns)
    ctl.create("v1", "pods", bare_pod("leaves-at-once", "dead", [{**forever, "tolerationSeconds": 0}]), ns)
    wait_for(
        lambda: all(ready(p) == "True" for p in ctl.pods(ns)) and len(ctl.pods(ns)) == 6, what="all Ready"
    )
    doomed = {p["metadata"]["name"] for p in cluster.pods_on(ns, "dead")} - {"stays", "leaves-at-once"}

    stopped = cluster.stop_node("dead")
    wait_for(
        lambda: cluster.condition("dead", "Ready")["status"] == "Unknown", timeout=GRACE + 5, what="Unknown"
    )
    found = time.monotonic() - stopped
    assert GRACE - 0.5 <= found <= GRACE + 2, found
    for ctype in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
        cond = cluster.condition("dead", ctype)
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    wait_for(
        lambda: cluster.taints("dead") == {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")},
        what="taints",
    )
    added = next(t for t in cluster.node("dead")["spec"]["taints"] if t["effect"] == "NoExecute")["timeAdded"]
    assert added.endswith("Z")
    # the pods of the silent node are not Ready (no traffic), and not yet deleted (grace)
    on_dead = {p["metadata"]["name"]: p for p in cluster.pods_on(ns, "dead")}
    assert {
        n
        for n in doomed
        if ready(on_dead[n]) == "False" and not on_dead[n]["metadata"].get("deletionTimestamp")
    } == doomed

    def evicted(name: str) -> bool:
        pod = ctl.get("v1", "pods", name, ns)
        return pod is None or bool(pod["metadata"].get("deletionTimestamp"))

    wait_for(lambda: evicted("leaves-at-once"), timeout=3, what="tolerationSeconds 0: evicted at once")
    # after the toleration the RS's pods are deleted and replaced on the live node
    wait_for(
        lambda: len([p for p in cluster.pods_on(ns, "alive") if ready(p) == "True"]) == 4,
        timeout=TOLERATION + 10,
        what="4 Ready pods on the live node",
    )
    moved = time.monotonic() - stopped
    # timeAdded has whole seconds (metav1.Time), the last renewal came up to a period early
    assert moved >= GRACE + TOLERATION - 1.5, moved
    terminating = {
        p["metadata"]["name"] for p in cluster.pods_on(ns, "dead") if p["metadata"].get("deletionTimestamp")
    }
    assert doomed <= terminating  # graceful: Terminating until the node is back
    stays = ctl.get("v1", "pods", "stays", ns)
    assert stays is not None and not stays["metadata"].get("deletionTimestamp")  # tolerates forever
    assert cluster.taints("alive") == set() and not alive.finalized
    print(f"\nnode found Unknown after {found:.1f} s (grace {GRACE}), pods moved after {moved:.1f} s")

    back = cluster.start_node("dead")  # the node returns: its taints go, its deleted pods' VMs stop
    wait_for(lambda: cluster.taints("dead") == set(), what="taints removed")
    assert cluster.condition("dead", "Ready")["status"] == "True"
    wait_for(lambda: doomed <= set(back.finalized), what="the returning node stops its evicted pods")
    wait_for(
        lambda: {p["metadata"]["name"] for p in cluster.pods_on(ns, "dead")} == {"stays"}, what="only 'stays'"
    )
    rs = ctl.get("apps/v1", "replicasets", "web", ns)
    assert rs is not None and rs["status"].get("readyReplicas") == 4


def test_no_eviction_when_every_node_is_down(cluster: Cluster) -> None:
    ctl = cluster.ctl
    cluster.start_node("only")
    ns = ctl.namespace("outage")
    ctl.create("apps/v1", "replicasets", replicaset("db", 2), ns)
    wait_for(lambda: len([p for p in ctl.pods(ns) if ready(p) == "True"]) == 2, what="2 Ready pods")
    cluster.stop_node("only")
    wait_for(
        lambda: cluster.condition("only", "Ready")["status"] == "Unknown", timeout=GRACE + 5, what="Unknown"
    )
    wait_for(lambda: (UNREACHABLE, "NoSchedule") in cluster.taints("only"), what="NoSchedule taint")
    wait_for(lambda: all(ready(p) == "False" for p in ctl.pods(ns)), what="pods not Ready")
    time.sleep(TOLERATION + 1.5)
    # every node down looks like the control plane's own network: nothing is evicted
    assert cluster.taints("only") == {(UNREACHABLE, "NoSchedule")}
    assert len(ctl.pods(ns)) == 2 and not any(p["metadata"].get("deletionTimestamp") for p in ctl.pods(ns))


# -- the rules alone -----------------------------------------------------------------------------


def test_desired_taints_follow_conditions_and_keep_others() -> None:
    node = {
        "spec": {
            "unschedulable": True,
            "taints": [
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},
            ],
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "True"}]
        },
    }
    got = desired_taints(node, full_disruption=False)
    assert {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"} in got
    assert {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"} in got  # kept as is
    assert {(t["key"], t["effect"]) for t in got} == {
        ("dedicated", "NoSchedule"),
        (NOT_READY, "NoExecute"),
        (NOT_READY, "NoSchedule"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        (UNSCHEDULABLE, "NoSchedule"),
    }
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    node["spec"]["unschedulable"] = False
    assert desired_taints(node, full_disruption=False) == [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    ]


def test_eviction_delay_as_upstream() -> None:
    defaults = {UNREACHABLE: 300.0, NOT_READY: 300.0}
    unreachable = {"key": UNREACHABLE, "effect": "NoExecute"}
    other = {"key": "maintenance", "effect": "NoExecute"}
    pod: Obj = {"spec": {}}
    assert eviction_delay(pod, [unreachable], defaults) == 300.0  # DefaultTolerationSeconds
    assert eviction_delay(pod, [unreachable, other], defaults) == 0.0  # not tolerated at all
    pod["spec"]["tolerations"] = [{"operator": "Exists", "effect": "NoExecute"}]
    assert eviction_delay(pod, [unreachable, other], defaults) == FOREVER
    pod["spec"]["tolerations"] = [
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
        {
            "key": "maintenance",
            "operator": "Equal",
            "value": "",
            "effect": "NoExecute",
            "tolerationSeconds": 10,
        },
    ]
    assert eviction_delay(pod, [unreachable, other], defaults) == 10.0
    pod["spec"]["tolerations"] = [{"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": -5}]
    assert eviction_delay(pod, [unreachable], defaults) == 0.0
