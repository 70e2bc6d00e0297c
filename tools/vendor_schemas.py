"""Regenerate hypernetes/api/schema/data/k8s-v1.32.json from PyPI `kubernetes-validate` (Apache-2.0).

The wheel is 108 MB with every Kubernetes version; we keep only the definitions reachable from the
kinds Hypernetes serves, for one version, in upstream OpenAPI v3 component form (one `type`, no
`null` unions, `$ref` by definition name) so that validation, strategic merge patch and the
/openapi documents all read the same data.

    pip download kubernetes-validate --no-deps -d /tmp/kv
    python tools/vendor_schemas.py /tmp/kv/kubernetes_validate-*.whl
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

VERSION = "v1.32.0"
OUT = Path(__file__).resolve().parent.parent / "hypernetes/api/schema/data/k8s-v1.32.json"

# Definitions the API serves or names in its paths; everything they reference comes along.
ROOTS = [
    *(
        f"io.k8s.api.core.v1.{k}{s}"
        for k in (
            "Namespace",
            "Pod",
            "Node",
            "Event",
            "Service",
            "Endpoints",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
        )
        for s in ("", "List")
    ),
    "io.k8s.api.core.v1.Binding",
    "io.k8s.api.coordination.v1.Lease",
    "io.k8s.api.coordination.v1.LeaseList",
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.apps.v1.DeploymentList",
    "io.k8s.api.apps.v1.ReplicaSet",
    "io.k8s.api.apps.v1.ReplicaSetList",
    "io.k8s.api.batch.v1.Job",
    "io.k8s.api.batch.v1.JobList",
    "io.k8s.api.autoscaling.v1.Scale",
    "io.k8s.api.policy.v1.Eviction",
    # CronJob, PodDisruptionBudget, LimitRange, ResourceQuota (issue 18)
    "io.k8s.api.batch.v1.CronJob",
    "io.k8s.api.batch.v1.CronJobList",
    "io.k8s.api.policy.v1.PodDisruptionBudget",
    "io.k8s.api.policy.v1.PodDisruptionBudgetList",
    *(f"io.k8s.api.core.v1.{k}{s}" for k in ("LimitRange", "ResourceQuota") for s in ("", "List")),
    # StatefulSet, DaemonSet, ControllerRevision, ReplicationController (issue 18, workloads)
    *(
        f"io.k8s.api.apps.v1.{k}{s}"
        for k in ("StatefulSet", "DaemonSet", "ControllerRevision")
        for s in ("", "List")
    ),
    "io.k8s.api.core.v1.ReplicationController",
    "io.k8s.api.core.v1.ReplicationControllerList",
    # HorizontalPodAutoscaler, v2 and v1 (issue 18, metrics)
    *(f"io.k8s.api.autoscaling.{v}.HorizontalPodAutoscaler{s}" for v in ("v2", "v1") for s in ("", "List")),
    # NetworkPolicy, Ingress, IngressClass (issue 18, networking)
    *(
        f"io.k8s.api.networking.v1.{k}{s}"
        for k in ("NetworkPolicy", "Ingress", "IngressClass")
        for s in ("", "List")
    ),
    # RBAC and APIService (issue 18, RBAC inside a tenant)
    *(
        f"io.k8s.api.rbac.v1.{k}{s}"
        for k in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
        for s in ("", "List")
    ),
    "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService",
    "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceList",
    # identity and access reviews (tenants issue)
    "io.k8s.api.authentication.v1.SelfSubjectReview",
    "io.k8s.api.authentication.v1beta1.SelfSubjectReview",
    "io.k8s.api.authentication.v1.TokenRequest",
    "io.k8s.api.authentication.v1.TokenReview",
    "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
    "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
    "io.k8s.api.authorization.v1.SubjectAccessReview",
    # persistent volumes (volumes issue)
    *(
        f"io.k8s.api.core.v1.{k}{s}"
        for k in ("PersistentVolume", "PersistentVolumeClaim")
        for s in ("", "List")
    ),
    "io.k8s.api.storage.v1.StorageClass",
    "io.k8s.api.storage.v1.StorageClassList",
    # RuntimeClass (pod overhead, issue 15)
    "io.k8s.api.node.v1.RuntimeClass",
    "io.k8s.api.node.v1.RuntimeClassList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
]

# Upstream's OpenAPI shapes for the special scalar types (the JSON-schema port spells them as oneOf).
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}
# Not kept: the port's `enum` pins on apiVersion/kind (upstream has none; we check them in code),
# `additionalProperties: false` (strictness is the validator's rule), union markers.
KEEP = {
    "description",
    "type",
    "format",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-group-version-kind",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-patch-strategy",
    "$ref",
}
PREFIX = "#/$defs/"


def convert(node: Any, refs: set[str]) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k not in KEEP:
            continue
        if k == "type":
            types = [t for t in (v if isinstance(v, list) else [v]) if t != "null"]
            if len(types) == 1:
                out["type"] = types[0]
        elif k == "$ref":
            name = v.removeprefix(PREFIX)
            refs.add(name)
            out["$ref"] = name
        elif k == "properties":
            out[k] = {p: convert(s, refs) for p, s in v.items()}
        elif k in ("items", "additionalProperties"):
            if isinstance(v, dict):
                out[k] = convert(v, refs)
        else:
            out[k] = v
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path)
    args = ap.parse_args()
    member = f"kubernetes_validate/kubernetes-json-schema/{VERSION}-local-strict/_definitions.json"
    with zipfile.ZipFile(args.wheel) as z:
        defs = json.loads(z.read(member))["$defs"]
    out: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        refs: set[str] = set()
        schema = convert(defs[name], refs)
        if name in SPECIAL:
            schema = {**SPECIAL[name], "description": schema.get("description", "")}
        out[name] = schema
        todo.extend(sorted(refs))
    doc = {
        "version": VERSION,
        "source": f"PyPI kubernetes-validate {args.wheel.name}, {VERSION}-local-strict",
        "definitions": dict(sorted(out.items())),
    }
    OUT.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"{OUT}: {len(out)} definitions, {OUT.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
