"""metrics.k8s.io and the HorizontalPodAutoscaler through the real API server and kubectl 1.32.

The nodes here are the API's fake ones, so their usage summaries come from `FedNodes`, which
answers as a node server's /stats/summary does with figures the test chooses (the real VMs'
figures are test_metrics_vm.py's subject). Everything else is real: the scraper and its rates,
discovery, Table output, tenancy, `kubectl top`, `kubectl autoscale`, and the HPA controller
scaling a Deployment through its scale subresource with the Deployment and ReplicaSet
controllers and a fake kubelet running the pods.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernetes.objects import Obj
from hypernetes.store.keys import key_prefix
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread
from tests.support.tenants import TenantWorld
from tests.support.waiting import wait_for

CPU = "metrics.test/cpu-millicores"  # pod annotation: the CPU the fed node reports for it
MEMORY = "metrics.test/memory-mib"
RESOLUTION = "0.5"


class FedNodes:
    """Every node's /stats/summary, made from the pods the store says are bound to it: each pod
    uses what its annotations say (or `override` by pod name prefix), counted since first seen."""

    def __init__(self) -> None:
        self.api: ApiServerThread | None = None
        self.first_seen: dict[str, float] = {}
        self.cpu_ns: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.override: dict[str, int] = {}  # pod name prefix -> millicores from now on
        self.unreachable: set[str] = set()

    async def node_stats(self, node: str) -> Obj:
        if node in self.unreachable:
            raise OSError(f"cannot reach node {node}")
        assert self.api is not None and self.api.store is not None
        now = time.time()
        pods, node_ns = [], 0
        for kv in (await self.api.store.list(key_prefix("", "pods", None))).items:
            pod = json.loads(kv.value)
            meta = pod["metadata"]
            if pod["spec"].get("nodeName") != node or meta.get("deletionTimestamp"):
                continue
            uid, notes = meta["uid"], meta.get("annotations") or {}
            milli = next((v for p, v in self.override.items() if meta["name"].startswith(p)), None)
            if milli is None:
                milli = int(notes.get(CPU, "10"))
            # the counter grows at the pod's current rate since the last summary
            self.cpu_ns[uid] = self.cpu_ns.get(uid, 0.0) + milli * 1e6 * (now - self.last.get(uid, now))
            self.last[uid] = now
            memory = int(notes.get(MEMORY, "20")) * 2**20
            containers = pod["spec"]["containers"]
            figures = [
                {
                    "name": c["name"],
                    "cpu": {"usageCoreNanoSeconds": int(self.cpu_ns[uid] / len(containers))},
                    "memory": {"workingSetBytes": memory // len(containers)},
                }
                for c in containers
            ]
            node_ns += int(self.cpu_ns[uid])
            pods.append(
                {
                    "podRef": {"name": meta["name"], "namespace": meta["namespace"], "uid": uid},
                    "cpu": {"usageCoreNanoSeconds": int(self.cpu_ns[uid])},
                    "memory": {"workingSetBytes": memory},
                    "containers": figures,
                }
            )
        return {
            "node": {
                "nodeName": node,
                "cpu": {"usageCoreNanoSeconds": node_ns + int(now * 1e8)},  # + 100m of its own
                "memory": {"workingSetBytes": 3 * 2**30},
            },
            "pods": pods,
        }


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerThread, FedNodes]]:
    nodes = FedNodes()
    os.environ["HYPERNETES_METRICS_RESOLUTION"] = RESOLUTION
    try:
        api = ApiServerThread(Path(tmp_path_factory.mktemp("metrics")), pod_proxy=nodes, tenancy=True).start()  # type: ignore[arg-type]
    finally:
        del os.environ["HYPERNETES_METRICS_RESOLUTION"]
    nodes.api = api
    try:
        yield api, nodes
    finally:
        api.stop()


@pytest.fixture(scope="module")
def world(fed: tuple[ApiServerThread, FedNodes]) -> Iterator[TenantWorld]:
    w = TenantWorld.build(fed[0])
    try:
        yield w
    finally:
        w.close()


def top(world: TenantWorld, who: str, *args: str) -> list[list[str]]:
    out = world.kubectl(who, "top", *args)
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()[1:]]


def test_kubectl_top_pods_nodes_and_containers(world: TenantWorld) -> None:
    # acme's on-node-a uses the fed default (10m, 20Mi); its figures need two scrapes
    wait_for(lambda: world.kubectl("acme-member", "top", "pods", "-n", "acme-a").returncode == 0, 20)
    [[name, cpu, memory]] = top(world, "acme-member", "pods", "-n", "acme-a")
    assert name == "on-node-a" and memory == "20Mi"
    assert 8 <= int(cpu.removesuffix("m")) <= 12, cpu  # a rate over the scrape window
    rows = top(world, "acme-member", "pods", "-n", "acme-a", "--containers")
    assert [r[:2] for r in rows] == [["on-node-a", "c"]]
    nodes = {r[0]: r for r in top(world, "operator", "nodes")}
    assert set(nodes) == {"node-a", "node-b"}
    assert 90 <= int(nodes["node-a"][1].removesuffix("m")) <= 130, nodes  # its 100m + the pod's 10m
    assert nodes["node-a"][2] == "3072Mi"  # (no CPU% and MEMORY% columns: fake nodes have no capacity)


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_top_of_other_versions(world: TenantWorld, version: str) -> None:
    wait_for(lambda: world.kubectl("acme-member", "top", "pods", "-n", "acme-a").returncode == 0, 20)
    out = world.kubectl("acme-member", "top", "pods", "-n", "acme-a", "--containers", version=version)
    assert out.returncode == 0 and out.stdout.split()[4:6] == ["on-node-a", "c"], out


def test_a_tenant_sees_only_its_pods_metrics(world: TenantWorld) -> None:
    wait_for(lambda: len(top(world, "operator", "pods", "-A")) == 2, 20)
    assert [r[:2] for r in top(world, "acme-member", "pods", "-A")] == [["acme-a", "on-node-a"]]
    assert [r[:2] for r in top(world, "globex-admin", "pods", "-A")] == [["globex-a", "on-node-b"]]
    r = world.http("acme-member").get("/apis/metrics.k8s.io/v1beta1/namespaces/globex-a/pods/on-node-b")
    assert r.status_code == 403, r.text
    r = world.http("acme-admin").get("/apis/metrics.k8s.io/v1beta1/nodes")
    assert r.status_code == 403 and r.json()["kind"] == "Status", r.text
    denied = world.kubectl("globex-member", "top", "nodes")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_metrics_objects_discovery_and_table(world: TenantWorld) -> None:
    wait_for(
        lambda: world.http("operator").get("/apis/metrics.k8s.io/v1beta1/nodes/node-b").status_code == 200, 20
    )
    group = world.op("GET", "/apis/metrics.k8s.io")
    assert group["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1"
    resources = {r["name"]: r for r in world.op("GET", "/apis/metrics.k8s.io/v1beta1")["resources"]}
    assert resources["pods"]["verbs"] == ["get", "list"] and resources["pods"]["kind"] == "PodMetrics"
    assert resources["nodes"]["namespaced"] is False
    pod = world.op("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/acme-a/pods/on-node-a")
    assert pod["kind"] == "PodMetrics" and pod["containers"][0]["name"] == "c"
    assert pod["window"].endswith("s") and pod["containers"][0]["usage"]["cpu"].endswith("n")
    missing = world.http("operator").get("/apis/metrics.k8s.io/v1beta1/namespaces/acme-a/pods/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    write = world.http("operator").post("/apis/metrics.k8s.io/v1beta1/namespaces/acme-a/pods", json={})
    assert write.status_code == 405, write.text
    got = world.kubectl("operator", "get", "podmetrics", "-n", "acme-a")
    assert got.returncode == 0 and got.stdout.split()[:4] == ["NAME", "CPU", "MEMORY", "WINDOW"], got
    assert got.stdout.split()[4] == "on-node-a"


def test_an_unreachable_node_drops_its_pods_metrics(
    fed: tuple[ApiServerThread, FedNodes], world: TenantWorld
) -> None:
    _, nodes = fed
    wait_for(lambda: len(top(world, "operator", "pods", "-A")) == 2, 20)
    nodes.unreachable.add("node-b")
    try:
        wait_for(lambda: [r[1] for r in top(world, "operator", "pods", "-A")] == ["on-node-a"], 20)
    finally:
        nodes.unreachable.discard("node-b")
    wait_for(lambda: len(top(world, "operator", "pods", "-A")) == 2, 20)


# -- the HorizontalPodAutoscaler ------------------------------------------------------------------

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: shop}}}}
  template:
    metadata:
      labels: {{app: shop}}
      annotations: {{"{cpu}": "90", "{fake}ready-delay": "0.1"}}
    spec:
      containers:
      - {{name: web, image: "web:1", resources: {{requests: {{cpu: 100m}}}}}}
"""


@pytest.fixture(scope="module")
def scaling(fed: tuple[ApiServerThread, FedNodes], world: TenantWorld) -> Iterator[ControllersThread]:
    def quick(manager: Any) -> None:
        manager.controllers["horizontal-pod-autoscaler"].sync_period = 0.5

    c = ControllersThread(
        fed[0], only=["deployment", "replicaset", "horizontal-pod-autoscaler"], tune=quick
    ).start()
    try:
        yield c
    finally:
        c.stop()


def hpa(world: TenantWorld, ns: str, name: str = "shop") -> Obj:
    return world.op("GET", f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}")


def replicas(world: TenantWorld, ns: str) -> int:
    return int(world.op("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/shop")["spec"]["replicas"])


def condition(obj: Obj, ctype: str) -> Obj:
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


def test_kubectl_autoscale_scales_a_deployment_up_and_down(
    scaling: ControllersThread, fed: tuple[ApiServerThread, FedNodes], world: TenantWorld
) -> None:
    ns = "acme-b"
    applied = world.kubectl(
        "acme-member", "apply", "-n", ns, "-f", "-", input=DEPLOYMENT.format(cpu=CPU, fake=FAKE)
    )
    assert applied.returncode == 0, applied.stderr
    made = world.kubectl(
        "acme-member", "autoscale", "deployment", "shop", "-n", ns, "--cpu-percent=50", "--min=1", "--max=3"
    )
    assert made.returncode == 0, made.stderr
    # 90m of 100m against 50%: 1 -> 2, then 2 x 90% -> 4, held at --max=3
    wait_for(lambda: replicas(world, ns) == 3, 60)
    wait_for(lambda: condition(hpa(world, ns), "ScalingLimited")["status"] == "True", 30)
    wait_for(lambda: hpa(world, ns)["status"]["currentReplicas"] == 3, 30)  # the pods are up
    h = hpa(world, ns)
    assert h["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
        }
    ]
    assert condition(h, "ScalingLimited")["reason"] == "TooManyReplicas"
    assert condition(h, "ScalingActive")["reason"] == "ValidMetricFound"
    assert condition(h, "AbleToScale")["status"] == "True"
    assert h["status"]["desiredReplicas"] == 3 and "lastScaleTime" in h["status"]
    current = h["status"]["currentMetrics"][0]["resource"]["current"]
    assert 80 <= current["averageUtilization"] <= 100, current
    got = world.kubectl("acme-member", "get", "hpa", "-n", ns)
    assert got.returncode == 0, got.stderr
    header, row = got.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    assert row.split()[:3] == ["shop", "Deployment/shop", "cpu:"] and row.split()[4:7] == ["1", "3", "3"], row

    # idle now; a behavior that lets it scale down at once, one pod a minute
    fed[1].override["shop-"] = 5
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        }
    }
    world.http("acme-member").patch(
        f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/shop",
        json={"spec": {"behavior": behavior}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    wait_for(lambda: replicas(world, ns) == 2, 30)
    wait_for(lambda: condition(hpa(world, ns), "ScalingLimited")["reason"] == "ScaleDownLimit", 30)
    stored = hpa(world, ns)["spec"]["behavior"]
    assert stored["scaleUp"]["policies"] == [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ]  # upstream's defaults filled in
    assert replicas(world, ns) == 2  # the next pod waits for the policy's minute
    described = world.kubectl("acme-member", "describe", "hpa", "shop", "-n", ns)
    assert described.returncode == 0, described.stderr
    for text in (
        "Reference:",
        "Deployment/shop",
        "resource cpu on pods",
        "ScaleDownLimit",
        "SuccessfulRescale",
    ):
        assert text in described.stdout, described.stdout
    events = world.op("GET", f"/api/v1/namespaces/{ns}/events")["items"]
    assert any(e["reason"] == "SuccessfulRescale" and "New size: 2" in e["message"] for e in events)


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"minReplicas": 3, "maxReplicas": 2},
            "spec.maxReplicas",
            "must be greater than or equal to `minReplicas`",
        ),
        (
            {"maxReplicas": 2, "metrics": [{"type": "Pods", "pods": {}}]},
            "spec.metrics[0].type",
            "only Resource metrics",
        ),
        (
            {
                "maxReplicas": 2,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}
                ],
            },
            "spec.metrics[0].resource.target.averageUtilization",
            "must specify averageUtilization",
        ),
        (
            {"maxReplicas": 2, "behavior": {"scaleUp": {"stabilizationWindowSeconds": 7200}}},
            "spec.behavior.scaleUp.stabilizationWindowSeconds",
            "less than or equal to 3600",
        ),
        (
            {
                "maxReplicas": 2,
                "scaleTargetRef": {"kind": "Deployment", "name": "../../globex-a/deployments/web"},
            },
            "spec.scaleTargetRef.name",
            "may not contain '/'",
        ),
        (
            {
                "maxReplicas": 2,
                "scaleTargetRef": {
                    "apiVersion": "apps/v1/namespaces/globex-a",
                    "kind": "Deployment",
                    "name": "x",
                },
            },
            "spec.scaleTargetRef.apiVersion",
            "group/version",
        ),
    ],
    ids=["max-below-min", "pods-metric", "no-utilization", "window", "name-path", "version-path"],
)
def test_invalid_autoscalers_are_refused_with_the_field(
    world: TenantWorld, spec: Obj, field: str, message: str
) -> None:
    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, **spec},
    }
    r = world.http("acme-member").post(
        "/apis/autoscaling/v2/namespaces/acme-a/horizontalpodautoscalers", json=body
    )
    assert r.status_code == 422, r.text
    causes = r.json()["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] for c in causes), causes


def test_autoscalers_count_against_the_tenant_quota(world: TenantWorld) -> None:
    admin = world.fresh_tenant("scaly", {"quota": {"count/horizontalpodautoscalers.autoscaling": "1"}})
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "any"}
    path = "/apis/autoscaling/{}/namespaces/scaly-a/horizontalpodautoscalers"
    v2 = {"metadata": {"name": "one"}, "spec": {"scaleTargetRef": ref, "maxReplicas": 2}}
    v1 = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "two"},
        "spec": {"scaleTargetRef": ref, "maxReplicas": 2, "targetCPUUtilizationPercentage": 60},
    }
    made = world.http(admin).post(path.format("v2"), json=v2)
    assert made.status_code == 201, made.text
    for version, body in (("v1", v1), ("v2", {**v2, "metadata": {"name": "three"}})):
        over = world.http(admin).post(path.format(version), json=body)
        assert over.status_code == 403 and "count/horizontalpodautoscalers.autoscaling" in over.text, (
            over.text
        )
    r = world.http("globex-member").get(path.format("v2"))
    assert r.status_code == 403, r.text


def test_autoscaling_v1_is_served_from_the_v2_objects(world: TenantWorld) -> None:
    """kubectl 1.32's `autoscale` creates autoscaling/v1 (as protobuf); reads convert back."""
    ns = "acme-a"
    made = world.kubectl(
        "acme-member", "autoscale", "deployment", "web", "-n", ns, "--cpu-percent=60", "--max=4"
    )
    assert made.returncode == 0 and "autoscaled" in made.stdout, made.stderr
    stored = world.op("GET", f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/web")
    assert stored["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }
    assert (stored["spec"]["minReplicas"], stored["spec"]["maxReplicas"]) == (1, 4)
    old = world.op("GET", f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers/web")
    assert old["apiVersion"] == "autoscaling/v1" and old["spec"]["targetCPUUtilizationPercentage"] == 60
    listed = world.op("GET", f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["web"]


LEGACY = """
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {{name: legacy}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  maxReplicas: {max}
  targetCPUUtilizationPercentage: 70
"""


def test_kubectl_apply_of_a_v1_manifest_twice_keeps_the_v2_fields(world: TenantWorld) -> None:
    """A chart's autoscaling/v1 HPA: created, then re-applied (a v1 strategic merge patch) after
    someone gave it a v2 behavior, which the v1 patch must not drop."""
    path = "/apis/autoscaling/v2/namespaces/acme-a/horizontalpodautoscalers/legacy"
    first = world.kubectl("acme-member", "apply", "-n", "acme-a", "-f", "-", input=LEGACY.format(max=3))
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    world.http("acme-member").patch(
        path,
        json={"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    again = world.kubectl("acme-member", "apply", "-n", "acme-a", "-f", "-", input=LEGACY.format(max=5))
    assert again.returncode == 0 and "configured" in again.stdout, again.stderr
    stored = world.op("GET", path)
    assert stored["spec"]["maxReplicas"] == 5
    assert stored["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    bad = world.kubectl("acme-member", "apply", "-n", "acme-a", "-f", "-", input=LEGACY.format(max=0))
    assert bad.returncode != 0 and "spec.maxReplicas" in bad.stderr, bad.stderr


def test_kubectl_133_autoscale_creates_v2_directly(world: TenantWorld) -> None:
    """kubectl 1.33 POSTs autoscaling/v2 as protobuf first (and falls back to v1 on an error)."""
    made = world.kubectl(
        "acme-member", "autoscale", "deployment", "web", "-n", "acme-b", "--max=2", "-v=6", version="1.33"
    )
    assert made.returncode == 0, made.stderr
    posts = [
        line
        for line in made.stderr.splitlines()
        if 'verb="POST"' in line and "horizontalpodautoscalers" in line
    ]
    assert posts and all("/apis/autoscaling/v2/" in line for line in posts), posts
    assert any('status="201 Created"' in line for line in posts), posts
    stored = world.op("GET", "/apis/autoscaling/v2/namespaces/acme-b/horizontalpodautoscalers/web")
    assert stored["spec"]["maxReplicas"] == 2 and stored["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_a_new_autoscaler_does_not_scale_down_at_once(
    scaling: ControllersThread, fed: tuple[ApiServerThread, FedNodes], world: TenantWorld
) -> None:
    """Upstream's recordInitialRecommendation: a new HPA (or a controller that just started) keeps
    today's size as a recommendation, so an idle Deployment of 2 is not cut to 1 until the
    downscale window (300 s) has seen only lower ones."""
    ns = "acme-a"
    idle = DEPLOYMENT.format(cpu=CPU, fake=FAKE).replace("replicas: 1", "replicas: 2").replace('"90"', '"5"')
    applied = world.kubectl("acme-member", "apply", "-n", ns, "-f", "-", input=idle)
    assert applied.returncode == 0, applied.stderr
    made = world.kubectl(
        "acme-member", "autoscale", "deployment", "shop", "-n", ns, "--cpu-percent=50", "--min=1", "--max=3"
    )
    assert made.returncode == 0, made.stderr

    def reason() -> str:
        conditions = (hpa(world, ns).get("status") or {}).get("conditions") or []
        return next((c["reason"] for c in conditions if c["type"] == "AbleToScale"), "")

    wait_for(lambda: reason() == "ScaleDownStabilized", 30)
    time.sleep(2)  # four more syncs
    assert replicas(world, ns) == 2
    assert hpa(world, ns)["status"]["desiredReplicas"] == 2
