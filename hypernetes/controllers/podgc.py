"""The pod garbage collector's orphan rule (upstream pkg/controller/podgc, gcOrphaned): a pod
bound to a node that no longer exists is force-deleted (grace period 0), after the node has
been missing for a quarantine (40 s, as upstream) and a fresh read confirms it is gone.

This is how the pods of a lost host go for good: the taint eviction controller deletes them
gracefully, and they stay Terminating as long as their Node exists, because only its agent may
say the VM is stopped. An operator who knows the host is gone deletes its Node
(`kubectl delete node`); then nothing can run those pods any more, and they are removed. (If the
host comes back anyway, its agent stops the VMs of pods that are gone: docs/cluster.md.)
Upstream's other rules (terminated pods above a threshold, terminating pods on out-of-service
nodes) are not implemented.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller
from hypernetes.controllers.informer import Handler, InformerFactory, key_of
from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

CHECK_PERIOD = 20.0  # upstream's gcCheckPeriod


class PodGCController(Controller):
    name = "podgc"
    workers = 1

    def __init__(
        self,
        client: ApiClient,
        informers: InformerFactory,
        config: NodeLifecycleConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(client, informers)
        self.quarantine = (config or NodeLifecycleConfig()).orphan_pod_quarantine
        self.clock = clock
        self.pods = self.informer("v1", "pods")
        self.nodes = self.informer("v1", "nodes")
        self.missing: dict[str, float] = {}  # node name -> when we first saw it missing
        self.nodes.add_handler(Handler(delete=self._node_deleted))
        self.collected = 0

    def _node_deleted(self, node: Obj) -> None:
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") == m.name(node):
                self.enqueue(pod)

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick(), name="podgc tick")
        try:
            await super().run()
        finally:
            ticker.cancel()

    async def _tick(self) -> None:
        await self.informers.wait_synced(self._watched)
        while True:
            for pod in self.pods.list():
                node = (pod.get("spec") or {}).get("nodeName")
                if node and self.nodes.get(node) is None:
                    self.enqueue(pod)
            await asyncio.sleep(min(CHECK_PERIOD, self.quarantine))

    async def reconcile(self, key: str) -> None:
        pod = self.pods.get(key)
        node = str(((pod or {}).get("spec") or {}).get("nodeName") or "")
        if pod is None or not node:
            return
        if self.nodes.get(node) is not None:
            self.missing.pop(node, None)
            return
        since = self.missing.setdefault(node, self.clock())
        left = since + self.quarantine - self.clock()
        if left > 0:
            self.queue.add_after(key, left)
            return
        if await self.client.get_or_none("v1", "nodes", node) is not None:
            self.missing.pop(node, None)  # our cache was behind: it exists
            return
        meta = m.meta(pod)
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta.get("uid")}}
        try:
            await self.client.delete("v1", "pods", meta["name"], meta.get("namespace"), body)
        except ApiException as e:
            if e.status != 409:  # 409: another pod by that name now
                raise
            return
        self.collected += 1
        log.info("deleted pod %s: its node %s is gone", key_of(pod), node)
