"""The ReplicaSet controller against the real API server, with real kubectl: scale up and
down (which pods go first), adoption and release, expectations under a burst, status."""

from __future__ import annotations

import json
import time

from hypernetes.controllers.replicaset import pods_to_delete
from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread, Obj, controllers  # noqa: F401
from tests.support.waiting import wait_for

RS = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}, tier: x}}}}
    spec:
      containers: [{{name: c, image: nginx}}]
"""


def owned(pods: list[Obj], rs: Obj) -> list[Obj]:
    return [
        p
        for p in pods
        if any(
            r.get("uid") == rs["metadata"]["uid"] and r.get("controller")
            for r in p["metadata"].get("ownerReferences") or []
        )
    ]


def active(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def rs_status(c: ControllersThread, ns: str, name: str) -> Obj:
    return (c.get("apps/v1", "replicasets", name, ns) or {}).get("status") or {}


def test_scale_up_status_and_kubectl(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("rs-up")
    api.kubectl("apply", "-f", "-", input=RS.format(name="web", ns=ns, replicas=3))
    rs = controllers.get("apps/v1", "replicasets", "web", ns)
    assert rs is not None
    wait_for(lambda: rs_status(controllers, ns, "web").get("availableReplicas") == 3, what="3 available")
    status = rs_status(controllers, ns, "web")
    assert status == {
        "replicas": 3,
        "fullyLabeledReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "observedGeneration": 1,
    }
    pods = controllers.pods(ns)
    assert len(pods) == 3 and len(owned(pods, rs)) == 3
    for p in pods:
        assert p["metadata"]["name"].startswith("web-") and len(p["metadata"]["name"]) == len("web-") + 5
        ref = p["metadata"]["ownerReferences"][0]
        assert ref == {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web",
            "uid": rs["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert p["metadata"]["labels"] == {"app": "web", "tier": "x"}
    out = api.kubectl("get", "rs", "web", "-n", ns).stdout.split("\n")[1].split()
    assert out[:4] == ["web", "3", "3", "3"], out
    described = api.kubectl("describe", "rs", "web", "-n", ns).stdout
    assert "SuccessfulCreate" in described and f"Created pod: {pods[0]['metadata']['name']}" in described
    # a deleted pod is replaced
    victim = pods[0]["metadata"]["name"]
    api.kubectl("delete", "pod", victim, "-n", ns)
    wait_for(
        lambda: (
            len(active(controllers.pods(ns))) == 3
            and victim not in {p["metadata"]["name"] for p in controllers.pods(ns)}
        ),
        what="replacement",
    )


def test_scale_down_prefers_not_ready_pods(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("rs-down")
    api.kubectl("apply", "-f", "-", input=RS.format(name="web", ns=ns, replicas=4))
    wait_for(lambda: rs_status(controllers, ns, "web").get("readyReplicas") == 4, what="4 ready")
    pods = controllers.pods(ns)
    sick = pods[2]["metadata"]["name"]
    status = pods[2]["status"]
    for c in status["conditions"]:
        if c["type"] in ("Ready", "ContainersReady"):
            c["status"] = "False"
    controllers.patch("v1", "pods", sick, {"status": {"conditions": status["conditions"]}}, ns, "status")
    wait_for(lambda: rs_status(controllers, ns, "web").get("readyReplicas") == 3, what="3 ready")
    api.kubectl("scale", "rs", "web", "-n", ns, "--replicas=3")
    wait_for(lambda: len(controllers.pods(ns)) == 3, what="scaled down to 3")
    assert sick not in {p["metadata"]["name"] for p in controllers.pods(ns)}
    api.kubectl("scale", "rs", "web", "-n", ns, "--replicas=0")
    wait_for(lambda: not controllers.pods(ns), what="no pods")
    wait_for(
        lambda: rs_status(controllers, ns, "web") == {"replicas": 0, "observedGeneration": 3},
        what="status replicas 0",
    )


def test_adopts_orphans_and_releases_mismatches(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("rs-adopt")
    orphan = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    controllers.create("v1", "pods", orphan, ns)
    api.kubectl("apply", "-f", "-", input=RS.format(name="web", ns=ns, replicas=2))
    rs = controllers.get("apps/v1", "replicasets", "web", ns)
    assert rs is not None
    wait_for(lambda: len(owned(controllers.pods(ns), rs)) == 2, what="2 owned")
    names = {p["metadata"]["name"] for p in owned(controllers.pods(ns), rs)}
    assert "orphan" in names, names
    assert len(controllers.pods(ns)) == 2  # adopted, so only one was created
    wait_for(lambda: rs_status(controllers, ns, "web").get("fullyLabeledReplicas") == 1, what="status")
    # relabelled out of the selector: released, and replaced
    api.kubectl("label", "pod", "orphan", "-n", ns, "app=other", "--overwrite")
    wait_for(
        lambda: not (controllers.get("v1", "pods", "orphan", ns) or {})["metadata"].get("ownerReferences"),
        what="released",
    )
    wait_for(lambda: len(owned(controllers.pods(ns), rs)) == 2, what="replacement")
    assert len(controllers.pods(ns)) == 3


def test_burst_creates_exactly_replicas(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("rs-burst")
    api.kubectl("apply", "-f", "-", input=RS.format(name="many", ns=ns, replicas=25))
    wait_for(
        lambda: rs_status(controllers, ns, "many").get("readyReplicas") == 25, timeout=40, what="25 ready"
    )
    time.sleep(1.0)  # the status updates and pod events of the burst have all been seen
    assert len(controllers.pods(ns)) == 25
    out = json.loads(api.kubectl("get", "rs", "many", "-n", ns, "-o", "json").stdout)
    assert out["status"]["replicas"] == 25


def _pod(
    name: str,
    *,
    node: str = "n1",
    phase: str = "Running",
    ready: bool = True,
    created: str = "2024-01-01T00:00:00Z",
    restarts: int = 0,
) -> Obj:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": created}
            ],
            "containerStatuses": [{"name": "c", "restartCount": restarts}],
        },
    }


def test_scale_down_ranking() -> None:
    pods = [
        _pod("old-ready"),
        _pod("new-ready", created="2024-01-02T00:00:00Z"),
        _pod("crashy", restarts=5),
        _pod("not-ready", ready=False),
        _pod("pending", phase="Pending", ready=False),
        _pod("unscheduled", node="", phase="Pending", ready=False),
    ]
    order = [p["metadata"]["name"] for p in pods_to_delete(pods, len(pods))]
    assert order == ["unscheduled", "pending", "not-ready", "new-ready", "crashy", "old-ready"]
