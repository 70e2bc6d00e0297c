"""The registry (hypernetes/api/registry): every kind the server serves has one complete entry,
and what the server says about a kind (discovery, OpenAPI, Table) is what its entry says.

The completeness check is `entry_problems`; the tests at the bottom take one piece away from an
entry (or one path from the served OpenAPI) and check the problem is reported, so the check
itself cannot silently stop checking.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import ssl
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hypernetes.api import registry, schema
from hypernetes.api.registry import SUBRESOURCES, Kind, Printer
from hypernetes.api.schema import schemas
from hypernetes.api.schema.printers import Context
from hypernetes.api.tenancy import build_tenancy
from hypernetes.controllers import tenant
from hypernetes.objects import Obj
from tests.support.apifixtures import running_api
from tests.support.apiserver import ApiServerThread
from tests.support.memstore import MemoryStore

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
# how OpenAPI names the action of each verb ("watch" is the list operation's ?watch=true)
ACTIONS = {
    "create": "post",
    "get": "get",
    "list": "list",
    "watch": "list",
    "update": "put",
    "patch": "patch",
    "delete": "delete",
    "deletecollection": "deletecollection",
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)
POD_SPEC = "io.k8s.api.core.v1.PodSpec"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    yield from running_api(tmp_path_factory)


def get(api: ApiServerThread, path: str, accept: str = "application/json") -> Any:
    ctx = ssl.create_default_context(cafile=str(api.ca.ca_cert))
    req = urllib.request.Request(
        api.url + path, headers={"Accept": accept, "Authorization": f"Bearer {api.token}"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read())


@dataclasses.dataclass
class Served:
    """One kind as the server lists it in discovery, with its subresources' verbs."""

    group: str
    version: str
    resource: Obj
    subresources: dict[str, Obj]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.resource["name"])


@pytest.fixture(scope="module")
def served(api: ApiServerThread) -> dict[tuple[str, str, str], Served]:
    """Every kind in the legacy discovery documents (/api/v1, /apis/G/V), as kubectl reads them."""
    gvs = [("", v) for v in get(api, "/api")["versions"]]
    for g in get(api, "/apis")["groups"]:
        gvs += [(g["name"], v["version"]) for v in g["versions"]]
    out: dict[tuple[str, str, str], Served] = {}
    for group, version in gvs:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        resources = get(api, path)["resources"]
        for r in resources:
            if "/" not in r["name"]:
                s = Served(group, version, r, {})
                out[s.key] = s
        for r in resources:
            if "/" in r["name"]:
                parent, sub = r["name"].split("/")
                out[(group, version, parent)].subresources[sub] = r
    return out


@pytest.fixture(scope="module")
def openapi(api: ApiServerThread) -> dict[str, Obj]:
    """The served /openapi/v3 documents, by group-version ("v1", "apps/v1")."""
    docs = {}
    for path, entry in get(api, "/openapi/v3")["paths"].items():
        gv = path.removeprefix("apis/").removeprefix("api/")
        if "/" in path:
            docs[gv] = get(api, entry["serverRelativeURL"])
    return docs


def sample(kind: Kind) -> Obj:
    """A minimal object of `kind` as the server stores it: metadata and the kind's defaults."""
    meta: Obj = {"name": "sample", "uid": "0", "creationTimestamp": "2025-12-31T23:00:00Z"}
    if kind.namespaced:
        meta["namespace"] = "default"
    obj: Obj = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta}
    schema.apply_defaults(kind, obj)
    return obj


def _paths(kind: Kind) -> tuple[str, str]:
    prefix = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    base = prefix + ("/namespaces/{namespace}" if kind.namespaced else "")
    return f"{base}/{kind.plural}", f"{base}/{kind.plural}/{{name}}"


def _actions(path_item: Obj | None) -> dict[str, Obj]:
    """action -> operation of one OpenAPI path."""
    ops = [op for m, op in (path_item or {}).items() if m in ("get", "put", "post", "patch", "delete")]
    return {op["x-kubernetes-action"]: op for op in ops}


def _pod_specs(definition: str, path: str = "", seen: frozenset[str] = frozenset()) -> Iterator[str]:
    """The paths at which objects of `definition` hold a PodSpec (outside their status)."""
    node = schemas.definition(definition)
    for key, prop in (node.get("properties") or {}).items():
        ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
        here = f"{path}.{key}" if path else key
        if ref == POD_SPEC:
            yield here
        elif ref and ref not in seen and key != "status":
            yield from _pod_specs(ref, here, seen | {definition})


def entry_problems(kind: Kind, doc: Obj) -> list[str]:
    """What the entry of `kind` lacks, or where the OpenAPI document `doc` of its group-version
    disagrees with it. Empty when the kind is complete."""
    problems = []
    name = f"{kind.api_version} {kind.kind}"
    if kind.defaults is None:
        problems.append(f"{name}: no defaults (no_defaults if upstream defaults nothing)")
    if kind.validate is None:
        problems.append(f"{name}: no validation (schema_only if the schema walk is all)")
    if kind.definition not in schemas.definitions():
        problems.append(f"{name}: no OpenAPI definition {kind.definition}")
    elif not any(
        gvk == {"group": kind.group, "version": kind.version, "kind": kind.kind}
        for gvk in doc["components"]["schemas"]
        .get(kind.definition, {})
        .get("x-kubernetes-group-version-kind", [])
    ):
        problems.append(f"{name}: its OpenAPI schema is not in the served document with its GVK")
    if {"get", "list"} & set(kind.verbs):
        if kind.printer is None:
            problems.append(f"{name}: no printer (kubectl get would show the default columns)")
        else:
            cells = kind.printer.row(sample(kind), Context(NOW))
            if len(cells) != len(kind.printer.columns):
                problems.append(
                    f"{name}: its row has {len(cells)} cells for {len(kind.printer.columns)} columns"
                )
    for label, path in kind.field_selectors.items() if kind.definition in schemas.definitions() else ():
        node: Obj | None = {"$ref": kind.definition}
        for key in path.split("."):
            node = schemas.prop(node, key)
        if node is None:
            problems.append(f"{name}: field selector {label} reads {path}, which its schema does not have")
    if kind.definition in schemas.definitions():
        held = sorted(_pod_specs(kind.definition))
        if held != ([kind.pod_spec] if kind.pod_spec else []):
            problems.append(f"{name}: holds a pod spec at {held}, its entry says pod_spec={kind.pod_spec!r}")
    collection, item = _paths(kind)
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    have = {**_actions(doc["paths"].get(collection)), **_actions(doc["paths"].get(item))}
    for verb in kind.verbs:
        op = have.get(ACTIONS[verb])
        if op is None:
            problems.append(f"{name}: no OpenAPI operation for {verb}")
        elif op["x-kubernetes-group-version-kind"] != gvk:
            problems.append(f"{name}: the {verb} operation names {op['x-kubernetes-group-version-kind']}")
    for sub in kind.subresources:
        if sub not in SUBRESOURCES:
            problems.append(f"{name}: subresource {sub} is not described in registry/subresources.py")
            continue
        d = SUBRESOURCES[sub]
        ops = _actions(doc["paths"].get(f"{item}/{sub}"))
        want = {"connect"} if d.connect else {ACTIONS[v] for v in d.verbs}
        if set(ops) != want:
            problems.append(f"{name}: {sub} has OpenAPI actions {sorted(ops)}, its verbs want {sorted(want)}")
    return problems


# -- every served kind is complete, and the server says what its entry says ---------------------


def test_the_served_kinds_are_the_registry(served: dict[tuple[str, str, str], Served]) -> None:
    assert sorted(served) == sorted((k.group, k.version, k.plural) for k in registry.KINDS)


def test_every_served_kind_has_a_complete_entry(
    served: dict[tuple[str, str, str], Served], openapi: dict[str, Obj]
) -> None:
    problems = []
    for group, version, plural in served:
        kind = registry.kind_for(group, version, plural)
        assert kind is not None, f"served but not in the registry: {group}/{version} {plural}"
        problems += entry_problems(kind, openapi[kind.api_version])
    assert problems == []


@pytest.mark.parametrize("kind", registry.KINDS, ids=lambda k: f"{k.kind}.{k.api_version}")
def test_discovery_says_what_the_entry_says(
    kind: Kind, served: dict[tuple[str, str, str], Served], api: ApiServerThread
) -> None:
    s = served[(kind.group, kind.version, kind.plural)]
    r = s.resource
    assert (r["kind"], r["singularName"], r["namespaced"]) == (kind.kind, kind.singular, kind.namespaced)
    assert r["verbs"] == sorted(kind.verbs)
    assert r.get("shortNames", []) == list(kind.short_names)
    assert r.get("categories", []) == list(kind.categories)
    assert sorted(s.subresources) == sorted(kind.subresources)
    for sub, listed in s.subresources.items():
        d = SUBRESOURCES[sub]
        gvk = d.gvk(kind.group, kind.version, kind.kind)
        assert listed["verbs"] == list(d.verbs)
        assert listed["kind"] == gvk["kind"]
        assert (listed.get("group", kind.group), listed.get("version", kind.version)) == (
            gvk["group"],
            gvk["version"],
        )
    # aggregated discovery (what kubectl 1.30+ reads) lists the same
    agg = get(api, "/apis" if kind.group else "/api", accept=AGGREGATED)
    [group] = [g for g in agg["items"] if g["metadata"].get("name", "") == kind.group]
    [ver] = [v for v in group["versions"] if v["version"] == kind.version]
    [res] = [x for x in ver["resources"] if x["resource"] == kind.plural]
    assert res["verbs"] == sorted(kind.verbs)
    assert {x["subresource"]: x["verbs"] for x in res.get("subresources", [])} == {
        sub: list(SUBRESOURCES[sub].verbs) for sub in kind.subresources
    }


@pytest.mark.parametrize(
    "kind", [k for k in registry.KINDS if "list" in k.verbs], ids=lambda k: f"{k.kind}.{k.api_version}"
)
def test_table_columns_are_the_printer_columns(kind: Kind, api: ApiServerThread) -> None:
    """`kubectl get` (a list as a Table) shows the entry's columns, wide ones included."""
    prefix = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    table = get(api, f"{prefix}/{kind.plural}", accept=TABLE)
    assert kind.printer is not None
    assert [c["name"] for c in table["columnDefinitions"]] == [c.name for c in kind.printer.columns]
    assert [c["priority"] for c in table["columnDefinitions"]] == [c.priority for c in kind.printer.columns]


# -- the check above catches a missing piece ----------------------------------------------------


def _pod() -> Kind:
    pod = registry.kind_by_name("v1", "Pod")
    assert pod is not None
    return pod


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"defaults": None}, "v1 Pod: no defaults"),
        ({"validate": None}, "v1 Pod: no validation"),
        ({"printer": None}, "v1 Pod: no printer"),
        ({"definition": "io.k8s.api.core.v1.Pods"}, "v1 Pod: no OpenAPI definition"),
        ({"subresources": ("status", "scale")}, "v1 Pod: scale has OpenAPI actions []"),
        ({"subresources": ("status", "resize")}, "v1 Pod: subresource resize is not described"),
        ({"verbs": (*registry.CRUD, "proxy")}, "KeyError"),
        ({"field_selectors": {"spec.node": "spec.node"}}, "v1 Pod: field selector spec.node reads"),
        ({"pod_spec": None}, "v1 Pod: holds a pod spec at ['spec']"),
    ],
    ids=[
        "defaults",
        "validate",
        "printer",
        "definition",
        "subresource-path",
        "subresource",
        "verb",
        "field",
        "pod-spec",
    ],
)
def test_the_check_catches_a_piece_taken_from_an_entry(
    openapi: dict[str, Obj], change: Obj, problem: str
) -> None:
    broken = dataclasses.replace(_pod(), **change)
    try:
        found = entry_problems(broken, openapi["v1"])
    except KeyError:
        found = ["KeyError"]  # a verb the check does not know is no silent pass either
    assert any(p.startswith(problem) for p in found), found


def test_the_check_catches_a_printer_whose_row_and_columns_differ(openapi: dict[str, Obj]) -> None:
    pod = _pod()
    assert pod.printer is not None
    short = Printer(pod.printer.columns[:-1], pod.printer.row)
    found = entry_problems(dataclasses.replace(pod, printer=short), openapi["v1"])
    assert found == ["v1 Pod: its row has 9 cells for 8 columns"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/api/v1/namespaces/{namespace}/pods/{name}/log", "v1 Pod: log has OpenAPI actions []"),
        ("/api/v1/namespaces/{namespace}/pods/{name}", "v1 Pod: no OpenAPI operation for get"),
        ("/api/v1/namespaces/{namespace}/pods", "v1 Pod: no OpenAPI operation for create"),
    ],
)
def test_the_check_catches_a_path_missing_from_openapi(
    openapi: dict[str, Obj], path: str, problem: str
) -> None:
    assert entry_problems(_pod(), openapi["v1"]) == []
    doc = copy.deepcopy(openapi["v1"])
    del doc["paths"][path]
    found = entry_problems(_pod(), doc)
    assert any(p.startswith(problem) for p in found), found


# -- what rooms below the API keep about kinds agrees with the registry --------------------------


def test_tenant_admission_holds_every_pod_spec_the_registry_declares(tmp_path: Path) -> None:
    """Tenant admission (below the API, it cannot import the registry) is given the entries'
    pod_spec paths: a kind it did not know would let a tenant's pods skip pod policy."""
    tenancy, _ = build_tenancy(MemoryStore(), tmp_path, "admin-token")
    assert tenancy.admission.pod_specs == registry.POD_SPECS
    assert registry.POD_SPECS["Pod"] == "spec"


def test_quota_counts_served_kinds() -> None:
    """The object-count quotas (count/<resource>.<group>) name kinds as the registry serves them."""
    for c in tenant.COUNTED:
        kind = registry.kind_by_name(c.api_version, c.kind)
        assert kind is not None, c
        assert (kind.group, kind.plural, kind.namespaced) == (c.group, c.plural, c.namespaced)
