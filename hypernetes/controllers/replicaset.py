"""The ReplicaSet controller: keep spec.replicas active pods that match the selector, owned by
the ReplicaSet, and report them in status (upstream pkg/controller/replicaset)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, Expectations, namespace_terminating, update_status
from hypernetes.controllers.claim import claim, fresh_owner_check
from hypernetes.controllers.informer import Handler, InformerFactory, key_of
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

BURST = 500  # at most this many creations or deletions per sync, as upstream


class ReplicaSetController(Controller):
    """Also the ReplicationController's (a subclass names its kind): the same loop, an
    equality-only selector."""

    name = "replicaset"
    workers = 4
    api_version, plural, kind = "apps/v1", "replicasets", "ReplicaSet"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.rs = self.informer(self.api_version, self.plural)
        self.pods = self.informer("v1", "pods")
        self.expectations = Expectations()
        self.rs.add_handler(
            Handler(add=self.enqueue, update=lambda old, new: self.enqueue(new), delete=self._rs_deleted)
        )
        self.pods.add_handler(
            Handler(add=self._pod_added, update=self._pod_updated, delete=self._pod_deleted)
        )

    # -- events --------------------------------------------------------------------------------

    def _rs_deleted(self, rs: Obj) -> None:
        self.expectations.forget(key_of(rs))
        self.enqueue(rs)

    def _owner_key(self, pod: Obj) -> str | None:
        """The key of the ReplicaSet controlling this pod, if it is one we know."""
        ref = m.controller_ref(pod)
        if ref is None or ref.get("kind") != self.kind:
            return None
        key = f"{m.namespace(pod)}/{ref.get('name')}"
        rs = self.rs.get(key)
        return key if rs is not None and m.uid(rs) == ref.get("uid") else None

    def _enqueue_matching(self, pod: Obj) -> None:
        """An orphan: every ReplicaSet that could adopt it looks at it."""
        for rs in self.rs.list(m.namespace(pod)):
            if m.selector_matches(self.selector(rs), m.labels(pod)):
                self.enqueue(rs)

    def _pod_added(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if m.deleting(pod):
            self._pod_deleted(pod)
        elif key is not None:
            self.expectations.created(key)
            self.queue.add(key)
        elif m.controller_ref(pod) is None:
            self._enqueue_matching(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if m.deleting(new) and not m.deleting(old):
            self._pod_deleted(new)  # a graceful delete: the controller may replace it now
        old_key, key = self._owner_key(old), self._owner_key(new)
        if old_key is not None and old_key != key:
            self.queue.add(old_key)
        if key is not None:
            self.queue.add(key)
            rs = self.rs.get(key) or {}
            ready_secs = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
            if ready_secs and not m.pod_ready(old) and m.pod_ready(new):
                self.queue.add_after(key, ready_secs + 1)  # it becomes available then
        elif m.controller_ref(new) is None and (m.labels(old) != m.labels(new) or old_key):
            self._enqueue_matching(new)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deleted(key, m.uid(pod))
            self.queue.add(key)

    @staticmethod
    def selector(rs: Obj) -> Obj | None:
        """The LabelSelector of its pods."""
        sel: Obj | None = (rs.get("spec") or {}).get("selector")
        return sel

    # -- sync ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rs = self.rs.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        spec = rs.get("spec") or {}
        ns = m.namespace(rs)
        active = [p for p in self.pods.list(ns) if m.pod_active(p)]
        pods = await claim(
            self.client,
            self.pods,
            rs,
            self.selector(rs),
            active,
            fresh_owner_check(self.client, rs, self.plural),
        )
        failure: ApiException | None = None
        if self.expectations.satisfied(key) and not m.deleting(rs):
            try:
                await self._manage(key, rs, pods)
            except ApiException as e:
                failure = e
        await self._update_status(rs, pods, failure)
        if failure is not None:
            raise failure  # back off: the next attempt is 5 ms, 10 ms ... up to 1000 s later
        min_ready = int(spec.get("minReadySeconds") or 0)
        if min_ready and any(m.pod_ready(p) and not m.pod_available(p, min_ready) for p in pods):
            self.queue.add_after(key, min_ready)

    async def _manage(self, key: str, rs: Obj, pods: list[Obj]) -> None:
        """Create or delete pods towards spec.replicas; raises what refused a write."""
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(pods) - want
        if diff < 0:
            await self._create(key, rs, min(-diff, BURST))
        elif diff > 0:
            victims = pods_to_delete(pods, min(diff, BURST))
            self.expectations.expect(key, deletes=[m.uid(p) for p in victims])
            results = await asyncio.gather(
                *(self._delete_pod(key, rs, p) for p in victims), return_exceptions=True
            )
            for r in results:
                if isinstance(r, BaseException):
                    raise r

    async def _create(self, key: str, rs: Obj, count: int) -> None:
        """Slow start, as upstream: batches of 1, 2, 4 ... so a failing create (quota, a bad
        template) fails once, not `count` times."""
        self.expectations.expect(key, adds=count)
        template = (rs.get("spec") or {}).get("template") or {}
        done, batch = 0, 1
        while done < count:
            n = min(batch, count - done)
            pod = m.pod_from_template(template, rs)
            results = await asyncio.gather(
                *(self.client.create("v1", "pods", pod, m.namespace(rs)) for _ in range(n)),
                return_exceptions=True,
            )
            for res in results:
                if isinstance(res, dict):
                    await self.events.normal(rs, "SuccessfulCreate", f"Created pod: {m.name(res)}")
            errors = [r for r in results if isinstance(r, BaseException)]
            done += n
            if errors:
                self.expectations.created(key, len(errors) + (count - done))  # never coming
                err = errors[0]
                if isinstance(err, ApiException):
                    if namespace_terminating(err):
                        return
                    await self.events.warning(rs, "FailedCreate", f"Error creating: {err.message}")
                raise err
            batch *= 2

    async def _delete_pod(self, key: str, rs: Obj, pod: Obj) -> None:
        try:
            out = await self.client.delete(
                "v1", "pods", m.name(pod), m.namespace(pod), {"preconditions": {"uid": m.uid(pod)}}
            )
        except ApiException as e:
            self.expectations.deleted(key, m.uid(pod))  # no event will come for it
            if e.status != 409:  # 409: a different pod by that name now
                raise
            return
        if out is None:
            self.expectations.deleted(key, m.uid(pod))
        else:
            await self.events.normal(rs, "SuccessfulDelete", f"Deleted pod: {m.name(pod)}")

    async def _update_status(self, rs: Obj, pods: list[Obj], failure: ApiException | None) -> None:
        spec = rs.get("spec") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        status: Obj = {k: v for k, v in (rs.get("status") or {}).items() if k == "conditions"}
        status["replicas"] = len(pods)
        counts = {
            "fullyLabeledReplicas": sum(1 for p in pods if template_labels.items() <= m.labels(p).items()),
            "readyReplicas": sum(1 for p in pods if m.pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if m.pod_available(p, min_ready)),
            "observedGeneration": int(m.meta(rs).get("generation") or 0),
        }
        status.update({k: v for k, v in counts.items() if v})  # zeros are omitted, as Go's omitempty
        # set once, as upstream's calculateStatus: a message that changed with every attempt
        # (it names the refused pod) would make each retry a status write, and each write an
        # update event that starts the next attempt at once, past the back-off
        if failure is not None and m.get_condition(status, "ReplicaFailure") is None:
            reason = "FailedCreate" if len(pods) < int(spec.get("replicas", 1)) else "FailedDelete"
            m.set_condition(status, m.condition("ReplicaFailure", "True", reason, failure.message))
        elif failure is None:
            m.remove_condition(status, "ReplicaFailure")
        if status == (rs.get("status") or {}):
            return
        out = await update_status(self.client, self.api_version, self.plural, rs, status)
        if out is not None:
            self.rs.written(out)


class ReplicationControllerController(ReplicaSetController):
    """v1 ReplicationController (upstream runs the ReplicaSet controller for it too)."""

    name = "replicationcontroller"
    api_version, plural, kind = "v1", "replicationcontrollers", "ReplicationController"

    @staticmethod
    def selector(rs: Obj) -> Obj | None:
        """An equality selector (a plain map) is a LabelSelector's matchLabels; an empty one
        selects nothing (validation refuses it)."""
        sel = (rs.get("spec") or {}).get("selector")
        return {"matchLabels": dict(sel)} if isinstance(sel, dict) and sel else None


def _rank(pod: Obj, colocated: dict[str, int]) -> tuple[Any, ...]:
    """Sort key: the pods to delete first come first (upstream's ActivePodsWithRanks)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    node = spec.get("nodeName") or ""
    phase = {"Pending": 0, "Unknown": 1, "Running": 2}.get(m.pod_phase(pod), 0)
    ready = m.pod_ready(pod)
    ready_since = m.parse_time((m.pod_condition(pod, "Ready") or {}).get("lastTransitionTime"))
    created = m.parse_time(m.meta(pod).get("creationTimestamp"))
    return (
        bool(node),  # unscheduled first
        phase,  # pending before running
        ready,  # not ready before ready
        -colocated.get(node, 0) if node else 0,  # nodes crowded with siblings first
        -(ready_since.timestamp() if ready and ready_since else 0),  # ready the shortest first
        -m.restart_count(pod),  # crashing first
        -(created.timestamp() if created else 0),  # newest first
        str(status.get("podIP") or ""),
    )


def pods_to_delete(pods: list[Obj], count: int) -> list[Obj]:
    colocated: dict[str, int] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if node:
            colocated[node] = colocated.get(node, 0) + 1
    return sorted(pods, key=lambda p: _rank(p, colocated))[:count]
