"""The schema package seen through the real kubectl 1.32: apply validates server-side against
our OpenAPI, unknown and unsupported fields come back as clear errors, apply twice is a no-op,
explain reads our schemas, and get prints upstream's columns."""

from __future__ import annotations

import pytest

from tests.support.apifixtures import api, have_kubectl  # noqa: F401
from tests.support.apiserver import ApiServerThread

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
        env: [{name: MODE, value: prod}]
        resources: {limits: {cpu: 500m, memory: 1Gi}}
        readinessProbe: {httpGet: {port: 80}}
        %s
"""


def test_apply_twice_and_diff_are_stable(api: ApiServerThread) -> None:
    manifest = DEPLOYMENT % "volumeMounts: [{name: cache, mountPath: /cache}]"
    manifest = manifest.replace(
        "      containers:", "      volumes: [{name: cache, emptyDir: {}}]\n      containers:"
    )
    assert "deployment.apps/web created" in api.kubectl("apply", "-f", "-", input=manifest).stdout
    assert "deployment.apps/web unchanged" in api.kubectl("apply", "-f", "-", input=manifest).stdout
    changed = manifest.replace("MODE, value: prod", "MODE, value: dev")
    assert "deployment.apps/web configured" in api.kubectl("apply", "-f", "-", input=changed).stdout
    out = api.kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].env}").stdout
    assert '"value":"dev"' in out
    diff = api.kubectl("diff", "-f", "-", input=changed, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr  # nothing differs: defaults are stable
    head = api.kubectl("get", "deploy", "-o", "wide").stdout.splitlines()[0].split()
    assert head == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    api.kubectl("delete", "deploy", "web")


def test_unknown_field_is_rejected_with_its_path(api: ApiServerThread) -> None:
    p = api.kubectl("apply", "-f", "-", input=DEPLOYMENT % "imagePullPolicyy: Always", check=False)
    assert p.returncode != 0
    assert "spec.template.spec.containers[0].imagePullPolicyy" in p.stderr


def test_unsupported_field_is_a_clear_422(api: ApiServerThread) -> None:
    manifest = (DEPLOYMENT % "").replace(
        "      containers:", "      volumes: [{name: h, hostPath: {path: /}}]\n      containers:"
    )
    p = api.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert p.returncode != 0
    assert "spec.template.spec.volumes[0].hostPath" in p.stderr and "not supported by hypernetes" in p.stderr
    assert "is invalid" in p.stderr


def test_explain_reads_our_openapi(api: ApiServerThread) -> None:
    out = api.kubectl("explain", "pods.spec.containers.ports").stdout
    assert "containerPort" in out and "<integer> -required-" in out


BEFORE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shapes, labels: {app: shapes, tier: a}}
spec:
  selector: {matchLabels: {app: shapes}}
  template:
    metadata: {labels: {app: shapes}}
    spec:
      volumes: [{name: data, emptyDir: {}}, {name: old, emptyDir: {}}]
      containers:
      - name: web
        image: nginx:1.27
        args: [-a, -b]
        ports: [{containerPort: 80}, {containerPort: 443}]
        env: [{name: A, value: "1"}, {name: B, value: "1"}]
        volumeMounts: [{name: data, mountPath: /data}]
"""

AFTER = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shapes, labels: {app: shapes}}
spec:
  strategy: {type: Recreate}
  selector: {matchLabels: {app: shapes}}
  template:
    metadata: {labels: {app: shapes}}
    spec:
      volumes: [{name: data, configMap: {name: cfg}}]
      containers:
      - name: log
        image: busybox
      - name: web
        image: nginx:1.28
        args: [-c]
        ports: [{containerPort: 443}]
        env: [{name: C, value: "3"}, {name: B, value: "2"}]
        volumeMounts: [{name: data, mountPath: /data}]
"""


def test_apply_removals_and_reorders_through_strategic_merge(api: ApiServerThread) -> None:
    """kubectl computes the three-way patch (deletions, $setElementOrder, $retainKeys); the
    server must apply it so that the live object ends up as the file says."""
    import json

    api.kubectl("apply", "-f", "-", input=BEFORE)
    assert "configured" in api.kubectl("apply", "-f", "-", input=AFTER).stdout
    d = json.loads(api.kubectl("get", "deploy", "shapes", "-o", "json").stdout)
    assert d["metadata"]["labels"] == {"app": "shapes"}
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    spec = d["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "data", "configMap": {"name": "cfg", "defaultMode": 420}}]
    assert [c["name"] for c in spec["containers"]] == ["log", "web"]
    web = spec["containers"][1]
    assert web["image"] == "nginx:1.28" and web["args"] == ["-c"]
    assert web["ports"] == [{"containerPort": 443, "protocol": "TCP"}]
    assert web["env"] == [{"name": "C", "value": "3"}, {"name": "B", "value": "2"}]
    assert "unchanged" in api.kubectl("apply", "-f", "-", input=AFTER).stdout
    api.kubectl("delete", "deploy", "shapes")
