"""The node lifecycle controller (upstream pkg/controller/nodelifecycle): node health from the
node agent's heartbeats, and the taints that follow from a node's conditions.

- **Health.** A node is alive while its Lease (kube-node-lease/NAME) is renewed or its Ready
  condition's lastHeartbeatTime moves. As upstream, the time of the last change is taken from
  this controller's own monotonic clock when it sees the change (a node's clock is not trusted).
  Silent for `monitor_grace_period` (--node-monitor-grace-period, 40 s; a node that never posted
  Ready gets `startup_grace_period`, 60 s): its Ready, MemoryPressure, DiskPressure and
  PIDPressure conditions become Unknown, reason NodeStatusUnknown, "Kubelet stopped posting
  node status." (NodeStatusNeverUpdated when missing), and the Ready condition of every pod on it
  goes False (upstream's MarkPodsNotReady). A new leader starts every node's clock afresh.
- **Taints** (upstream's TaintNodesByCondition and taint-based eviction): Ready False ->
  node.kubernetes.io/not-ready, Ready Unknown -> node.kubernetes.io/unreachable, each NoSchedule
  and NoExecute; memory, disk and PID pressure and a NetworkUnavailable condition -> their
  NoSchedule taints; spec.unschedulable (kubectl cordon) -> node.kubernetes.io/unschedulable
  NoSchedule. Taints with other keys (an operator's) are never touched. A node that reports
  Ready again gets these taints removed.
- **Full disruption**: when no node at all is Ready, the cause is more likely the control
  plane's network than every node; as upstream then, no NoExecute taint is set (and those set
  are removed), so no pod is evicted. (Upstream also slows tainting per zone in a partial
  disruption; not done here: nodes are tainted as they are found unhealthy.)

Evicting the pods of a NoExecute-tainted node is the taint eviction controller's
(`tainteviction.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj
from hypernetes.objects.taints import (
    DISK_PRESSURE,
    MEMORY_PRESSURE,
    NETWORK_UNAVAILABLE,
    NO_EXECUTE,
    NO_SCHEDULE,
    NOT_READY,
    PID_PRESSURE,
    UNREACHABLE,
    UNSCHEDULABLE,
    node_taints,
    same_taint,
)

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
# the conditions a node agent posts, which go Unknown with it
AGENT_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
# condition (type, status) -> the NoSchedule taint key it brings (upstream's nodeConditionToTaintKeyStatusMap)
NO_SCHEDULE_BY_CONDITION = {
    ("Ready", "False"): NOT_READY,
    ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): MEMORY_PRESSURE,
    ("DiskPressure", "True"): DISK_PRESSURE,
    ("PIDPressure", "True"): PID_PRESSURE,
    ("NetworkUnavailable", "True"): NETWORK_UNAVAILABLE,
}
MANAGED_NO_SCHEDULE = {*NO_SCHEDULE_BY_CONDITION.values(), UNSCHEDULABLE}
MANAGED_NO_EXECUTE = {NOT_READY, UNREACHABLE}


@dataclass(frozen=True)
class NodeLifecycleConfig:
    """Upstream's flags and defaults (kube-controller-manager; the toleration seconds are
    kube-apiserver's DefaultTolerationSeconds admission flags, applied by tainteviction.py)."""

    monitor_grace_period: float = 40.0  # --node-monitor-grace-period
    startup_grace_period: float = 60.0  # --node-startup-grace-period
    monitor_period: float = 5.0  # --node-monitor-period
    not_ready_toleration: float = 300.0  # --default-not-ready-toleration-seconds
    unreachable_toleration: float = 300.0  # --default-unreachable-toleration-seconds
    orphan_pod_quarantine: float = 40.0  # podgc.py: a missing node's pods go after this long


@dataclass
class _Health:
    probe: float  # when we last saw the node alive, on our clock
    renew: str  # the Lease's renewTime then
    heartbeat: str  # the Ready condition's lastHeartbeatTime then


def ready_status(node: Obj) -> str | None:
    """ "True", "False", "Unknown", or None if the node never posted Ready."""
    cond = m.get_condition(node.get("status") or {}, "Ready")
    return None if cond is None else str(cond.get("status") or "Unknown")


def desired_taints(node: Obj, full_disruption: bool) -> list[Obj]:
    """The node's taints as this controller wants them: its managed ones from its conditions and
    spec.unschedulable, the others as they are; a managed taint kept keeps its timeAdded."""
    conditions = (node.get("status") or {}).get("conditions") or []
    want: list[Obj] = []
    for cond in conditions:
        key = NO_SCHEDULE_BY_CONDITION.get((cond.get("type"), cond.get("status")))
        if key is not None:
            want.append({"key": key, "effect": NO_SCHEDULE})
    if (node.get("spec") or {}).get("unschedulable"):
        want.append({"key": UNSCHEDULABLE, "effect": NO_SCHEDULE})
    ready = ready_status(node)
    if not full_disruption and ready in ("False", "Unknown"):
        want.append({"key": NOT_READY if ready == "False" else UNREACHABLE, "effect": NO_EXECUTE})
    current = node_taints(node)
    managed = [
        t
        for t in current
        if (t.get("effect") == NO_SCHEDULE and t.get("key") in MANAGED_NO_SCHEDULE)
        or (t.get("effect") == NO_EXECUTE and t.get("key") in MANAGED_NO_EXECUTE)
    ]
    out = [t for t in current if t not in managed]
    for taint in want:
        kept = next((t for t in managed if same_taint(t, taint)), None)
        if kept is not None:
            out.append(kept)
        elif not any(same_taint(t, taint) for t in out):
            out.append({**taint, "timeAdded": m.rfc3339()} if taint["effect"] == NO_EXECUTE else taint)
    return out


def unknown_conditions(node: Obj, now: str) -> list[Obj] | None:
    """The node's conditions with the agent's ones Unknown (upstream's tryUpdateNodeHealth);
    None if they are Unknown already."""
    conditions = [dict(c) for c in (node.get("status") or {}).get("conditions") or []]
    changed = False
    for ctype in AGENT_CONDITIONS:
        cond = next((c for c in conditions if c.get("type") == ctype), None)
        if cond is None:
            conditions.append(
                {
                    "type": ctype,
                    "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": m.meta(node).get("creationTimestamp"),
                    "lastTransitionTime": now,
                }
            )
            changed = True
        elif cond.get("status") != "Unknown":
            cond.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=now,
            )
            changed = True
    return conditions if changed else None


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    workers = 1  # node keys only: a few writes per node per change

    def __init__(
        self,
        client: ApiClient,
        informers: InformerFactory,
        config: NodeLifecycleConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(client, informers)
        self.config = config or NodeLifecycleConfig()
        self.clock = clock
        self.nodes = self.informer("v1", "nodes")
        self.leases = self.informer("coordination.k8s.io/v1", "leases")
        self.pods = self.informer("v1", "pods")
        self.health: dict[str, _Health] = {}
        self.nodes.add_handler(
            Handler(add=self.enqueue, update=self._node_updated, delete=self._node_deleted)
        )
        self.leases.add_handler(Handler(add=self._lease, update=lambda _old, new: self._lease(new)))

    def _node_updated(self, old: Obj, new: Obj) -> None:
        self.enqueue(new)
        if ready_status(old) != ready_status(new):
            for node in self.nodes.list():  # whether all nodes are down may have changed
                self.enqueue(node)

    def _node_deleted(self, node: Obj) -> None:
        self.health.pop(m.name(node), None)
        for other in self.nodes.list():
            self.enqueue(other)

    def _lease(self, lease: Obj) -> None:
        if m.namespace(lease) == NODE_LEASE_NAMESPACE:
            self.queue.add(m.name(lease))

    def _full_disruption(self) -> bool:
        nodes = self.nodes.list()
        return bool(nodes) and all(ready_status(n) != "True" for n in nodes)

    async def run(self) -> None:
        ticker = asyncio.create_task(self._monitor(), name="nodelifecycle monitor")
        try:
            await super().run()
        finally:
            ticker.cancel()

    async def _monitor(self) -> None:
        """Every monitor period, look at every node: silence has no event of its own."""
        await self.informers.wait_synced(self._watched)
        while True:
            for node in self.nodes.list():
                self.enqueue(node)
            await asyncio.sleep(self.config.monitor_period)

    def _observe(self, node: Obj) -> _Health:
        name = m.name(node)
        lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}") or {}
        renew = str((lease.get("spec") or {}).get("renewTime") or "")
        ready = m.get_condition(node.get("status") or {}, "Ready") or {}
        heartbeat = str(ready.get("lastHeartbeatTime") or "")
        now = self.clock()
        health = self.health.get(name)
        if health is None:
            health = self.health[name] = _Health(now, renew, heartbeat)
        elif renew != health.renew or heartbeat != health.heartbeat:
            health.probe, health.renew, health.heartbeat = now, renew, heartbeat
        return health

    async def reconcile(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            self.health.pop(key, None)
            return
        health = self._observe(node)
        ready = ready_status(node)
        grace = self.config.startup_grace_period if ready is None else self.config.monitor_grace_period
        if self.clock() - health.probe > grace:
            conditions = unknown_conditions(node, m.rfc3339())
            if conditions is not None:
                status = {**(node.get("status") or {}), "conditions": conditions}
                written = await self._write_status("nodes", node, status)
                if written is None:
                    return
                log.warning("node %s: no heartbeat for %.0f s: Ready is Unknown", key, grace)
                self.nodes.written(written)
                node = written
                await self.events.normal(node, "NodeNotReady", f"Node {key} status is now: NodeNotReady")
        await self._taint(node, self._full_disruption())
        if ready_status(node) != "True":
            await self._pods_not_ready(node)

    async def _write_status(self, plural: str, obj: Obj, status: Obj) -> Obj | None:
        """PUT the status we computed from `obj`, only over that very version (its
        resourceVersion): if the agent wrote in between (it is back), the 409 sends the key back
        to be judged again on the fresh object, never overwriting the agent's news with ours.
        None if the object is gone."""
        try:
            written: Obj = await self.client.replace(
                "v1", plural, {**obj, "status": status}, subresource="status"
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return written

    async def _taint(self, node: Obj, full_disruption: bool) -> None:
        taints = desired_taints(node, full_disruption)
        if taints == node_taints(node):
            return
        # compare-and-swap on the resourceVersion: a concurrent cordon or agent write wins,
        # this sync fails with 409 and runs again on the fresh object
        patch = {
            "metadata": {"resourceVersion": m.meta(node)["resourceVersion"]},
            "spec": {"taints": taints or None},
        }
        written = await self.client.patch("v1", "nodes", m.name(node), patch)
        self.nodes.written(written)
        log.info(
            "node %s: taints %s",
            m.name(node),
            ", ".join(f"{t['key']}:{t['effect']}" for t in taints) or "none",
        )

    async def _pods_not_ready(self, node: Obj) -> None:
        """Upstream's MarkPodsNotReady: the pods of a node that is not Ready are not Ready either
        (Services stop sending them traffic) until the node agent says otherwise."""
        name = m.name(node)
        failed: ApiException | None = None
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") != name or m.pod_phase(pod) in ("Succeeded", "Failed"):
                continue
            ready = m.pod_condition(pod, "Ready")
            if ready is None or ready.get("status") == "False":
                continue
            status = dict(pod.get("status") or {})
            m.set_condition(status, {**ready, "status": "False", "lastTransitionTime": m.rfc3339()})
            try:
                written = await self._write_status("pods", pod, status)
            except ApiException as e:
                failed = e
                continue
            if written is not None:
                self.pods.written(written)
                await self.events.warning(written, "NodeNotReady", "Node is not ready")
        if failed is not None:
            raise failed
