"""The node lifecycle and taint eviction controllers against the real API server, with the real
scheduler and ReplicaSet controller, and fake nodes: API clients that register a Node, renew its
Lease and run (report Running, finalize deleted) the pods bound to them. Stopping a fake node is a
real fault for the control plane: its Lease stops being renewed. Grace periods are shortened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from hypernetes.apiclient import ApiClient
from hypernetes.asyncwait import cancel_and_wait
from hypernetes.controllers import ControllerManager
from hypernetes.controllers.nodelifecycle import NodeLifecycleConfig, desired_taints
from hypernetes.controllers.tainteviction import FOREVER, eviction_delay
from hypernetes.node.agent import NodeAgent
from hypernetes.node.podspec import sandbox_id
from hypernetes.objects import Obj
from hypernetes.objects.taints import NOT_READY, UNREACHABLE, UNSCHEDULABLE
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.kernels import KernelRegistry
from tests.support.apiserver import ApiServerThread
from tests.support.nodes import NodesCluster as Cluster
from tests.support.partition import Partition
from tests.support.tenantnodes import replicaset
from tests.support.tenants import TenantWorld
from tests.support.waiting import wait_for, wait_for_async

GRACE = 4.0  # node-monitor-grace-period (heartbeats every 0.3 s, late ones under load)
TOLERATION = 3.0  # default-unreachable-toleration-seconds
CHECK_WAIT = 10.0  # quarantine (1 s) + a tick
CONFIG = NodeLifecycleConfig(
    monitor_grace_period=GRACE,
    startup_grace_period=GRACE,
    monitor_period=0.3,
    not_ready_toleration=TOLERATION,
    unreachable_toleration=TOLERATION,
    orphan_pod_quarantine=1.0,
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    api = ApiServerThread(tmp_path).start()
    c = Cluster(api, CONFIG)
    try:
        yield c
    finally:
        c.stop()
        api.stop()


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

    cluster.stop_node("dead")
    # the grace runs from the node's last renewal, which may be before the stop returned (long
    # before it, on a loaded machine)
    lease = ctl.get("coordination.k8s.io/v1", "leases", "dead", "kube-node-lease") or {}
    renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00")).timestamp()
    wait_for(
        lambda: cluster.condition("dead", "Ready")["status"] == "Unknown", timeout=GRACE + 5, what="Unknown"
    )
    found = time.time() - renewed
    assert GRACE - 0.2 <= found <= GRACE + 2, found
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
    warned = {
        e["involvedObject"]["name"] for e in ctl.items("v1", "events", ns) if e["reason"] == "NodeNotReady"
    }
    assert doomed <= warned  # as upstream: "Node is not ready" on each pod
    # after the toleration the RS's pods are deleted and replaced on the live node
    wait_for(
        lambda: len([p for p in cluster.pods_on(ns, "alive") if ready(p) == "True"]) == 4,
        timeout=TOLERATION + 10,
        what="4 Ready pods on the live node",
    )
    moved = time.time() - renewed
    # timeAdded has whole seconds (metav1.Time)
    assert moved >= GRACE + TOLERATION - 1, moved
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


def test_deleting_a_lost_node_removes_its_terminating_pods(cluster: Cluster) -> None:
    """The operator deletes the Node of a host that is gone for good: the pods evicted from it,
    Terminating with nobody to finalize them, are force-deleted after the quarantine (podgc)."""
    ctl = cluster.ctl
    cluster.start_node("alive")
    cluster.start_node("gone")
    ns = ctl.namespace("gone")
    ctl.create("apps/v1", "replicasets", replicaset("web", 2), ns)
    wait_for(lambda: len(cluster.pods_on(ns, "gone")) == 1, what="a pod on each node")
    cluster.stop_node("gone")
    stuck = wait_for(
        lambda: [p for p in cluster.pods_on(ns, "gone") if p["metadata"].get("deletionTimestamp")],
        timeout=GRACE + TOLERATION + 10,
        what="the evicted pod Terminating",
    )
    time.sleep(CONFIG.orphan_pod_quarantine + 1)
    held = [p["metadata"]["uid"] for p in cluster.pods_on(ns, "gone")]
    assert held == [p["metadata"]["uid"] for p in stuck]  # kept while its Node exists
    assert ctl.delete("v1", "nodes", "gone") is not None
    wait_for(lambda: cluster.pods_on(ns, "gone") == [], timeout=CHECK_WAIT, what="the orphan removed")
    assert len([p for p in cluster.pods_on(ns, "alive") if ready(p) == "True"]) == 2


def test_an_operators_no_execute_taint_evicts_by_toleration(cluster: Cluster) -> None:
    ctl = cluster.ctl
    cluster.start_node("maint")
    ns = ctl.namespace("maint")
    taint = {"key": "example.com/maintenance", "effect": "NoExecute"}
    ctl.create("v1", "pods", bare_pod("plain", "maint", []), ns)
    ctl.create(
        "v1",
        "pods",
        bare_pod("patient", "maint", [{**taint, "operator": "Exists", "tolerationSeconds": 2}]),
        ns,
    )
    ctl.create("v1", "pods", bare_pod("forever", "maint", [{**taint, "operator": "Exists"}]), ns)
    wait_for(lambda: all(ready(p) == "True" for p in ctl.pods(ns)) and len(ctl.pods(ns)) == 3, what="Ready")
    ctl.patch("v1", "nodes", "maint", {"spec": {"taints": [taint]}})  # as kubectl taint, no timeAdded
    tainted = time.monotonic()
    wait_for(lambda: ctl.get("v1", "pods", "plain", ns) is None, timeout=5, what="the intolerant pod gone")
    wait_for(lambda: ctl.get("v1", "pods", "patient", ns) is None, timeout=8, what="evicted after 2 s")
    assert time.monotonic() - tainted >= 1.5
    assert ctl.get("v1", "pods", "forever", ns) is not None


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


# -- with the real node agent and a pod VM ------------------------------------------------------


@pytest.mark.slow
async def test_a_node_cut_off_and_back_gets_its_pods_ready_again(
    tmp_path: Path, kernels: KernelRegistry, busybox_ref: str
) -> None:
    """The node agent reaches the API server through a relay the test cuts: its Lease stops, the
    controller marks the node Unknown and its pods not Ready, and one of them is deleted for good
    meanwhile (as podgc or `kubectl delete --force` would); once healed, the agent's heartbeat
    makes the node Ready, its pod worker posts the other pod Ready again (it reconciles a status
    someone else overwrote, as the kubelet's status manager does) and the deleted pod's VM is
    stopped and removed."""
    (tmp_path / "api").mkdir()
    api = ApiServerThread(tmp_path / "api", tenancy=True).start()
    assert api.tenancy is not None
    relay = Partition(api.port)
    port = await relay.start()
    admin = ApiClient(api.url, token=api.token, ca_file=api.ca.ca_cert)
    node_token = api.tenancy.issuer.issue_node("node1").token
    node_client = ApiClient(f"https://127.0.0.1:{port}", token=node_token, ca_file=api.ca.ca_cert)
    runtime = HyperVM(tmp_path / "rt", ImageStore(tmp_path / "images"), kernels, die_with_parent=True)
    agent = NodeAgent(node_client, runtime, "node1")
    # the agent renews every 10 s (upstream's kubelet too): the grace must be longer (upstream: 40 s)
    config = NodeLifecycleConfig(monitor_grace_period=15, startup_grace_period=30, monitor_period=0.3)
    manager = ControllerManager(admin, ["nodelifecycle"], node_lifecycle=config)
    tasks = [asyncio.create_task(agent.run()), asyncio.create_task(manager.run())]

    async def pod_ready(name: str = "web") -> str:
        pod = await admin.get("v1", "pods", name, "default")
        return next((c["status"] for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"), "")

    async def node_ready() -> str:
        node = await admin.get("v1", "nodes", "node1")
        return next((c["status"] for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), "")

    try:
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
        await admin.create("v1", "serviceaccounts", sa, "default")
        container = {
            "name": "main",
            "image": busybox_ref,
            "command": ["sleep", "3600"],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},  # two fit on 2 cores
        }
        pod = {
            "metadata": {"name": "web"},
            "spec": {
                "nodeName": "node1",
                "automountServiceAccountToken": False,  # no root CA publisher here
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
            },
        }
        await admin.create("v1", "pods", pod, "default")
        gone = await admin.create("v1", "pods", {**pod, "metadata": {"name": "gone"}}, "default")
        try:
            await wait_for_async(lambda: _is(pod_ready, "True"), timeout=240, what="the pod VM Ready")
            await wait_for_async(lambda: _is(lambda: pod_ready("gone"), "True"), timeout=240, what="2nd VM")
        except AssertionError:
            print((await admin.get("v1", "pods", "web", "default"))["status"])
            raise
        relay.partition()
        await wait_for_async(lambda: _is(node_ready, "Unknown"), timeout=30, what="node Unknown")
        await wait_for_async(lambda: _is(pod_ready, "False"), timeout=10, what="pod not Ready")
        await admin.delete("v1", "pods", "gone", "default", {"gracePeriodSeconds": 0})
        relay.heal()
        await wait_for_async(lambda: _is(node_ready, "True"), timeout=30, what="node Ready again")
        await wait_for_async(lambda: _is(pod_ready, "True"), timeout=30, what="pod Ready again")

        async def removed() -> bool:
            return sandbox_id(gone) not in {s.id for s in await runtime.list_sandboxes()}

        await wait_for_async(removed, timeout=60, what="the deleted pod's VM stopped and removed")
    finally:
        await agent.shutdown(stop_pods=True)
        await cancel_and_wait(tasks)
        await relay.close()
        await admin.close()
        await node_client.close()
        api.stop()


async def _is(read: Callable[[], Awaitable[str]], want: str) -> bool:
    return await read() == want


def test_a_lost_nodes_pods_stop_counting_in_the_tenants_quota(tmp_path: Path) -> None:
    """A tenant at its pod quota loses a node: its evicted pods stay Terminating there (nobody
    finalizes them), and must stop counting once past their deletion grace (upstream's
    QuotaV1Pod), or their replacements would be refused on the live node for good."""
    api = ApiServerThread(tmp_path, tenancy=True).start()
    world = TenantWorld(api)
    cluster = Cluster(api, CONFIG, ("serviceaccount", "replicaset", "nodelifecycle", "tainteviction"))
    try:
        world.fresh_tenant("acme", {"quota": {"pods": "2"}})  # namespace acme-a
        cluster.start_node("alive")
        cluster.start_node("dead")
        ctl, ns = cluster.ctl, "acme-a"
        wait_for(lambda: ctl.get("v1", "serviceaccounts", "default", ns), what="the default account")
        rs = replicaset("web", 2)
        rs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
        ctl.create("apps/v1", "replicasets", rs, ns)
        wait_for(
            lambda: len(cluster.pods_on(ns, "dead")) == 1 and len(cluster.pods_on(ns, "alive")) == 1,
            what="spread",
        )
        cluster.stop_node("dead")
        wait_for(
            lambda: len([p for p in cluster.pods_on(ns, "alive") if ready(p) == "True"]) == 2,
            timeout=GRACE + TOLERATION + 20,
            what="the replacement on the live node, within the tenant's quota of 2",
        )
        stuck = [p for p in cluster.pods_on(ns, "dead") if p["metadata"].get("deletionTimestamp")]
        assert len(stuck) == 1  # still there, Terminating, not counted
    finally:
        cluster.stop()
        world.close()
        api.stop()
