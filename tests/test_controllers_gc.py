"""The garbage collector with the real kubectl: background (the default of kubectl delete),
foreground (the owner waits for its dependents) and orphan propagation, and dependents that
keep a living owner."""

from __future__ import annotations

import time

from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import FAKE, ControllersThread, Obj, controllers  # noqa: F401
from tests.support.waiting import wait_for

RS = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{"{fake}termination-delay": "{delay}"}}
    spec:
      containers: [{{name: c, image: nginx}}]
"""


def start_rs(server: ApiServerThread, c: ControllersThread, ns: str, delay: float = 0) -> Obj:
    server.kubectl("apply", "-f", "-", input=RS.format(ns=ns, fake=FAKE, delay=delay))
    wait_for(
        lambda: len([p for p in c.pods(ns) if (p.get("status") or {}).get("phase") == "Running"]) == 2,
        what="2 running pods",
    )
    return c.get("apps/v1", "replicasets", "web", ns) or {}


def test_background_deletes_dependents(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("gc-background")
    start_rs(api, controllers, ns)
    assert 'replicaset.apps "web" deleted' in api.kubectl("delete", "rs", "web", "-n", ns).stdout
    assert controllers.get("apps/v1", "replicasets", "web", ns) is None  # the owner goes first
    wait_for(lambda: not controllers.pods(ns), what="pods collected")


def test_deleting_a_deployment_deletes_everything(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("gc-deploy")
    api.kubectl(
        "create",
        "-n",
        ns,
        "-f",
        "-",
        input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx}]}
""",
    )
    api.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
    api.kubectl("delete", "deployment", "web", "-n", ns)
    wait_for(
        lambda: not controllers.items("apps/v1", "replicasets", ns) and not controllers.pods(ns),
        what="replica sets and pods collected",
    )


def test_foreground_waits_for_dependents(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("gc-foreground")
    start_rs(api, controllers, ns, delay=1.5)
    api.kubectl("delete", "rs", "web", "-n", ns, "--cascade=foreground", "--wait=false")
    # the pods take 1.5 s to stop; until they are gone the owner stays, marked
    time.sleep(0.5)
    rs = controllers.get("apps/v1", "replicasets", "web", ns)
    assert rs is not None and rs["metadata"].get("deletionTimestamp")
    assert rs["metadata"]["finalizers"] == ["foregroundDeletion"]
    pods = controllers.pods(ns)
    assert len(pods) == 2 and all(p["metadata"].get("deletionTimestamp") for p in pods)
    wait_for(lambda: controllers.get("apps/v1", "replicasets", "web", ns) is None, what="owner gone")
    assert controllers.pods(ns) == []  # gone before their owner


def test_orphan_keeps_dependents(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("gc-orphan")
    start_rs(api, controllers, ns)
    api.kubectl("delete", "rs", "web", "-n", ns, "--cascade=orphan")
    assert controllers.get("apps/v1", "replicasets", "web", ns) is None
    time.sleep(1.0)
    pods = controllers.pods(ns)
    assert len(pods) == 2
    assert all(
        not p["metadata"].get("ownerReferences") and not p["metadata"].get("deletionTimestamp") for p in pods
    )


def test_a_living_owner_keeps_its_dependent(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("gc-owners")
    a = controllers.create("v1", "configmaps", {"metadata": {"name": "a"}}, ns)
    b = controllers.create("v1", "configmaps", {"metadata": {"name": "b"}}, ns)
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
        for o in (a, b)
    ]
    controllers.create("v1", "configmaps", {"metadata": {"name": "both", "ownerReferences": refs}}, ns)
    controllers.create("v1", "configmaps", {"metadata": {"name": "only-a", "ownerReferences": refs[:1]}}, ns)
    # an owner reference to something that never existed counts as gone
    ghost = {**refs[0], "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}
    controllers.create("v1", "configmaps", {"metadata": {"name": "haunted", "ownerReferences": [ghost]}}, ns)
    api.kubectl("delete", "configmap", "a", "-n", ns)
    wait_for(lambda: controllers.get("v1", "configmaps", "only-a", ns) is None, what="only-a collected")
    wait_for(lambda: controllers.get("v1", "configmaps", "haunted", ns) is None, what="haunted collected")
    both = wait_for(
        lambda: (lambda o: o if o and len(o["metadata"].get("ownerReferences") or []) == 1 else None)(
            controllers.get("v1", "configmaps", "both", ns)
        ),
        what="the reference to the deleted owner dropped",
    )
    assert both["metadata"]["ownerReferences"][0]["name"] == "b"
