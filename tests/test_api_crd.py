"""CustomResourceDefinitions (issue 18): a CRD applied with the real kubectl is served at once
(discovery, OpenAPI for `kubectl explain`, Table columns, apply, scale, status), its objects are
pruned, defaulted and validated by its schema with upstream's field paths, the official client's
CustomObjectsApi works on them, a tenant's custom objects are its own and counted against its
quota, deleting the CRD deletes its objects, and a second API server on the same etcd serves a
CRD made through the first."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client as kc
import pytest
import yaml

from hypernetes.store import open_store
from hypernetes.store.interface import Store
from tests.support.apifixtures import have_kubectl, running_api
from tests.support.apiserver import ApiServerThread
from tests.support.etcd import shared_etcd
from tests.support.tenants import TenantWorld
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

GROUP = "stable.example.com"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["cronSpec"],
            "properties": {
                "cronSpec": {"type": "string", "pattern": r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$"},
                "image": {"type": "string", "maxLength": 16},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["Fast", "Slow"], "default": "Slow"},
                "ports": {
                    "type": "array",
                    "maxItems": 2,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "integer"},
                            "protocol": {"type": "string", "default": "TCP"},
                        },
                    },
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "target": {"x-kubernetes-int-or-string": True},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "note": {"type": "string", "nullable": True},
            },
        },
        "status": {
            "type": "object",
            "properties": {"replicas": {"type": "integer"}, "labelSelector": {"type": "string"}},
        },
    },
}


def crd(
    plural: str = "crontabs",
    kind: str = "CronTab",
    scope: str = "Namespaced",
    group: str = GROUP,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "shortNames": [plural[:2]]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": copy.deepcopy(schema or SCHEMA)},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.labelSelector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def cron(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "CronTab",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"cronSpec": "* * * * */5", **spec},
    }


def path(plural: str, namespace: str | None = None, name: str = "") -> str:
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"/apis/{GROUP}/v1{ns}/{plural}" + (f"/{name}" if name else "")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    yield from running_api(tmp_path_factory, tenancy=True)


@pytest.fixture(scope="module")
def world(api: ApiServerThread) -> Iterator[TenantWorld]:
    w = TenantWorld(api)
    for tenant in ("acme", "globex"):
        w.fresh_tenant(tenant, {"quota": {"count/customresources": "3"}} if tenant == "globex" else None)
        for role in ("member", "viewer"):
            w.tokens[f"{tenant}-{role}"] = w.create_user(f"{tenant}-{role}", tenant, role)
    yield w
    w.close()


@pytest.fixture(scope="module")
def http(world: TenantWorld) -> httpx.Client:
    return world.http("operator")


@pytest.fixture(scope="module")
def crontabs(api: ApiServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CronTab CRD, applied as a user would (kubectl apply -f)."""
    f = tmp_path_factory.mktemp("crd") / "crd.yaml"
    f.write_text(yaml.safe_dump(crd()))
    out = api.kubectl("apply", "-f", str(f)).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created" in out
    return f


def _causes(r: httpx.Response) -> list[tuple[str, str]]:
    assert r.status_code == 422, r.text
    return [(c["field"], c["message"]) for c in r.json()["details"]["causes"]]


# -- kubectl ---------------------------------------------------------------------------------------


def test_kubectl_serves_a_crd_at_once(api: ApiServerThread, crontabs: Path, tmp_path: Path) -> None:
    api.kubectl("wait", "--for=condition=established", "--timeout=10s", "crd/crontabs.stable.example.com")
    got = json.loads(api.kubectl("get", "crd", "crontabs.stable.example.com", "-o", "json").stdout)
    status = got["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "NamesAccepted": "True",
        "Established": "True",
    }
    assert (
        status["acceptedNames"]["kind"] == "CronTab" and status["acceptedNames"]["listKind"] == "CronTabList"
    )
    assert status["storedVersions"] == ["v1"]
    resources = api.kubectl("api-resources", f"--api-group={GROUP}", "--no-headers").stdout.split()
    assert resources == ["crontabs", "cr", f"{GROUP}/v1", "true", "CronTab"]

    obj = tmp_path / "ct.yaml"
    obj.write_text(yaml.safe_dump(cron("my-cron", image="cron:1", unknownField="dropped")))
    # kubectl asks for strict field validation: an unknown field is an error, as upstream
    refused = api.kubectl("apply", "-f", str(obj), check=False)
    assert refused.returncode != 0
    assert (
        'CronTab in version "v1" cannot be handled as a CronTab: strict decoding error: '
        'unknown field "spec.unknownField"' in refused.stderr
    )
    created = api.kubectl("apply", "--validate=false", "-f", str(obj)).stdout  # (Ignore: pruned)
    assert "crontab.stable.example.com/my-cron created" in created
    live = json.loads(api.kubectl("get", "cr", "my-cron", "-o", "json").stdout)
    # pruned (unknownField) and defaulted (replicas, mode) as upstream, stored that way
    assert live["spec"] == {"cronSpec": "* * * * */5", "image": "cron:1", "replicas": 1, "mode": "Slow"}
    table = api.kubectl("get", "crontabs").stdout.splitlines()
    assert table[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert table[1].split()[:7] == ["my-cron", "*", "*", "*", "*", "*/5", "1"]
    assert api.kubectl("get", "crontabs", "-o", "wide").stdout.splitlines()[0].split() == [
        "NAME",
        "SPEC",
        "REPLICAS",
        "MODE",
        "AGE",
    ]
    # apply again with a change: kubectl computes a merge patch (custom kinds have no strategy)
    obj.write_text(yaml.safe_dump(cron("my-cron", image="cron:2")))
    assert "configured" in api.kubectl("apply", "-f", str(obj)).stdout

    explained = api.kubectl("explain", "crontab.spec").stdout
    assert "cronSpec\t<string> -required-" in explained and "enum: Fast, Slow" in explained

    assert "scaled" in api.kubectl("scale", "crontab", "my-cron", "--replicas=3").stdout
    assert api.kubectl("get", "cr", "my-cron", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    status_patch = '{"status":{"replicas":2,"labelSelector":"app=cron"}}'
    api.kubectl("patch", "cr", "my-cron", "--subresource=status", "--type=merge", "-p", status_patch)
    scale = json.loads(api.kubectl("get", "cr", "my-cron", "--subresource=scale", "-o", "json").stdout)
    assert scale["kind"] == "Scale" and scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 2, "selector": "app=cron"}
    bad = api.kubectl("scale", "crontab", "my-cron", "--replicas=11", check=False)
    assert bad.returncode != 0 and "spec.replicas in body should be less than or equal to 10" in bad.stderr


def test_strategic_merge_patch_is_refused(http: httpx.Client, crontabs: Path) -> None:
    http.post(path("crontabs", "default"), json=cron("smp"))
    r = http.patch(
        path("crontabs", "default", "smp"),
        content=b'{"spec":{"image":"x"}}',
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in r.json()["message"]
    r = http.patch(
        path("crontabs", "default", "smp"),
        content=b'[{"op":"add","path":"/spec/image","value":"y"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 200 and r.json()["spec"]["image"] == "y"


# -- schema ------------------------------------------------------------------------------------------


def test_validation_reports_upstream_field_paths(http: httpx.Client, crontabs: Path) -> None:
    body = cron(
        "bad",
        cronSpec="every minute",
        image="x" * 17,
        replicas=0,
        mode="Medium",
        ports=[{"protocol": "UDP"}, {"port": "80"}, {"port": 3}],
        labels={"a": 1},
        target=1.5,
    )
    causes = _causes(http.post(path("crontabs", "default"), json=body))
    assert sorted(causes) == sorted(
        [
            (
                "spec.cronSpec",
                'Invalid value: "every minute": spec.cronSpec in body should match '
                + f"'{SCHEMA['properties']['spec']['properties']['cronSpec']['pattern']}'",
            ),
            ("spec.image", "Too long: may not be more than 16 bytes"),
            ("spec.replicas", "Invalid value: 0: spec.replicas in body should be greater than or equal to 1"),
            ("spec.mode", 'Unsupported value: "Medium": supported values: "Fast", "Slow"'),
            ("spec.ports", "Too many: 3: must have at most 2 items"),
            ("spec.ports[0].port", "Required value"),
            (
                "spec.ports[1].port",
                'Invalid value: "80": spec.ports[1].port in body must be of type integer: "string"',
            ),
            ("spec.labels.a", 'Invalid value: 1: spec.labels.a in body must be of type string: "integer"'),
            (
                "spec.target",
                'Invalid value: 1.5: spec.target in body must be of type integer or string: "number"',
            ),
        ]
    )
    r = http.post(path("crontabs", "default"), json={**cron("nospec"), "spec": {}})
    assert _causes(r) == [("spec.cronSpec", "Required value")]


def test_defaults_and_pruning_reach_nested_fields(http: httpx.Client, crontabs: Path) -> None:
    body = cron("nested", ports=[{"port": 80, "junk": 1}], extra={"kept": {"deep": True}}, note="n")
    r = http.post(path("crontabs", "default"), json=body)  # (no fieldValidation: Warn)
    assert r.status_code == 201, r.text
    assert r.headers.get_list("Warning") == ['299 - "unknown field \\"spec.ports[0].junk\\""']
    spec = r.json()["spec"]
    assert spec["ports"] == [{"port": 80, "protocol": "TCP"}]  # item defaulted, unknown pruned
    assert spec["extra"] == {"kept": {"deep": True}}  # x-kubernetes-preserve-unknown-fields
    # an update is defaulted and validated the same way
    r = http.patch(
        path("crontabs", "default", "nested"),
        json={"spec": {"ports": [{"port": 81}], "replicas": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert (
        r.json()["spec"]["ports"] == [{"port": 81, "protocol": "TCP"}] and r.json()["spec"]["replicas"] == 1
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            lambda c: c["spec"].update(group="example"),
            "spec.group",
            "should be a domain with at least one dot",
        ),
        (
            lambda c: c["metadata"].update(name="other.stable.example.com"),
            "metadata.name",
            "must be spec.names.plural",
        ),
        (
            lambda c: c["spec"]["versions"].append({**c["spec"]["versions"][0], "name": "v2"}),
            "spec.versions",
            "must have exactly one version marked as storage version",
        ),
        (
            lambda c: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].pop("type"),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
            "Required value: must not be empty for specified object fields",
        ),
        (
            lambda c: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
                "properties"
            ]["replicas"].update(default=20),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].default",
            "should be less than or equal to 10",
        ),
        (lambda c: c["spec"].update(scope="Global"), "spec.scope", 'Unsupported value: "Global"'),
        (
            lambda c: c["spec"]["versions"][0].pop("schema"),
            "spec.versions[0].schema.openAPIV3Schema",
            "Required value: schemas are required",
        ),
        # apiextensions validation.go, message for message
        (
            lambda c: c["spec"]["versions"].append({**c["spec"]["versions"][0], "storage": False}),
            "spec.versions",
            "must contain unique version names",
        ),
        (
            lambda c: c["spec"]["names"].update(kind="Cron_Tab"),
            "spec.names.kind",
            'Invalid value: "Cron_Tab": may have mixed case, but should otherwise match: a DNS-1035 label',
        ),
        (
            lambda c: c["spec"]["versions"][0]["additionalPrinterColumns"][0].update(type="timestamp"),
            "spec.versions[0].additionalPrinterColumns[0].type",
            'Invalid value: "timestamp": must be one of boolean,date,integer,number,string',
        ),
        (
            lambda c: c["spec"]["versions"][0]["additionalPrinterColumns"][0].pop("jsonPath"),
            "spec.versions[0].additionalPrinterColumns[0].JSONPath",
            "Required value",
        ),
        (
            lambda c: c["spec"]["versions"][0]["subresources"]["scale"].update(
                specReplicasPath="spec.replicas"
            ),
            "spec.versions[0].subresources.scale.specReplicasPath",
            'Invalid value: "spec.replicas": must be a simple json path starting with .',
        ),
        (
            lambda c: c["spec"]["versions"][0]["subresources"]["scale"].update(labelSelectorPath=".selector"),
            "spec.versions[0].subresources.scale.labelSelectorPath",
            "should be a json path under either .spec or .status",
        ),
        (
            lambda c: c["spec"].update(preserveUnknownFields=True),
            "spec.preserveUnknownFields",
            "cannot set to true, set x-preserve-unknown-fields to true in spec.versions[*].schema instead",
        ),
    ],
)
def test_crd_validation(http: httpx.Client, change: Any, field: str, message: str) -> None:
    body = crd("widgets", "Widget")
    change(body)
    causes = _causes(http.post(CRDS, json=body))
    assert any(f == field and message in m for f, m in causes), causes


def test_crd_required_paths_are_upstreams_once(http: httpx.Client) -> None:
    """A column's missing jsonPath is reported at upstream's internal path (JSONPath), and each
    Required once, though the v1 schema also requires them."""
    body = crd("gadgets", "Gadget")
    body["spec"]["versions"][0]["additionalPrinterColumns"][0].pop("jsonPath")
    body["spec"]["versions"][0]["subresources"]["scale"].pop("specReplicasPath")
    assert sorted(_causes(http.post(CRDS, json=body))) == [
        ("spec.versions[0].additionalPrinterColumns[0].JSONPath", "Required value"),
        ("spec.versions[0].subresources.scale.specReplicasPath", "Required value"),
    ]


def test_crd_update_rules(http: httpx.Client) -> None:
    """validateCustomResourceDefinitionSpecUpdate and ValidateCustomResourceDefinitionStoredVersions:
    scope and kind are fixed once established; a version once stored stays listed."""
    r = http.post(CRDS, json=crd("shifts", "Shift"))
    assert r.status_code == 201, r.text
    try:
        cur = r.json()
        moved = copy.deepcopy(cur)
        moved["spec"]["scope"] = "Cluster"
        moved["spec"]["names"]["kind"] = "Drift"
        causes = _causes(http.put(f"{CRDS}/shifts.{GROUP}", json=moved))
        assert ("spec.scope", 'Invalid value: "Cluster": field is immutable') in causes, causes
        assert ("spec.names.kind", 'Invalid value: "Drift": field is immutable') in causes, causes
        v2 = {**copy.deepcopy(cur["spec"]["versions"][0]), "name": "v2"}
        cur["spec"]["versions"][0]["storage"] = False
        cur["spec"]["versions"].append(v2)
        r = http.put(f"{CRDS}/shifts.{GROUP}", json=cur)
        assert r.status_code == 200 and r.json()["status"]["storedVersions"] == ["v1", "v2"], r.text
        cur = r.json()
        cur["spec"]["versions"] = cur["spec"]["versions"][1:]
        assert _causes(http.put(f"{CRDS}/shifts.{GROUP}", json=cur)) == [
            (
                "status.storedVersions[0]",
                'Invalid value: "v1": missing from spec.versions; v1 was previously a storage version, and '
                "must remain in spec.versions until a storage migration ensures no data remains persisted "
                "in v1 and removes v1 from status.storedVersions",
            )
        ]
    finally:
        http.delete(f"{CRDS}/shifts.{GROUP}")


def test_crd_may_not_take_a_builtin_group(http: httpx.Client) -> None:
    causes = _causes(http.post(CRDS, json=crd("widgets", "Widget", group="apps.k8s.io")))
    assert ("metadata.annotations[api-approved.kubernetes.io]") in [f for f, _ in causes]
    causes = _causes(http.post(CRDS, json=crd("widgets", "Widget", group="hypernetes.io")))
    assert ("spec.group", 'Invalid value: "hypernetes.io": is the group of built-in kinds') in causes


# -- the official client ---------------------------------------------------------------------------


def test_custom_objects_api(world: TenantWorld, crontabs: Path) -> None:
    objs: Any = kc.CustomObjectsApi(world.api.python_client())
    args = (GROUP, "v1", "default", "crontabs")
    created = objs.create_namespaced_custom_object(*args, cron("py", image="py:1"))
    assert created["spec"]["replicas"] == 1 and created["metadata"]["generation"] == 1
    assert objs.get_namespaced_custom_object(*args, "py")["spec"]["image"] == "py:1"
    assert "py" in [o["metadata"]["name"] for o in objs.list_namespaced_custom_object(*args)["items"]]
    listed = objs.list_cluster_custom_object(GROUP, "v1", "crontabs")
    assert listed["kind"] == "CronTabList" and listed["apiVersion"] == f"{GROUP}/v1"
    patched = objs.patch_namespaced_custom_object(*args, "py", {"spec": {"image": "py:2"}})
    assert patched["spec"]["image"] == "py:2" and patched["metadata"]["generation"] == 2
    # the status subresource changes status only, and the main resource cannot change status
    st = objs.patch_namespaced_custom_object_status(
        *args, "py", {"status": {"replicas": 1}, "spec": {"image": "no"}}
    )
    assert (
        st["status"] == {"replicas": 1}
        and st["spec"]["image"] == "py:2"
        and st["metadata"]["generation"] == 2
    )
    replaced = objs.replace_namespaced_custom_object(*args, "py", {**st, "status": {"replicas": 9}})
    assert replaced["status"] == {"replicas": 1}
    scale = objs.patch_namespaced_custom_object_scale(*args, "py", {"spec": {"replicas": 4}})
    assert scale["spec"]["replicas"] == 4 and scale["status"]["replicas"] == 1
    objs.delete_namespaced_custom_object(*args, "py")
    with pytest.raises(kc.ApiException) as e:
        objs.get_namespaced_custom_object(*args, "py")
    assert e.value.status == 404


def test_watch_of_custom_resources(http: httpx.Client, crontabs: Path) -> None:
    rv = http.get(path("crontabs", "default")).json()["metadata"]["resourceVersion"]
    seen: list[tuple[str, str]] = []

    def watch() -> None:
        with http.stream(
            "GET", path("crontabs", "default"), params={"watch": "1", "resourceVersion": rv}
        ) as r:
            for line in r.iter_lines():
                ev = json.loads(line)
                seen.append((ev["type"], ev["object"]["metadata"]["name"]))
                if ev["type"] == "DELETED":
                    return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    assert http.post(path("crontabs", "default"), json=cron("watched")).status_code == 201
    r = http.patch(
        path("crontabs", "default", "watched"),
        json={"spec": {"image": "w"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200
    assert http.delete(path("crontabs", "default", "watched")).status_code == 200
    t.join(15)
    assert seen == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


# -- tenancy -------------------------------------------------------------------------------------------


def test_tenants_own_their_custom_objects(world: TenantWorld, crontabs: Path) -> None:
    acme, globex = world.http("acme-member"), world.http("globex-member")
    assert acme.post(path("crontabs", "acme-a"), json=cron("mine", "acme-a")).status_code == 201
    assert world.http("acme-viewer").get(path("crontabs", "acme-a", "mine")).status_code == 200
    assert world.http("acme-viewer").delete(path("crontabs", "acme-a", "mine")).status_code == 403
    # another tenant: refused by name, and its lists show only its own
    assert globex.get(path("crontabs", "acme-a", "mine")).status_code == 403
    assert globex.post(path("crontabs", "acme-a"), json=cron("theirs", "acme-a")).status_code == 403
    assert globex.delete(path("crontabs", "acme-a", "mine")).status_code == 403
    assert globex.post(path("crontabs", "globex-a"), json=cron("g", "globex-a")).status_code == 201
    assert world.names("globex-member", path("crontabs")) == {"globex-a/g"}
    assert world.names("acme-member", path("crontabs")) == {"acme-a/mine"}
    # a tenant's operator writes its objects' status
    r = acme.patch(
        path("crontabs", "acme-a", "mine") + "/status",
        json={"status": {"replicas": 1}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    # the kubectl view of it
    proc = world.kubectl("globex-member", "get", "crontabs", "-n", "acme-a")
    assert proc.returncode != 0 and "forbidden" in proc.stderr


def test_tenants_cannot_create_crds(world: TenantWorld) -> None:
    for who in ("acme-admin", "acme-member"):
        r = world.http(who).post(CRDS, json=crd("gadgets", "Gadget"))
        assert r.status_code == 403, r.text
    assert world.http("acme-member").get(CRDS).status_code == 200  # which kinds exist: readable


def test_cluster_scoped_custom_objects_are_operators(world: TenantWorld, http: httpx.Client) -> None:
    assert http.post(CRDS, json=crd("clusterthings", "ClusterThing", scope="Cluster")).status_code == 201

    def thing(name: str) -> dict[str, Any]:
        return {**cron(name), "kind": "ClusterThing", "metadata": {"name": name}}

    assert http.post(path("clusterthings"), json=thing("ct1")).status_code == 201
    admin = world.http("acme-admin")
    assert admin.get(path("clusterthings", None, "ct1")).status_code == 403
    assert admin.post(path("clusterthings"), json=thing("ct2")).status_code == 403


def test_custom_objects_count_against_the_tenant_quota(world: TenantWorld, crontabs: Path) -> None:
    globex = world.http("globex-member")
    have = len(world.names("globex-member", path("crontabs")))
    for i in range(3 - have):
        assert globex.post(path("crontabs", "globex-a"), json=cron(f"q{i}", "globex-a")).status_code == 201
    r = globex.post(path("crontabs", "globex-a"), json=cron("over", "globex-a"))
    assert r.status_code == 403, r.text
    assert (
        'exceeded quota of tenant "globex": count/customresources: requested 1, used 3, limited 3'
        in r.json()["message"]
    )
    tenant = world.op("GET", "/apis/hypernetes.io/v1/tenants/acme")
    assert tenant["spec"]["quota"]["count/customresources"] == "1000"  # every tenant is limited


def test_printer_columns_as_the_tableconvertor(http: httpx.Client) -> None:
    """apiextensions' tableconvertor: a column without description is described by its path; a
    string column prints other JSON as Go's fmt (the JSONPath printer); a date that is not one
    is <invalid>."""
    body = crd("gizmos", "Gizmo")
    body["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "Ports", "type": "string", "jsonPath": ".spec.ports"},
        {"name": "When", "type": "date", "jsonPath": ".spec.cronSpec"},
        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "description": "The image."},
    ]
    assert http.post(CRDS, json=body).status_code == 201
    try:
        gizmo = {**cron("g", ports=[{"port": 80}], image="busybox"), "kind": "Gizmo"}
        assert http.post(path("gizmos", "default"), json=gizmo).status_code == 201
        table = http.get(
            path("gizmos", "default"), headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
        ).json()
        described = [(c["name"], c["description"]) for c in table["columnDefinitions"][1:]]
        assert described == [
            ("Ports", "Custom resource definition column (in JSONPath format): .spec.ports"),
            ("When", "Custom resource definition column (in JSONPath format): .spec.cronSpec"),
            ("Image", "The image."),
        ]
        assert table["rows"][0]["cells"] == ["g", "[map[port:80 protocol:TCP]]", "<invalid>", "busybox"]
    finally:
        http.delete(f"{CRDS}/gizmos.{GROUP}")


def test_deleting_a_crd_deletes_its_objects(api: ApiServerThread, http: httpx.Client) -> None:
    assert http.post(CRDS, json=crd("doomed", "Doomed")).status_code == 201
    for ns in ("default", "kube-public"):
        body = {**cron("d", ns), "kind": "Doomed"}
        assert http.post(path("doomed", ns), json=body).status_code == 201
    held = {**cron("held"), "kind": "Doomed"}
    held["metadata"]["finalizers"] = ["example.com/cleanup"]
    assert http.post(path("doomed", "default"), json=held).status_code == 201
    assert http.delete(f"{CRDS}/doomed.{GROUP}").status_code == 200
    # an object with a finalizer is marked deleted and waited for; its controller finishes it
    held_path = path("doomed", "default", "held")
    wait_for(
        lambda: http.get(held_path).json()["metadata"].get("deletionTimestamp"), what="held marked deleted"
    )
    assert http.get(f"{CRDS}/doomed.{GROUP}").status_code == 200  # (still there: its objects are not gone)
    assert http.get(path("doomed", "default", "d")).status_code == 404
    r = http.patch(
        held_path,
        json={"metadata": {"finalizers": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    wait_for(lambda: http.get(f"{CRDS}/doomed.{GROUP}").status_code == 404, what="the CRD gone")
    assert http.get(path("doomed")).status_code == 404

    async def keys(store: Store) -> int:
        return await store.count(f"/registry/{GROUP}/doomed/")

    assert api.call(keys(api.server.store)) == 0
    # made again, it starts empty
    assert http.post(CRDS, json=crd("doomed", "Doomed")).status_code == 201
    assert http.get(path("doomed")).json()["items"] == []


# -- several API servers -----------------------------------------------------------------------------


def test_a_second_apiserver_on_the_same_etcd_serves_a_new_crd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"{shared_etcd(request).url}?prefix=/crd-{id(request)}&compaction-interval=0"

    async def factory() -> Store:
        return open_store(url)

    a = ApiServerThread(tmp_path_factory.mktemp("a"), store_factory=factory).start()
    b = ApiServerThread(tmp_path_factory.mktemp("b"), store_factory=factory).start()
    try:
        ha = httpx.Client(
            base_url=a.url, verify=str(a.ca.ca_cert), headers={"Authorization": f"Bearer {a.token}"}
        )
        hb = httpx.Client(
            base_url=b.url, verify=str(b.ca.ca_cert), headers={"Authorization": f"Bearer {b.token}"}
        )
        assert hb.get(f"/apis/{GROUP}/v1").status_code == 404
        assert ha.post(CRDS, json=crd()).status_code == 201
        # through b's watch of the CRDs, with no restart
        wait_for(lambda: hb.get(f"/apis/{GROUP}/v1").status_code == 200, timeout=10, what="b serves the CRD")
        assert hb.post(path("crontabs", "default"), json=cron("via-b")).status_code == 201
        assert ha.get(path("crontabs", "default", "via-b")).json()["spec"]["replicas"] == 1
        assert b.kubectl("get", "crontabs", "-o", "name").stdout.split() == [
            "crontab.stable.example.com/via-b"
        ]
        assert ha.delete(f"{CRDS}/crontabs.{GROUP}").status_code == 200
        wait_for(lambda: hb.get(f"/apis/{GROUP}/v1").status_code == 404, timeout=10, what="b stops serving")
        ha.close()
        hb.close()
    finally:
        b.stop()
        a.stop()


def test_versions_in_upstream_priority_and_deprecation_warnings(http: httpx.Client) -> None:
    body = crd("gizmos", "Gizmo")
    v1 = body["spec"]["versions"][0]
    beta = {**copy.deepcopy(v1), "name": "v1beta1", "storage": False, "deprecated": True}
    alpha = {**copy.deepcopy(v1), "name": "v1alpha1", "storage": False}
    body["spec"]["versions"] = [alpha, beta, v1]
    assert http.post(CRDS, json=body).status_code == 201
    group = http.get(f"/apis/{GROUP}").json()
    assert group["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1", "v1alpha1"]
    r = http.post(
        f"/apis/{GROUP}/v1beta1/namespaces/default/gizmos",
        json={**cron("old"), "kind": "Gizmo", "apiVersion": f"{GROUP}/v1beta1"},
    )
    assert r.status_code == 201, r.text
    assert r.headers.get_list("Warning") == [f'299 - "{GROUP}/v1beta1 Gizmo is deprecated"']
    assert not http.get(f"/apis/{GROUP}/v1/namespaces/default/gizmos").headers.get_list("Warning")
    # stored in v1beta1, served in each version's own apiVersion, and updated through v1
    old_path = f"/apis/{GROUP}/v1/namespaces/default/gizmos/old"
    assert http.get(old_path).json()["apiVersion"] == f"{GROUP}/v1"
    assert http.get(f"/apis/{GROUP}/v1/gizmos").json()["items"][0]["apiVersion"] == f"{GROUP}/v1"
    assert http.get(old_path.replace("/v1/", "/v1beta1/")).json()["apiVersion"] == f"{GROUP}/v1beta1"
    r = http.patch(
        old_path, json={"spec": {"image": "new"}}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert r.status_code == 200 and r.json()["apiVersion"] == f"{GROUP}/v1", r.text
    with http.stream(
        "GET", f"/apis/{GROUP}/v1/namespaces/default/gizmos", params={"watch": "1", "timeoutSeconds": "1"}
    ) as w:
        events = [json.loads(line) for line in w.iter_lines() if line]
    assert [(e["type"], e["object"]["apiVersion"]) for e in events] == [("ADDED", f"{GROUP}/v1")]


def test_a_newer_crd_claiming_a_kind_in_use_is_not_served(http: httpx.Client) -> None:
    assert http.post(CRDS, json=crd("alphas", "Alpha")).status_code == 201
    betas = crd("betas", "Alpha")
    betas["spec"]["names"]["singular"] = "beta"
    assert http.post(CRDS, json=betas).status_code == 201  # valid on its own

    def conditions() -> dict[str, tuple[str, str]]:
        got = http.get(f"{CRDS}/betas.{GROUP}").json()
        return {c["type"]: (c["status"], c["reason"]) for c in got["status"]["conditions"]}

    wait_for(lambda: conditions()["NamesAccepted"] == ("False", "KindConflict"), what="the conflict")
    assert conditions()["Established"] == ("False", "NotAccepted")
    assert http.get(path("betas", "default")).status_code == 404
    assert http.get(path("alphas", "default")).status_code == 200
    # the older one goes: the newer one's names are accepted and it is served
    assert http.delete(f"{CRDS}/alphas.{GROUP}").status_code == 200
    wait_for(lambda: http.get(path("betas", "default")).status_code == 200, what="betas served")
    assert conditions() == {
        "NamesAccepted": ("True", "NoConflicts"),
        "Established": ("True", "InitialNamesAccepted"),
    }


def test_server_side_apply_of_custom_objects(api: ApiServerThread, crontabs: Path) -> None:
    first = yaml.safe_dump(cron("ssa", image="one"))
    assert "serverside-applied" in api.kubectl("apply", "--server-side", "-f", "-", input=first).stdout
    second = yaml.safe_dump(cron("ssa", image="two"))
    refused = api.kubectl(
        "apply", "--server-side", "--field-manager=other", "-f", "-", input=second, check=False
    )
    assert (
        refused.returncode != 0 and "conflict" in refused.stderr.lower() and ".spec.image" in refused.stderr
    )
    forced = ("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-")
    assert "serverside-applied" in api.kubectl(*forced, input=second).stdout
    live = json.loads(api.kubectl("get", "cr", "ssa", "-o", "json", "--show-managed-fields").stdout)
    assert live["spec"]["image"] == "two" and live["spec"]["replicas"] == 1  # defaulted on apply too
    owners = {m["manager"]: m["fieldsV1"]["f:spec"] for m in live["metadata"]["managedFields"]}
    assert "f:image" in owners["other"] and "f:image" not in owners["kubectl"]


def test_openapi_documents_of_custom_kinds(http: httpx.Client, crontabs: Path) -> None:
    index = http.get("/openapi/v3").json()["paths"]
    url = index[f"apis/{GROUP}/v1"]["serverRelativeURL"]
    r = http.get(url)
    assert r.status_code == 200 and r.headers.get("Cache-Control") == "public, immutable"
    doc = r.json()
    component = doc["components"]["schemas"]["com.example.stable.v1.CronTab"]
    assert component["x-kubernetes-group-version-kind"] == [
        {"group": GROUP, "kind": "CronTab", "version": "v1"}
    ]
    assert component["properties"]["spec"]["properties"]["mode"]["enum"] == ["Fast", "Slow"]
    patch = doc["paths"][f"/apis/{GROUP}/v1/namespaces/{{namespace}}/crontabs/{{name}}"]["patch"]
    assert set(patch["requestBody"]["content"]) == {
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    }
    assert patch["operationId"] == "patchStableExampleComV1NamespacedCronTab"
    v2 = http.get("/openapi/v2", headers={"Accept": "application/json"}).json()
    assert "com.example.stable.v1.CronTabList" in v2["definitions"]
    assert f"/apis/{GROUP}/v1/crontabs" in v2["paths"]
