"""The /openapi/v3 index and documents and /openapi/v2: what kubectl looks for."""

from __future__ import annotations

import json

import pytest

from hypernetes.api import schema
from hypernetes.api.schema.openapi import component


def test_index_lists_every_group_version_with_a_hash() -> None:
    idx = schema.openapi_v3_index()["paths"]
    assert set(idx) == {
        "api",
        "apis",
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/policy/v1",
        "apis/coordination.k8s.io/v1",
        "apis/authentication.k8s.io/v1",
        "apis/authentication.k8s.io/v1beta1",
        "apis/authorization.k8s.io/v1",
        "apis/hypernetes.io/v1",
        "apis/storage.k8s.io/v1",
        "apis/apiextensions.k8s.io/v1",
        "apis/rbac.authorization.k8s.io/v1",
        "apis/apiregistration.k8s.io/v1",
        "apis/networking.k8s.io/v1",
        "apis/autoscaling/v2",
        "apis/autoscaling/v1",
        "apis/metrics.k8s.io/v1beta1",
        "apis/node.k8s.io/v1",
    }
    for path, entry in idx.items():
        url = entry["serverRelativeURL"]
        assert url.startswith(f"/openapi/v3/{path}?hash=") and len(url.split("=")[1]) == 128


@pytest.mark.parametrize("k", [k for k in schema.KINDS if "patch" in k.verbs], ids=lambda k: k.kind)
def test_every_kind_has_a_patch_op_kubectl_delegates_validation_to(k: schema.Kind) -> None:
    doc = schema.openapi_v3(k)
    assert doc["openapi"].startswith("3.0")
    prefix = f"/apis/{k.group}/{k.version}" if k.group else f"/api/{k.version}"
    item = (
        f"{prefix}/namespaces/{{namespace}}/{k.plural}/{{name}}"
        if k.namespaced
        else f"{prefix}/{k.plural}/{{name}}"
    )
    patch = doc["paths"][item]["patch"]
    gvk = {"group": k.group, "version": k.version, "kind": k.kind}
    assert patch["x-kubernetes-group-version-kind"] == gvk
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    post = doc["paths"][item.rsplit("/", 1)[0]]["post"]
    assert any(p["name"] == "fieldValidation" for p in post["parameters"])
    comp = doc["components"]["schemas"][k.definition]
    assert gvk in comp["x-kubernetes-group-version-kind"]


def test_component_schemas_carry_merge_keys_and_resolve() -> None:
    doc = schema.openapi_v3("api/v1")
    comps = doc["components"]["schemas"]
    containers = comps["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert comps["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}
    ]
    text = json.dumps(doc)
    for ref in {r.split('"')[0] for r in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in comps, ref
    assert component("io.k8s.apimachinery.pkg.util.intstr.IntOrString")["format"] == "int-or-string"


def test_subresources_and_paths() -> None:
    doc = schema.openapi_v3("apis/apps/v1")
    scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
    assert scale["x-kubernetes-group-version-kind"]["kind"] == "Scale"
    assert "io.k8s.api.autoscaling.v1.Scale" in doc["components"]["schemas"]
    core = schema.openapi_v3("api/v1")["paths"]
    assert core["/api/v1/namespaces/{namespace}/pods/{name}/exec"]["get"]["x-kubernetes-action"] == "connect"
    assert "post" in core["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]
    assert "/api/v1/pods" in core and "/api/v1/nodes/{name}/status" in core
    assert schema.openapi_v3("api")["paths"] == {}
    with pytest.raises(KeyError):
        schema.openapi_v3("apis/extensions/v1beta1")


def test_openapi_v2() -> None:
    doc = schema.openapi_v2()
    assert doc["swagger"] == "2.0"
    patch = doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "batch", "version": "v1", "kind": "Job"}
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    for k in schema.KINDS:
        assert k.definition in doc["definitions"]
    assert (
        doc["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["$ref"]
        == "#/definitions/io.k8s.api.core.v1.PodSpec"
    )
