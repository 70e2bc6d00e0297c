"""The scheduler loop: watch pods and nodes, place pending pods, bind them via pods/binding.

A pod that fits nowhere gets the PodScheduled=False condition and a FailedScheduling event
saying why, and is retried when the cluster changes (a node appears or changes, a pod goes away)
or after RETRY_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from hypernetes.apiclient import ApiClient, ApiException, WatchEvent
from hypernetes.asyncwait import wait_event
from hypernetes.eventrecorder import EventRecorder, object_reference
from hypernetes.metrics import attach, detach
from hypernetes.objects import Obj
from hypernetes.scheduler.metrics import ERROR, SCHEDULED, UNSCHEDULABLE, SchedulerMetrics
from hypernetes.scheduler.placement import (
    BIN_PACKING,
    NodeInfo,
    choose,
    feasible,
    node_infos,
    unschedulable_message,
    volume_filter,
    volume_terms,
)

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
RETRY_SECONDS = 10.0


def _key(obj: Obj) -> str:
    """ "ns/name", or "name" for cluster-scoped objects (as volume_terms looks PVs up)."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Scheduler:
    def __init__(self, client: ApiClient, strategy: str = BIN_PACKING) -> None:
        self.client = client
        self.strategy = strategy
        self.pods: dict[str, Obj] = {}
        self.nodes: dict[str, Obj] = {}
        self.claims: dict[str, Obj] = {}  # "ns/name"
        self.volumes: dict[str, Obj] = {}  # persistent volumes by name
        self._wake = asyncio.Event()
        self._reported: dict[str, str] = {}  # pod key -> last FailedScheduling message
        self.events = EventRecorder(client, SCHEDULER_NAME)
        self.bound = 0
        self.metrics = SchedulerMetrics(self._pending_counts)

    def pending(self) -> list[Obj]:
        out = []
        for pod in self.pods.values():
            spec = pod.get("spec") or {}
            if (
                not spec.get("nodeName")
                and not pod["metadata"].get("deletionTimestamp")
                and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
            ):
                out.append(pod)
        return sorted(
            out,
            key=lambda p: (
                -(p.get("spec") or {}).get("priority", 0),
                p["metadata"].get("creationTimestamp", ""),
            ),
        )

    def _pending_counts(self) -> tuple[int, int]:
        """(pods to try, pods found unschedulable) for scheduler_pending_pods."""
        pending = self.pending()
        unschedulable = sum(1 for p in pending if _key(p) in self._reported)
        return len(pending) - unschedulable, unschedulable

    async def run(self) -> None:
        watchers = [
            asyncio.create_task(self._follow("pods", self.pods)),
            asyncio.create_task(self._follow("nodes", self.nodes)),
            asyncio.create_task(self._follow("persistentvolumeclaims", self.claims)),
            asyncio.create_task(self._follow("persistentvolumes", self.volumes)),
        ]
        attach(self.metrics.registry)  # on the process's /metrics while it runs
        try:
            while True:
                await wait_event(self._wake, RETRY_SECONDS)
                self._wake.clear()
                await self.schedule_pending()
        finally:
            detach(self.metrics.registry)
            for task in watchers:
                task.cancel()

    async def _follow(self, plural: str, cache: dict[str, Obj]) -> None:
        ev: WatchEvent
        async for ev in self.client.informer("v1", plural):
            if ev.type == "SYNC":
                cache.clear()
                cache.update({_key(o): o for o in ev.object.get("items") or []})
            elif ev.type == "DELETED":
                cache.pop(_key(ev.object), None)
            else:
                cache[_key(ev.object)] = ev.object
            self._wake.set()

    async def schedule_pending(self) -> None:
        for pod in self.pending():
            await self.schedule_one(pod)

    async def schedule_one(self, pod: Obj) -> str | None:
        infos = node_infos(self.nodes.values(), self.pods.values())
        meta = pod["metadata"]
        key = _key(pod)
        terms = volume_terms(pod, self.claims, self.volumes)
        if isinstance(terms, str):  # a claim is missing or unbound: no node can take the pod yet
            fits, reasons = list[NodeInfo](), Counter({terms: len(infos)})
        else:
            fits, reasons = feasible(pod, infos, (volume_filter(terms),) if terms else ())
        if not fits:
            self.metrics.attempt(UNSCHEDULABLE)
            message = unschedulable_message(len(infos), reasons) if infos else "0/0 nodes are available."
            if self._reported.get(key) != message:
                self._reported[key] = message
                await self._unschedulable(pod, message)
            return None
        node = choose(pod, fits, self.strategy).name
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            await self.client.create(
                "v1", "pods", binding, meta.get("namespace"), subresource="binding", name=meta["name"]
            )
        except ApiException as e:
            log.info("binding %s to %s: %s", key, node, e)
            self.metrics.attempt(ERROR)
            return None
        # Count the pod against the node at once: the watch event may come after the next pod.
        self.pods[key] = {**pod, "spec": {**pod.get("spec", {}), "nodeName": node}}
        self._reported.pop(key, None)
        self.bound += 1
        self.metrics.attempt(SCHEDULED)
        await self._event(pod, "Normal", "Scheduled", f"Successfully assigned {key} to {node}")
        return node

    async def _unschedulable(self, pod: Obj, message: str) -> None:
        meta = pod["metadata"]
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": _now(),
        }
        with contextlib.suppress(ApiException):
            await self.client.patch(
                "v1",
                "pods",
                meta["name"],
                {"status": {"phase": "Pending", "conditions": [condition]}},
                meta.get("namespace"),
                subresource="status",
            )
        await self._event(pod, "Warning", "FailedScheduling", message)

    async def _event(self, pod: Obj, type_: str, reason: str, message: str) -> None:
        # through the shared correlator: a pod that fits nowhere for hours is one counted Event
        ref = object_reference({**pod, "kind": "Pod", "apiVersion": "v1"})
        await self.events.record(ref, type_, reason, message)
