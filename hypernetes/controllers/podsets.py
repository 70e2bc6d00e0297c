"""What the controllers of pod sets with ControllerRevision history share (DaemonSet,
StatefulSet; upstream's daemon and statefulset controllers repeat it too): the informers and their
handlers, a pod's change queueing the set that controls it (or, for an orphan, every set whose
selector matches, so one may adopt it), the pods a set claims, and recording its template as a
revision, where a name collision bumps status.collisionCount and retries as upstream does."""

from __future__ import annotations

from hypernetes.apiclient import ApiClient
from hypernetes.controllers import history as h
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, Retry, update_status
from hypernetes.controllers.claim import claim, fresh_owner_check
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj


class PodSetController(Controller):
    kind: str  # of the sets, as their pods' controllerRef names it
    plural: str  # of the sets, in apps/v1

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.sets = self.informer("apps/v1", self.plural)
        self.pods = self.informer("v1", "pods")
        self.revisions = self.informer(h.API_VERSION, h.PLURAL)
        self.sets.add_handler(
            Handler(add=self.enqueue, update=lambda old, new: self.enqueue(new), delete=self.enqueue)
        )
        self.pods.add_handler(
            Handler(add=self._pod, update=lambda old, new: self._pod_moved(old, new), delete=self._pod)
        )

    def _owner_key(self, pod: Obj) -> str | None:
        ref = m.controller_ref(pod)
        if ref is None or ref.get("kind") != self.kind:
            return None
        return f"{m.namespace(pod)}/{ref.get('name')}"

    def _pod(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.queue.add(key)
        elif m.controller_ref(pod) is None:  # an orphan: a set that matches may adopt it
            for owner in self.sets.list(m.namespace(pod)):
                if m.selector_matches((owner.get("spec") or {}).get("selector"), m.labels(pod)):
                    self.enqueue(owner)

    def _pod_moved(self, old: Obj, new: Obj) -> None:
        raise NotImplementedError

    def _requeue_when_available(self, key: str | None, old: Obj, new: Obj) -> None:
        """A pod that just became Ready is available minReadySeconds later: sync the set then."""
        if key is None:
            return
        min_ready = int(((self.sets.get(key) or {}).get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready and not m.pod_ready(old) and m.pod_ready(new):
            self.queue.add_after(key, min_ready + 1)

    async def _claim(self, owner: Obj, candidates: list[Obj]) -> list[Obj]:
        """The pods the set controls after adopting matching orphans and releasing the rest."""
        selector = (owner.get("spec") or {}).get("selector")
        check = fresh_owner_check(self.client, owner, self.plural)
        return await claim(self.client, self.pods, owner, selector, candidates, check)

    async def _update_revision(self, owner: Obj, history: h.History) -> Obj:
        """The revision of the set's current template (controllers/history.py)."""
        collisions = int((owner.get("status") or {}).get("collisionCount") or 0)
        try:
            return await h.update_revision(self.client, self.revisions, owner, history, collisions)
        except h.Collision:
            status = {**(owner.get("status") or {}), "collisionCount": collisions + 1}
            await update_status(self.client, "apps/v1", self.plural, owner, status)
            raise Retry("controller revision name collision") from None
