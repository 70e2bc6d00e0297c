"""The disruption controller (upstream pkg/controller/disruption): the status of every
PodDisruptionBudget, which the eviction subresource trusts (api/disruption.py).

- expectedPods: the pods selected (minAvailable as a number), or the replicas their controllers
  want (maxUnavailable, or a percentage: each controller counted once; a ReplicaSet of a
  Deployment counts as the Deployment);
- desiredHealthy: minAvailable (a percentage of expectedPods rounded up), or expectedPods -
  maxUnavailable (rounded up), never below 0;
- currentHealthy: selected pods that are Ready, not being deleted and not just evicted
  (status.disruptedPods: an eviction names its pod there before deleting it; an entry older
  than two minutes whose pod still stands is dropped, the eviction assumed lost);
- disruptionsAllowed: currentHealthy - desiredHealthy, 0 when negative or nothing is expected,
  with the DisruptionAllowed condition. A budget whose pods' controllers cannot be read allows
  nothing (reason SyncFailed), as upstream's fail-safe."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, update_status
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj
from hypernetes.objects.disruption import budget_selects as selects

DELETION_TIMEOUT = timedelta(minutes=2)


class NoController(Exception):
    """A selected pod's controller, whose scale the budget needs, cannot be read."""


def scaled(value: int | str, total: int) -> int:
    """GetScaledValueFromIntOrPercent, rounding up."""
    if isinstance(value, int):
        return value
    return math.ceil(int(str(value).rstrip("%")) * total / 100)


class DisruptionController(Controller):
    name = "disruption"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.pdbs = self.informer("policy/v1", "poddisruptionbudgets")
        self.pods = self.informer("v1", "pods")
        self.replicasets = self.informer("apps/v1", "replicasets")
        self.deployments = self.informer("apps/v1", "deployments")
        self.pdbs.add_handler(Handler(add=self.enqueue, update=lambda o, n: self.enqueue(n)))
        self.pods.add_handler(
            Handler(add=self._pod_changed, update=self._pod_updated, delete=self._pod_changed)
        )

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        self._pod_changed(old)
        self._pod_changed(new)

    def _pod_changed(self, pod: Obj) -> None:
        for pdb in self.pdbs.list(m.namespace(pod)):
            if selects(pdb, pod):
                self.enqueue(pdb)

    async def reconcile(self, key: str) -> None:
        pdb = self.pdbs.get(key)
        if pdb is None or m.deleting(pdb):
            return
        pods = [p for p in self.pods.list(m.namespace(pdb)) if selects(pdb, p)]
        status = dict(pdb.get("status") or {})
        generation = int(m.meta(pdb).get("generation") or 0)
        if not pods:
            await self.events.normal(pdb, "NoPods", "No matching pods found")
        try:
            expected, desired = await self._expected(pdb, pods)
        except NoController as e:
            status.update(disruptionsAllowed=0, observedGeneration=generation)
            self._condition(status, "False", "SyncFailed", str(e))
            await self._write(pdb, status)
            await self.events.warning(
                pdb,
                "CalculateExpectedPodCountFailed",
                f"Failed to calculate the number of expected pods: {e}",
            )
            return
        now = m.now()
        disrupted, recheck = self._disrupted(pdb, pods, now)
        healthy = sum(1 for p in pods if not m.deleting(p) and m.name(p) not in disrupted and m.pod_ready(p))
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        status.update(
            currentHealthy=healthy,
            desiredHealthy=desired,
            expectedPods=expected,
            disruptionsAllowed=allowed,
            observedGeneration=generation,
        )
        if disrupted:
            status["disruptedPods"] = disrupted
        else:
            status.pop("disruptedPods", None)
        if allowed > 0:
            self._condition(status, "True", "SufficientPods", "")
        else:
            self._condition(status, "False", "InsufficientPods", "")
        await self._write(pdb, status)
        if recheck is not None:
            self.queue.add_after(key, max((recheck - now).total_seconds(), 0.0))

    async def _write(self, pdb: Obj, status: Obj) -> None:
        if status != (pdb.get("status") or {}):
            out = await update_status(self.client, "policy/v1", "poddisruptionbudgets", pdb, status)
            if out is not None:
                self.pdbs.written(out)

    @staticmethod
    def _condition(status: Obj, flag: str, reason: str, message: str) -> None:
        m.set_condition(
            status,
            {
                "type": "DisruptionAllowed",
                "status": flag,
                "observedGeneration": status.get("observedGeneration", 0),
                "lastTransitionTime": m.rfc3339(),
                "reason": reason,
                "message": message,
            },
        )

    @staticmethod
    def _disrupted(pdb: Obj, pods: list[Obj], now: datetime) -> tuple[dict[str, str], datetime | None]:
        """The evictions still in flight, and when the oldest of them expires."""
        by_name = {m.name(p): p for p in pods}
        kept: dict[str, str] = {}
        recheck: datetime | None = None
        for name, ts in ((pdb.get("status") or {}).get("disruptedPods") or {}).items():
            pod = by_name.get(name)
            when = m.parse_time(ts)
            if pod is None or m.deleting(pod) or when is None:
                continue
            expires = when + DELETION_TIMEOUT
            if expires < now:
                continue  # the eviction never deleted it: count it again
            kept[name] = ts
            recheck = expires if recheck is None or expires < recheck else recheck
        return kept, recheck

    async def _expected(self, pdb: Obj, pods: list[Obj]) -> tuple[int, int]:
        """(expectedPods, desiredHealthy) as upstream's getExpectedPodCount."""
        spec = pdb.get("spec") or {}
        max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
        if max_unavailable is not None:
            expected = await self._scale(pods)
            return expected, max(expected - scaled(max_unavailable, expected), 0)
        if isinstance(min_available, int):
            return len(pods), min_available
        if min_available is not None:
            expected = await self._scale(pods)
            return expected, scaled(min_available, expected)
        return 0, 0

    async def _scale(self, pods: list[Obj]) -> int:
        """The replicas the pods' controllers want, each controller once. Pods without a
        controller count for nothing (upstream: an UnmanagedPods event)."""
        seen: dict[str, int] = {}
        for pod in pods:
            ref = m.controller_ref(pod)
            if ref is None:
                continue
            uid, replicas = await self._controller_scale(pod, ref)
            seen[uid] = replicas
        return sum(seen.values())

    async def _controller_scale(self, pod: Obj, ref: Obj) -> tuple[str, int]:
        ns = m.namespace(pod)
        kind, name, uid = ref.get("kind"), str(ref.get("name")), str(ref.get("uid"))
        if kind == "ReplicaSet":
            rs = self.replicasets.get(f"{ns}/{name}")
            if rs is not None and m.uid(rs) == uid:
                owner = m.controller_ref(rs)
                if owner is not None and owner.get("kind") == "Deployment":
                    d = self.deployments.get(f"{ns}/{owner.get('name')}")
                    if d is not None and m.uid(d) == owner.get("uid"):
                        return m.uid(d), int((d.get("spec") or {}).get("replicas", 1))
                return uid, int((rs.get("spec") or {}).get("replicas", 1))
        elif kind in ("StatefulSet", "ReplicationController"):
            # read through the API: these kinds' informers belong to their own controllers
            plural = "statefulsets" if kind == "StatefulSet" else "replicationcontrollers"
            try:
                obj = await self.client.get_or_none(str(ref.get("apiVersion")), plural, name, ns)
            except ApiException:
                obj = None
            if obj is not None and m.uid(obj) == uid:
                return uid, int((obj.get("spec") or {}).get("replicas", 1))
        raise NoController(f'found no controllers for pod "{m.name(pod)}"')
