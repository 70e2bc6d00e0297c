"""validate(): exact field paths and error types for realistic manifests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hypernetes.api import schema
from hypernetes.api.schema import errors as E


def _kind(api_version: str, name: str) -> schema.Kind:
    k = schema.kind_by_name(api_version, name)
    assert k is not None
    return k


POD = _kind("v1", "Pod")
NS = _kind("v1", "Namespace")
DEPLOY = _kind("apps/v1", "Deployment")
JOB = _kind("batch/v1", "Job")
SVC = _kind("v1", "Service")


def pod() -> dict[str, Any]:
    """Two containers, probes, env from a configmap, volumes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "env": [
                        {"name": "MODE", "value": "prod"},
                        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                    ],
                    "envFrom": [{"configMapRef": {"name": "cfg"}}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                    "livenessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                },
                {"name": "sidecar", "image": "busybox", "command": ["sleep", "inf"]},
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "cfg"}}],
        },
    }


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "pi", "image": "perl:5.34", "command": ["perl", "-e", "1"]}],
                    "restartPolicy": "Never",
                }
            },
            "backoffLimit": 4,
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def errs(kind: schema.Kind, obj: dict[str, Any], old: dict[str, Any] | None = None) -> set[tuple[str, str]]:
    return {(e.type, e.field) for e in schema.validate(kind, obj, old)}


@pytest.mark.parametrize(("kind", "make"), [(POD, pod), (DEPLOY, deployment), (JOB, job), (SVC, service)])
def test_realistic_manifests_are_valid_before_and_after_defaults(kind: schema.Kind, make: Any) -> None:
    obj = make()
    assert schema.validate(kind, obj) == []
    schema.apply_defaults(kind, obj)
    assert schema.validate(kind, obj) == []


def test_unknown_field_has_its_path() -> None:
    p = pod()
    p["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    p["spec"]["containers"][1]["resources"] = {"limit": {"cpu": "1"}}
    assert errs(POD, p) == {
        (E.UNKNOWN_FIELD, "spec.containers[0].imagePullPolicyy"),
        (E.UNKNOWN_FIELD, "spec.containers[1].resources.limit"),
    }


def test_required_fields() -> None:
    p = pod()
    del p["spec"]["containers"][1]["image"]
    del p["metadata"]["name"]
    p["spec"]["containers"][0]["ports"].append({"name": "x"})
    assert errs(POD, p) == {
        (E.REQUIRED, "spec.containers[1].image"),
        (E.REQUIRED, "metadata.name"),
        (E.REQUIRED, "spec.containers[0].ports[1].containerPort"),
    }
    p["metadata"]["generateName"] = "web-"
    assert (E.REQUIRED, "metadata.name") not in errs(POD, p)


def test_formats() -> None:
    p = pod()
    p["metadata"]["name"] = "Web_1"
    p["metadata"]["labels"] = {"app/x/y": "ok", "tier": "-bad"}
    c = p["spec"]["containers"][0]
    c["ports"][0]["containerPort"] = 70000
    c["resources"]["requests"]["cpu"] = "1.5cores"
    p["spec"]["containers"][1]["name"] = "web"
    assert errs(POD, p) == {
        (E.INVALID, "metadata.name"),
        (E.INVALID, "metadata.labels"),
        (E.INVALID, "spec.containers[0].ports[0].containerPort"),
        (E.INVALID, "spec.containers[0].resources.requests[cpu]"),
        (E.DUPLICATE, "spec.containers[1].name"),
    }


def test_type_errors_stop_before_rules() -> None:
    p = pod()
    p["spec"]["containers"][0]["ports"][0]["containerPort"] = "80"
    assert errs(POD, p) == {(E.TYPE_INVALID, "spec.containers[0].ports[0].containerPort")}


def test_enums_and_mounts() -> None:
    p = pod()
    p["spec"]["restartPolicy"] = "Sometimes"
    p["spec"]["containers"][0]["volumeMounts"].append({"name": "nope", "mountPath": "/nope"})
    p["spec"]["containers"][0]["resources"]["requests"]["memory"] = "1Gi"
    assert errs(POD, p) == {
        (E.NOT_SUPPORTED, "spec.restartPolicy"),
        (E.NOT_FOUND, "spec.containers[0].volumeMounts[1].name"),
        (E.INVALID, "spec.containers[0].resources.requests"),
    }


def test_unsupported_by_hypernetes() -> None:
    p = pod()
    p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/etc"}})
    p["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "busybox"}]
    p["spec"]["os"] = {"name": "windows"}
    found = schema.validate(POD, p)
    assert {(e.type, e.field) for e in found} == {
        (E.NOT_SUPPORTED, "spec.volumes[2].hostPath"),
        (E.NOT_SUPPORTED, "spec.ephemeralContainers"),
        (E.NOT_SUPPORTED, "spec.os.name"),
    }
    assert all("not supported by hypernetes" in e.message for e in found)
    # the same rules hold in a deployment's pod template
    d = deployment()
    d["spec"]["template"]["spec"]["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    assert errs(DEPLOY, d) == {(E.NOT_SUPPORTED, "spec.template.spec.volumes[0].hostPath")}


def test_pod_update_rules() -> None:
    old = pod()
    schema.apply_defaults(POD, old)
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.28"
    new["spec"]["tolerations"] = [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
    new["metadata"]["labels"]["tier"] = "front"
    assert schema.validate(POD, new, old) == []
    new["spec"]["containers"][0]["command"] = ["sh"]
    assert errs(POD, new, old) == {(E.FORBIDDEN, "spec")}
    moved = copy.deepcopy(old)
    moved["metadata"]["namespace"] = "other"
    assert (E.INVALID, "metadata.namespace") in errs(POD, moved, old)
    # status updates do not touch the spec rules
    status = copy.deepcopy(new)
    assert schema.validate(POD, status, old, subresource="status") == []


def test_namespace_scope() -> None:
    assert errs(NS, {"metadata": {"name": "team-a", "namespace": "x"}}) == {
        (E.FORBIDDEN, "metadata.namespace")
    }
    assert errs(NS, {"metadata": {"name": "team.a"}}) == {(E.INVALID, "metadata.name")}
    p = pod()
    del p["metadata"]["namespace"]
    assert errs(POD, p) == {(E.REQUIRED, "metadata.namespace")}


def test_api_version_and_kind_must_match() -> None:
    p = pod()
    p["apiVersion"] = "apps/v1"
    p["kind"] = "Deployment"
    assert errs(POD, p) == {(E.INVALID, "apiVersion"), (E.INVALID, "kind")}


def test_deployment_rules() -> None:
    d = deployment()
    d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    d["spec"]["replicas"] = -1
    assert errs(DEPLOY, d) == {(E.INVALID, "spec.template.metadata.labels"), (E.INVALID, "spec.replicas")}
    d = deployment()
    del d["spec"]["selector"]
    assert errs(DEPLOY, d) == {(E.REQUIRED, "spec.selector")}
    old = deployment()
    new = deployment()
    new["spec"]["selector"]["matchLabels"]["tier"] = "x"
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    assert errs(DEPLOY, new, old) == {(E.INVALID, "spec.selector")}


def test_job_restart_policy() -> None:
    j = job()
    del j["spec"]["template"]["spec"]["restartPolicy"]
    assert errs(JOB, j) == {(E.REQUIRED, "spec.template.spec.restartPolicy")}
    schema.apply_defaults(JOB, j)  # upstream defaults templates to Always, which a Job refuses
    assert errs(JOB, j) == {(E.NOT_SUPPORTED, "spec.template.spec.restartPolicy")}


def test_service_rules() -> None:
    s = service()
    s["spec"]["ports"].append({"port": 0})
    assert errs(SVC, s) == {(E.REQUIRED, "spec.ports[1].name"), (E.INVALID, "spec.ports[1].port")}
    s = service()
    s["spec"]["type"] = "LoadBalancer"
    assert errs(SVC, s) == {(E.NOT_SUPPORTED, "spec.type")}
    old = service()
    old["spec"]["clusterIP"] = "10.0.0.10"
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.0.0.11"
    assert errs(SVC, new, old) == {(E.INVALID, "spec.clusterIP")}


def test_messages_read_like_upstream() -> None:
    p = pod()
    del p["spec"]["containers"][0]["image"]
    p["metadata"]["name"] = "Web"
    by_field = {e.field: e.message for e in schema.validate(POD, p)}
    assert by_field["spec.containers[0].image"] == "Required value"
    assert by_field["metadata.name"].startswith('Invalid value: "Web": a lowercase RFC 1123 subdomain')


def test_drop_unknown_fields() -> None:
    p = pod()
    p["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    p["spec"]["bogus"] = 1
    schema.drop_unknown_fields(POD, p)
    assert schema.validate(POD, p) == []
    assert "bogus" not in p["spec"]


def test_subresource_bodies_and_times() -> None:
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "web"},
        "target": {"name": "node-1"},
    }
    assert schema.validate_body("io.k8s.api.core.v1.Binding", binding) == []
    assert {
        (e.type, e.field) for e in schema.validate_body("io.k8s.api.core.v1.Binding", {"metadata": {}})
    } == {(E.REQUIRED, "target")}
    p = pod()
    p["status"] = {"phase": "Running", "startTime": "2026-11-25T11:54Z"}
    assert errs(POD, p) == {(E.INVALID, "status.startTime")}
    p["status"]["startTime"] = "2026-11-25T11:54:50.123456789Z"
    p["status"]["containerStatuses"] = [{"name": "web"}]  # status is not held to OpenAPI's required lists
    assert errs(POD, p) == set()
