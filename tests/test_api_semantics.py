"""API semantics over real HTTPS requests: authentication and authorization, Status errors,
resourceVersion and generation, subresources, deletion (grace, finalizers, propagation),
dryRun, limit/continue, Table and metadata renderings, discovery and OpenAPI, server-side apply."""

from __future__ import annotations

import asyncio
import io
import json
import ssl
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from hypernetes.api.authn import UserInfo
from hypernetes.api.authz import Attributes, Decision, GroupAuthorizer
from hypernetes.api.client import ApiException
from hypernetes.objects import Obj
from tests.support.apifixtures import API_STORES, on_store, running_api
from tests.support.apiserver import ApiServerThread, async_client

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
CM = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module", params=API_STORES)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServerThread]:
    yield from running_api(tmp_path_factory, **on_store(request))


class Raw:
    """Plain HTTPS requests, to see status codes, headers and bodies as sent."""

    def __init__(self, api: ApiServerThread, token: str | None = None) -> None:
        self.api = api
        self.ctx = ssl.create_default_context(cafile=str(api.ca.ca_cert))
        self.token = api.token if token is None else token

    async def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ctype: str = "application/json",
        accept: str = "application/json",
        raw: bytes | None = None,
        stream: io.BytesIO | None = None,
    ) -> tuple[int, str, Any]:
        headers = {"Accept": accept, "Content-Type": ctype}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data: Any = raw if raw is not None else (json.dumps(body).encode() if body is not None else stream)
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ctx)) as s,
            s.request(method, self.api.url + path, data=data, headers=headers) as resp,
        ):
            text = await resp.text()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return resp.status, resp.headers.get("Content-Type", ""), parsed


def lines(body: Any) -> list[Obj]:
    """Watch events from a body Raw parsed (one event parses as JSON) or kept as text."""
    if isinstance(body, dict):
        return [body]
    return [json.loads(line) for line in body.splitlines()]


client = async_client


# -- authentication, authorization, errors -------------------------------------------------------


async def test_unauthenticated_is_401_status(api: ApiServerThread) -> None:
    for token in ("", "wrong"):
        code, _, body = await Raw(api, token)("GET", "/api/v1/namespaces")
        assert code == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    code, _, body = await Raw(api, "")("GET", "/healthz")
    assert code == 200 and body == "ok"
    code, _, body = await Raw(api, "")("GET", "/version")
    assert code == 200 and body["major"] == "1"


def test_forbidden_for_users_outside_the_allowed_groups(tmp_path_factory: pytest.TempPathFactory) -> None:
    users = {"bob-token": UserInfo("bob", groups=("tenants",))}
    for server in running_api(
        tmp_path_factory, authorizer=GroupAuthorizer(("system:masters",)), extra_users=users
    ):
        server.call(_forbidden(server))


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Attributes] = []

    async def authorize(self, attrs: Attributes) -> Decision:
        self.seen.append(attrs)
        return Decision(True)


def test_authorizer_sees_upstream_attributes(tmp_path_factory: pytest.TempPathFactory) -> None:
    rec = Recorder()
    for server in running_api(tmp_path_factory, authorizer=rec):
        server.call(_requests(Raw(server)))
    got = [
        (a.verb, a.resource_request, a.resource, a.subresource, a.namespace, a.name, a.path)
        for a in rec.seen
        if a.user.name == "admin"
    ]
    assert ("watch", True, "pods", "", "", "", "/api/v1/pods") in got
    assert ("get", False, "", "", "", "", "/apis/apps/v1") in got
    assert ("create", True, "pods", "exec", "default", "p", "/api/v1/namespaces/default/pods/p/exec") in got
    assert not any(a.path == "/api/v1/pods" and not a.resource_request for a in rec.seen)


async def _requests(raw: Raw) -> None:
    await raw("GET", "/api/v1/pods?watch=1&timeoutSeconds=0")
    await raw("GET", "/apis/apps/v1")
    await raw("GET", "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=1")


async def _forbidden(server: ApiServerThread) -> None:
    code, _, body = await Raw(server, "bob-token")("GET", "/api/v1/namespaces/default/pods")
    assert code == 403 and body["reason"] == "Forbidden"
    assert body["message"].startswith(
        'pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default"'
    )
    code, _, body = await Raw(server, "bob-token")("GET", "/api/v1/pods")
    assert code == 403 and body["message"].startswith(
        'pods is forbidden: User "bob" cannot list resource "pods" in API group "" at the cluster scope'
    )
    code, _, _ = await Raw(server, "bob-token")("GET", "/api")
    assert code == 403
    code, _, _ = await Raw(server)("GET", "/api/v1/namespaces/default/pods")
    assert code == 200


async def test_status_errors(api: ApiServerThread) -> None:
    raw = Raw(api)
    code, _, body = await raw("GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert code == 404 and body["details"] == {"name": "nope", "kind": "deployments", "group": "apps"}
    assert body["message"] == 'deployments.apps "nope" not found'
    code, _, body = await raw("GET", "/api/v1/namespaces/default/widgets")
    assert code == 404 and body["reason"] == "NotFound"
    code, _, body = await raw("POST", CM, raw=b"{not json")
    assert code == 400 and body["reason"] == "BadRequest"
    code, _, body = await raw("PATCH", CM + "/x", raw=b"{}", ctype="text/plain")
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    code, _, body = await raw("POST", CM + "/x", {"metadata": {"name": "x"}})
    assert code == 405 and body["reason"] == "MethodNotAllowed"
    code, _, body = await raw(
        "POST",
        "/api/v1/namespaces/default/pods",
        {"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}},
    )
    assert code == 422 and body["reason"] == "Invalid"
    assert {"reason": "FieldValueRequired", "field": "spec.containers[0].image"}.items() <= body["details"][
        "causes"
    ][0].items()
    code, _, body = await raw("POST", CM, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    assert code == 400 and "does not match the expected kind" in body["message"]


async def test_conflict_on_stale_resource_version(api: ApiServerThread) -> None:
    async with client(api) as c:
        cm = await c.create("v1", "configmaps", {"metadata": {"name": "cas"}, "data": {"a": "1"}}, "default")
        stale = json.loads(json.dumps(cm))
        cm["data"]["a"] = "2"
        fresh = await c.replace("v1", "configmaps", cm)
        assert int(fresh["metadata"]["resourceVersion"]) > int(cm["metadata"]["resourceVersion"])
        stale["data"]["a"] = "3"
        with pytest.raises(ApiException) as err:
            await c.replace("v1", "configmaps", stale)
        assert err.value.status == 409 and err.value.reason == "Conflict"
        assert "the object has been modified" in err.value.message
        # without a resourceVersion an update is unconditional
        del stale["metadata"]["resourceVersion"]
        assert (await c.replace("v1", "configmaps", stale))["data"] == {"a": "3"}


async def test_generation_uid_and_generate_name(api: ApiServerThread) -> None:
    async with client(api) as c:
        dep = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"generateName": "web-"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        }
        d = await c.create("apps/v1", "deployments", dep, "default")
        name = d["metadata"]["name"]
        assert name.startswith("web-") and len(name) == 9 and d["metadata"]["generation"] == 1
        d = await c.patch("apps/v1", "deployments", name, {"metadata": {"labels": {"x": "y"}}}, "default")
        assert d["metadata"]["generation"] == 1
        d = await c.patch("apps/v1", "deployments", name, {"spec": {"replicas": 5}}, "default")
        assert d["metadata"]["generation"] == 2
        s = await c.patch(
            "apps/v1", "deployments", name, {"status": {"replicas": 5}}, "default", subresource="status"
        )
        assert s["metadata"]["generation"] == 2 and s["status"]["replicas"] == 5
        # the main resource ignores status; the status subresource ignores everything else
        d = await c.patch("apps/v1", "deployments", name, {"status": {"replicas": 1}}, "default")
        assert d["status"]["replicas"] == 5
        s = await c.patch(
            "apps/v1", "deployments", name, {"spec": {"replicas": 1}}, "default", subresource="status"
        )
        assert s["spec"]["replicas"] == 5
        listed = await c.list("apps/v1", "deployments")  # all namespaces
        assert name in [i["metadata"]["name"] for i in listed["items"]]


async def test_dry_run_writes_nothing(api: ApiServerThread) -> None:
    raw = Raw(api)
    code, _, body = await raw("POST", CM + "?dryRun=All", {"metadata": {"name": "dry"}, "data": {"a": "1"}})
    assert code == 201 and body["metadata"]["uid"]
    assert (await raw("GET", CM + "/dry"))[0] == 404
    await raw("POST", CM, {"metadata": {"name": "dry"}, "data": {"a": "1"}})
    code, _, body = await raw(
        "PATCH", CM + "/dry?dryRun=All", {"data": {"a": "2"}}, ctype="application/merge-patch+json"
    )
    assert code == 200 and body["data"] == {"a": "2"}
    code, _, body = await raw("DELETE", CM + "/dry?dryRun=All")
    assert code == 200
    code, _, body = await raw("GET", CM + "/dry")
    assert code == 200 and body["data"] == {"a": "1"}


async def test_finalizers_and_propagation(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create(
            "v1", "configmaps", {"metadata": {"name": "held", "finalizers": ["example.com/x"]}}, "default"
        )
        gone = await c.delete("v1", "configmaps", "held", "default")
        assert gone is not None and gone["metadata"]["deletionTimestamp"]
        held = await c.get("v1", "configmaps", "held", "default")
        assert held["metadata"]["finalizers"] == ["example.com/x"]
        await c.patch("v1", "configmaps", "held", {"metadata": {"finalizers": None}}, "default")
        assert await c.get_or_none("v1", "configmaps", "held", "default") is None
        for policy, finalizer in (("Foreground", "foregroundDeletion"), ("Orphan", "orphan")):
            await c.create("v1", "configmaps", {"metadata": {"name": policy.lower()}}, "default")
            out = await c.delete(
                "v1", "configmaps", policy.lower(), "default", body={"propagationPolicy": policy}
            )
            assert out is not None and out["metadata"]["finalizers"] == [finalizer]
        await c.create("v1", "configmaps", {"metadata": {"name": "bg"}}, "default")
        await c.delete("v1", "configmaps", "bg", "default", body={"propagationPolicy": "Background"})
        assert await c.get_or_none("v1", "configmaps", "bg", "default") is None
        # a precondition on the uid protects against deleting a recreated object
        cm = await c.create("v1", "configmaps", {"metadata": {"name": "pre"}}, "default")
        with pytest.raises(ApiException) as err:
            await c.delete("v1", "configmaps", "pre", "default", body={"preconditions": {"uid": "other"}})
        assert err.value.status == 409
        await c.delete(
            "v1", "configmaps", "pre", "default", body={"preconditions": {"uid": cm["metadata"]["uid"]}}
        )


async def test_namespace_lifecycle(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "short-lived"}})
        ns = await c.delete("v1", "namespaces", "short-lived")
        assert ns is not None and ns["status"]["phase"] == "Terminating"
        with pytest.raises(ApiException) as err:
            await c.create("v1", "configmaps", {"metadata": {"name": "x"}}, "short-lived")
        assert err.value.status == 403
        # the namespace controller's last step: clear spec.finalizers through /finalize
        ns = await c.get("v1", "namespaces", "short-lived")
        ns["spec"]["finalizers"] = []
        await c.request("PUT", "/api/v1/namespaces/short-lived/finalize", ns)
        assert await c.get_or_none("v1", "namespaces", "short-lived") is None


async def test_limit_continue_and_expiry(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "pages"}})
        for i in range(5):
            await c.create(
                "v1", "configmaps", {"metadata": {"name": f"p{i}", "labels": {"odd": str(i % 2)}}}, "pages"
            )
        page = await c.list("v1", "configmaps", "pages", limit=2)
        names = [i["metadata"]["name"] for i in page["items"]]
        rv = page["metadata"]["resourceVersion"]
        await c.create("v1", "configmaps", {"metadata": {"name": "p9"}}, "pages")  # after the snapshot
        while page["metadata"].get("continue"):
            page = await c.list("v1", "configmaps", "pages", limit=2, continue_=page["metadata"]["continue"])
            assert page["metadata"]["resourceVersion"] == rv  # one consistent snapshot
            names += [i["metadata"]["name"] for i in page["items"]]
        assert names == ["p0", "p1", "p2", "p3", "p4"]
        odd = await c.list("v1", "configmaps", "pages", label_selector="odd=1", limit=1)
        assert [i["metadata"]["name"] for i in odd["items"]] == ["p1"] and odd["metadata"]["continue"]
        first = await c.list("v1", "configmaps", "pages", limit=2)
        await c.create("v1", "configmaps", {"metadata": {"name": "later"}}, "pages")
        store = api.store
        assert store is not None
        api.call(store.compact(api.call(store.current_revision())))
        with pytest.raises(ApiException) as err:
            await c.list("v1", "configmaps", "pages", limit=2, continue_=first["metadata"]["continue"])
        assert err.value.status == 410 and err.value.reason == "Expired"


async def test_table_and_partial_metadata(api: ApiServerThread) -> None:
    raw = Raw(api)
    await raw("POST", CM, {"metadata": {"name": "tab", "labels": {"t": "1"}}})
    code, ctype, table = await raw("GET", CM + "?labelSelector=t%3D1", accept=TABLE)
    assert code == 200 and ctype.startswith("application/json") and table["kind"] == "Table"
    assert table["columnDefinitions"][0]["name"] == "Name" and table["rows"][0]["cells"][0] == "tab"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["metadata"]["resourceVersion"]
    _, _, table = await raw("GET", CM + "/tab?includeObject=Object", accept=TABLE)
    assert table["rows"][0]["object"]["kind"] == "ConfigMap"
    _, _, table = await raw("GET", CM + "/tab?includeObject=None", accept=TABLE)
    assert "object" not in table["rows"][0]
    _, _, plist = await raw(
        "GET", CM, accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
    )
    assert plist["kind"] == "PartialObjectMetadataList" and "data" not in plist["items"][0]


async def test_discovery_and_openapi(api: ApiServerThread) -> None:
    raw = Raw(api)
    for v in ("v2", "v2beta1"):
        code, ctype, body = await raw(
            "GET",
            "/apis",
            accept=f"application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList,application/json",
        )
        assert ctype == f"application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
        assert {i["metadata"]["name"] for i in body["items"]} >= {"apps", "batch"}
    _, _, legacy = await raw("GET", "/api")
    assert legacy["kind"] == "APIVersions" and legacy["versions"] == ["v1"]
    _, _, res = await raw("GET", "/api/v1")
    names = {r["name"] for r in res["resources"]}
    assert {"pods", "pods/status", "pods/exec", "namespaces/finalize"} <= names
    _, _, group = await raw("GET", "/apis/apps")
    assert group["preferredVersion"]["groupVersion"] == "apps/v1"
    _, _, index = await raw("GET", "/openapi/v3")
    url = index["paths"]["api/v1"]["serverRelativeURL"]
    _, _, doc = await raw("GET", url)
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert "fieldValidation" in json.dumps(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"])
    code, _, v2 = await raw("GET", "/openapi/v2")
    assert code == 200 and "swagger" in v2
    code, ctype, metrics = await raw("GET", "/metrics", accept="text/plain")
    assert code == 200 and "apiserver_request_total" in metrics and "apiserver_registered_watchers" in metrics


async def test_watch_as_table_and_initial_events(api: ApiServerThread) -> None:
    raw = Raw(api)
    await raw("POST", "/api/v1/namespaces", {"metadata": {"name": "wt"}})
    await raw("POST", "/api/v1/namespaces/wt/configmaps", {"metadata": {"name": "a"}})
    wt = "/api/v1/namespaces/wt/configmaps"
    _, ctype, text = await raw("GET", f"{wt}?watch=1&timeoutSeconds=1", accept=TABLE)
    events = lines(text)
    assert ctype.startswith("application/json;as=Table")
    assert events[0]["type"] == "ADDED" and events[0]["object"]["kind"] == "Table"
    assert events[0]["object"]["rows"][0]["cells"][0] == "a"
    q = "watch=1&timeoutSeconds=1&sendInitialEvents=true&allowWatchBookmarks=true"
    _, _, text = await raw("GET", f"{wt}?{q}&resourceVersionMatch=NotOlderThan")
    events = lines(text)
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_deletecollection(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "dc"}})
        for i in range(3):
            meta = {"name": f"d{i}", "labels": {"k": "a" if i else "b"}}
            await c.create("v1", "configmaps", {"metadata": meta}, "dc")
        out = await c.request("DELETE", "/api/v1/namespaces/dc/configmaps", params={"labelSelector": "k=a"})
        assert len(out["items"]) == 2
        left = await c.list("v1", "configmaps", "dc")
        assert [i["metadata"]["name"] for i in left["items"]] == ["d0"]


# -- server-side apply -----------------------------------------------------------------------------


async def test_server_side_apply_ownership(api: ApiServerThread) -> None:
    async with client(api) as c:
        path = CM + "/ssa"
        cfg: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ssa", "labels": {"a": "1"}},
            "data": {"x": "1", "y": "1"},
        }
        apply_ct = "application/apply-patch+yaml"
        created = await c.request("PATCH", path, cfg, {"fieldManager": "alice"}, apply_ct)
        mf = created["metadata"]["managedFields"]
        assert mf[0]["manager"] == "alice" and mf[0]["operation"] == "Apply"
        assert mf[0]["fieldsV1"] == {
            "f:data": {"f:x": {}, "f:y": {}},
            "f:metadata": {"f:labels": {"f:a": {}}},
        }
        # bob changes x with an ordinary update: he now owns it
        await c.patch("v1", "configmaps", "ssa", {"data": {"x": "bob"}}, "default")
        with pytest.raises(ApiException) as err:
            await c.request("PATCH", path, cfg, {"fieldManager": "alice"}, apply_ct)
        assert err.value.status == 409 and ".data.x" in err.value.message
        assert err.value.body["details"]["causes"][0]["field"] == ".data.x"
        # same value: shared ownership, no conflict; dropping y from alice's config removes it
        cfg2 = {**cfg, "data": {"x": "bob"}}
        out = await c.request("PATCH", path, cfg2, {"fieldManager": "alice"}, apply_ct)
        assert out["data"] == {"x": "bob"}
        forced = await c.request(
            "PATCH",
            path,
            {**cfg, "data": {"x": "alice"}},
            {"fieldManager": "alice", "force": "true"},
            apply_ct,
        )
        assert forced["data"] == {"x": "alice"}
        owners = {e["manager"]: e["fieldsV1"] for e in forced["metadata"]["managedFields"]}
        assert "f:x" in owners["alice"]["f:data"] and "f:data" not in owners.get("OpenAPI-Generator", {})
        # no fieldManager: 422 as upstream
        with pytest.raises(ApiException) as err:
            await c.request("PATCH", path, cfg, None, apply_ct)
        assert err.value.status == 422


async def test_hostile_bodies_are_400(api: ApiServerThread) -> None:
    raw = Raw(api)
    code, _, body = await raw("POST", CM, raw=b"[" * 100000 + b"]" * 100000)
    assert code == 400 and body["reason"] == "BadRequest"
    code, _, body = await raw("POST", CM, raw=b"a: &a [*a, *a]", ctype="application/yaml")
    assert code in (400, 422)
    code, _, body = await raw("POST", CM, raw=b"{}" + b" " * (1024 * 1024 - 2))  # within limits
    assert code == 422
    code, _, body = await raw("POST", CM, stream=io.BytesIO(b"{}" + b" " * (4 * 1024 * 1024)))
    assert code == 413 and body["reason"] == "RequestEntityTooLarge"

    code, _, body = await raw("GET", CM + "?continue=bm90IGEgdG9rZW4")
    assert code == 400 and body["reason"] == "BadRequest"
    code, _, body = await raw("GET", CM + "?labelSelector=a%20in%20(b")
    assert code == 400


async def test_reapplying_the_same_config_writes_nothing(api: ApiServerThread) -> None:
    async with client(api) as c:
        path = CM + "/same"
        cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same"}, "data": {"a": "1"}}
        first = await c.request("PATCH", path, cfg, {"fieldManager": "m"}, "application/apply-patch+yaml")
        again = await c.request("PATCH", path, cfg, {"fieldManager": "m"}, "application/apply-patch+yaml")
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_large_responses_are_gzipped(api: ApiServerThread) -> None:
    async with client(api) as c:
        await c.create("v1", "namespaces", {"metadata": {"name": "big"}})
        for i in range(4):
            cm = {"metadata": {"name": f"b{i}"}, "data": {"x": "y" * 60000}}
            await c.create("v1", "configmaps", cm, "big")
    ctx = ssl.create_default_context(cafile=str(api.ca.ca_cert))
    headers = {"Authorization": f"Bearer {api.token}", "Accept-Encoding": "gzip"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
        s.get(api.url + "/api/v1/namespaces/big/configmaps", headers=headers) as resp,
    ):
        assert resp.headers.get("Content-Encoding") == "gzip"
        assert len((await resp.json())["items"]) == 4
    await asyncio.sleep(0.2)
