"""node.k8s.io/v1 RuntimeClass and Pod Overhead, on the multi-tenant API server with the real
scheduler and fake nodes (no VMs: the subject is the control plane): the built-in classes, kubectl
get, validation with upstream's field paths, who may write, the RuntimeClass admission plugin
(overhead and scheduling copied into the pod, upstream's refusals), the scheduler's fit with the
overhead added, and quotas counting it as upstream does (ResourceQuota yes, LimitRange no; the
tenant's memory quota yes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hypernetes.api.registry.node.runtimeclass import HYPERVM_OVERHEAD
from hypernetes.node.admission import admit
from hypernetes.objects import Obj
from hypernetes.objects.names import RUNTIME_LABEL
from hypernetes.runtime.podsize import node_cost, quota_usage
from tests.support.apiserver import ApiServerThread
from tests.support.tenantnodes import NodesWorld, module_world
from tests.support.waiting import wait_for

CLASSES = "/apis/node.k8s.io/v1/runtimeclasses"
NS = "rc-a"  # the tenant's namespace
LIMITED = "rc-b"  # with a LimitRange and a ResourceQuota


class World(NodesWorld):
    def __init__(self, api: ApiServerThread) -> None:
        super().__init__(api)
        # a tenant memory quota that holds one 160 MiB VM (128Mi asked + the guest's 32 MiB) but
        # not that VM plus a 64 MiB overhead
        self.admin = self.world.fresh_tenant("rc", {"quota": {"memory": "200Mi"}}, namespaces=("a", "b"))
        self.http = self.world.http(self.admin)
        self.start_nodes(("serviceaccount", "replicaset"), ("n1",))
        wait_for(lambda: self.node_ready("n1"), timeout=20, what="fake node n1 Ready")
        labels = {"metadata": {"labels": {RUNTIME_LABEL: "hypervm", "pool": "vm"}}}
        self.world.op(
            "PATCH", "/api/v1/nodes/n1", labels, headers={"Content-Type": "application/merge-patch+json"}
        )

    def node_ready(self, name: str) -> bool:
        r = self.world.http("operator").get(f"/api/v1/nodes/{name}")
        conds = (r.json().get("status") or {}).get("conditions") or [] if r.status_code == 200 else []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def make_class(self, name: str, **fields: Any) -> Obj:
        body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}}
        return self.world.op("POST", CLASSES, {**body, "handler": "hypervm", **fields})

    def create_pod(self, pod: Obj, ns: str = NS) -> Any:
        return self.http.post(f"/api/v1/namespaces/{ns}/pods", json=pod)


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from module_world(tmp_path_factory, World)


def pod(name: str, rc: str | None = None, cpu: str = "100m", memory: str = "128Mi", **spec: Any) -> Obj:
    limits = {"cpu": cpu, "memory": memory}
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": limits}}], **spec},
    }
    if rc:
        body["spec"]["runtimeClassName"] = rc
    return body


def refusal(r: Any) -> str:
    assert r.status_code == 403, r.text
    return str(r.json()["message"])


# -- the kind ---------------------------------------------------------------------------------------


def test_builtin_hypervm_class_and_kubectl_get(w: World) -> None:
    rc = w.world.op("GET", f"{CLASSES}/hypervm")
    assert rc["handler"] == "hypervm"
    assert rc["overhead"] == {"podFixed": HYPERVM_OVERHEAD}
    assert rc["scheduling"] == {"nodeSelector": {RUNTIME_LABEL: "hypervm"}}
    out = w.world.kubectl(w.admin, "get", "runtimeclass", "hypervm")  # everyone reads
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "HANDLER", "AGE"] and row.split()[:2] == ["hypervm", "hypervm"]


def test_only_operators_write_classes(w: World) -> None:
    body = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "mine"},
        "handler": "x",
    }
    assert w.http.post(CLASSES, json=body).status_code == 403
    assert w.http.delete(f"{CLASSES}/hypervm").status_code == 403


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        ({"handler": "Bad_H"}, ("FieldValueInvalid", "handler")),
        ({"handler": ""}, ("FieldValueRequired", "handler")),
        ({"overhead": {"podFixed": {"cpu": "-1"}}}, ("FieldValueInvalid", "overhead.limits[cpu]")),
        ({"overhead": {"podFixed": {"gpus": "1"}}}, ("FieldValueInvalid", "overhead.limits[gpus]")),
        ({"scheduling": {"nodeSelector": {"-bad": "x"}}}, ("FieldValueInvalid", "scheduling.nodeSelector")),
        (  # upstream's validateTolerations names the child twice
            {"scheduling": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
            ("FieldValueInvalid", "scheduling.tolerations.tolerations[0].operator"),
        ),
        (
            {"scheduling": {"tolerations": [{"key": "k", "operator": "Exists"}] * 2}},
            ("FieldValueDuplicate", "scheduling.tolerations[1]"),
        ),
    ],
)
def test_validation_field_paths(w: World, fields: Obj, want: tuple[str, str]) -> None:
    body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "bad"}}
    r = w.world.http("operator").post(CLASSES, json={**body, "handler": "h", **fields})
    assert r.status_code == 422, r.text
    causes = [(c["reason"], c["field"]) for c in r.json()["details"]["causes"]]
    assert want in causes, causes


def test_handler_is_immutable(w: World) -> None:
    w.make_class("immut")
    r = w.world.http("operator").patch(
        f"{CLASSES}/immut",
        json={"handler": "other"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"][0]["field"] == "handler"
    assert "field is immutable" in r.json()["details"]["causes"][0]["message"]


# -- admission --------------------------------------------------------------------------------------


def test_admission_copies_overhead_and_merges_scheduling(w: World) -> None:
    w.make_class(
        "sched",
        overhead={"podFixed": {"cpu": "250m", "memory": "64Mi"}},
        scheduling={
            "nodeSelector": {"pool": "vm"},
            "tolerations": [{"key": "vm", "operator": "Exists"}, {"key": "a", "operator": "Exists"}],
        },
    )
    body = pod(
        "copied",
        "sched",
        memory="32Mi",
        nodeSelector={"zone": "z1"},
        # covered by the class's `vm Exists`: dropped as upstream's MergeTolerations drops it
        tolerations=[{"key": "vm", "operator": "Equal", "value": "x"}, {"key": "b", "operator": "Exists"}],
    )
    r = w.http.post(f"/api/v1/namespaces/{NS}/pods?dryRun=All", json=body)
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert spec["overhead"] == {"cpu": "250m", "memory": "64Mi"}
    assert spec["nodeSelector"] == {"zone": "z1", "pool": "vm"}
    assert spec["tolerations"][:3] == [
        {"key": "b", "operator": "Exists"},
        {"key": "vm", "operator": "Exists"},
        {"key": "a", "operator": "Exists"},
    ]
    # the pod's own overhead, when it equals the class's by value (250m == 0.25), is accepted
    same = pod("same", "sched", memory="32Mi", overhead={"cpu": "0.25", "memory": "64Mi"})
    assert w.http.post(f"/api/v1/namespaces/{NS}/pods?dryRun=All", json=same).status_code == 201


def test_admission_refusals_are_upstreams(w: World) -> None:
    w.make_class("fixed", overhead={"podFixed": {"cpu": "250m"}}, scheduling={"nodeSelector": {"pool": "vm"}})
    w.make_class("plain")
    cases = [
        (pod("nf", "nosuch"), 'pod rejected: RuntimeClass "nosuch" not found'),
        (
            pod("mismatch", "fixed", overhead={"cpu": "1"}),
            "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead",
        ),
        (
            pod("noclass", overhead={"cpu": "1"}),
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead",
        ),
        (
            pod("plainover", "plain", overhead={"cpu": "1"}),
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead",
        ),
        (
            pod("conflict", "fixed", nodeSelector={"pool": "other"}),
            "conflict: runtimeClass.scheduling.nodeSelector[pool] = vm; pod.spec.nodeSelector[pool] = other",
        ),
    ]
    for body, message in cases:
        name = body["metadata"]["name"]
        assert refusal(w.create_pod(body)) == f'pods "{name}" is forbidden: {message}'
    # without a class nothing changes: no overhead, today's behaviour
    r = w.http.post(f"/api/v1/namespaces/{NS}/pods?dryRun=All", json=pod("bare", memory="32Mi"))
    assert r.status_code == 201 and "overhead" not in r.json()["spec"]


# -- the node's books ---------------------------------------------------------------------------


def test_node_cost_node_admission_and_tenant_usage_add_the_overhead() -> None:
    plain = pod("p", memory="128Mi")
    with_overhead = pod("q", memory="128Mi", overhead={"cpu": "250m", "memory": "64Mi"})
    assert node_cost(plain) == (100, 160 << 20)
    assert node_cost(with_overhead) == (350, 224 << 20)
    # the tenant's vCPUs are the VM's; its memory is what the host gives: VM + overhead
    assert quota_usage([plain, with_overhead]) == (2, 2, (160 + 224) << 20, 0)
    # the node admits by the same sums (the kubelet's OutOfcpu for a pod bound without the
    # scheduler): 2 CPUs hold a 1-CPU pod, not that pod with a 1.5-CPU overhead
    alloc = {"cpu": "2", "memory": "1Gi", "pods": "10"}
    assert admit(pod("n", cpu="1"), [], alloc) is None
    rejected = admit(pod("n", cpu="1", overhead={"cpu": "1500m"}), [], alloc)
    assert rejected is not None and rejected.reason == "OutOfcpu"
    assert "requested: 2500, used: 0, capacity: 2000" in rejected.message
    # a zero overhead is valid (upstream: >= 0) and costs nothing
    assert node_cost(pod("z", memory="128Mi", overhead={"cpu": "0", "memory": "0"})) == (100, 160 << 20)


# -- quotas -----------------------------------------------------------------------------------------


def test_tenant_memory_quota_counts_the_overhead(w: World) -> None:
    w.make_class("mem", overhead={"podFixed": {"memory": "64Mi"}})
    r = w.create_pod(pod("big", "mem"))  # 160 MiB VM + 64 MiB > 200 MiB
    assert "exceeded quota" in refusal(r) and "memory" in r.json()["message"], r.text
    r = w.http.post(f"/api/v1/namespaces/{NS}/pods?dryRun=All", json=pod("small"))
    assert r.status_code == 201, r.text


def test_resourcequota_counts_overhead_limitrange_does_not(w: World) -> None:
    limit = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "pods"},
        "spec": {"limits": [{"type": "Pod", "max": {"cpu": "200m"}}]},
    }
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q"},
        "spec": {"hard": {"limits.cpu": "400m"}},
    }
    w.world.op("POST", f"/api/v1/namespaces/{LIMITED}/limitranges", limit)
    w.world.op("POST", f"/api/v1/namespaces/{LIMITED}/resourcequotas", quota)
    w.make_class("cpu250", overhead={"podFixed": {"cpu": "250m"}})
    # 100m fits the LimitRange's 200m pod max (the overhead is not the pod's, as upstream) ...
    r = w.http.post(
        f"/api/v1/namespaces/{LIMITED}/pods?dryRun=All", json=pod("under", "cpu250", memory="16Mi")
    )
    assert r.status_code == 201, r.text
    # ... and 200m too, but 200m + 250m does not fit the quota's 400m: quota counts the overhead
    message = refusal(w.create_pod(pod("over", "cpu250", cpu="200m", memory="16Mi"), LIMITED))
    assert message == (
        'pods "over" is forbidden: exceeded quota: q, requested: limits.cpu=450m, '
        "used: limits.cpu=0, limited: limits.cpu=400m"
    )


# -- the scheduler ---------------------------------------------------------------------------------


def test_scheduler_fits_requests_plus_overhead(w: World) -> None:
    # the fake node has 8 CPUs: two 1-CPU pods of a class with a 6-CPU overhead do not both fit
    w.make_class("heavy", overhead={"podFixed": {"cpu": "6"}})
    for name in ("heavy-1", "heavy-2"):
        assert w.create_pod(pod(name, "heavy", cpu="1", memory="16Mi")).status_code == 201

    def phase(name: str) -> str:
        return str(w.http.get(f"/api/v1/namespaces/{NS}/pods/{name}").json().get("status", {}).get("phase"))

    wait_for(lambda: phase("heavy-1") == "Running", timeout=20, what="heavy-1 Running")

    def unschedulable() -> str | None:
        events = w.http.get(f"/api/v1/namespaces/{NS}/events").json()["items"]
        msgs = [
            e["message"]
            for e in events
            if e["involvedObject"]["name"] == "heavy-2" and e["reason"] == "FailedScheduling"
        ]
        return msgs[-1] if msgs else None

    message = wait_for(unschedulable, timeout=20, what="heavy-2 FailedScheduling")
    assert "Insufficient cpu" in str(message), message
    assert phase("heavy-2") == "Pending"
    # a pod without the class still fits beside heavy-1: 1 + 6 + 1 = 8
    assert w.create_pod(pod("light", cpu="1", memory="16Mi")).status_code == 201
    wait_for(lambda: phase("light") == "Running", timeout=20, what="light Running")
    for name in ("heavy-1", "heavy-2", "light"):
        w.http.delete(f"/api/v1/namespaces/{NS}/pods/{name}")


# -- pods made by controllers (last: its pod stays) ---------------------------------------------


def test_pods_a_controller_creates_get_the_overhead(w: World) -> None:
    w.make_class("rs", overhead={"podFixed": {"cpu": "100m", "memory": "8Mi"}})
    template = pod("x", "rs", memory="16Mi")
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {"metadata": {"labels": {"app": "rs"}}, "spec": template["spec"]},
        },
    }
    r = w.http.post(f"/apis/apps/v1/namespaces/{NS}/replicasets", json=rs)
    assert r.status_code == 201, r.text
    assert "overhead" not in r.json()["spec"]["template"]["spec"]  # pods get it, not templates

    def made() -> list[Obj]:
        items = w.http.get(f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": "app=rs"}).json()
        return list(items["items"])

    pods = wait_for(made, timeout=20, what="the ReplicaSet's pod")
    assert pods[0]["spec"]["overhead"] == {"cpu": "100m", "memory": "8Mi"}
    w.http.delete(f"/apis/apps/v1/namespaces/{NS}/replicasets/rs")
