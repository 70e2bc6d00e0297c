"""policy/v1 PodDisruptionBudget on the multi-tenant API server with the controller manager, the
scheduler and two fake nodes: validation, the disruption controller's status, the eviction
subresource refusing with upstream's 429 while the budget allows nothing, and the real
`kubectl drain` (1.32 and 1.33) waiting on a budget until it is relaxed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypernetes.api.disruption import MESSAGE, MORE_THAN_ONE
from hypernetes.objects import Obj
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.tenantnodes import NodesWorld, module_world
from tests.support.tenantnodes import replicaset as nodes_replicaset
from tests.support.waiting import wait_for

CONTROLLERS = ("serviceaccount", "replicaset", "disruption", "nodelifecycle", "tainteviction")
NS = "acme-a"


class World(NodesWorld):
    def __init__(self, api: ApiServerThread) -> None:
        super().__init__(api)
        self.admin = self.world.fresh_tenant("acme")  # namespace acme-a
        self.start_nodes(CONTROLLERS, ("n1", "n2"))
        self.http = self.world.http(self.admin)

    def running(self, app: str) -> list[Obj]:
        return [
            p
            for p in self.cluster.ctl.pods(NS, f"app={app}")
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []
            )
        ]

    def pdb_status(self, name: str) -> Obj:
        return (self.cluster.ctl.get("policy/v1", "poddisruptionbudgets", name, NS) or {}).get("status") or {}

    def evict(self, pod: str) -> Any:
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": NS}}
        return self.http.post(f"/api/v1/namespaces/{NS}/pods/{pod}/eviction", json=body)


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from module_world(tmp_path_factory, World)


def replicaset(name: str, replicas: int) -> Obj:
    return nodes_replicaset(name, replicas, cpu="100m", memory="64Mi")


def pdb(name: str, app: str | None, **spec: Any) -> Obj:
    if app is not None:
        spec["selector"] = {"matchLabels": {"app": app}}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(w: World, path: str, obj: Obj) -> Any:
    base = "/apis/policy/v1" if obj["kind"] == "PodDisruptionBudget" else "/apis/apps/v1"
    return w.http.post(f"{base}/namespaces/{NS}/{path}", json=obj)


def test_validation(w: World) -> None:
    for body, field, text in (
        (
            pdb("both", "x", minAvailable=1, maxUnavailable=1),
            "spec",
            "minAvailable and maxUnavailable cannot be both set",
        ),
        (pdb("pct", "x", minAvailable="120%"), "spec.minAvailable", "must not be greater than 100%"),
        (pdb("neg", "x", maxUnavailable=-1), "spec.maxUnavailable", "must be greater than or equal to 0"),
        (pdb("word", "x", maxUnavailable="half"), "spec.maxUnavailable", "a valid percent string"),
        (
            pdb("pol", "x", minAvailable=1, unhealthyPodEvictionPolicy="Never"),
            "spec.unhealthyPodEvictionPolicy",
            'supported values: "AlwaysAllow", "IfHealthyBudget"',
        ),
    ):
        r = create(w, "poddisruptionbudgets", body)
        assert r.status_code == 422, r.text
        causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
        assert field in causes and text in causes[field], causes


def test_status_and_eviction(w: World) -> None:
    assert create(w, "replicasets", replicaset("web", 3)).status_code == 201
    assert create(w, "poddisruptionbudgets", pdb("web", "web", minAvailable=2)).status_code == 201
    wait_for(lambda: len(w.running("web")) == 3, what="3 ready pods")
    want = {"expectedPods": 3, "desiredHealthy": 2, "currentHealthy": 3, "disruptionsAllowed": 1}

    def settled() -> Obj | None:
        s = w.pdb_status("web")
        return s if all(s.get(k) == v for k, v in want.items()) else None

    st = wait_for(settled, what=str(want))
    cond = next(c for c in st["conditions"] if c["type"] == "DisruptionAllowed")
    assert (cond["status"], cond["reason"]) == ("True", "SufficientPods")
    assert st["observedGeneration"] == 1
    first, second = sorted(p["metadata"]["name"] for p in w.running("web"))[:2]
    r = w.evict(first)
    assert r.status_code == 201, r.text
    st = w.pdb_status("web")
    assert st["disruptionsAllowed"] == 0 and first in st.get("disruptedPods", {}), st
    # the budget allows nothing more until the replacement is Ready
    r = w.evict(second)
    assert r.status_code == 429, r.text
    body = r.json()
    assert (body["reason"], body["message"], body["code"]) == ("TooManyRequests", MESSAGE, 429)
    # (the controller may have counted the evicted pod out already)
    assert body["details"]["causes"] in [
        [
            {
                "reason": "DisruptionBudget",
                "message": f"The disruption budget web needs 2 healthy pods and has {n} currently",
            }
        ]
        for n in (2, 3)
    ], body
    assert (w.cluster.ctl.get("v1", "pods", second, NS) or {})["metadata"].get("deletionTimestamp") is None
    wait_for(
        lambda: w.pdb_status("web").get("disruptionsAllowed") == 1 and len(w.running("web")) == 3,
        what="recovered",
    )
    assert "disruptedPods" not in w.pdb_status("web")
    # a percentage of maxUnavailable counts the ReplicaSet's replicas, rounding up
    assert create(w, "replicasets", replicaset("api", 2)).status_code == 201
    assert create(w, "poddisruptionbudgets", pdb("api", "api", maxUnavailable="30%")).status_code == 201
    want = {"expectedPods": 2, "desiredHealthy": 1, "currentHealthy": 2, "disruptionsAllowed": 1}
    wait_for(lambda: all(w.pdb_status("api").get(k) == v for k, v in want.items()), what=str(want))
    # two budgets over one pod: the eviction subresource refuses, as upstream
    assert create(w, "poddisruptionbudgets", pdb("api-too", "api", minAvailable=0)).status_code == 201
    r = w.evict(w.running("api")[0]["metadata"]["name"])
    assert (r.status_code, r.json()["status"], r.json()["code"]) == (201, "Failure", 500), r.text
    w.cluster.ctl.delete("policy/v1", "poddisruptionbudgets", "api-too", NS)
    # kubectl's columns as kube-apiserver's printer
    out = w.world.kubectl(w.admin, "get", "pdb", "-n", NS).stdout.splitlines()
    assert out[0].split() == [
        "NAME",
        "MIN",
        "AVAILABLE",
        "MAX",
        "UNAVAILABLE",
        "ALLOWED",
        "DISRUPTIONS",
        "AGE",
    ]
    rows = {line.split()[0]: line.split()[1:4] for line in out[1:]}
    assert rows["web"] == ["2", "N/A", "1"] and rows["api"] == ["N/A", "30%", "1"], out


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """An API server with no controllers: a budget's status stays as created (not yet observed)."""
    api = ApiServerThread(Path(tmp_path_factory.mktemp("bare"))).start()
    headers = {"Authorization": f"Bearer {api.token}"}
    with httpx.Client(base_url=api.url, verify=str(api.ca.ca_cert), headers=headers, timeout=30) as c:
        yield c
    api.stop()


def test_eviction_answers_as_upstream_before_the_controller_and_under_two_budgets(
    bare: httpx.Client,
) -> None:
    """pkg/registry/core/pod/storage/eviction.go: createTooManyRequestsError (429, Retry-After 10)
    while the budget's generation is unobserved; two budgets: a Failure Status (code 500, no
    reason) as the body of the create's 201."""
    assert bare.post("/api/v1/namespaces", json={"metadata": {"name": "ev"}}).status_code == 201
    pod = {
        "metadata": {"name": "p", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    r = bare.post("/api/v1/namespaces/ev/pods", json=pod)
    assert r.status_code == 201, r.text
    running = r.json()
    running["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    r = bare.put("/api/v1/namespaces/ev/pods/p/status", json=running)
    assert r.status_code == 200, r.text
    budget = pdb("one", "x", minAvailable=1)
    r = bare.post("/apis/policy/v1/namespaces/ev/poddisruptionbudgets", json=budget)
    assert r.status_code == 201, r.text
    # the empty status as upstream serializes it: its four counts have no omitempty
    zeros = dict.fromkeys(("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"), 0)
    assert r.json()["status"] == zeros, r.text
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "ev"}}
    r = bare.post("/api/v1/namespaces/ev/pods/p/eviction", json=eviction)
    assert (r.status_code, r.headers.get("Retry-After")) == (429, "10"), r.text
    assert r.json()["details"] == {
        "causes": [
            {
                "reason": "DisruptionBudget",
                "message": "The disruption budget one is still being processed by the server.",
            }
        ],
        "retryAfterSeconds": 10,
    }, r.text
    budget = pdb("two", "x", maxUnavailable=1)
    assert bare.post("/apis/policy/v1/namespaces/ev/poddisruptionbudgets", json=budget).status_code == 201
    r = bare.post("/api/v1/namespaces/ev/pods/p/eviction", json=eviction)
    assert r.status_code == 201, r.text
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": MORE_THAN_ONE,
        "code": 500,
    }, r.text
    assert bare.get("/api/v1/namespaces/ev/pods/p").json()["metadata"].get("deletionTimestamp") is None
    # printPodDisruptionBudget's columns, descriptions included
    table = bare.get(
        "/apis/policy/v1/namespaces/ev/poddisruptionbudgets",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    ).json()
    cols = {c["name"]: (c["type"], c["description"]) for c in table["columnDefinitions"]}
    assert cols["Min Available"] == ("string", "The minimum number of pods that must be available.")
    assert cols["Max Unavailable"] == ("string", "The maximum number of pods that may be unavailable.")
    assert cols["Allowed Disruptions"][0] == "integer"
    assert [r["cells"][1:4] for r in table["rows"]] == [["1", "N/A", 0], ["N/A", "1", 0]], table["rows"]


@pytest.mark.parametrize("version", ["1.32", "1.33"])
def test_kubectl_drain_waits_for_the_budget(w: World, version: str) -> None:
    if not have_kubectl(version):
        pytest.fail(f"kubectl {version} is not installed")
    app = f"db{version.replace('.', '')}"
    assert create(w, "replicasets", replicaset(app, 2)).status_code == 201
    assert create(w, "poddisruptionbudgets", pdb(app, app, minAvailable=2)).status_code == 201
    wait_for(lambda: len(w.running(app)) == 2, what="2 ready pods")
    wait_for(lambda: w.pdb_status(app).get("expectedPods") == 2, what="budget status")
    node = w.running(app)[0]["spec"]["nodeName"]

    def drain(timeout: str) -> tuple[int, str]:
        proc = w.api.kubectl(
            "drain",
            node,
            "--ignore-daemonsets",
            "--pod-selector",
            f"app={app}",
            f"--timeout={timeout}",
            version=version,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = drain("3s")
    assert rc != 0 and MESSAGE in out, out
    assert "will retry after 5s" in out, out
    w.cluster.ctl.patch("policy/v1", "poddisruptionbudgets", app, {"spec": {"minAvailable": 1}}, NS)
    rc, out = drain("60s")
    assert rc == 0 and f"node/{node} drained" in out, out
    w.api.kubectl("uncordon", node, version=version)
    wait_for(lambda: len(w.running(app)) == 2, what="replaced on the other node")
