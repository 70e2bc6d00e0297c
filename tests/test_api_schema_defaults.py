"""apply_defaults: upstream's defaults, idempotent (kubectl apply twice is a no-op), and
quantities in upstream's canonical form."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypernetes.api import schema
from hypernetes.api.schema.defaults import pull_policy
from hypernetes.api.schema.formats import canonical_quantity, parse_quantity


def kind(api_version: str, name: str) -> schema.Kind:
    k = schema.kind_by_name(api_version, name)
    assert k is not None
    return k


POD, DEPLOY, JOB, SVC, NS = (
    kind("v1", "Pod"),
    kind("apps/v1", "Deployment"),
    kind("batch/v1", "Job"),
    kind("v1", "Service"),
    kind("v1", "Namespace"),
)


def run_pod() -> dict[str, Any]:
    """What `kubectl run nginx --image=nginx` sends (transcript)."""
    pod: dict[str, Any] = json.loads(
        '{"kind":"Pod","apiVersion":"v1","metadata":{"name":"nginx","creationTimestamp":null,'
        '"labels":{"run":"nginx"}},"spec":{"containers":[{"name":"nginx","image":"nginx",'
        '"resources":{}}],"restartPolicy":"Always","dnsPolicy":"ClusterFirst"},"status":{}}'
    )
    return pod


def test_pod_defaults() -> None:
    p = run_pod()
    p["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    p["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"port": 80}}
    p["spec"]["volumes"] = [{"name": "c", "configMap": {"name": "cfg"}}, {"name": "scratch"}]
    schema.apply_defaults(POD, p)
    spec, c = p["spec"], p["spec"]["containers"][0]
    assert "creationTimestamp" not in p["metadata"]  # null means absent
    assert {
        k: spec[k]
        for k in (
            "restartPolicy",
            "dnsPolicy",
            "terminationGracePeriodSeconds",
            "schedulerName",
            "securityContext",
            "enableServiceLinks",
            "serviceAccountName",
            "serviceAccount",
        )
    } == {
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "terminationGracePeriodSeconds": 30,
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "enableServiceLinks": True,
        "serviceAccountName": "default",
        "serviceAccount": "default",
    }
    assert c["imagePullPolicy"] == "Always"
    assert c["terminationMessagePath"] == "/dev/termination-log" and c["terminationMessagePolicy"] == "File"
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["readinessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert spec["volumes"] == [
        {"name": "c", "configMap": {"name": "cfg", "defaultMode": 420}},
        {"name": "scratch", "emptyDir": {}},
    ]
    assert p["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert schema.validate(POD, {**p, "metadata": {**p["metadata"], "namespace": "default"}}) == []


def test_requests_default_to_limits_in_pods_only() -> None:
    p = run_pod()
    p["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "0.5", "memory": "1024Mi"}}
    schema.apply_defaults(POD, p)
    assert p["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "1Gi"},
        "requests": {"cpu": "500m", "memory": "1Gi"},
    }
    assert p["status"]["qosClass"] == "Guaranteed"
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    schema.apply_defaults(DEPLOY, d)
    assert d["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}}


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def test_deployment_job_service_namespace_defaults() -> None:
    d = deployment()
    schema.apply_defaults(DEPLOY, d)
    assert {
        k: d["spec"][k] for k in ("replicas", "strategy", "revisionHistoryLimit", "progressDeadlineSeconds")
    } == {
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    }
    tspec = d["spec"]["template"]["spec"]
    assert tspec["restartPolicy"] == "Always" and "enableServiceLinks" not in tspec
    assert "serviceAccountName" not in tspec and tspec["containers"][0]["imagePullPolicy"] == "IfNotPresent"

    j: dict[str, Any] = {
        "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "pi"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]},
            }
        },
    }
    schema.apply_defaults(JOB, j)
    spec = j["spec"]
    assert {
        k: spec[k] for k in ("completions", "parallelism", "backoffLimit", "completionMode", "suspend")
    } == {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 6,
        "completionMode": "NonIndexed",
        "suspend": False,
    }
    assert j["metadata"]["labels"] == {"app": "pi"}
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert spec["template"]["metadata"]["labels"]["job-name"] == "pi"
    assert schema.validate(JOB, j) == []

    s = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}
    schema.apply_defaults(SVC, s)
    assert s["spec"] == {
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
    }

    ns = {"metadata": {"name": "team-a"}}
    schema.apply_defaults(NS, ns)
    assert ns == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def test_secret_string_data_folds_into_data() -> None:
    s = {"metadata": {"name": "s", "namespace": "d"}, "stringData": {"password": "hunter2"}}
    schema.apply_defaults(kind("v1", "Secret"), s)
    assert s == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "d"},
        "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="},
    }


@pytest.mark.parametrize("k", schema.KINDS, ids=lambda k: k.kind)
def test_defaults_are_idempotent(k: schema.Kind) -> None:
    objs = {"Pod": run_pod(), "Deployment": deployment()}
    obj = objs.get(
        k.kind,
        {
            "metadata": {"name": "x"},
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 1}]}]}
                },
                "ports": [{"port": 1}],
            },
        },
    )
    schema.apply_defaults(k, obj)
    once = copy.deepcopy(obj)
    schema.apply_defaults(k, obj)
    assert obj == once


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("localhost:5000/app", "Always"),
        ("localhost:5000/app:v1", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
    ],
)
def test_pull_policy(image: str, policy: str) -> None:
    assert pull_policy(image) == policy


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("100m", "100m"),
        ("0.5", "500m"),
        ("1", "1"),
        (1, "1"),
        (0.25, "250m"),
        ("1000m", "1"),
        ("1500m", "1500m"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("1.5Gi", "1536Mi"),
        ("128Mi", "128Mi"),
        ("512", "512"),
        ("1000", "1k"),
        ("2000000", "2M"),
        ("1e3", "1e3"),
        ("0", "0"),
        ("100Ki", "100Ki"),
        ("0.5Ki", "512"),
        ("1G", "1G"),
        ("1n", "1n"),
    ],
)
def test_canonical_quantities(given: Any, canonical: str) -> None:
    assert canonical_quantity(given) == canonical


@pytest.mark.parametrize("bad", ["", "1.5cores", "1 Mi", "--1", "1Qi", "1K", True])
def test_bad_quantities(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12), st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi"]))
def test_canonical_quantity_keeps_value(n: int, suffix: str) -> None:
    text = f"{n}{suffix}"
    canon = canonical_quantity(text)
    assert parse_quantity(canon)[0] == parse_quantity(text)[0]
    assert canonical_quantity(canon) == canon
