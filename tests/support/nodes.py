"""Nodes as the control plane sees them, for control-plane tests without VMs: a `FakeNode` is an
API client that registers a Node, renews its Lease in kube-node-lease, posts Ready, and runs
the pods bound to it (reports them Running and Ready, finalizes deleted ones, as the node agent
does once their VM is stopped). Stopping one is a real fault for the control plane: its Lease
stops being renewed. `NodesCluster` adds the controller manager and the scheduler on one loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import ControllerManager
from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig
from hypernetes.objects import Obj
from hypernetes.scheduler.loop import Scheduler
from hypernetes.scheduler.placement import SPREADING
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeNode:
    """One node as the control plane sees it: Node, Lease renewed every `period`, its pods run."""

    def __init__(self, client: ApiClient, name: str, period: float = 0.3) -> None:
        self.client, self.name, self.period = client, name, period
        self.finalized: list[str] = []

    async def run(self) -> None:
        await asyncio.gather(self.heartbeat(), self._pods())

    async def heartbeat(self) -> None:
        """Register the Node, then keep it Ready and its Lease renewed (without running pods)."""
        if await self.client.get_or_none("v1", "nodes", self.name) is None:
            with contextlib.suppress(ApiException):  # 409: made meanwhile
                await self.client.create("v1", "nodes", {"metadata": {"name": self.name}})
        with contextlib.suppress(ApiException):
            await self.client.create("v1", "namespaces", {"metadata": {"name": "kube-node-lease"}})
        await self._heartbeat()

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
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if status.get("phase") == "Running" and ready:
            return  # (a Running pod someone marked not Ready is posted Ready again, as the kubelet does)
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


class NodesCluster:
    """The API server, the controller manager (replicaset, nodelifecycle, tainteviction) and the
    scheduler on one loop, and fake nodes that can be stopped and started."""

    def __init__(
        self,
        api: ApiServerThread,
        config: NodeLifecycleConfig,
        controllers: Iterable[str] = ("replicaset", "nodelifecycle", "tainteviction", "podgc"),
    ) -> None:
        self.api, self.config, self.only = api, config, list(controllers)
        self.ctl = ControllersThread(api, only=[], kubelet=False).start()
        self.ctl.manager = self.ctl.call(self._manager())
        self.nodes: dict[str, tuple[FakeNode, asyncio.Task[None]]] = {}

    async def _manager(self) -> ControllerManager:
        manager = ControllerManager(self.ctl.client, self.only, node_lifecycle=self.config)
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
