"""`kubectl cordon`, `drain` and `uncordon` (real kubectl 1.32) as the operator, on the
multi-tenant API server with the controller manager, the scheduler and two fake nodes: a cordoned
node gets the unschedulable taint and no new pods, drain evicts its pods through pods/eviction
(policy/v1) and their ReplicaSet recreates them on the other node, uncordon undoes it. Tenants
cannot cordon or drain; the Eviction subresource itself: dry run, name checks, Status errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hypernetes.objects import Obj
from hypernetes.objects.taints import UNSCHEDULABLE
from hypernetes.scheduler.placement import feasible, node_infos
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.tenantnodes import NodesWorld, module_world, replicaset
from tests.support.waiting import wait_for

CONTROLLERS = ("serviceaccount", "replicaset", "nodelifecycle", "tainteviction")

pytestmark = pytest.mark.skipif(not have_kubectl("1.32"), reason="kubectl 1.32 is not installed")


class Drain(NodesWorld):
    def __init__(self, api: ApiServerThread) -> None:
        super().__init__(api)
        self.tenant_admin = self.world.fresh_tenant("acme")  # namespace acme-a
        self.other_admin = self.world.fresh_tenant("globex")  # namespace globex-a
        self.start_nodes(CONTROLLERS, ("n1", "n2"))

    def kubectl(self, who: str, *args: str) -> tuple[int, str]:
        proc = self.world.kubectl(who, *args)
        return proc.returncode, proc.stdout + proc.stderr

    def taints(self, node: str) -> set[tuple[str, str]]:
        return self.cluster.taints(node)

    def pods(self, ns: str, node: str) -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in self.cluster.pods_on(ns, node)
            if not p["metadata"].get("deletionTimestamp")
        )


@pytest.fixture(scope="module")
def drain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drain]:
    yield from module_world(tmp_path_factory, Drain)


def test_cordon_drain_uncordon(drain: Drain) -> None:
    ctl, ns = drain.cluster.ctl, "acme-a"
    ctl.create("apps/v1", "replicasets", replicaset("web", 4), ns)
    wait_for(
        lambda: len(drain.pods(ns, "n1")) == 2 and len(drain.pods(ns, "n2")) == 2, what="2 pods per node"
    )
    wait_for(lambda: all(p["status"].get("phase") == "Running" for p in ctl.pods(ns)), what="Running")

    code, out = drain.kubectl("operator", "cordon", "n1")
    assert code == 0 and "node/n1 cordoned" in out, out
    assert drain.cluster.node("n1")["spec"]["unschedulable"] is True
    wait_for(lambda: drain.taints("n1") == {(UNSCHEDULABLE, "NoSchedule")}, what="the unschedulable taint")
    code, out = drain.kubectl("operator", "get", "node", "n1")
    assert "Ready,SchedulingDisabled" in out, out

    code, out = drain.kubectl(
        "operator", "drain", "n1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"
    )
    assert code == 0, out
    evicted = [line for line in out.splitlines() if line.startswith("pod/") and line.endswith(" evicted")]
    assert len(evicted) == 2 and "node/n1 drained" in out, out
    assert out.count("evicting pod acme-a/web-") == 2, out  # kubectl found pods/eviction (policy/v1)
    # evicted through pods/eviction, finalized by the (live) node, recreated on the other node
    wait_for(lambda: drain.pods(ns, "n1") == [], what="n1 empty")
    wait_for(
        lambda: (
            len([p for p in drain.cluster.pods_on(ns, "n2") if p["status"].get("phase") == "Running"]) == 4
        ),
        what="4 running pods on n2",
    )

    code, out = drain.kubectl("operator", "uncordon", "n1")
    assert code == 0 and "node/n1 uncordoned" in out, out
    assert not (drain.cluster.node("n1").get("spec") or {}).get("unschedulable")
    wait_for(lambda: drain.taints("n1") == set(), what="taint removed")
    ctl.patch("apps/v1", "replicasets", "web", {"spec": {"replicas": 6}}, ns)
    wait_for(lambda: len(drain.pods(ns, "n1")) == 2, what="new pods on the uncordoned node (spreading)")


def test_tenants_cannot_cordon_or_drain(drain: Drain) -> None:
    for args in (
        ("cordon", "n2"),
        ("uncordon", "n2"),
        ("drain", "n2", "--ignore-daemonsets", "--timeout=10s"),
    ):
        code, out = drain.kubectl(drain.tenant_admin, *args)
        assert code != 0 and "forbidden" in out.lower(), (args, out)
    node = drain.cluster.node("n2")
    assert not (node.get("spec") or {}).get("unschedulable")


def test_eviction_subresource(drain: Drain) -> None:
    ctl = drain.cluster.ctl
    http = drain.world.http(drain.tenant_admin)
    pod = {"metadata": {"name": "lone"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    r = http.post("/api/v1/namespaces/acme-a/pods", json=pod)
    assert r.status_code == 201, r.text
    wait_for(
        lambda: (ctl.get("v1", "pods", "lone", "acme-a") or {}).get("spec", {}).get("nodeName"), what="bound"
    )
    url = "/api/v1/namespaces/acme-a/pods/lone/eviction"

    def eviction(name: str, **extra: Any) -> Obj:
        return {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": "acme-a"},
            **extra,
        }

    r = http.post(url, json=eviction("other"))
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "name in URL does not match name in Eviction object"
    r = http.post(url, json=eviction("lone", deleteOptions={"dryRun": ["All"]}))
    assert r.status_code == 201 and r.json()["status"] == "Success", r.text
    assert not (ctl.get("v1", "pods", "lone", "acme-a") or {})["metadata"].get("deletionTimestamp")
    # another tenant cannot evict acme's pod; a missing pod is a 404 Status
    r = drain.world.http(drain.other_admin).post(url, json=eviction("lone"))
    assert r.status_code in (403, 404) and r.json()["kind"] == "Status", r.text
    r = http.post("/api/v1/namespaces/acme-a/pods/nosuch/eviction", json=eviction("nosuch"))
    assert r.status_code == 404 and r.json()["reason"] == "NotFound", r.text
    r = http.post(url, json=eviction("lone"))  # the tenant may evict its own pod, as upstream's edit role
    assert r.status_code == 201, r.text
    wait_for(
        lambda: ctl.get("v1", "pods", "lone", "acme-a") is None, what="evicted and finalized by its node"
    )


def test_the_scheduler_keeps_off_a_cordoned_node() -> None:
    node = {
        "metadata": {"name": "c"},
        "spec": {"unschedulable": True},
        "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    pod: Obj = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    fits, reasons = feasible(pod, node_infos([node], []))
    assert not fits and reasons == {"node(s) were unschedulable": 1}  # upstream's NodeUnschedulable
    pod["spec"]["tolerations"] = [{"key": UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]
    assert feasible(pod, node_infos([node], []))[0]
