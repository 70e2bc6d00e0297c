"""The taint eviction controller (upstream pkg/controller/tainteviction, the "NoExecute taint
manager"): a pod bound to a node with a NoExecute taint it does not tolerate is deleted; one that
tolerates it for tolerationSeconds is deleted that long after the taint's timeAdded.

Upstream's DefaultTolerationSeconds admission gives every pod tolerations for
node.kubernetes.io/not-ready and /unreachable (NoExecute, 300 s) unless it has its own; here the
same defaults (`NodeLifecycleConfig`) are applied when the pod is judged, so a pod's own
toleration (longer, shorter, or forever without tolerationSeconds) still wins. So when a node
goes silent its pods are deleted 5 minutes after it was found unreachable, and their
controllers make new ones on other nodes.

The deletion is graceful, as upstream's: on a node that is really gone the pod stays Terminating
(its controller does not count it) until the node returns and its agent stops the VM and
finalizes it, or an operator deletes it with --force. Finished pods (Succeeded, Failed) are left
alone: they hold nothing, and their controllers have counted them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller
from hypernetes.controllers.informer import Handler, InformerFactory, key_of
from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig
from hypernetes.objects import Obj
from hypernetes.objects.taints import NO_EXECUTE, NOT_READY, UNREACHABLE, node_taints, tolerations_for

log = logging.getLogger(__name__)

FOREVER = float("inf")


def eviction_delay(pod: Obj, taints: list[Obj], defaults: dict[str, float]) -> float:
    """Seconds after its taint was added that the pod must go: 0 for a NoExecute taint it does
    not tolerate, the least tolerationSeconds among the taints otherwise (FOREVER if every taint
    is tolerated without a limit). `defaults`: the toleration seconds a pod without its own
    toleration of that taint key gets (DefaultTolerationSeconds)."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    delay = FOREVER
    for taint in taints:
        matching = tolerations_for(taint, tolerations)
        if not matching:
            if taint.get("key") not in defaults:
                return 0.0
            delay = min(delay, defaults[str(taint["key"])])
            continue
        # upstream's getMinTolerationTime: a negative or zero tolerationSeconds means at once
        seconds = [t.get("tolerationSeconds") for t in matching]
        limited = [max(float(s), 0.0) for s in seconds if s is not None]
        if limited:
            delay = min(delay, min(limited))
    return delay


class TaintEvictionController(Controller):
    name = "tainteviction"
    workers = 2

    def __init__(
        self,
        client: ApiClient,
        informers: InformerFactory,
        config: NodeLifecycleConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, informers)
        config = config or NodeLifecycleConfig()
        self.defaults = {NOT_READY: config.not_ready_toleration, UNREACHABLE: config.unreachable_toleration}
        self.clock = clock
        self.nodes = self.informer("v1", "nodes")
        self.pods = self.informer("v1", "pods")
        self.nodes.add_handler(Handler(add=self._node, update=lambda old, new: self._node_changed(old, new)))
        self.pods.add_handler(Handler(add=self._pod, update=lambda _old, new: self._pod(new)))
        self.evicted = 0  # for tests and metrics
        self._seen: dict[tuple[str, str], float] = {}  # (node, taint key) -> first seen

    def _added(self, node: str, taint: Obj) -> float:
        """The taint's timeAdded; for one without (an operator's), when we first saw it."""
        added = m.parse_time(taint.get("timeAdded"))
        if added is not None:
            return added.timestamp()
        return self._seen.setdefault((node, str(taint.get("key"))), self.clock())

    def _node(self, node: Obj) -> None:
        if any(t.get("effect") == NO_EXECUTE for t in node_taints(node)):
            self._node_pods(node)

    def _node_changed(self, old: Obj, new: Obj) -> None:
        if node_taints(old) != node_taints(new):
            self._node_pods(new)

    def _node_pods(self, node: Obj) -> None:
        name = m.name(node)
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") == name:
                self.enqueue(pod)

    def _pod(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") and not m.deleting(pod):
            self.enqueue(pod)

    async def reconcile(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or m.deleting(pod) or m.pod_phase(pod) in ("Succeeded", "Failed"):
            return
        node = self.nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        if node is None:
            return
        taints = [t for t in node_taints(node) if t.get("effect") == NO_EXECUTE]
        if not taints:
            return
        delay = eviction_delay(pod, taints, self.defaults)
        if delay == FOREVER:
            return
        since = min(self._added(m.name(node), t) for t in taints)
        left = since + delay - self.clock()
        if left > 0:
            self.queue.add_after(key, left)
            return
        meta = m.meta(pod)
        try:
            await self.client.delete(
                "v1", "pods", meta["name"], meta.get("namespace"), {"preconditions": {"uid": meta.get("uid")}}
            )
        except ApiException as e:
            if e.status != 409:  # 409: another pod by that name now
                raise
            return
        self.evicted += 1
        log.info("evicting pod %s from node %s (NoExecute taints)", key_of(pod), m.name(node))
        await self.events.normal(pod, "TaintManagerEviction", f"Marking for deletion Pod {key_of(pod)}")
