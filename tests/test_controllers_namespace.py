"""Namespace deletion (content emptied, pods finalized by the node, conditions, the finalize
subresource) and the default ServiceAccount, with the real kubectl."""

from __future__ import annotations

from tests.support.apifixtures import api  # noqa: F401
from tests.support.apiserver import ApiServerThread
from tests.support.controllers import ControllersThread, Obj, controllers  # noqa: F401
from tests.support.waiting import wait_for

CONTENT = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: cm, namespace: {ns}}}
data: {{k: v}}
---
apiVersion: v1
kind: Secret
metadata: {{name: s, namespace: {ns}}}
stringData: {{k: v}}
---
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: c, image: nginx}}]
"""


def conditions(ns: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (ns.get("status") or {}).get("conditions") or []}


def test_default_service_account(api: ApiServerThread, controllers: ControllersThread) -> None:
    api.kubectl("create", "namespace", "sa-test")
    wait_for(lambda: controllers.get("v1", "serviceaccounts", "default", "sa-test"), what="default sa")
    assert "default" in api.kubectl("get", "sa", "-n", "sa-test").stdout
    # the namespaces that existed before the controller started have one too
    wait_for(lambda: controllers.get("v1", "serviceaccounts", "default", "kube-system"), what="kube-system")
    uid = (controllers.get("v1", "serviceaccounts", "default", "sa-test") or {})["metadata"]["uid"]
    api.kubectl("delete", "sa", "default", "-n", "sa-test")
    again = wait_for(
        lambda: controllers.get("v1", "serviceaccounts", "default", "sa-test"), what="re-created"
    )
    assert again["metadata"]["uid"] != uid


def test_namespace_deletion_empties_it(api: ApiServerThread, controllers: ControllersThread) -> None:
    ns = controllers.namespace("doomed")
    api.kubectl("apply", "-f", "-", input=CONTENT.format(ns=ns))
    wait_for(
        lambda: [(p.get("status") or {}).get("phase") for p in controllers.pods(ns)] == ["Running"] * 2,
        what="2 running pods",
    )
    # kubectl waits for the namespace to be gone (finalized) before it returns
    out = api.kubectl("delete", "namespace", ns, timeout=60).stdout
    assert f'namespace "{ns}" deleted' in out
    assert controllers.get("v1", "namespaces", ns) is None
    for av, plural in (
        ("v1", "pods"),
        ("v1", "configmaps"),
        ("v1", "secrets"),
        ("v1", "services"),
        ("v1", "serviceaccounts"),
        ("apps/v1", "replicasets"),
    ):
        assert controllers.items(av, plural, ns) == [], plural
    gone = api.kubectl("get", "ns", ns, check=False)
    assert gone.returncode == 1 and "NotFound" in gone.stderr


def test_namespace_waits_for_finalizers_with_conditions(
    api: ApiServerThread,
    controllers: ControllersThread,
) -> None:
    ns = controllers.namespace("held")
    controllers.create(
        "v1", "configmaps", {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}, ns
    )
    api.kubectl("delete", "namespace", ns, "--wait=false")

    def remaining() -> Obj:
        obj = controllers.get("v1", "namespaces", ns) or {}
        c = conditions(obj).get("NamespaceContentRemaining")
        return obj if c and c["status"] == "True" else {}

    obj = wait_for(remaining, what="NamespaceContentRemaining")
    conds = conditions(obj)
    assert obj["status"]["phase"] == "Terminating"
    assert (
        conds["NamespaceContentRemaining"]["message"]
        == "Some resources are remaining: configmaps has 1 resource instances"
    )
    assert conds["NamespaceFinalizersRemaining"]["status"] == "True"
    assert (
        conds["NamespaceFinalizersRemaining"]["message"]
        == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    )
    assert conds["NamespaceDeletionContentFailure"]["status"] == "False"
    assert obj["spec"]["finalizers"] == ["kubernetes"]
    described = api.kubectl("describe", "namespace", ns).stdout
    assert "Terminating" in described
    controllers.patch("v1", "configmaps", "held", {"metadata": {"finalizers": None}}, ns)
    wait_for(lambda: controllers.get("v1", "namespaces", ns) is None, what="namespace gone")
