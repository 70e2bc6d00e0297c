"""The DaemonSet controller (upstream pkg/controller/daemon): one pod of the template on every
node whose labels match the template's nodeSelector and whose NoSchedule/NoExecute taints the
pod tolerates. Each pod is pinned to its node by required node affinity on `metadata.name` (the
scheduler binds it, as upstream since 1.12) and tolerates what upstream's daemon pods tolerate
(not-ready, unreachable, pressure, unschedulable), so a cordoned node keeps its daemon.

Updates: RollingUpdate replaces old pods with at most maxUnavailable nodes without an available
daemon pod (or, with maxSurge, starts the new pod beside the old one first); OnDelete only when
someone deletes a pod. Templates are kept as ControllerRevisions (controllers/history.py), and
the status is what `kubectl rollout status ds` reads. DaemonSets are operators' (tenants do not
own nodes): the authorizer refuses the kind to tenants."""

from __future__ import annotations

import asyncio
import logging

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import history as h
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Retry, namespace_terminating, update_status
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.controllers.podsets import PodSetController
from hypernetes.controllers.rollout import scaled_value
from hypernetes.objects import Obj
from hypernetes.objects.selectors import node_selector_term_matches
from hypernetes.objects.taints import (
    DISK_PRESSURE,
    MEMORY_PRESSURE,
    NO_EXECUTE,
    NO_SCHEDULE,
    NOT_READY,
    PID_PRESSURE,
    UNREACHABLE,
    UNSCHEDULABLE,
    node_taints,
    tolerations_for,
)

log = logging.getLogger(__name__)

TEMPLATE_GENERATION = "pod-template-generation"  # deprecated upstream, still set
# upstream's AddOrUpdateDaemonPodTolerations: daemons stay through what evicts other pods
DAEMON_TOLERATIONS = (
    {"key": NOT_READY, "operator": "Exists", "effect": NO_EXECUTE},
    {"key": UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE},
    {"key": DISK_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": MEMORY_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": PID_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": UNSCHEDULABLE, "operator": "Exists", "effect": NO_SCHEDULE},
)


def daemon_tolerations(template_spec: Obj) -> list[Obj]:
    tolerations = [dict(t) for t in template_spec.get("tolerations") or []]
    for t in DAEMON_TOLERATIONS:
        if not any(x.get("key") == t["key"] and x.get("effect") == t["effect"] for x in tolerations):
            tolerations.append(dict(t))
    return tolerations


def should_run(ds: Obj, node: Obj) -> bool:
    """Whether the daemon belongs on this node: its nodeSelector and required node affinity
    match, and every NoSchedule
    and NoExecute taint is tolerated (with the daemon tolerations added)."""
    tspec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    labels = m.labels(node)
    if any(labels.get(k) != v for k, v in (tspec.get("nodeSelector") or {}).items()):
        return False
    # the template's required node affinity (its pods carry only the pin to their node)
    required = ((tspec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(node_selector_term_matches(t, node) for t in terms):
        return False
    tolerations = daemon_tolerations(tspec)
    return all(
        tolerations_for(t, tolerations)
        for t in node_taints(node)
        if t.get("effect") in (NO_SCHEDULE, NO_EXECUTE)
    )


def target_node(pod: Obj) -> str | None:
    """The node a daemon pod is for: where it is bound, else its affinity's metadata.name."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if (
                f.get("key") == "metadata.name"
                and f.get("operator") == "In"
                and len(f.get("values") or []) == 1
            ):
                return str(f["values"][0])
    return None


def pinned(template_spec: Obj, node: str) -> Obj:
    """upstream's ReplaceDaemonSetPodNodeNameNodeAffinity: the pod's required node affinity is
    exactly `metadata.name In [node]`; the daemon tolerations added."""
    spec = dict(template_spec)
    affinity = dict(spec.get("affinity") or {})
    node_affinity = dict(affinity.get("nodeAffinity") or {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    }
    affinity["nodeAffinity"] = node_affinity
    spec["affinity"] = affinity
    spec["tolerations"] = daemon_tolerations(template_spec)
    return spec


class DaemonSetController(PodSetController):
    name = "daemonset"
    kind = "DaemonSet"
    plural = "daemonsets"
    workers = 2

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.nodes = self.informer("v1", "nodes")
        self.nodes.add_handler(
            Handler(add=self._all, update=lambda old, new: self._node_changed(old, new), delete=self._all)
        )

    # -- events --------------------------------------------------------------------------------

    def _all(self, _: Obj | None = None) -> None:
        for ds in self.sets.list():
            self.enqueue(ds)

    def _node_changed(self, old: Obj, new: Obj) -> None:
        # heartbeats change only the status: a daemon's placement reads labels, taints and the name
        if m.labels(old) != m.labels(new) or (old.get("spec") or {}) != (new.get("spec") or {}):
            self._all()

    def _pod_moved(self, old: Obj, new: Obj) -> None:
        self._pod(new)
        if m.controller_ref(old) != m.controller_ref(new):
            self._pod(old)
        ref = m.controller_ref(new)
        self._requeue_when_available(f"{m.namespace(new)}/{ref.get('name')}" if ref else None, old, new)

    # -- sync ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        ds = self.sets.get(key)
        if ds is None:
            return
        spec = ds.get("spec") or {}
        ns = m.namespace(ds)
        active = [p for p in self.pods.list(ns) if not m.deleting(p) or m.controlled_by(p, ds)]
        pods = await self._claim(ds, active)
        history = h.owned(self.revisions, ds)
        revision = await self._update_revision(ds, history)
        current_hash = m.labels(revision).get(h.REVISION_LABEL, "")
        by_node: dict[str, list[Obj]] = {}
        for p in pods:
            by_node.setdefault(target_node(p) or "", []).append(p)
        nodes = {m.name(n): n for n in self.nodes.list()}
        failure: Exception | None = None
        if not m.deleting(ds):
            try:
                await self._manage(ds, nodes, by_node, current_hash)
            except (ApiException, Retry) as e:
                failure = e
        await self._status(ds, nodes, current_hash)
        keep = {m.name(revision)} | {
            m.name(r)
            for r in history.revisions
            if m.labels(r).get(h.REVISION_LABEL) in {m.labels(p).get(h.REVISION_LABEL) for p in pods}
        }
        await h.truncate(self.client, ds, history, keep, int(spec.get("revisionHistoryLimit", 10)))
        if failure is not None:
            raise failure
        min_ready = int(spec.get("minReadySeconds") or 0)
        if min_ready and any(m.pod_ready(p) and not m.pod_available(p, min_ready) for p in pods):
            self.queue.add_after(key, min_ready)

    async def _manage(
        self, ds: Obj, nodes: dict[str, Obj], by_node: dict[str, list[Obj]], current: str
    ) -> None:
        spec = ds.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        create: list[str] = []
        delete: list[Obj] = []
        for name, node in nodes.items():
            here = [p for p in by_node.get(name, []) if not m.deleting(p)]
            if not should_run(ds, node):
                delete.extend(here)
                continue
            failed = [p for p in here if m.pod_phase(p) == "Failed"]
            delete.extend(failed)  # replaced on the next sync, as upstream (with back-off)
            here = [p for p in here if p not in failed]
            if not here and not failed and not any(m.deleting(p) for p in by_node.get(name, [])):
                create.append(name)
            elif len(here) > 1:
                # keep one: the updated, then the oldest (a surge pair is the rollout's business)
                new = [p for p in here if m.labels(p).get(h.REVISION_LABEL) == current]
                old = [p for p in here if p not in new]
                if not (len(new) == 1 and len(old) == 1):
                    keep = sorted(new or here, key=lambda p: m.meta(p).get("creationTimestamp") or "")[0]
                    delete.extend(p for p in here if p is not keep)
        # pods for nodes that are gone
        for name, stray in by_node.items():
            if name not in nodes:
                delete.extend(p for p in stray if not m.deleting(p))
        await self._create(ds, create, current)
        await self._delete(ds, delete)
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and not create and not delete:
            await self._roll(ds, nodes, by_node, current, min_ready)

    async def _roll(
        self, ds: Obj, nodes: dict[str, Obj], by_node: dict[str, list[Obj]], current: str, min_ready: int
    ) -> None:
        """One step of upstream's rollingUpdate: old pods go while at most maxUnavailable nodes
        lack an available daemon; with maxSurge the new pod comes first and the old one goes once
        the new one is available."""
        ru = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
        eligible = [n for n, node in nodes.items() if should_run(ds, node)]
        desired = len(eligible)
        max_unavailable = scaled_value(ru.get("maxUnavailable", 1), desired, True)
        max_surge = scaled_value(ru.get("maxSurge", 0), desired, True)
        if max_unavailable == 0 and max_surge == 0:
            max_unavailable = 1
        unavailable = 0
        old_available: list[Obj] = []
        old_unavailable: list[Obj] = []
        need_surge: list[str] = []
        surge_done: list[Obj] = []
        surging = 0
        for name in eligible:
            here = by_node.get(name, [])
            new = [p for p in here if m.labels(p).get(h.REVISION_LABEL) == current and not m.deleting(p)]
            old = [p for p in here if p not in new and not m.deleting(p)]
            available = any(m.pod_available(p, min_ready) for p in new + old)
            if not available:
                unavailable += 1
            if new and old:
                surging += 1
                if any(m.pod_available(p, min_ready) for p in new):
                    surge_done.extend(old)
                continue
            for p in old:
                if max_surge:
                    need_surge.append(name)
                elif m.pod_available(p, min_ready):
                    old_available.append(p)
                else:
                    old_unavailable.append(p)
        if max_surge:
            await self._delete(ds, surge_done)
            room = max(max_surge - surging, 0)
            await self._create(ds, need_surge[:room], current)
            return
        # unavailable old pods cost nothing to replace; available ones only within the budget
        victims = old_unavailable + old_available[: max(max_unavailable - unavailable, 0)]
        await self._delete(ds, victims)

    async def _create(self, ds: Obj, node_names: list[str], current: str) -> None:
        if not node_names:
            return
        template = (ds.get("spec") or {}).get("template") or {}
        labels = {
            h.REVISION_LABEL: current,
            TEMPLATE_GENERATION: str(int(m.meta(ds).get("generation") or 1)),
        }

        async def one(node: str) -> None:
            pod = m.pod_from_template(template, ds, extra_labels=labels)
            pod["spec"] = pinned(template.get("spec") or {}, node)
            try:
                out = await self.client.create("v1", "pods", pod, m.namespace(ds))
            except ApiException as e:
                if namespace_terminating(e):
                    return
                await self.events.warning(ds, "FailedCreate", f"Error creating: {e.message}")
                raise
            await self.events.normal(ds, "SuccessfulCreate", f"Created pod: {m.name(out)}")

        # slow start, as upstream: a failing create fails once, not once per node
        batch, done = 1, 0
        while done < len(node_names):
            chunk = node_names[done : done + batch]
            results = await asyncio.gather(*(one(n) for n in chunk), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            done += len(chunk)
            batch = min(batch * 2, 500)

    async def _delete(self, ds: Obj, pods: list[Obj]) -> None:
        async def one(pod: Obj) -> None:
            try:
                await self.client.delete(
                    "v1", "pods", m.name(pod), m.namespace(pod), {"preconditions": {"uid": m.uid(pod)}}
                )
            except ApiException as e:
                if e.status in (404, 409):
                    return
                await self.events.warning(ds, "FailedDelete", f"Error deleting: {e.message}")
                raise
            await self.events.normal(ds, "SuccessfulDelete", f"Deleted pod: {m.name(pod)}")

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _status(self, ds: Obj, nodes: dict[str, Obj], current: str) -> None:
        spec = ds.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        pods = [p for p in self.pods.list(m.namespace(ds)) if m.controlled_by(p, ds) and not m.deleting(p)]
        by_node: dict[str, list[Obj]] = {}
        for p in pods:
            by_node.setdefault(target_node(p) or "", []).append(p)
        desired = scheduled = misscheduled = ready = available = updated = 0
        for name, node in nodes.items():
            here = by_node.get(name, [])
            if not should_run(ds, node):
                misscheduled += 1 if any(p.get("spec", {}).get("nodeName") for p in here) else 0
                continue
            desired += 1
            if not here:
                continue
            scheduled += 1
            if any(m.pod_ready(p) for p in here):
                ready += 1
            if any(m.pod_available(p, min_ready) for p in here):
                available += 1
            if any(m.labels(p).get(h.REVISION_LABEL) == current for p in here):
                updated += 1
        status: Obj = {
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": int(m.meta(ds).get("generation") or 0),
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
            "numberUnavailable": desired - available,
        }
        # Go's omitempty on the last four
        for f in ("observedGeneration", "updatedNumberScheduled", "numberAvailable", "numberUnavailable"):
            if not status[f]:
                del status[f]
        old = ds.get("status") or {}
        for f in ("collisionCount", "conditions"):
            if old.get(f) is not None:
                status[f] = old[f]
        if status == old:
            return
        out = await update_status(self.client, "apps/v1", "daemonsets", ds, status)
        if out is not None:
            self.sets.written(out)
