"""apply_patch: strategic merge patch in the shapes kubectl apply sends, JSON merge patch and
JSON patch (with property tests)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypernetes.api import schema
from hypernetes.api.schema.patch import json_equal, json_patch, merge_diff, merge_patch


def _kind(api_version: str, name: str) -> schema.Kind:
    k = schema.kind_by_name(api_version, name)
    assert k is not None
    return k


POD = _kind("v1", "Pod")
DEPLOY = _kind("apps/v1", "Deployment")
NS = _kind("v1", "Namespace")

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"


def live_pod() -> dict[str, Any]:
    p: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "finalizers": ["a/x"]},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}, {"containerPort": 443}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
                    "args": ["-a", "-b"],
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                },
                {"name": "log", "image": "busybox"},
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        },
    }
    schema.apply_defaults(POD, p)
    return p


def smp(obj: dict[str, Any], patch: dict[str, Any], kind: schema.Kind = POD) -> dict[str, Any]:
    return schema.apply_patch(kind, obj, json.dumps(patch).encode(), SMP)


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def test_kubectl_apply_update_shape() -> None:
    """The PATCH kubectl 1.32 sent in the transcript after changing the image and adding a label."""
    live = live_pod()
    patch = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"},
            "labels": {"tier": "front"},
        },
        "spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
            "containers": [{"image": "nginx:1.28", "name": "web"}],
        },
    }
    out = smp(live, patch)
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == "{}\n"
    web = by_name(out["spec"]["containers"])["web"]
    assert web["image"] == "nginx:1.28"
    assert web["ports"] == live["spec"]["containers"][0]["ports"]  # merged, not replaced
    assert [c["name"] for c in out["spec"]["containers"]] == ["web", "log"]
    assert live["spec"]["containers"][0]["image"] == "nginx:1.27"  # the input is not changed


def test_env_by_name_ports_by_container_port_and_deletes() -> None:
    out = smp(
        live_pod(),
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
                "containers": [
                    {
                        "name": "web",
                        "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
                        "env": [
                            {"name": "B", "value": "2"},
                            {"name": "C", "value": "3"},
                            {"name": "A", "$patch": "delete"},
                        ],
                        "ports": [{"containerPort": 443, "$patch": "delete"}, {"containerPort": 8080}],
                        "args": ["-c"],
                    }
                ],
            }
        },
    )
    web = out["spec"]["containers"][0]
    assert web["env"] == [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]
    assert [p["containerPort"] for p in web["ports"]] == [80, 8080]
    assert web["ports"][1] == {"containerPort": 8080}  # new items carry no directives
    assert web["args"] == ["-c"]  # lists without a merge strategy are replaced


def test_volume_retain_keys_switches_source() -> None:
    out = smp(
        live_pod(),
        {
            "spec": {
                "$setElementOrder/volumes": [{"name": "cache"}],
                "volumes": [
                    {"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "name": "cache"}
                ],
            }
        },
    )
    assert out["spec"]["volumes"] == [{"name": "cache", "configMap": {"name": "cfg"}}]


def test_deployment_strategy_retain_keys() -> None:
    d = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    schema.apply_defaults(DEPLOY, d)
    out = smp(
        d,
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}},
        DEPLOY,
    )
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    schema.apply_defaults(DEPLOY, out)
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert schema.validate(DEPLOY, out) == []


def test_primitive_lists_directives_and_nulls() -> None:
    live = live_pod()
    out = smp(live, {"metadata": {"finalizers": ["b/y", "a/x"], "labels": {"app": None}}})
    assert out["metadata"]["finalizers"] == ["a/x", "b/y"]  # merge strategy: union
    assert out["metadata"]["labels"] == {}
    out = smp(out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x"]}})
    assert out["metadata"]["finalizers"] == ["b/y"]
    out = smp(out, {"spec": {"containers": [{"name": "log", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["web"]
    out = smp(out, {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}})
    assert out["spec"]["containers"] == [{"name": "only", "image": "x"}]
    out = smp(out, {"spec": {"securityContext": {"$patch": "replace", "runAsUser": 1}}})
    assert out["spec"]["securityContext"] == {"runAsUser": 1}
    out = smp(out, {"spec": {"securityContext": {"$patch": "delete"}}})
    assert "securityContext" not in out["spec"]


def test_set_element_order_keeps_server_only_items_in_place() -> None:
    live = live_pod()
    live["spec"]["containers"].append({"name": "injected", "image": "proxy"})
    out = smp(live, {"spec": {"$setElementOrder/containers": [{"name": "log"}, {"name": "web"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["log", "web", "injected"]


def test_patch_errors() -> None:
    with pytest.raises(schema.PatchError, match="merge key"):
        smp(live_pod(), {"spec": {"containers": [{"image": "x"}]}})
    with pytest.raises(schema.PatchError):
        schema.apply_patch(POD, live_pod(), b"{not json", SMP)
    with pytest.raises(schema.PatchError, match="unsupported patch type"):
        schema.apply_patch(POD, live_pod(), b"{}", "text/plain")
    with pytest.raises(schema.PatchError, match="test operation failed"):
        schema.apply_patch(POD, live_pod(), b'[{"op":"test","path":"/metadata/name","value":"x"}]', JSONP)
    with pytest.raises(schema.PatchError, match="does not exist"):
        schema.apply_patch(POD, live_pod(), b'[{"op":"remove","path":"/spec/nope"}]', JSONP)


def test_merge_and_json_patch_as_kubectl_sends_them() -> None:
    out = schema.apply_patch(POD, live_pod(), b'{"metadata":{"labels":{"tier":"x"}}}', MERGE)
    assert out["metadata"]["labels"] == {"app": "web", "tier": "x"}
    out = schema.apply_patch(POD, out, b'{"spec":{"containers":[{"name":"c","image":"i"}]}}', MERGE)
    assert out["spec"]["containers"] == [{"name": "c", "image": "i"}]  # RFC 7386 replaces lists
    ops = [
        {"op": "test", "path": "/metadata/labels/tier", "value": "x"},
        {"op": "copy", "from": "/metadata/labels/tier", "path": "/metadata/labels/copy"},
        {"op": "move", "from": "/metadata/labels/copy", "path": "/metadata/labels/moved"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "j"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "d", "image": "k"}},
        {"op": "remove", "path": "/metadata/labels/app"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a~b/c": "1"}},
        {"op": "test", "path": "/metadata/annotations/a~0b~1c", "value": "1"},
    ]
    out = schema.apply_patch(POD, out, json.dumps(ops).encode(), JSONP)
    assert out["metadata"]["labels"] == {"tier": "x", "moved": "x"}
    assert [c["image"] for c in out["spec"]["containers"]] == ["j", "k"]


# -- properties --------------------------------------------------------------------------------

keys = st.text(alphabet="abcdef", min_size=1, max_size=3)
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(alphabet="xyz", max_size=3)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)
json_objects = st.dictionaries(keys, json_values, max_size=4)


def no_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: no_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [no_nulls(x) for x in v]
    return v


@settings(max_examples=150, deadline=None)
@given(json_objects, json_objects)
def test_merge_patch_of_diff_reproduces_target(a: dict[str, Any], b: dict[str, Any]) -> None:
    b = no_nulls(b)  # a merge patch cannot say "set to null"
    assert json_equal(merge_patch(a, merge_diff(a, b)), b)


@settings(max_examples=150, deadline=None)
@given(json_objects, json_objects)
def test_strategic_merge_of_schemaless_maps_is_merge_patch(a: dict[str, Any], p: dict[str, Any]) -> None:
    """Under annotations (a string map) and unknown fields SMP has no strategy: RFC 7386 applies."""
    p = {k: v for k, v in p.items() if not k.startswith("$")}
    obj = {"metadata": {"name": "n"}, "extra": a}
    out = schema.apply_patch(NS, obj, json.dumps({"extra": p}).encode(), SMP)
    want = merge_patch(a, no_nulls_in_lists(p))
    assert json_equal(out["extra"], want)


def no_nulls_in_lists(v: Any) -> Any:
    """New values from an SMP are stored without nulls anywhere (they mean absent)."""
    if isinstance(v, dict):
        return {
            k: (None if x is None else no_nulls(x) if isinstance(x, list) else no_nulls_in_lists(x))
            for k, x in v.items()
        }
    return v


names = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), unique=True, max_size=5)


@settings(max_examples=100, deadline=None)
@given(names, names, st.data())
def test_containers_merge_by_name(live_names: list[str], patch_names: list[str], data: st.DataObject) -> None:
    live = {
        "metadata": {"name": "p", "namespace": "d"},
        "spec": {"containers": [{"name": n, "image": "old", "tty": True} for n in live_names]},
    }
    images = {n: data.draw(st.text(alphabet="xyz", min_size=1, max_size=3)) for n in patch_names}
    patch = {"spec": {"containers": [{"name": n, "image": images[n]} for n in patch_names]}}
    out = smp(live, patch)
    got = by_name(out["spec"]["containers"])
    assert list(got) == live_names + [n for n in patch_names if n not in live_names]
    for n in live_names:
        assert got[n]["tty"] is True
        assert got[n]["image"] == images.get(n, "old")


json_paths = st.lists(keys, min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(json_objects, keys, json_values)
def test_json_patch_add_then_remove_is_identity(doc: dict[str, Any], key: str, value: Any) -> None:
    if key in doc:
        return
    added = json_patch(doc, [{"op": "add", "path": f"/{key}", "value": value}])
    assert json_equal(added[key], value)
    assert json_equal(json_patch(added, [{"op": "remove", "path": f"/{key}"}]), doc)


@settings(max_examples=150, deadline=None)
@given(json_objects.filter(bool), keys, st.data())
def test_json_patch_copy_move_test(doc: dict[str, Any], dest: str, data: st.DataObject) -> None:
    src = data.draw(st.sampled_from(sorted(doc)))
    dest = dest + "_"  # distinct from every source key (keys have no '_')
    copied = json_patch(
        doc,
        [
            {"op": "copy", "from": f"/{src}", "path": f"/{dest}"},
            {"op": "test", "path": f"/{dest}", "value": doc[src]},
        ],
    )
    assert json_equal(copied[dest], doc[src]) and json_equal(copied[src], doc[src])
    moved = json_patch(doc, [{"op": "move", "from": f"/{src}", "path": f"/{dest}"}])
    assert src not in moved and json_equal(moved[dest], doc[src])
    assert doc == copy.deepcopy(doc)  # input untouched


def test_json_patch_list_indexes() -> None:
    doc = {"l": [1, 2, 3]}
    assert json_patch(doc, [{"op": "add", "path": "/l/1", "value": 9}]) == {"l": [1, 9, 2, 3]}
    assert json_patch(doc, [{"op": "add", "path": "/l/3", "value": 9}]) == {"l": [1, 2, 3, 9]}
    assert json_patch(doc, [{"op": "replace", "path": "/l/0", "value": 0}]) == {"l": [0, 2, 3]}
    for bad in ("/l/4", "/l/01", "/l/-1"):
        with pytest.raises(schema.PatchError):
            json_patch(doc, [{"op": "replace", "path": bad, "value": 0}])
    assert json_equal(1, 1.0) and not json_equal(True, 1)
