"""Unit tests of the API layer's pure parts: selectors, the protobuf decoder, deletion plans,
managedFields bookkeeping, the OpenAPI v2 protobuf encoder, and the watch cache's fan-out."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from hypernetes.api import apply, deletion, openapiv2pb, protobuf
from hypernetes.api.selectors import parse_field_selector, parse_label_selector
from hypernetes.api.status import ApiError
from hypernetes.api.watch import WatchCaches
from tests.support.memstore import MemoryStore

# -- selectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("tier in (a, b)", {"tier": "b"}, True),
        ("tier notin (a,b)", {"tier": "b"}, False),
        ("tier notin (a,b)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,tier in (a,b),!gone", {"app": "web", "tier": "a"}, True),
        ("example.com/role=x", {"example.com/role": "x"}, True),
        ("", {"anything": "1"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], match: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is match


@pytest.mark.parametrize("bad", ["app=", "=x", "app in (a", "a=b=c", "a,,b", "app=bad value!"])
def test_bad_label_selectors_are_400(bad: str) -> None:
    if bad == "app=":  # an empty value is allowed upstream
        assert parse_label_selector(bad).matches({"app": ""})
        return
    with pytest.raises(ApiError) as err:
        parse_label_selector(bad)
    assert err.value.code == 400


def test_field_selectors() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1", "hostNetwork": True},
        "status": {"phase": "Running"},
    }
    assert parse_field_selector("spec.nodeName=n1,status.phase!=Pending", "", "Pod").matches(pod)
    assert parse_field_selector("spec.hostNetwork=true", "", "Pod").matches(pod)
    assert not parse_field_selector("metadata.name==q", "", "Pod").matches(pod)
    assert parse_field_selector("spec.nodeName=", "", "Pod").matches({"metadata": {}})  # unscheduled
    ev = {
        "metadata": {"name": "e"},
        "involvedObject": {"name": "p", "uid": "u"},
        "source": {"component": "k"},
    }
    sel = parse_field_selector("involvedObject.name=p,involvedObject.uid=u,source=k", "", "Event")
    assert sel.matches(ev)
    with pytest.raises(ApiError) as err:
        parse_field_selector("spec.nodeName=x", "", "ConfigMap")
    assert err.value.code == 400 and "field label not supported" in err.value.message
    assert parse_field_selector("metadata.name=a", "", "ConfigMap").exact_name() == "a"


# -- protobuf ------------------------------------------------------------------------------------


def _pb_str(num: int, s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return bytes([num << 3 | 2, len(b)]) + b


def test_protobuf_namespace_envelope() -> None:
    meta = _pb_str(1, "team-a") + _pb_str(11, _pb_str(1, "k") + _pb_str(2, "v"))
    raw = _pb_str(1, meta) + _pb_str(2, b"") + _pb_str(3, b"")
    unknown = _pb_str(1, _pb_str(1, "v1") + _pb_str(2, "Namespace")) + _pb_str(2, raw) + _pb_str(3, "")
    obj = protobuf.decode_protobuf(protobuf.MAGIC + unknown)
    assert obj == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"k": "v"}},
        "spec": {},
        "status": {},
    }


def test_protobuf_rejects_unknown_kinds_and_garbage() -> None:
    unknown = _pb_str(1, _pb_str(1, "v1") + _pb_str(2, "Pod")) + _pb_str(2, b"")
    with pytest.raises(ApiError) as err:
        protobuf.decode_protobuf(protobuf.MAGIC + unknown)
    assert err.value.code == 415
    for garbage in (b"nope", protobuf.MAGIC + b"\x0a\xff", protobuf.MAGIC + b"\x0f"):
        with pytest.raises(ApiError) as err:
            protobuf.decode_protobuf(garbage)
        assert err.value.code in (400, 415)


# -- deletion ------------------------------------------------------------------------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _pod(**spec: object) -> dict[str, object]:
    return {"metadata": {"name": "p", "generation": 1}, "spec": {"containers": [], **spec}}


def test_pods_wait_for_their_node_agent() -> None:
    plan = deletion.plan("Pod", _pod(nodeName="n1"), deletion.DeleteOptions())
    assert not plan.remove and plan.obj["metadata"]["deletionGracePeriodSeconds"] == 30
    marked = plan.obj
    assert deletion.plan("Pod", marked, deletion.DeleteOptions(grace=0)).remove
    shorter = deletion.plan("Pod", marked, deletion.DeleteOptions(grace=5), NOW)
    assert shorter.obj["metadata"]["deletionGracePeriodSeconds"] == 5
    # unscheduled or finished pods have no VM to stop
    assert deletion.plan("Pod", _pod(), deletion.DeleteOptions()).remove
    done = {**_pod(nodeName="n1"), "status": {"phase": "Succeeded"}}
    assert deletion.plan("Pod", done, deletion.DeleteOptions()).remove


def test_propagation_policies_set_finalizers() -> None:
    cm = {"metadata": {"name": "c", "finalizers": ["x"]}}
    fg = deletion.plan("ConfigMap", cm, deletion.DeleteOptions(propagation="Foreground"))
    assert fg.obj["metadata"]["finalizers"] == ["x", "foregroundDeletion"]
    orphan = deletion.plan("ConfigMap", fg.obj, deletion.DeleteOptions(propagation="Orphan"))
    assert orphan.obj["metadata"]["finalizers"] == ["x", "orphan"]
    assert not deletion.finished("ConfigMap", orphan.obj)
    orphan.obj["metadata"]["finalizers"] = []
    assert deletion.finished("ConfigMap", orphan.obj)
    with pytest.raises(ApiError):
        deletion.parse_options({"propagationPolicy": "Sideways"}, {})


# -- managedFields -------------------------------------------------------------------------------


def test_field_sets_and_fields_v1_round_trip() -> None:
    obj = {
        "metadata": {"name": "x", "labels": {"a": "1"}},
        "spec": {
            "containers": [{"name": "web", "image": "i", "ports": [{"containerPort": 80}]}],
            "args": ["a", "b"],
        },
    }
    paths = apply.field_set(obj)
    v1 = apply.to_fields_v1(paths)
    assert v1["f:spec"]["f:containers"]['k:{"name":"web"}']["f:image"] == {}
    assert "." in v1["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert v1["f:spec"]["f:args"] == {}
    assert v1["f:metadata"] == {"f:labels": {"f:a": {}}}
    assert apply.from_fields_v1(v1) == paths
    p = ("f:spec", "f:containers", 'k:{"name":"web"}', "f:image")
    assert apply.human(p) == '.spec.containers[name="web"].image'
    assert apply.value_at(obj, p) == "i"


def test_updates_take_ownership_of_what_they_change() -> None:
    old = {"metadata": {"name": "x"}, "data": {"a": "1", "b": "1"}}
    apply.record_update(old, None, "alice", "v1")
    new = {"metadata": {**old["metadata"]}, "data": {"a": "2", "b": "1"}}
    apply.record_update(new, old, "bob", "v1")
    owners = {e["manager"]: apply.from_fields_v1(e["fieldsV1"]) for e in new["metadata"]["managedFields"]}
    assert owners == {"alice": {("f:data", "f:b")}, "bob": {("f:data", "f:a")}}


# -- OpenAPI v2 protobuf -----------------------------------------------------------------------------


def test_openapi_v2_protobuf_encodes_definitions_and_extensions() -> None:
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": {
            "/api/v1/pods": {
                "get": {
                    "operationId": "list",
                    "parameters": [{"name": "limit", "in": "query", "type": "integer", "uniqueItems": True}],
                    "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/x"}}},
                }
            }
        },
        "definitions": {
            "x": {
                "type": "object",
                "required": ["a"],
                "properties": {"a": {"type": "string"}, "n": {"type": "integer", "minimum": 0}},
                "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "X"}],
            }
        },
    }
    data = openapiv2pb.document(doc)
    fields = dict(protobuf._fields(data))
    assert fields[1] == b"2.0"
    defs = protobuf._fields(fields[9])  # type: ignore[arg-type]
    named = dict(protobuf._fields(defs[0][1]))  # type: ignore[arg-type]
    assert named[1] == b"x"
    schema = protobuf._fields(named[2])  # type: ignore[arg-type]
    vendor = next(v for n, v in schema if n == 31)
    ext = dict(protobuf._fields(vendor))  # type: ignore[arg-type]
    assert ext[1] == b"x-kubernetes-group-version-kind"
    assert json.loads(dict(protobuf._fields(ext[2]))[2]) == [{"group": "", "version": "v1", "kind": "X"}]  # type: ignore[arg-type]


# -- watch cache -------------------------------------------------------------------------------------


async def test_watch_cache_fans_out_one_store_watch_and_drops_slow_watchers() -> None:
    store = MemoryStore()
    caches = WatchCaches(store, queue_limit=5)
    watch_calls = 0
    real_watch = store.watch

    def counting(prefix: str, rev: int):  # type: ignore[no-untyped-def]
        nonlocal watch_calls
        watch_calls += 1
        return real_watch(prefix, rev)

    store.watch = counting  # type: ignore[method-assign]
    subs = [await caches.subscribe("/registry/configmaps/", 0) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert watch_calls == 1
    await store.create("/registry/configmaps/ns/a", b'{"metadata":{"name":"a"}}')
    await asyncio.sleep(0.05)
    assert all(len(s.queue) == 1 for s, _ in subs)
    fast = subs[0][0]
    for i in range(6):
        await fast.next_batch(0.1)  # this one keeps up
        await store.create(f"/registry/configmaps/ns/b{i}", b'{"metadata":{}}')
        await asyncio.sleep(0.01)
    assert not fast.closed
    assert subs[1][0].closed and subs[1][0].error is None  # 7 queued > 5: closed; its client re-watches
    for s, c in subs:
        caches.release(s, c)
    await caches.close()


# -- cluster CA ----------------------------------------------------------------------------------------


def test_cluster_ca_is_created_once_and_reissues_for_new_names(tmp_path: object) -> None:
    import ipaddress
    import stat
    from pathlib import Path

    from cryptography import x509

    from hypernetes.auth.ca import ensure_ca, write_kubeconfig

    d = Path(str(tmp_path)) / "pki"
    first = ensure_ca(d)
    cert = x509.load_pem_x509_certificate(first.server.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(first.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "admin.token").stat().st_mode) == 0o600
    again = ensure_ca(d)
    assert again.admin_token == first.admin_token
    assert again.server.cert.read_bytes() == first.server.cert.read_bytes()
    more = ensure_ca(d, hosts=["api.example.test", "10.1.2.3"])
    assert more.ca_cert.read_bytes() == first.ca_cert.read_bytes()
    san = (
        x509.load_pem_x509_certificate(more.server.cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert "api.example.test" in san.get_values_for_type(x509.DNSName)
    kc = Path(str(tmp_path)) / "admin.kubeconfig"
    write_kubeconfig(kc, "https://127.0.0.1:6443", more.ca_cert, more.admin_token)
    assert stat.S_IMODE(kc.stat().st_mode) == 0o600 and more.admin_token in kc.read_text()


# -- event expiry --------------------------------------------------------------------------------------


async def test_events_expire_after_their_ttl() -> None:
    from hypernetes.api import eventttl

    store = MemoryStore()
    old = {
        "metadata": {"name": "old", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "lastTimestamp": "2026-01-01T00:10:00Z",
    }
    recent = {
        "metadata": {"name": "recent", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "lastTimestamp": "2026-01-01T00:59:00Z",
    }
    for ev in (old, recent):
        await store.create(f"/registry/events/ns/{ev['metadata']['name']}", json.dumps(ev).encode())  # type: ignore[index]
    await store.create("/registry/configmaps/ns/old", json.dumps(old).encode())
    assert await eventttl.sweep(store, 3600, now=datetime(2026, 1, 1, 1, 30, tzinfo=UTC)) == 1
    left = await store.list("/registry/")
    assert [kv.key for kv in left.items] == ["/registry/configmaps/ns/old", "/registry/events/ns/recent"]
