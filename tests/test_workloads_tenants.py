"""StatefulSets, ReplicationControllers and DaemonSets in a multi-tenant API server, used by tenant
users through the real kubectl 1.32: DaemonSets are refused them with the reason; the pod
templates of the others are held to the tenant's pod policy when written, and what the
controllers make from them (pods, claims) passes the tenant's admission and quota as if the
tenant had made it; `kubectl scale rc` and `kubectl rollout history sts` as a tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hypernetes.objects import Obj
from tests.support.controllers import ControllersThread
from tests.support.tenantnodes import module_world, running_controllers
from tests.support.tenants import TenantWorld
from tests.support.waiting import wait_for

IMAGE = "registry.invalid/busybox:1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    yield from module_world(tmp_path_factory, TenantWorld)


@pytest.fixture(scope="module")
def controllers(world: TenantWorld) -> Iterator[ControllersThread]:
    yield from running_controllers(world)


def sts(name: str, ns: str, replicas: int, pod_extra: Obj | None = None, claims: bool = False) -> str:
    body: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": IMAGE}], **(pod_extra or {})},
            },
        },
    }
    if claims:
        body["spec"]["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }
        ]
    return json.dumps(body)


def test_daemon_sets_are_refused_to_tenants(world: TenantWorld, controllers: ControllersThread) -> None:
    admin = world.fresh_tenant("dsy")
    proc = world.kubectl(
        admin,
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "agent", "namespace": "dsy-a"},
                "spec": {
                    "selector": {"matchLabels": {"app": "agent"}},
                    "template": {
                        "metadata": {"labels": {"app": "agent"}},
                        "spec": {"containers": [{"name": "c", "image": IMAGE}]},
                    },
                },
            }
        ),
    )
    assert proc.returncode != 0
    assert "Forbidden" in proc.stderr and "nodes are the operators'" in proc.stderr, proc.stderr
    # reading is fine (there are none): `kubectl get all` lists daemon sets
    proc = world.kubectl(admin, "get", "all", "-n", "dsy-a")
    assert proc.returncode == 0 and "daemonset" not in proc.stdout, proc.stderr
    proc = world.kubectl(admin, "delete", "ds", "agent", "-n", "dsy-a")
    assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr
    proc = world.kubectl(admin, "auth", "can-i", "create", "statefulsets", "-n", "dsy-a")
    assert proc.stdout.strip() == "yes", proc.stdout + proc.stderr


def test_templates_are_held_to_the_tenants_pod_policy(
    world: TenantWorld, controllers: ControllersThread
) -> None:
    admin = world.fresh_tenant("policy")
    ns = "policy-a"
    proc = world.kubectl(admin, "create", "-f", "-", input=sts("pinned", ns, 1, {"nodeName": "fake-node"}))
    assert (
        proc.returncode != 0 and "spec.template.spec.nodeName: tenants may not choose a node" in proc.stderr
    ), proc.stderr
    hostpath = {"volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]}
    proc = world.kubectl(admin, "create", "-f", "-", input=sts("host", ns, 1, hostpath))
    assert proc.returncode != 0 and "spec.template.spec.volumes[0].hostPath" in proc.stderr, proc.stderr
    rc = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "priv", "namespace": ns},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "priv"}},
                "spec": {
                    "containers": [{"name": "c", "image": IMAGE, "securityContext": {"privileged": True}}]
                },
            }
        },
    }
    proc = world.kubectl(admin, "create", "-f", "-", input=json.dumps(rc))
    assert proc.returncode != 0 and "privileged" in proc.stderr, proc.stderr
    assert not controllers.pods(ns)


def test_claims_and_pods_pass_the_tenants_quota(world: TenantWorld, controllers: ControllersThread) -> None:
    admin = world.fresh_tenant(
        "quotas", {"quota": {"persistentvolumeclaims": "1", "count/statefulsets.apps": "1"}}
    )
    ns = "quotas-a"
    proc = world.kubectl(admin, "create", "-f", "-", input=sts("db", ns, 2, claims=True))
    assert proc.returncode == 0, proc.stderr
    # the first replica's claim fits the quota; the second one's is refused as the tenant's would be
    wait_for(lambda: [p["metadata"]["name"] for p in controllers.pods(ns)] == ["db-0"], what="db-0")
    claims = [c["metadata"]["name"] for c in controllers.items("v1", "persistentvolumeclaims", ns)]
    assert claims == ["data-db-0"]

    def refused() -> list[Obj]:
        return [
            e
            for e in controllers.items("v1", "events", ns)
            if e["involvedObject"]["name"] == "db" and e["reason"] == "FailedCreate"
        ]

    wait_for(refused, what="a FailedCreate event")
    message = refused()[0]["message"]
    assert "create Claim data-db-1 for Pod db-1 in StatefulSet db failed" in message and "quota" in message, (
        message
    )
    assert [p["metadata"]["name"] for p in controllers.pods(ns)] == ["db-0"]
    # one StatefulSet is the tenant's count
    proc = world.kubectl(admin, "create", "-f", "-", input=sts("second", ns, 1))
    assert proc.returncode != 0 and "count/statefulsets.apps" in proc.stderr, proc.stderr
    # its history is the tenant's to read
    history = world.kubectl(admin, "rollout", "history", "sts/db", "-n", ns)
    assert history.returncode == 0 and "REVISION" in history.stdout, history.stderr


def test_replication_controller_and_kubectl_scale(world: TenantWorld, controllers: ControllersThread) -> None:
    admin = world.fresh_tenant("rcy")
    ns = "rcy-a"
    rc: Obj = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": IMAGE}]},
            },
        },
    }
    proc = world.kubectl(admin, "apply", "-f", "-", input=json.dumps(rc))
    assert proc.returncode == 0, proc.stderr
    got = controllers.get("v1", "replicationcontrollers", "web", ns) or {}
    # selector and labels defaulted from the template's labels, as upstream
    assert got["spec"]["selector"] == {"app": "web"} and got["metadata"]["labels"] == {"app": "web"}

    def status() -> Obj:
        out: Obj = (controllers.get("v1", "replicationcontrollers", "web", ns) or {}).get("status") or {}
        return out

    wait_for(lambda: status().get("readyReplicas") == 2, what="2 ready")
    for p in controllers.pods(ns):
        ref = p["metadata"]["ownerReferences"][0]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("v1", "ReplicationController", "web")
    proc = world.kubectl(admin, "scale", "rc", "web", "--replicas=3", "-n", ns)
    assert proc.returncode == 0 and "replicationcontroller/web scaled" in proc.stdout, proc.stderr
    wait_for(lambda: status().get("readyReplicas") == 3, what="3 ready")
    assert status() == {
        "replicas": 3,
        "fullyLabeledReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "observedGeneration": 2,
    }
    rows = world.kubectl(admin, "get", "rc", "web", "-n", ns, "-o", "wide").stdout.splitlines()
    assert rows[0].split() == [
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert rows[1].split()[:4] == ["web", "3", "3", "3"] and rows[1].split()[-1] == "app=web", rows
    scale = json.loads(
        world.kubectl(
            admin, "get", "--raw", f"/api/v1/namespaces/{ns}/replicationcontrollers/web/scale"
        ).stdout
    )
    assert scale["spec"] == {"replicas": 3} and scale["status"] == {"replicas": 3, "selector": "app=web"}
    proc = world.kubectl(admin, "scale", "rc", "web", "--replicas=1", "-n", ns, version="1.33")
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: len([p for p in controllers.pods(ns) if not p["metadata"].get("deletionTimestamp")]) == 1,
        what="1 pod",
    )
    # an RC without template labels has nothing to select: refused with upstream's paths
    bad = {
        **rc,
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"template": {"spec": rc["spec"]["template"]["spec"]}},
    }
    proc = world.kubectl(admin, "create", "-f", "-", input=json.dumps(bad))
    assert proc.returncode != 0 and "spec.selector: Required value" in proc.stderr, proc.stderr


def test_created_workloads_carry_upstreams_empty_status(controllers: ControllersThread) -> None:
    """PrepareForCreate resets the status, and the empty status serializes its counts without
    omitempty (what kube-apiserver answers a create with; the Python client's models need them)."""
    ns = controllers.namespace("zero-status")
    labels = {"app": "z"}
    tmpl = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": IMAGE}]}}
    cases: list[tuple[str, str, Obj, Obj]] = [
        ("apps/v1", "statefulsets", {"serviceName": "z"}, {"replicas": 0, "availableReplicas": 0}),
        (
            "apps/v1",
            "daemonsets",
            {},
            {
                "currentNumberScheduled": 0,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": 0,
                "numberReady": 0,
            },
        ),
        ("v1", "replicationcontrollers", {"replicas": 0}, {"replicas": 0}),
    ]
    for api_version, plural, extra, want in cases:
        selector: Obj = labels if plural == "replicationcontrollers" else {"matchLabels": labels}
        body = {
            "metadata": {"name": "z"},
            "spec": {"selector": selector, "template": tmpl, **extra},
            "status": {"replicas": 7},  # a client's status is not kept
        }
        made = controllers.create(api_version, plural, body, ns)
        assert made["status"] == want, (plural, made["status"])
