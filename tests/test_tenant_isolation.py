"""The tenant attack matrix: a real multi-tenant API server, tenants `acme` and `globex` with users
of every role, namespaces holding one object of every tenant kind, nodes with pods bound to them;
then every way across the tenant boundary we could think of, with the official Python client for
the bulk of the matrix and the real kubectl for a representative part of every category.

Every refusal has a positive control (the same call by the owner passes), so no test here passes
against a server that simply refuses everything. The world is in tests/support/tenants.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hypernetes.api.audit import AuditLog
from hypernetes.auth.builtin import SA_AUDIENCE
from hypernetes.auth.tokens import TokenSigner
from tests.support.apifixtures import API_STORES, have_kubectl, on_store
from tests.support.apiserver import ApiServerThread
from tests.support.tenants import (
    JSON,
    KIND,
    KINDS,
    MERGE,
    NAMESPACES,
    OBJECT,
    TENANTS_PATH,
    USERS_PATH,
    VERBS,
    Kind,
    LineReader,
    PyCaller,
    TenantWorld,
    assert_forbidden,
    assert_unauthorized,
    b64,
    dry,
    jwt_parts,
    kubectl_forbidden,
    named,
    pod_with,
    qualified,
    raw_watch,
    reencode,
    status_of,
    user_object,
)

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

READS = ("get", "list", "watch")
TENANTS, USERS = TENANTS_PATH, USERS_PATH
NS = "/api/v1/namespaces"
PODS, SECRETS, CMS, SAS = KIND["pods"], KIND["secrets"], KIND["configmaps"], KIND["serviceaccounts"]
# (attacker, a namespace of the other tenant)
ATTACKS = (("globex-admin", "acme-a"), ("globex-member", "acme-b"), ("acme-admin", "globex-a"))


@pytest.fixture(scope="module", params=API_STORES)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    tmp = Path(tmp_path_factory.mktemp("tenants"))
    api = ApiServerThread(tmp, tenancy=True, audit=AuditLog(tmp / "audit.log"), **on_store(request)).start()
    w = TenantWorld.build(api)
    try:
        yield w
    finally:
        w.close()
        api.stop()


def tenant_of(who: str) -> str:
    return who.split("-")[0]


def by_kind(kind: Kind) -> str:
    return kind.resource if isinstance(kind, Kind) else str(kind)


# == 1. every verb on every namespaced kind in the other tenant's namespaces ======================


def test_world_has_every_kind_everywhere(world: TenantWorld) -> None:
    """The precondition of the matrix: every kind has its object in every tenant namespace."""
    for kind in KINDS:
        names = world.names("operator", kind.path(None))
        for ns in ("acme-a", "acme-b", "globex-a"):
            assert f"{ns}/{OBJECT}" in names, (kind.resource, ns)


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("kind", KINDS, ids=by_kind)
@pytest.mark.parametrize(("who", "namespace"), ATTACKS)
def test_foreign_namespace_refused(
    world: TenantWorld, who: str, namespace: str, kind: Kind, verb: str
) -> None:
    code, body = world.py(who).verb(kind, verb, namespace)
    assert_forbidden(code, body, who)


@pytest.mark.parametrize("verb", ("get", "update", "patch", "delete"))
@pytest.mark.parametrize("namespace", ("acme-a", "no-such-namespace", "kube-system"))
def test_no_existence_oracle(world: TenantWorld, namespace: str, verb: str) -> None:
    """What does not exist is refused exactly like what does: 403, never 404."""
    code, body = world.py("globex-admin").verb(CMS, verb, namespace, "no-such-object")
    assert_forbidden(code, body, "globex-admin")


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("kind", KINDS, ids=by_kind)
def test_member_works_in_own_namespace(world: TenantWorld, kind: Kind, verb: str) -> None:
    """The positive control of the matrix: the same calls by the owner pass (writes as dry runs)."""
    p = world.py("acme-member")
    name, body = ("probe-new" if verb == "create" else OBJECT), None
    if verb == "update":
        body = p.verb(kind, "get", "acme-a")[1]
    code, out = p.verb(kind, verb, "acme-a", name, body=body, dry_run=verb not in READS)
    assert 200 <= code < 300, out
    if verb == "list":
        assert OBJECT in {o["metadata"]["name"] for o in out["items"]}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("kind", KINDS, ids=by_kind)
def test_viewer_reads_all_but_secrets(world: TenantWorld, kind: Kind, verb: str) -> None:
    code, out = world.py("acme-viewer").verb(kind, verb, "acme-a", dry_run=verb not in READS)
    if verb in READS and kind.resource != "secrets":
        assert code == 200, out
    else:
        assert_forbidden(code, out, "acme-viewer")


def test_foreign_objects_untouched(world: TenantWorld) -> None:
    """After the whole matrix above (and its dry runs) nothing changed anywhere."""
    assert world.snapshot() == world.baseline


def test_create_with_body_namespace_of_other_tenant(world: TenantWorld) -> None:
    """The URL's namespace decides: a body naming acme-a is refused, not created in either."""
    pod = PODS.body("smuggled", "acme-a")
    r = world.http("globex-member").post(PODS.path("globex-a"), json=pod)
    assert r.status_code == 400, r.text
    r = world.http("globex-member").post("/api/v1/pods", json=pod)  # no namespace in the URL
    assert r.status_code in (403, 405), r.text
    assert "acme-a/smuggled" not in world.names("operator", "/api/v1/pods")


@pytest.mark.parametrize(
    ("version", "args"),
    [
        ("1.32", ("get", "pod", "web", "-n", "acme-a")),
        ("1.27", ("get", "secrets", "-n", "acme-a", "-o", "json")),
        ("1.33", ("get", "deploy,rs,jobs,svc,ep,cm,sa,pvc,leases,events", "-n", "acme-a")),
        ("1.32", ("create", "configmap", "x", "-n", "acme-a", "--from-literal=a=b")),
        ("1.32", ("label", "pod", "web", "-n", "acme-a", "pwned=1")),
        ("1.27", ("annotate", "deployment", "web", "-n", "acme-a", "pwned=1")),
        ("1.32", ("edit", "configmap", "web", "-n", "acme-a")),
        ("1.32", ("delete", "secret", "web", "-n", "acme-a")),
        ("1.33", ("delete", "pods", "--all", "-n", "acme-a")),
        ("1.32", ("apply", "--server-side", "-f", "-")),
        ("1.27", ("apply", "-f", "-")),
        ("1.32", ("replace", "-f", "-")),
    ],
    ids=lambda v: " ".join(v[:4]) if isinstance(v, tuple) else v,
)
def test_kubectl_foreign_namespace(world: TenantWorld, version: str, args: tuple[str, ...]) -> None:
    manifest = json.dumps(CMS.body(OBJECT, "acme-a", {"pwned": "1"}))
    proc = world.kubectl("globex-admin", *args, version=version, input=manifest)
    kubectl_forbidden(proc)
    assert "secret-of-" not in proc.stdout + proc.stderr


# == 2. lists and watches across namespaces: filtered to the caller's own ========================


@pytest.mark.parametrize("kind", KINDS, ids=by_kind)
@pytest.mark.parametrize("who", ("globex-member", "acme-viewer", "acme-admin"))
def test_all_namespaces_list_filtered(world: TenantWorld, who: str, kind: Kind) -> None:
    code, body = world.py(who).verb(kind, "list", None)
    if who == "acme-viewer" and kind.resource == "secrets":
        assert_forbidden(code, body, who)
        return
    assert code == 200, body
    got = {qualified(o) for o in body["items"]}
    assert got == world.visible(kind, tenant_of(who))
    assert f"{NAMESPACES[tenant_of(who)][0]}/{OBJECT}" in got


@pytest.mark.parametrize("version", ("1.27", "1.32", "1.33"))
def test_kubectl_get_all_namespaces(world: TenantWorld, version: str) -> None:
    proc = world.kubectl(
        "globex-member", "get", ",".join(k.resource for k in KINDS), "-A", "-o", "json", version=version
    )
    got = {f"{o['kind']}:{qualified(o)}" for o in json.loads(proc.stdout)["items"]}
    assert got == {f"{k.kind}:{n}" for k in KINDS for n in world.visible(k, "globex")}
    assert f"Secret:globex-a/{OBJECT}" in got
    names = world.kubectl("globex-member", "get", "namespaces", "-o", "name", version=version).stdout
    assert set(names.split()) == {f"namespace/{n}" for n in world.owned("globex")}
    assert "acme" not in world.kubectl("globex-member", "get", "pods", "-A", version=version).stdout


def test_kubectl_watch_all_namespaces(world: TenantWorld) -> None:
    """`kubectl get pods -A --watch` as globex while acme creates, updates and deletes a pod: not
    one acme line; the operator's identical watch shows them (the control)."""
    cols = (
        "-o",
        "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,V:.metadata.labels.v",
        "--no-headers",
    )
    spy = LineReader(world.kubectl_popen("globex-member", "get", "pods", "-A", "--watch", *cols))
    control = LineReader(world.kubectl_popen("operator", "get", "pods", "-A", "--watch", *cols))
    acme, globex = world.http("acme-member"), world.http("globex-member")
    try:
        spy.next_line(lambda line: line.split()[:2] == ["globex-a", OBJECT])
        control.next_line(lambda line: line.split()[:2] == ["acme-a", OBJECT])
        assert acme.post(PODS.path("acme-a"), json=PODS.body("watched", "acme-a")).status_code == 201
        r = acme.patch(PODS.path("acme-a", "watched"), json=_labels({"v": "2"}), headers=MERGE)
        assert r.status_code == 200
        assert acme.delete(PODS.path("acme-a", "watched")).status_code == 200
        assert globex.post(PODS.path("globex-a"), json=PODS.body("sentinel", "globex-a")).status_code == 201
        spy.next_line(lambda line: "sentinel" in line)
        control.next_line(lambda line: "sentinel" in line)
    finally:
        spy.stop()
        control.stop()
        globex.delete(PODS.path("globex-a", "sentinel"))
    assert {line.split()[0] for line in spy.lines} == {"globex-a"}, spy.lines
    assert any(line.split()[:3] == ["acme-a", "watched", "2"] for line in control.lines), control.lines


def test_kubectl_watch_only_configmaps(world: TenantWorld) -> None:
    """kubectl 1.27 `--watch-only` on configmaps -A: live (a globex change shows), then acme's
    changes never appear."""
    spy = LineReader(
        world.kubectl_popen(
            "globex-admin",
            "get",
            "configmaps",
            "-A",
            "--watch-only",
            "--no-headers",
            "-o",
            "custom-columns=NS:.metadata.namespace,NAME:.metadata.name",
            version="1.27",
        )
    )
    globex, acme = world.http("globex-admin"), world.http("acme-member")
    try:
        for i in range(100):  # until the watch is live: a globex change shows up
            globex.patch(
                CMS.path("globex-a", OBJECT), json={"metadata": {"labels": {"n": str(i)}}}, headers=MERGE
            )
            try:
                spy.next_line(lambda line: line.split() == ["globex-a", OBJECT], timeout=0.3)
                break
            except AssertionError:
                assert spy.proc.poll() is None, spy.stop()
        assert acme.post(CMS.path("acme-b"), json=CMS.body("watched", "acme-b")).status_code == 201
        r = acme.patch(CMS.path("acme-b", "watched"), json={"data": {"k": "2"}}, headers=MERGE)
        assert r.status_code == 200
        assert acme.delete(CMS.path("acme-b", "watched")).status_code == 200
        assert globex.post(CMS.path("globex-a"), json=CMS.body("sentinel", "globex-a")).status_code == 201
        spy.next_line(lambda line: "sentinel" in line)
    finally:
        spy.stop()
        globex.delete(CMS.path("globex-a", "sentinel"))
    assert spy.lines and {line.split()[0] for line in spy.lines} == {"globex-a"}, spy.lines


def test_raw_watch_pods_from_resource_version_0(world: TenantWorld) -> None:
    resp = world.py("globex-admin").core.list_pod_for_all_namespaces(
        watch=True, resource_version="0", timeout_seconds=30, _preload_content=False
    )
    acme, globex = world.http("acme-admin"), world.http("globex-admin")

    def act() -> None:
        assert acme.post(PODS.path("acme-b"), json=PODS.body("raw-watched", "acme-b")).status_code == 201
        acme.patch(PODS.path("acme-b", "raw-watched"), json=_labels({"v": "2"}), headers=MERGE)
        acme.delete(PODS.path("acme-b", "raw-watched"))
        r = globex.post(PODS.path("globex-a"), json=PODS.body("raw-sentinel", "globex-a"))
        assert r.status_code == 201

    events = raw_watch(resp, act, named("raw-sentinel"))
    globex.delete(PODS.path("globex-a", "raw-sentinel"))
    seen = {(ev["type"], qualified(ev["object"])) for ev in events}
    assert ("ADDED", f"globex-a/{OBJECT}") in seen  # the initial state, from resourceVersion 0
    assert {q.split("/")[0] for _, q in seen} == {"globex-a"}, seen


def test_raw_watch_namespaces_tenants_users(world: TenantWorld) -> None:
    """Watches of namespaces, tenants and users (cluster-scoped, filtered) carry nothing of acme."""
    p = world.py("globex-admin")
    opts: JSON = {"watch": True, "resource_version": "0", "timeout_seconds": 30, "_preload_content": False}
    ns_resp = p.core.list_namespace(**opts)
    tenant_resp = p.custom.list_cluster_custom_object("hypernetes.io", "v1", "tenants", **opts)
    user_resp = p.custom.list_cluster_custom_object("hypernetes.io", "v1", "users", **opts)

    def act() -> None:
        for who, tenant in (("acme-admin", "acme"), ("globex-admin", "globex")):  # globex's last: sentinels
            h = world.http(who)
            assert h.post(NS, json={"metadata": {"name": f"{tenant}-w"}}).status_code == 201
            assert h.post(USERS, json=user_object(f"{tenant}-w-user", tenant, "viewer")).status_code == 201
            world.op("PATCH", f"{TENANTS}/{tenant}", {"spec": {"displayName": "v2"}}, headers=MERGE)

    ns_events = raw_watch(ns_resp, act, named("globex-w"))
    tenant_events = raw_watch(tenant_resp, lambda: None, lambda o: o["spec"].get("displayName") == "v2")
    user_events = raw_watch(user_resp, lambda: None, named("globex-w-user"))
    assert {qualified(ev["object"]) for ev in ns_events} == world.owned("globex") >= {"globex-a", "globex-w"}
    assert {qualified(ev["object"]) for ev in tenant_events} == {"globex"}
    assert {ev["object"]["spec"]["tenant"] for ev in user_events} == {"globex"}
    assert {"globex-admin", "globex-w-user"} <= {qualified(ev["object"]) for ev in user_events}


# == 3. label and selector tricks ================================================================

TENANT_LABEL = "hypernetes.io/tenant"


def owner_label(world: TenantWorld, namespace: str) -> str | None:
    labels = world.op("GET", f"{NS}/{namespace}")["metadata"].get("labels") or {}
    return labels.get(TENANT_LABEL)


def test_namespace_label_is_stamped_with_creator_tenant(world: TenantWorld) -> None:
    g = world.http("globex-admin")
    r = g.post(NS, json={"metadata": {"name": "globex-trick", "labels": {TENANT_LABEL: "acme", "x": "y"}}})
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["labels"].items() >= {TENANT_LABEL: "globex", "x": "y"}.items()
    assert owner_label(world, "globex-trick") == "globex"
    assert_forbidden(*world.py("acme-admin").verb(PODS, "list", "globex-trick"))
    proc = world.kubectl("globex-admin", "create", "namespace", "globex-trick2", "--dry-run=server", "-ojson")
    assert json.loads(proc.stdout)["metadata"]["labels"][TENANT_LABEL] == "globex"
    assert g.delete(f"{NS}/globex-trick").status_code == 200


def _labels(value: Any) -> JSON:
    return {"metadata": {"labels": value}}


@pytest.mark.parametrize(
    ("method", "ctype", "body"),
    [
        ("PATCH", "merge-patch+json", _labels({TENANT_LABEL: "acme"})),
        ("PATCH", "merge-patch+json", _labels({TENANT_LABEL: None})),
        ("PATCH", "merge-patch+json", _labels(None)),
        ("PATCH", "strategic-merge-patch+json", _labels({TENANT_LABEL: "acme"})),
        ("PATCH", "json-patch+json", [{"op": "remove", "path": "/metadata/labels/hypernetes.io~1tenant"}]),
        (
            "PATCH",
            "json-patch+json",
            [{"op": "replace", "path": "/metadata/labels/hypernetes.io~1tenant", "value": "acme"}],
        ),
        ("PATCH", "json-patch+json", [{"op": "replace", "path": "/metadata/labels", "value": {}}]),
        ("PUT", "json", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "globex-a"}}),
        (
            "PUT",
            "json",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "globex-a", "labels": {TENANT_LABEL: "acme"}},
            },
        ),
    ],
    ids=[
        "merge-set",
        "merge-null",
        "merge-labels-null",
        "strategic",
        "json-remove",
        "json-replace",
        "json-labels",
        "put-none",
        "put-acme",
    ],
)
def test_namespace_owner_label_cannot_change(world: TenantWorld, method: str, ctype: str, body: Any) -> None:
    r = world.http("globex-admin").request(
        method, f"{NS}/globex-a", json=body, headers={"Content-Type": f"application/{ctype}"}
    )
    assert_forbidden(r.status_code, r.json())
    assert TENANT_LABEL in r.json()["message"]
    assert owner_label(world, "globex-a") == "globex"


def test_namespace_other_labels_may_change(world: TenantWorld) -> None:
    """The control: the tenant admin may label its namespace otherwise."""
    r = world.http("globex-admin").patch(f"{NS}/globex-a", json=_labels({"team": "x"}), headers=MERGE)
    assert r.status_code == 200 and r.json()["metadata"]["labels"][TENANT_LABEL] == "globex", r.text


@pytest.mark.parametrize(
    "args",
    [
        ("namespace", "globex-a", "hypernetes.io/tenant=acme", "--overwrite"),
        ("namespace", "globex-a", "hypernetes.io/tenant-"),
        ("namespace", "acme-a", "hypernetes.io/tenant=globex", "--overwrite"),
    ],
    ids=lambda a: " ".join(a),
)
def test_kubectl_label_namespace_owner(world: TenantWorld, args: tuple[str, ...]) -> None:
    kubectl_forbidden(world.kubectl("globex-admin", "label", *args))


@pytest.mark.parametrize(
    "args",
    [
        ("namespaces", "-l", "hypernetes.io/tenant=acme"),
        ("namespaces", "-l", "hypernetes.io/tenant!=globex"),
        ("namespaces", "--field-selector", "metadata.name=acme-a"),
        ("pods", "-A", "-l", "hypernetes.io/tenant=acme"),
        ("pods,configmaps,secrets", "-A", "--field-selector", "metadata.namespace=acme-a"),
        ("pods", "-A", "--field-selector", "metadata.namespace!=globex-a"),
    ],
    ids=lambda a: " ".join(a),
)
def test_kubectl_selectors_show_nothing_foreign(world: TenantWorld, args: tuple[str, ...]) -> None:
    proc = world.kubectl("globex-admin", "get", *args, "-o", "name")
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr
    control = world.kubectl("acme-admin", "get", *args, "-o", "name")  # acme sees its own with it
    assert control.returncode == 0 and control.stdout.strip(), control.stderr


def test_selectors_with_python_client(world: TenantWorld) -> None:
    g = world.py("globex-member").core
    assert g.list_namespace(label_selector="hypernetes.io/tenant=acme").items == []
    assert g.list_pod_for_all_namespaces(label_selector="hypernetes.io/tenant=acme").items == []
    assert g.list_secret_for_all_namespaces(field_selector="metadata.namespace=acme-a").items == []
    assert g.list_namespace(field_selector="metadata.name=acme-a").items == []
    mine = world.py("acme-member").core.list_secret_for_all_namespaces(
        field_selector="metadata.namespace=acme-a"
    )
    assert OBJECT in {s.metadata.name for s in mine.items}  # the control


# == 4. subresources across the boundary =========================================================

BINDING = {
    "apiVersion": "v1",
    "kind": "Binding",
    "metadata": {"name": OBJECT},
    "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"},
}
EVICTION = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": OBJECT}}
RAW: JSON = {"_preload_content": False}
# name -> (the call, the status the owner's admin gets: authorized, then served or refused by design)
SUBRESOURCES: dict[str, tuple[Callable[[PyCaller, str], Any], int]] = {
    "pods/log": (lambda p, ns: p.core.read_namespaced_pod_log(OBJECT, ns, **RAW), 503),  # no node agent
    "pods/exec": (
        lambda p, ns: p.core.connect_get_namespaced_pod_exec(
            OBJECT, ns, command=["true"], stdout=True, **RAW
        ),
        400,
    ),  # not an upgrade request
    "pods/exec-post": (
        lambda p, ns: p.core.connect_post_namespaced_pod_exec(
            OBJECT, ns, command=["true"], stdout=True, **RAW
        ),
        400,
    ),
    "pods/attach": (
        lambda p, ns: p.core.connect_get_namespaced_pod_attach(OBJECT, ns, stdout=True, **RAW),
        400,
    ),
    "pods/portforward": (
        lambda p, ns: p.core.connect_get_namespaced_pod_portforward(OBJECT, ns, ports="80", **RAW),
        503,
    ),
    "pods/status-get": (lambda p, ns: p.core.read_namespaced_pod_status(OBJECT, ns, **RAW), 200),
    "pods/status-patch": (
        lambda p, ns: p.core.patch_namespaced_pod_status(OBJECT, ns, {"status": {"phase": "Running"}}, **RAW),
        403,
    ),  # status is the node's
    "pods/binding": (lambda p, ns: p.core.create_namespaced_pod_binding(OBJECT, ns, BINDING, **RAW), 403),
    "pods/eviction": (
        lambda p, ns: p.core.create_namespaced_pod_eviction(OBJECT, ns, EVICTION, dry_run="All", **RAW),
        201,
    ),
    "deployments/scale-get": (lambda p, ns: p.apps.read_namespaced_deployment_scale(OBJECT, ns, **RAW), 200),
    "deployments/scale-patch": (
        lambda p, ns: p.apps.patch_namespaced_deployment_scale(OBJECT, ns, {"spec": {"replicas": 0}}, **RAW),
        200,
    ),
    "deployments/status-patch": (
        lambda p, ns: p.apps.patch_namespaced_deployment_status(
            OBJECT, ns, {"status": {"replicas": 9}}, **RAW
        ),
        403,
    ),
    "replicasets/scale-patch": (
        lambda p, ns: p.apps.patch_namespaced_replica_set_scale(OBJECT, ns, {"spec": {"replicas": 0}}, **RAW),
        200,
    ),
    "serviceaccounts/token": (
        lambda p, ns: p.core.create_namespaced_service_account_token(
            OBJECT, ns, {"spec": {"expirationSeconds": 600}}, **RAW
        ),
        201,
    ),
    "namespaces/status-get": (lambda p, ns: p.core.read_namespace_status(ns, **RAW), 200),
    "namespaces/status-patch": (
        lambda p, ns: p.core.patch_namespace_status(ns, {"status": {"phase": "Terminating"}}, **RAW),
        403,
    ),
    "namespaces/finalize": (
        lambda p, ns: p.core.replace_namespace_finalize(
            ns, {"metadata": {"name": ns}, "spec": {"finalizers": []}}, **RAW
        ),
        403,
    ),
}


@pytest.mark.parametrize("sub", SUBRESOURCES)
@pytest.mark.parametrize(("who", "namespace"), (*ATTACKS[:2], ("acme-member", "globex-a")))
def test_foreign_subresource_refused(world: TenantWorld, who: str, namespace: str, sub: str) -> None:
    code, body = status_of(lambda: SUBRESOURCES[sub][0](world.py(who), namespace))
    assert_forbidden(code, body, who)


@pytest.mark.parametrize("sub", SUBRESOURCES)
def test_own_subresource_control(world: TenantWorld, sub: str) -> None:
    """The owner's admin passes authorization (or meets the documented design refusal)."""
    call, want = SUBRESOURCES[sub]
    code, body = status_of(lambda: call(world.py("acme-admin"), "acme-a"))
    assert code == want, body
    if want == 403:
        assert "acme-admin" in body["message"]


@pytest.mark.parametrize(
    ("args", "body"),
    [
        (("logs", "web"), None),
        (("exec", "web", "--", "true"), None),
        (("attach", "web"), None),
        (("port-forward", "pod/web", "18080:80"), None),
        (("scale", "deployment", "web", "--replicas=3"), None),
        (("create", "token", "web"), None),
        (
            (
                "patch",
                "pod",
                "web",
                "--subresource=status",
                "--type=merge",
                "-p",
                '{"status":{"phase":"Running"}}',
            ),
            None,
        ),
        (("get", "--raw", "/api/v1/namespaces/acme-a/status"), None),
        (
            ("replace", "--raw", "/api/v1/namespaces/acme-a/finalize", "-f", "-"),
            {"metadata": {"name": "acme-a"}, "spec": {"finalizers": []}},
        ),
        (("create", "--raw", "/api/v1/namespaces/acme-a/pods/web/eviction", "-f", "-"), EVICTION),
        (("create", "--raw", "/api/v1/namespaces/acme-a/pods/web/binding", "-f", "-"), BINDING),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, tuple) else "",
)
def test_kubectl_foreign_subresource(world: TenantWorld, args: tuple[str, ...], body: JSON | None) -> None:
    proc = world.kubectl("globex-admin", "-n", "acme-a", *args, input=json.dumps(body or {}), timeout=30)
    kubectl_forbidden(proc)


# == 5. cluster-scoped objects ===================================================================

NODE_CALLS: dict[str, Callable[[PyCaller], Any]] = {
    "get": lambda p: p.core.read_node("node-a", **RAW),
    "list": lambda p: p.core.list_node(**RAW),
    "patch": lambda p: p.core.patch_node("node-a", _labels({"pwned": "1"}), **RAW),
    "patch-status": lambda p: p.core.patch_node_status(
        "node-a", {"status": {"capacity": {"pods": "1"}}}, **RAW
    ),
    "delete": lambda p: p.core.delete_node("node-a", **RAW),
    "create": lambda p: p.core.create_node({"metadata": {"name": "node-z"}}, **RAW),
}


@pytest.mark.parametrize("verb", NODE_CALLS)
@pytest.mark.parametrize("who", ("globex-admin", "acme-member", "acme-viewer"))
def test_tenant_users_cannot_touch_nodes(world: TenantWorld, who: str, verb: str) -> None:
    assert_forbidden(*status_of(lambda: NODE_CALLS[verb](world.py(who))), who)


def test_kubectl_nodes_and_volumes_forbidden(world: TenantWorld) -> None:
    kubectl_forbidden(world.kubectl("globex-admin", "get", "nodes"))
    kubectl_forbidden(world.kubectl("acme-admin", "cordon", "node-a"))
    kubectl_forbidden(
        world.kubectl(
            "acme-admin",
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": "stolen"},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "claimRef": {"namespace": "globex-a", "name": OBJECT},
                    },
                }
            ),
        )
    )
    assert "node-a" in world.kubectl("operator", "get", "nodes", "-o", "name").stdout  # the control


def test_other_tenants_volumes_invisible(world: TenantWorld) -> None:
    """PVs are cluster-scoped: a tenant lists only those labelled with it, and a get of another
    tenant's PV is refused exactly like one of a name nobody uses (PV names carry claim uids)."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "pvc-acme-secret", "labels": {"hypernetes.io/tenant": "acme"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": "local.hypernetes.io", "volumeHandle": "pvc-acme-secret"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}
                            ]
                        }
                    ]
                }
            },
        },
    }
    world.op("POST", "/api/v1/persistentvolumes", pv)
    assert "pvc-acme-secret" in world.names("acme-viewer", "/api/v1/persistentvolumes")  # the control
    for who in ("globex-admin", "globex-member"):
        assert "pvc-acme-secret" not in world.names(who, "/api/v1/persistentvolumes")
        foreign = world.http(who).get("/api/v1/persistentvolumes/pvc-acme-secret")
        absent = world.http(who).get("/api/v1/persistentvolumes/pvc-nobody")
        assert_forbidden(foreign.status_code, foreign.json(), who)
        assert foreign.json()["message"].replace("pvc-acme-secret", "X") == absent.json()["message"].replace(
            "pvc-nobody", "X"
        )
    assert world.kubectl("globex-admin", "get", "pv", "-o", "name").stdout.split() == []
    kubectl_forbidden(world.kubectl("globex-admin", "get", "pv", "pvc-acme-secret"))
    kubectl_forbidden(world.kubectl("acme-admin", "delete", "pv", "pvc-acme-secret"))


def test_tenants_only_own_visible_none_writable(world: TenantWorld) -> None:
    g = world.http("globex-admin")
    assert world.names("globex-admin", TENANTS) == {"globex"}
    assert world.names("acme-viewer", TENANTS) == {"acme"}
    assert g.get(f"{TENANTS}/globex").status_code == 200
    tenant = {"apiVersion": "hypernetes.io/v1", "kind": "Tenant", "metadata": {"name": "globex"}, "spec": {}}
    for r in (
        g.get(f"{TENANTS}/acme"),
        g.post(TENANTS, json={**tenant, "metadata": {"name": "evil"}}),
        g.patch(f"{TENANTS}/globex", json={"spec": {"quota": {"pods": "1000"}}}, headers=MERGE),
        g.patch(f"{TENANTS}/globex/status", json={"status": {"phase": "Active"}}, headers=MERGE),
        g.put(f"{TENANTS}/globex", json=tenant),
        g.delete(f"{TENANTS}/globex"),
        g.delete(f"{TENANTS}/acme"),
        g.patch(f"{TENANTS}/acme", json={"spec": {"quota": {"pods": "0"}}}, headers=MERGE),
    ):
        assert_forbidden(r.status_code, r.json(), "globex-admin")
    out = world.kubectl("globex-admin", "get", "tenants", "-o", "name").stdout.split()
    assert out == ["tenant.hypernetes.io/globex"]
    kubectl_forbidden(
        world.kubectl(
            "globex-admin",
            "patch",
            "tenant",
            "globex",
            "--type=merge",
            "-p",
            '{"spec":{"quota":{"pods":"1000"}}}',
        )
    )


def users_of(w: TenantWorld, tenant: str) -> set[str]:
    return {o["metadata"]["name"] for o in w.op("GET", USERS)["items"] if o["spec"]["tenant"] == tenant}


def test_tenant_admin_manages_only_own_users(world: TenantWorld) -> None:
    g = world.http("globex-admin")
    globex_users = users_of(world, "globex")
    assert world.names("globex-admin", USERS) == globex_users >= {"globex-admin", "globex-member"}
    assert "acme" not in world.kubectl("globex-admin", "get", "users", "-o", "name").stdout
    for r in (
        g.get(f"{USERS}/acme-admin"),
        g.get(f"{USERS}/no-such-user"),
        g.post(USERS, json=user_object("globex-spy", "acme", "admin")),
        g.patch(f"{USERS}/acme-member", json={"spec": {"role": "viewer"}}, headers=MERGE),
        g.patch(f"{USERS}/acme-member", json={"spec": {"tenant": "globex"}}, headers=MERGE),
        g.delete(f"{USERS}/acme-viewer"),
        g.put("/hypernetes/v1/users/acme-member/password", json={"password": "taken-over-1"}),
        g.post("/hypernetes/v1/users/acme-admin/revoke"),
        g.post("/hypernetes/v1/tokens", json={"user": "acme-admin"}),
        g.post("/hypernetes/v1/tokens", json={"user": "no-such-user"}),
    ):
        assert_forbidden(r.status_code, r.json())
    # a user's tenant never changes, even by its own admin
    r = g.patch(f"{USERS}/globex-member", json={"spec": {"tenant": "acme"}}, headers=MERGE)
    assert r.status_code == 422 and "immutable" in r.text, r.text
    assert world.op("GET", f"{USERS}/globex-member")["spec"]["tenant"] == "globex"
    # the control: its own users it manages
    assert g.post(dry(USERS), json=user_object("globex-new", "globex", "member")).status_code == 201
    r = g.post("/hypernetes/v1/tokens", json={"user": "globex-member", "expirationSeconds": 600})
    assert r.status_code == 201 and r.json()["token"], r.text
    kubectl_forbidden(world.kubectl("globex-admin", "delete", "user", "acme-viewer"))


@pytest.mark.parametrize("who", ("acme-member", "acme-viewer"))
def test_member_and_viewer_cannot_manage_users(world: TenantWorld, who: str) -> None:
    h = world.http(who)
    for r in (
        h.post(dry(USERS), json=user_object("acme-new", "acme", "viewer")),
        h.get(USERS),
        h.get(f"{USERS}/acme-admin"),
        h.patch(f"{USERS}/{who}", json={"spec": {"role": "admin"}}, headers=MERGE),
        h.post("/hypernetes/v1/tokens", json={"user": "acme-admin"}),
        h.put("/hypernetes/v1/users/acme-admin/password", json={"password": "taken-over-1"}),
    ):
        assert_forbidden(r.status_code, r.json())
    assert h.get(f"{USERS}/{who}").status_code == 200  # its own user object it may read
    assert world.op("GET", f"{USERS}/{who}")["spec"]["role"] == who.split("-")[1]


@pytest.mark.parametrize("name", ("system:serviceaccount:acme-a:web", "system:node:node-a", "system:admin"))
def test_no_user_named_like_a_system_identity(world: TenantWorld, name: str) -> None:
    r = world.http("acme-admin").post(USERS, json=user_object(name, "acme", "admin"))
    assert r.status_code == 422 and "metadata.name" in r.text, r.text


def test_identity_endpoints_refuse_nodes_and_service_accounts(world: TenantWorld, robot: str) -> None:
    for who in ("node-a", robot):
        h = world.http(who)
        for r in (
            h.post("/hypernetes/v1/tokens", json={"user": "acme-member"}),
            h.put("/hypernetes/v1/users/acme-member/password", json={"password": "taken-over-1"}),
            h.post("/hypernetes/v1/users/acme-member/revoke"),
        ):
            assert_forbidden(r.status_code, r.json())


def test_other_tenants_namespaces(world: TenantWorld) -> None:
    g = world.py("globex-admin").core
    for call in (
        lambda: g.read_namespace("acme-a", **RAW),
        lambda: g.patch_namespace("acme-a", _labels({"x": "y"}), **RAW),
        lambda: g.replace_namespace("acme-a", {"metadata": {"name": "acme-a"}}, **RAW),
        lambda: g.delete_namespace("acme-a", **RAW),
        lambda: g.delete_namespace("no-such-namespace", **RAW),
    ):
        assert_forbidden(*status_of(call), "globex-admin")
    kubectl_forbidden(world.kubectl("globex-admin", "delete", "namespace", "acme-a"))
    kubectl_forbidden(world.kubectl("globex-admin", "get", "namespace", "acme-a"))
    assert world.op("GET", f"{NS}/acme-a")["status"]["phase"] == "Active"


@pytest.mark.parametrize("namespace", ("default", "kube-system", "kube-public", "kube-node-lease"))
def test_operator_namespaces_out_of_reach(world: TenantWorld, namespace: str) -> None:
    p = world.py("acme-admin")
    assert namespace not in world.names("acme-admin", NS)
    for call in (
        lambda: p.core.read_namespace(namespace, **RAW),
        lambda: p.core.patch_namespace(namespace, _labels({TENANT_LABEL: "acme"}), **RAW),
        lambda: p.core.delete_namespace(namespace, **RAW),
    ):
        assert_forbidden(*status_of(call), "acme-admin")
    for verb in ("list", "create"):
        assert_forbidden(*p.verb(CMS, verb, namespace), "acme-admin")
    assert owner_label(world, namespace) is None


def test_kubectl_operator_namespaces(world: TenantWorld) -> None:
    kubectl_forbidden(world.kubectl("acme-admin", "get", "pods", "-n", "kube-system"))
    kubectl_forbidden(world.kubectl("acme-admin", "run", "x", "--image=busybox", "-n", "default"))
    assert "default" not in world.kubectl("acme-admin", "get", "ns").stdout


# == 6. roles ====================================================================================

EXEC = "/api/v1/namespaces/acme-a/pods/web/exec?command=true&stdout=true"
# (caller, method, path, body, status)
ROLE_CASES: list[tuple[str, str, str, JSON | None, int]] = [
    ("acme-viewer", "POST", dry(PODS.path("acme-a")), PODS.body("v", "acme-a"), 403),
    ("acme-viewer", "GET", SECRETS.path("acme-a", OBJECT), None, 403),
    ("acme-viewer", "GET", SECRETS.path("acme-a"), None, 403),
    ("acme-viewer", "GET", SECRETS.path(None), None, 403),
    ("acme-viewer", "GET", SECRETS.path("acme-a") + "?watch=1", None, 403),
    ("acme-viewer", "GET", EXEC, None, 403),
    ("acme-viewer", "POST", EXEC, None, 403),
    ("acme-viewer", "POST", "/api/v1/namespaces/acme-a/serviceaccounts/web/token", {}, 403),
    ("acme-viewer", "GET", PODS.path("acme-a", OBJECT), None, 200),
    ("acme-viewer", "GET", PODS.path("acme-a", OBJECT) + "/log", None, 503),  # authorized; no node agent
    ("acme-member", "GET", EXEC, None, 400),  # authorized; not an upgrade request
    ("acme-member", "GET", SECRETS.path("acme-a", OBJECT), None, 200),
    ("acme-member", "POST", dry(NS), {"metadata": {"name": "acme-m"}}, 403),
    ("acme-member", "POST", dry(USERS), user_object("acme-m", "acme", "viewer"), 403),
    ("acme-member", "DELETE", dry(f"{NS}/acme-b"), None, 403),
    ("acme-member", "POST", dry(PODS.path("acme-a")), PODS.body("m", "acme-a"), 201),
    ("acme-admin", "POST", dry(NS), {"metadata": {"name": "acme-m"}}, 201),
    ("acme-admin", "POST", dry(USERS), user_object("acme-m", "acme", "viewer"), 201),
    ("acme-admin", "DELETE", dry(f"{NS}/acme-b"), None, 200),
]


@pytest.mark.parametrize(
    ("who", "method", "path", "body", "want"),
    ROLE_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2].split('?')[0]}" for c in ROLE_CASES],
)
def test_roles(world: TenantWorld, who: str, method: str, path: str, body: JSON | None, want: int) -> None:
    r = world.http(who).request(method, path, json=body)
    assert r.status_code == want, r.text
    if want == 403:
        assert_forbidden(r.status_code, r.json(), who)


@pytest.mark.parametrize(
    "args",
    [
        ("exec", "web", "-n", "acme-a", "--", "true"),
        ("get", "secrets", "-n", "acme-a"),
        ("create", "configmap", "v", "-n", "acme-a", "--from-literal=a=b"),
        ("delete", "pod", "web", "-n", "acme-a"),
        ("create", "namespace", "acme-v"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_kubectl_viewer(world: TenantWorld, args: tuple[str, ...]) -> None:
    kubectl_forbidden(world.kubectl("acme-viewer", *args))


def test_kubectl_member_and_admin(world: TenantWorld) -> None:
    kubectl_forbidden(world.kubectl("acme-member", "create", "namespace", "acme-x"))
    proc = world.kubectl("acme-member", "-n", "acme-a", "create", "configmap", "member-made")
    assert proc.returncode == 0, proc.stderr
    proc = world.kubectl("acme-admin", "create", "namespace", "acme-x", "--dry-run=server")
    assert proc.returncode == 0, proc.stderr
    assert "member-made" in world.kubectl("acme-viewer", "get", "cm", "-n", "acme-a").stdout


# == 7. kubectl auth can-i / whoami ==============================================================

CREATE_NS = ("POST", dry(NS), {"metadata": {"name": "c"}})
CREATE_USER = ("POST", dry(USERS), user_object("c", "acme", "viewer"))
# (caller, can-i arguments, the real request: method, path, body)
CAN_I: list[tuple[str, tuple[str, ...], tuple[str, str, JSON | None]]] = [
    ("globex-admin", ("get", "pods", "-n", "acme-a"), ("GET", PODS.path("acme-a", OBJECT), None)),
    ("globex-admin", ("get", "pods", "-n", "globex-a"), ("GET", PODS.path("globex-a", OBJECT), None)),
    ("globex-member", ("list", "pods", "-A"), ("GET", PODS.path(None), None)),
    (
        "acme-viewer",
        ("create", "pods", "-n", "acme-a"),
        ("POST", dry(PODS.path("acme-a")), PODS.body("c", "acme-a")),
    ),
    ("acme-viewer", ("get", "secrets", "-n", "acme-a"), ("GET", SECRETS.path("acme-a", OBJECT), None)),
    ("acme-viewer", ("list", "pods", "-n", "acme-a"), ("GET", PODS.path("acme-a"), None)),
    ("acme-viewer", ("create", "pods", "--subresource=exec", "-n", "acme-a"), ("GET", EXEC, None)),
    ("acme-member", ("create", "pods", "--subresource=exec", "-n", "acme-a"), ("GET", EXEC, None)),
    (
        "acme-member",
        ("patch", "pods", "--subresource=status", "-n", "acme-a"),
        ("PATCH", PODS.path("acme-a", OBJECT) + "/status", {"status": {}}),
    ),
    ("acme-member", ("create", "namespaces"), CREATE_NS),
    ("acme-admin", ("create", "namespaces"), CREATE_NS),
    ("acme-member", ("create", "users.hypernetes.io"), CREATE_USER),
    ("acme-admin", ("create", "users.hypernetes.io"), CREATE_USER),
    ("globex-admin", ("delete", "namespace/acme-a"), ("DELETE", dry(f"{NS}/acme-a"), None)),
    ("globex-admin", ("list", "nodes"), ("GET", "/api/v1/nodes", None)),
    ("acme-admin", ("get", "tenants.hypernetes.io/globex"), ("GET", f"{TENANTS}/globex", None)),
    ("acme-admin", ("get", "tenants.hypernetes.io/acme"), ("GET", f"{TENANTS}/acme", None)),
    (
        "node-a",
        ("get", "secrets/used-secret", "-n", "acme-a"),
        ("GET", SECRETS.path("acme-a", "used-secret"), None),
    ),
    (
        "node-a",
        ("get", "secrets/unused-secret", "-n", "acme-a"),
        ("GET", SECRETS.path("acme-a", "unused-secret"), None),
    ),
]


@pytest.mark.parametrize(("who", "args", "request_"), CAN_I, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CAN_I])
def test_can_i_matches_reality(
    world: TenantWorld, who: str, args: tuple[str, ...], request_: tuple[str, str, JSON | None]
) -> None:
    proc = world.kubectl(who, "auth", "can-i", *args)
    answer = proc.stdout.split(" ")[0].strip()  # "no - <the authorizer's reason>"
    assert answer in ("yes", "no") and proc.returncode == (0 if answer == "yes" else 1), proc
    method, path, body = request_
    r = world.http(who).request(method, path, json=body)
    assert r.status_code != 401, r.text
    assert (r.status_code != 403) == (answer == "yes"), f"can-i: {answer}; the server: {r.status_code}"


@pytest.mark.parametrize("version", ("1.27", "1.32", "1.33"))
@pytest.mark.parametrize(
    ("who", "name", "tenant", "role"),
    [
        ("acme-viewer", "acme-viewer", "acme", "viewer"),
        ("globex-admin", "globex-admin", "globex", "admin"),
        ("node-a", "system:node:node-a", None, None),
    ],
)
def test_whoami(
    world: TenantWorld, version: str, who: str, name: str, tenant: str | None, role: str | None
) -> None:
    proc = world.kubectl(who, "auth", "whoami", "-o", "json", version=version)
    info = json.loads(proc.stdout)["status"]["userInfo"]
    assert info["username"] == name
    extra = info.get("extra") or {}
    if tenant:
        assert extra["hypernetes.io/tenant"] == [tenant] and extra["hypernetes.io/role"] == [role]
        assert f"hypernetes:tenant:{tenant}" in info["groups"]
    else:
        assert "hypernetes.io/tenant" not in extra and "system:nodes" in info["groups"]


def test_can_i_list_for_viewer(world: TenantWorld) -> None:
    out = world.kubectl("acme-viewer", "auth", "can-i", "--list", "-n", "acme-a").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "pods" in rows and "secrets" not in rows and "create" not in rows["pods"]
    foreign = world.kubectl("acme-viewer", "auth", "can-i", "--list", "-n", "globex-a").stdout
    assert "pods" not in {line.split()[0] for line in foreign.splitlines()[1:] if line.strip()}


# == 8. node identity (NodeRestriction) ==========================================================


def test_node_lists_only_its_pods(world: TenantWorld) -> None:
    pods = world.op("GET", "/api/v1/pods")["items"]
    on_a = {qualified(o) for o in pods if o["spec"].get("nodeName") == "node-a"}
    assert world.names("node-a", "/api/v1/pods") == on_a >= {"acme-a/on-node-a"}
    assert world.names("node-a", PODS.path("acme-a")) == {"acme-a/on-node-a"}
    assert world.names("node-a", PODS.path("globex-a")) == set()
    out = world.kubectl("node-a", "get", "pods", "-A", "-o", "name").stdout.split()
    assert sorted(out) == sorted(f"pod/{n.split('/')[1]}" for n in on_a)


def test_node_watch_sees_only_its_pods(world: TenantWorld) -> None:
    resp = world.py("node-a").core.list_pod_for_all_namespaces(
        watch=True, resource_version="0", timeout_seconds=30, _preload_content=False
    )

    def act() -> None:
        world.bound_pod("globex-member", "globex-a", "late-b", "node-b")
        world.bound_pod("acme-member", "acme-b", "late-a", "node-a")

    events = raw_watch(resp, act, named("late-a"))
    assert {qualified(ev["object"]) for ev in events} == {"acme-a/on-node-a", "acme-b/late-a"}
    assert {ev["object"]["spec"]["nodeName"] for ev in events} == {"node-a"}


LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
ON_A, ON_B = PODS.path("acme-a", "on-node-a"), PODS.path("globex-a", "on-node-b")
# (what, method, path, body, status)
NODE_A_CASES: list[tuple[str, str, str, Any, int]] = [
    ("own pod", "GET", ON_A, None, 200),
    ("pod of node-b", "GET", ON_B, None, 403),
    ("unbound pod", "GET", PODS.path("acme-a", OBJECT), None, 403),
    ("own pod status", "PATCH", ON_A + "/status", {"status": {"message": "seen by node-a"}}, 200),
    ("status of node-b's pod", "PATCH", ON_B + "/status", {"status": {"phase": "Failed"}}, 403),
    ("status of unbound pod", "PATCH", PODS.path("acme-a", OBJECT) + "/status", {"status": {}}, 403),
    ("labels of own pod", "PATCH", ON_A, _labels({"app": "db"}), 403),
    ("delete node-b's pod", "DELETE", ON_B, None, 403),
    ("exec in node-b's pod", "GET", ON_B + "/exec?command=sh&stdout=1", None, 403),
    (
        "create pod",
        "POST",
        PODS.path("acme-a"),
        {
            **PODS.body("n", "acme-a"),
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]},
        },
        403,
    ),
    ("used secret", "GET", SECRETS.path("acme-a", "used-secret"), None, 200),
    ("unused secret", "GET", SECRETS.path("acme-a", "unused-secret"), None, 403),
    ("other tenant's secret", "GET", SECRETS.path("globex-a", OBJECT), None, 403),
    ("list secrets", "GET", SECRETS.path("acme-a"), None, 403),
    ("watch secrets", "GET", SECRETS.path(None) + "?watch=1", None, 403),
    ("used configmap", "GET", CMS.path("acme-a", "used-cm"), None, 200),
    ("unused configmap", "GET", CMS.path("acme-a", "unused-cm"), None, 403),
    ("its pod's service account", "GET", SAS.path("acme-a", "default"), None, 200),
    ("another service account", "GET", SAS.path("acme-a", OBJECT), None, 403),
    ("patch node-b", "PATCH", "/api/v1/nodes/node-b", _labels({"pwned": "1"}), 403),
    ("patch node-b status", "PATCH", "/api/v1/nodes/node-b/status", {"status": {"conditions": []}}, 403),
    ("delete node-b", "DELETE", "/api/v1/nodes/node-b", None, 403),
    ("patch own node", "PATCH", "/api/v1/nodes/node-a", _labels({"zone": "z1"}), 200),
    (
        "patch own node status",
        "PATCH",
        "/api/v1/nodes/node-a/status",
        {"status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}},
        200,
    ),
    ("lease of node-b", "PATCH", f"{LEASES}/node-b", {"spec": {"holderIdentity": "node-a"}}, 403),
    ("delete lease of node-b", "DELETE", f"{LEASES}/node-b", None, 403),
    ("own lease", "PATCH", f"{LEASES}/node-a", {"spec": {"holderIdentity": "node-a"}}, 200),
    ("tenant lease", "GET", KIND["leases"].path("acme-a", OBJECT), None, 403),
    ("tenants", "GET", TENANTS, None, 403),
    ("a tenant", "GET", f"{TENANTS}/acme", None, 403),
    ("users", "GET", USERS, None, 403),
    ("deployments", "GET", KIND["deployments"].path(None), None, 403),
    ("bind a pod", "POST", PODS.path("acme-a", OBJECT) + "/binding", BINDING, 403),
]


@pytest.mark.parametrize(
    ("what", "method", "path", "body", "want"), NODE_A_CASES, ids=[c[0] for c in NODE_A_CASES]
)
def test_node_restriction(
    world: TenantWorld, what: str, method: str, path: str, body: Any, want: int
) -> None:
    r = world.http("node-a").request(method, path, json=body, headers=MERGE if method == "PATCH" else {})
    assert r.status_code == want, r.text
    if want == 403:
        assert_forbidden(r.status_code, r.json(), "system:node:node-a")


def test_node_registers_itself_only(world: TenantWorld) -> None:
    """A node agent creates its own Node and Lease (`hypernetes up` does, with a node identity)
    and no other."""
    h = world.http(token=world.node_token("node-c"))
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "node-c"}}
    node = {"apiVersion": "v1", "kind": "Node"}
    assert h.post("/api/v1/nodes", json={**node, "metadata": {"name": "node-c"}}).status_code == 201
    assert h.post(LEASES, json={**lease, "metadata": {"name": "node-c"}}).status_code == 201
    for r in (
        h.post("/api/v1/nodes", json={**node, "metadata": {"name": "node-d"}}),
        h.post(LEASES, json={**lease, "metadata": {"name": "node-d"}}),
        h.post(KIND["leases"].path("acme-a"), json={**lease, "metadata": {"name": "node-c"}}),
    ):
        assert_forbidden(r.status_code, r.json(), "node-c")


def test_node_service_account_tokens(world: TenantWorld) -> None:
    """A node gets tokens only for the accounts of its pods, bound to them."""
    pod = world.op("GET", ON_A)
    tokens = "/api/v1/namespaces/acme-a/serviceaccounts/default/token"
    bound = {
        "spec": {
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": "on-node-a",
                "uid": pod["metadata"]["uid"],
            },
            "expirationSeconds": 600,
        }
    }
    assert world.http("node-a").post(tokens, json=bound).status_code == 201
    other = {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": OBJECT}}}
    for who, body in (("node-a", {"spec": {"expirationSeconds": 600}}), ("node-a", other), ("node-b", bound)):
        r = world.http(who).post(tokens, json=body)
        assert_forbidden(r.status_code, r.json())


# == 9. tokens ===================================================================================


def signer(w: TenantWorld) -> TokenSigner:
    assert w.api.tenancy is not None
    return w.api.tenancy.issuer.signer


def test_expired_token(world: TenantWorld) -> None:
    extra = {"hn.uid": world.users["globex-member"]["metadata"]["uid"]}
    old, _ = signer(world).issue(
        "globex-member", "user", 60, tenant="globex", extra=extra, now=time.time() - 3600
    )
    fresh, _ = signer(world).issue("globex-member", "user", 60, tenant="globex", extra=extra)
    assert not world.works(old)
    assert world.works(fresh)  # the control: the same claims, unexpired


def forgeries(token: str) -> dict[str, str]:
    h, p, s = token.split(".")
    flipped = p[:10] + ("A" if p[10] != "A" else "B") + p[11:]
    return {
        "tampered-sub": reencode(token, lambda _h, pl: pl.update(sub="globex-admin")),
        "tampered-tenant": reencode(token, lambda _h, pl: pl.update({"hn.tenant": "acme"})),
        "tampered-exp": reencode(token, lambda _h, pl: pl.update(exp=pl["exp"] + 10**6)),
        "node-kind": reencode(token, lambda _h, pl: pl.update({"hn.kind": "node", "sub": "node-a"})),
        "flipped-char": f"{h}.{flipped}.{s}",
        "forged-signature": f"{h}.{p}.{b64(os.urandom(32))}",
        "no-signature": f"{h}.{p}.",
        "alg-none": reencode(token, lambda hd, _p: hd.update(alg="none"), sig=""),
        "alg-none-kept-sig": reencode(token, lambda hd, _p: hd.update(alg="none")),
        "alg-HS512": reencode(token, lambda hd, _p: hd.update(alg="HS512")),
        "other-key": TokenSigner(os.urandom(32)).issue(
            "globex-member", "user", 3600, tenant="globex", extra={"hn.uid": jwt_parts(token)[1]["hn.uid"]}
        )[0],
    }


@pytest.mark.parametrize(
    "forgery",
    [
        "tampered-sub",
        "tampered-tenant",
        "tampered-exp",
        "node-kind",
        "flipped-char",
        "forged-signature",
        "no-signature",
        "alg-none",
        "alg-none-kept-sig",
        "alg-HS512",
        "other-key",
    ],
)
def test_forged_tokens(world: TenantWorld, forgery: str) -> None:
    token = world.tokens["globex-member"]
    assert world.works(token)
    forged = forgeries(token)[forgery]
    assert forged != token and not world.works(forged)
    assert_unauthorized(world.http(token=forged).get(PODS.path("globex-a")))


def test_deleted_and_recreated_user(world: TenantWorld) -> None:
    world.create_user("phoenix", "globex", "admin")
    world.set_password("phoenix", "phoenix-password-1")
    old = world.user_token("phoenix")  # issued after the password: only the re-creation can kill it
    world.op("DELETE", f"{USERS}/phoenix")
    world.op("POST", USERS, user_object("phoenix", "globex", "admin"))
    assert world.works(world.user_token("phoenix")) and not world.works(old)
    assert world.login("globex", "phoenix", "phoenix-password-1").status_code == 401  # the password died too


def test_password_change_kills_old_tokens(world: TenantWorld) -> None:
    world.create_user("pw-user", "globex", "member")
    world.set_password("pw-user", "first-password")
    r = world.login("globex", "pw-user", "first-password")
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert world.works(token)
    path, h = "/hypernetes/v1/users/pw-user/password", world.http(token=token)
    r = h.put(path, json={"password": "second-password", "currentPassword": "wrong-password"})
    assert_forbidden(r.status_code, r.json())
    r = h.put(path, json={"password": "second-password", "currentPassword": "first-password"})
    assert r.status_code == 200, r.text
    assert not world.works(token)
    assert world.login("globex", "pw-user", "first-password").status_code == 401
    assert world.works(world.login("globex", "pw-user", "second-password").json()["token"])


def test_revoke_and_logout(world: TenantWorld) -> None:
    world.create_user("rv-user", "globex", "member")
    world.set_password("rv-user", "rv-password-1")
    t1, t2 = (world.login("globex", "rv-user", "rv-password-1").json()["token"] for _ in range(2))
    assert world.works(t1) and world.works(t2)
    assert world.http(token=t1).post("/hypernetes/v1/logout").status_code == 200
    assert not world.works(t1) and world.works(t2)  # logout ends that one token only
    assert world.http(token=t1).post("/hypernetes/v1/logout").status_code == 401
    assert world.http(token="garbage").post("/hypernetes/v1/logout").status_code == 401
    assert world.http("globex-admin").post("/hypernetes/v1/users/rv-user/revoke").status_code == 200
    assert not world.works(t2)
    t3 = world.login("globex", "rv-user", "rv-password-1").json()["token"]
    assert world.works(t3)  # revoke ends the tokens issued until then, not the account


def test_disabled_user(world: TenantWorld) -> None:
    world.create_user("off-user", "globex", "member")
    world.set_password("off-user", "off-password-1")  # (kills the tokens issued until now)
    token = world.user_token("off-user")
    world.op("PATCH", f"{USERS}/off-user", {"spec": {"disabled": True}}, headers=MERGE)
    assert not world.works(token)  # the very next request
    assert world.login("globex", "off-user", "off-password-1").status_code == 401


def test_tenant_being_deleted_locks_its_users_out(world: TenantWorld) -> None:
    admin = world.fresh_tenant("doomed")
    assert world.http(admin).get(PODS.path("doomed-a")).status_code == 200
    world.op("DELETE", f"{TENANTS}/doomed")  # finalized by the tenant controller, not running here
    assert world.op("GET", f"{TENANTS}/doomed")["metadata"]["deletionTimestamp"]
    assert not world.works(world.tokens[admin])
    ns = {"metadata": {"name": "doomed-b", "labels": {TENANT_LABEL: "doomed"}}}
    assert world.http("operator").post(dry(NS), json=ns).status_code == 403


def test_demoted_admin_loses_writes_at_once(world: TenantWorld) -> None:
    h = world.http(token=world.create_user("demoted", "globex", "admin"))
    path, body = dry(CMS.path("globex-a")), CMS.body("d", "globex-a")
    for _ in range(5):
        world.op("PATCH", f"{USERS}/demoted", {"spec": {"role": "admin"}}, headers=MERGE)
        assert h.post(path, json=body).status_code == 201
        world.op("PATCH", f"{USERS}/demoted", {"spec": {"role": "viewer"}}, headers=MERGE)
        r = h.post(path, json=body)  # the very next request
        assert_forbidden(r.status_code, r.json(), "demoted")
        assert h.get(CMS.path("globex-a", OBJECT)).status_code == 200


def test_wrong_passwords_say_nothing(world: TenantWorld) -> None:
    world.create_user("login-user", "globex", "member")
    world.set_password("login-user", "right-password")
    answers = [
        world.login(*args)
        for args in (
            ("globex", "login-user", "wrong-password"),
            ("acme", "login-user", "right-password"),
            ("globex", "no-such-user", "right-password"),
            ("no-such-tenant", "login-user", "right-password"),
        )
    ]
    for r in answers:
        assert_unauthorized(r)
    assert len({r.json()["message"] for r in answers}) == 1
    r = world.login("globex", "login-user", "right-password")
    assert r.status_code == 201 and world.works(r.json()["token"])


def test_login_throttled_after_5_failures(world: TenantWorld) -> None:
    world.create_user("brute", "globex", "member")
    world.set_password("brute", "right-password")
    for i in range(5):
        assert world.login("globex", "brute", f"guess-{i}").status_code == 401
    r = world.login("globex", "brute", "guess-6")
    assert r.status_code == 429 and r.json()["kind"] == "Status", r.text
    assert world.login("globex", "brute", "right-password").status_code == 429  # not even the right one
    assert world.login("globex", "login-free", "x" * 8).status_code == 401  # other names are not throttled


GARBAGE_AUTH = [
    "Bearer",
    "Bearer  x",
    "Basic YWRtaW46YWRtaW4=",
    "bearer",
    "Bearer eyJ.eyJ.x",
    "Bearer eyJ..",
    "Bearer ...",
    "Bearer eyJhbGciOiJub25lIn0.e30.",
    "Bearer eyJ" + "a" * 7000 + ".b.c",
    "Bearer " + "a" * 8000,
    "Token abc",
    "Bearer a b c",
    "Negotiate YII=",
    "Bearer %00",
    "Bearer eyJ.eyJ.\\u00e9",
]


@pytest.mark.parametrize("header", GARBAGE_AUTH, ids=lambda h: h[:30])
def test_garbage_authorization_header(world: TenantWorld, header: str) -> None:
    assert_unauthorized(world.http().get(NS, headers={"Authorization": header}))


def test_non_ascii_signature(world: TenantWorld) -> None:
    """A token with our header and a non-ASCII signature: 401, not a crash in the compare."""
    h, p, _ = world.tokens["globex-member"].split(".")
    assert_unauthorized(world.http().get(NS, headers={b"Authorization": f"Bearer {h}.{p}.é".encode()}))


def test_non_utf8_authorization_header(world: TenantWorld) -> None:
    assert_unauthorized(world.http().get(NS, headers={b"Authorization": b"Bearer \xff\xfe"}))


def test_oversized_authorization_header(world: TenantWorld) -> None:
    """Beyond aiohttp's 8190-byte header line the HTTP layer answers 400 before any code of ours."""
    assert world.http().get(NS, headers={"Authorization": "Bearer " + "a" * 9000}).status_code == 400


# == 10. service accounts ========================================================================


def test_kubectl_create_token_for_account_without_role(world: TenantWorld) -> None:
    proc = world.kubectl("acme-admin", "create", "token", OBJECT, "-n", "acme-a")
    assert proc.returncode == 0, proc.stderr
    world.tokens["sa-web"] = proc.stdout.strip()
    info = json.loads(world.kubectl("sa-web", "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert info["username"] == "system:serviceaccount:acme-a:web"
    for ns in ("acme-a", "globex-a"):
        kubectl_forbidden(world.kubectl("sa-web", "get", "pods", "-n", ns))


@pytest.fixture(scope="module")
def robot(world: TenantWorld) -> str:
    """The caller name of a token for acme-a's service account `robot`, annotated role member."""
    world.create_sa("acme-admin", "acme-a", "robot", "member")
    world.tokens["sa-robot"] = world.sa_token("acme-admin", "acme-a", "robot")
    return "sa-robot"


@pytest.mark.parametrize(
    ("method", "path", "body", "want"),
    [
        ("GET", PODS.path("acme-a"), None, 200),
        ("POST", dry(CMS.path("acme-a")), CMS.body("sa-made", "acme-a"), 201),
        ("GET", SECRETS.path("acme-a", OBJECT), None, 200),
        ("GET", PODS.path("acme-b"), None, 403),
        ("POST", dry(CMS.path("acme-b")), CMS.body("sa-made", "acme-b"), 403),
        ("GET", PODS.path("globex-a"), None, 403),
        ("GET", SECRETS.path("globex-a", OBJECT), None, 403),
        ("POST", dry(NS), {"metadata": {"name": "sa-ns"}}, 403),
        ("GET", f"{NS}/acme-a", None, 403),
        ("GET", TENANTS, None, 403),
        ("GET", USERS, None, 403),
        ("POST", dry(USERS), user_object("sa-user", "acme", "admin"), 403),
        ("GET", "/api/v1/nodes", None, 403),
        ("PATCH", PODS.path("acme-a", OBJECT) + "/status", {"status": {}}, 403),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_member_service_account_stays_in_its_namespace(
    world: TenantWorld, robot: str, method: str, path: str, body: JSON | None, want: int
) -> None:
    r = world.http(robot).request(method, path, json=body, headers=MERGE if method == "PATCH" else {})
    assert r.status_code == want, r.text


def test_member_service_account_all_namespaces_list(world: TenantWorld, robot: str) -> None:
    pods = world.names("operator", "/api/v1/pods")
    assert world.names(robot, "/api/v1/pods") == {n for n in pods if n.startswith("acme-a/")}
    out = world.kubectl(robot, "get", "configmaps", "-A", "-o", "json").stdout
    assert {o["metadata"]["namespace"] for o in json.loads(out)["items"]} == {"acme-a"}


@pytest.mark.parametrize("role", ("admin", "", "root", "viewer"))
def test_service_account_cannot_be_admin(world: TenantWorld, role: str) -> None:
    name = f"sa-role-{role or 'empty'}"
    world.create_sa("acme-admin", "acme-b", name, role)
    h = world.http(token=world.sa_token("acme-admin", "acme-b", name))
    assert h.post(dry(CMS.path("acme-b")), json=CMS.body("x", "acme-b")).status_code == 403
    assert h.post(dry(NS), json={"metadata": {"name": "sa-x"}}).status_code == 403
    assert h.get(PODS.path("acme-b")).status_code == (200 if role == "viewer" else 403)


def test_service_account_token_of_other_tenant(world: TenantWorld) -> None:
    """A token of an acme account, in globex's hands, is still acme's account: nothing of globex."""
    world.create_sa("acme-admin", "acme-b", "leaked", "member")
    h = world.http(token=world.sa_token("acme-admin", "acme-b", "leaked"))
    for kind in KINDS:
        assert h.get(kind.path("globex-a")).status_code == 403
    assert h.get(PODS.path("acme-b")).status_code == 200  # the control
    r = world.http("globex-admin").post("/api/v1/namespaces/acme-b/serviceaccounts/leaked/token", json={})
    assert_forbidden(r.status_code, r.json(), "globex-admin")


def test_service_account_token_for_another_audience(world: TenantWorld) -> None:
    """A token asked for another audience (a vault, another tenant's service) is not a credential
    for this API: whoever it was handed to cannot replay it here."""
    world.create_sa("acme-admin", "acme-a", "aud-robot", "member")

    def token(audiences: list[str]) -> str:
        r = world.http("acme-admin").post(
            "/api/v1/namespaces/acme-a/serviceaccounts/aud-robot/token",
            json={"spec": {"audiences": audiences}},
        )
        assert r.status_code == 201 and r.json()["spec"]["audiences"] == audiences, r.text
        return str(r.json()["status"]["token"])

    assert not world.works(token(["https://vault.example"]))
    assert world.works(token(["https://vault.example", SA_AUDIENCE]))
    assert world.works(world.sa_token("acme-admin", "acme-a", "aud-robot"))  # the default audience


def test_bound_token_dies_with_pod_and_account(world: TenantWorld) -> None:
    world.create_sa("acme-admin", "acme-b", "bound", "member")
    body = PODS.body("sa-pod", "acme-b")
    body["spec"]["serviceAccountName"] = "bound"
    member = world.http("acme-member")
    pod = member.post(PODS.path("acme-b"), json=body).json()
    bound = world.sa_token("acme-admin", "acme-b", "bound", pod)
    unbound = world.sa_token("acme-admin", "acme-b", "bound")
    assert world.works(bound) and world.works(unbound)
    assert member.delete(PODS.path("acme-b", "sa-pod")).status_code == 200
    assert not world.works(bound) and world.works(unbound)
    assert member.delete(SAS.path("acme-b", "bound")).status_code == 200
    assert not world.works(unbound)
    world.create_sa("acme-admin", "acme-b", "bound", "member")  # same name, new account
    assert not world.works(unbound)
    # a token bound to a pod that runs as another account is refused
    r = world.http("acme-admin").post(
        "/api/v1/namespaces/acme-b/serviceaccounts/bound/token",
        json={"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": OBJECT}}},
    )
    assert r.status_code == 422, r.text


# == 11. quotas ==================================================================================

QUOTA = {"pods": "2", "memory": "1Gi", "namespaces": "2"}


def test_quota_pods_memory_namespaces(world: TenantWorld) -> None:
    admin = world.fresh_tenant("initech", {"quota": QUOTA})
    h = world.http(admin)
    r = h.post(PODS.path("initech-a"), json=pod_with("huge", "initech-a", memory="2Gi"))
    assert_forbidden(r.status_code, r.json())
    assert (
        'exceeded quota of tenant "initech": memory: requested 2080Mi, used 0, limited 1Gi '
        "(over by 1056Mi)" in r.json()["message"]
    ), r.json()["message"]
    for name in ("p1", "p2"):
        assert h.post(PODS.path("initech-a"), json=pod_with(name, "initech-a")).status_code == 201
    proc = world.kubectl(admin, "run", "p3", "--image=busybox", "-n", "initech-a")
    kubectl_forbidden(proc)
    assert 'exceeded quota of tenant "initech": pods: requested 1, used 2, limited 2' in proc.stderr
    assert h.post(dry(NS), json={"metadata": {"name": "initech-b"}}).status_code == 201
    world.create_namespace(admin, "initech-b", "initech")
    r = h.post(NS, json={"metadata": {"name": "initech-c"}})
    assert_forbidden(r.status_code, r.json())
    assert "namespaces: requested 1, used 2, limited 2" in r.json()["message"]
    # the quota holds across the tenant's namespaces, and a finished pod frees its slot
    r = h.post(PODS.path("initech-b"), json=pod_with("p3", "initech-b"))
    assert r.status_code == 403 and "pods: requested 1, used 2" in r.json()["message"]
    world.op(
        "PATCH", PODS.path("initech-a", "p1") + "/status", {"status": {"phase": "Succeeded"}}, headers=MERGE
    )
    assert h.post(PODS.path("initech-b"), json=pod_with("p3", "initech-b")).status_code == 201


def test_quota_not_evaded_by_status_in_the_create(world: TenantWorld) -> None:
    """A pod that claims to have finished already when it is created still counts."""
    h, ns = world.http(world.fresh_tenant("initech2", {"quota": QUOTA})), "initech2-a"
    for i in range(2):
        r = h.post(PODS.path(ns), json=pod_with(f"done-{i}", ns, status={"phase": "Succeeded"}))
        assert r.status_code == 201 and r.json()["status"]["phase"] == "Pending", r.text
    r = h.post(PODS.path(ns), json=pod_with("one-too-many", ns, status={"phase": "Failed"}))
    assert_forbidden(r.status_code, r.json())


def test_quota_applies_to_operator_created_pods(world: TenantWorld) -> None:
    """A Deployment scaled above the quota: the pods its controller (an operator) creates from the
    template beyond the quota are refused, because the rules follow the namespace's tenant."""
    admin = world.fresh_tenant("initech3", {"quota": QUOTA})
    deployments = KIND["deployments"]
    deploy = deployments.body("app", "initech3-a")
    assert world.http(admin).post(deployments.path("initech3-a"), json=deploy).status_code == 201
    r = world.http(admin).patch(
        deployments.path("initech3-a", "app") + "/scale", json={"spec": {"replicas": 5}}, headers=MERGE
    )
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 5, r.text
    template = deploy["spec"]["template"]
    codes = []
    for i in range(5):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "name": f"app-{i}"},
            "spec": template["spec"],
        }
        r = world.http("operator").post(PODS.path("initech3-a"), json=pod)
        codes.append(r.status_code)
        if r.status_code == 403:
            assert 'exceeded quota of tenant "initech3": pods' in r.json()["message"]
    assert codes == [201, 201, 403, 403, 403]


@pytest.mark.parametrize("round_", range(3))
def test_quota_under_concurrent_creates(world: TenantWorld, round_: int) -> None:
    """16 parallel creates of namespaces, then of pods, with the official client: never more than
    the quota allows (three rounds: a race that lets one through shows up in one of them)."""
    tenant = f"initech-race{round_}"
    admin = world.fresh_tenant(tenant, {"quota": {"pods": "3", "namespaces": "5"}}, namespaces=())
    core = world.py(admin).core

    def create_ns(i: int) -> int:
        return status_of(lambda: core.create_namespace({"metadata": {"name": f"{tenant}-{i}"}}, **RAW))[0]

    with ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(create_ns, range(16))) == [201] * 5 + [403] * 11
    mine = sorted(world.owned(tenant))
    assert len(mine) == 5

    def create_pod(i: int) -> int:
        ns = mine[i % 5]
        return status_of(lambda: core.create_namespaced_pod(ns, pod_with(f"c{i}", ns), **RAW))[0]

    with ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(create_pod, range(16))) == [201] * 3 + [403] * 13
    assert len([n for n in world.names("operator", "/api/v1/pods") if n.split("/")[0] in mine]) == 3


def test_quota_storage_and_claims(world: TenantWorld) -> None:
    h = world.http(
        world.fresh_tenant("initech5", {"quota": {"persistentvolumeclaims": "1", "storage": "1Gi"}})
    )
    claims = KIND["persistentvolumeclaims"]
    big = claims.body("big", "initech5-a")
    big["spec"]["resources"]["requests"]["storage"] = "5Gi"
    assert h.post(claims.path("initech5-a"), json=big).status_code == 403
    assert h.post(claims.path("initech5-a"), json=claims.body("c1", "initech5-a")).status_code == 201
    assert h.post(claims.path("initech5-a"), json=claims.body("c2", "initech5-a")).status_code == 403


# == 12. pod policy ==============================================================================

POLICY = {"allowedRuntimeClasses": ["hypervm"], "allowedKernels": ["lts-6.1"]}
PRIVILEGED = {"privileged": True}
NO_HOST = "a pod VM has no access to the host's namespaces"
NOT_PRIVILEGED = "tenants may not run privileged containers"


def _spec(**fields: Any) -> Callable[[JSON], None]:
    return lambda holder: holder["spec"].update(fields)


def _container(**fields: Any) -> Callable[[JSON], None]:
    return lambda holder: holder["spec"]["containers"][0].update(fields)


def _annotate(**annotations: str) -> Callable[[JSON], None]:
    return lambda holder: holder.setdefault("metadata", {}).update(annotations=annotations)


# (id, change to the pod (template) {metadata, spec}, HTTP status, what the refusal says)
POLICY_CASES: list[tuple[str, Callable[[JSON], None], int, str]] = [
    ("hostNetwork", _spec(hostNetwork=True), 403, f"hostNetwork: {NO_HOST}"),
    ("hostPID", _spec(hostPID=True), 403, f"hostPID: {NO_HOST}"),
    ("hostIPC", _spec(hostIPC=True), 403, f"hostIPC: {NO_HOST}"),
    (
        "privileged",
        _container(securityContext=PRIVILEGED),
        403,
        f"containers[0].securityContext.privileged: {NOT_PRIVILEGED}",
    ),
    (
        "privileged-init",
        _spec(initContainers=[{"name": "i", "image": "x", "securityContext": PRIVILEGED}]),
        403,
        f"initContainers[0].securityContext.privileged: {NOT_PRIVILEGED}",
    ),
    # refused before admission: validation knows no hostPath volumes at all
    (
        "hostPath",
        _spec(volumes=[{"name": "h", "hostPath": {"path": "/etc"}}]),
        422,
        'volumes[0].hostPath: Unsupported value: "hostPath"',
    ),
    (
        "runtimeClassName",
        _spec(runtimeClassName="gvisor"),
        403,
        'runtimeClassName: runtime class "gvisor" is not allowed for tenant "umbrella" (allowed: hypervm)',
    ),
    (
        "kernel",
        _annotate(**{"hypernetes.io/kernel": "custom-6.6"}),
        403,
        'kernel "custom-6.6" is not allowed for tenant "umbrella" (allowed: hypernetes, lts-6.1)',
    ),
]


@pytest.fixture(scope="module")
def umbrella(world: TenantWorld) -> str:
    """The admin of tenant umbrella, whose pods may use runtime class hypervm and kernel lts-6.1."""
    return world.fresh_tenant("umbrella", POLICY)


@pytest.mark.parametrize("kind", ("pods", "deployments", "replicasets", "jobs"))
@pytest.mark.parametrize(("case", "change", "code", "words"), POLICY_CASES, ids=[c[0] for c in POLICY_CASES])
def test_pod_policy(
    world: TenantWorld,
    umbrella: str,
    kind: str,
    case: str,
    change: Callable[[JSON], None],
    code: int,
    words: str,
) -> None:
    k = KIND[kind]
    obj = k.body(f"pol-{case.lower()}", "umbrella-a")
    change(obj if kind == "pods" else obj["spec"]["template"])
    r = world.http(umbrella).post(k.path("umbrella-a"), json=obj)
    assert r.status_code == code, r.text
    message = r.json()["message"]
    assert words in message, message
    if case == "kernel":  # the field path names the pod's metadata or the template's
        assert (
            "" if kind == "pods" else "spec.template."
        ) + "metadata.annotations[hypernetes.io/kernel]" in message
    else:  # the pod's spec or the template's
        assert ("spec." if kind == "pods" else "spec.template.spec.") + words.split(":")[0] in message


def test_pod_policy_allows_what_the_tenant_may(world: TenantWorld, umbrella: str) -> None:
    # a kernel is admitted only if a node offers it: node-a's agent says it has lts-6.1
    world.op(
        "PATCH",
        "/api/v1/nodes/node-a",
        {"metadata": {"annotations": {"hypernetes.io/kernels": "hypernetes,lts-6.1"}}},
        headers=MERGE,
    )
    pod = PODS.body("allowed", "umbrella-a")
    pod["metadata"]["annotations"] = {"hypernetes.io/kernel": "lts-6.1"}
    pod["spec"]["runtimeClassName"] = "hypervm"
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": False}
    r = world.http(umbrella).post(dry(PODS.path("umbrella-a")), json=pod)
    assert r.status_code == 201, r.text


def test_tenants_may_not_pick_a_node(world: TenantWorld, umbrella: str) -> None:
    """Placement is the scheduler's: a tenant naming a node would choose which host its VM shares."""
    pod = PODS.body("pinned", "umbrella-a")
    pod["spec"]["nodeName"] = "node-a"
    r = world.http(umbrella).post(PODS.path("umbrella-a"), json=pod)
    assert_forbidden(r.status_code, r.json())
    assert "spec.nodeName: tenants may not choose a node" in r.json()["message"]


def test_pod_policy_on_template_update(world: TenantWorld, umbrella: str) -> None:
    k = KIND["deployments"]
    r = world.http(umbrella).post(k.path("umbrella-a"), json=k.body("tmpl", "umbrella-a"))
    assert r.status_code == 201
    r = world.http(umbrella).patch(
        k.path("umbrella-a", "tmpl"),
        headers=MERGE,
        json={"spec": {"template": {"spec": {"hostNetwork": True}}}},
    )
    assert_forbidden(r.status_code, r.json())
    assert f"spec.template.spec.hostNetwork: {NO_HOST}" in r.json()["message"]
    proc = world.kubectl(
        umbrella, "run", "k", "--image=busybox", "-n", "umbrella-a", '--overrides={"spec":{"hostPID":true}}'
    )
    kubectl_forbidden(proc)
    assert f"spec.hostPID: {NO_HOST}" in proc.stderr


# == 13. audit ===================================================================================


def test_audit_log(world: TenantWorld) -> None:
    member, spy = world.http("acme-member"), world.http("globex-admin")
    assert member.post(CMS.path("acme-a"), json=CMS.body("audited", "acme-a")).status_code == 201
    r = member.patch(CMS.path("acme-a", "audited"), json={"data": {"k": "2"}}, headers=MERGE)
    assert r.status_code == 200
    assert member.get(CMS.path("acme-a", "audited")).status_code == 200
    assert member.get(CMS.path("acme-a")).status_code == 200
    assert spy.delete(CMS.path("acme-a", "audited")).status_code == 403
    assert spy.get(CMS.path("acme-a", "audited")).status_code == 403
    assert world.http("acme-viewer").post(CMS.path("acme-a"), json=CMS.body("v", "acme-a")).status_code == 403
    assert world.http(token="nonsense").delete(CMS.path("acme-a", "audited")).status_code == 401
    assert member.delete(CMS.path("acme-a", "audited")).status_code == 200

    entries = [e for e in world.audit() if e["path"].startswith(CMS.path("acme-a"))]
    keys = ("user", "tenant", "verb", "resource", "namespace", "name", "code", "result")
    got = [tuple(e[k] for k in keys) for e in entries[-6:]]
    assert got == [
        ("acme-member", "acme", "create", "configmaps", "acme-a", "audited", 201, "allowed"),
        ("acme-member", "acme", "patch", "configmaps", "acme-a", "audited", 200, "allowed"),
        ("globex-admin", "globex", "delete", "configmaps", "acme-a", "audited", 403, "denied"),
        ("acme-viewer", "acme", "create", "configmaps", "acme-a", None, 403, "denied"),  # body never read
        (None, None, "delete", "", None, None, 401, "denied"),  # not authenticated: not parsed either
        ("acme-member", "acme", "delete", "configmaps", "acme-a", "audited", 200, "allowed"),
    ]
    assert not [e for e in world.audit() if e["verb"] in READS]
    assert (world.api.workdir / "audit.log").stat().st_mode & 0o777 == 0o600


def test_audit_node_and_subresources(world: TenantWorld) -> None:
    r = world.http("node-a").patch(ON_A + "/status", json={"status": {"message": "audited"}}, headers=MERGE)
    assert r.status_code == 200
    r = world.http("globex-admin").post("/api/v1/namespaces/acme-a/serviceaccounts/web/token", json={})
    assert r.status_code == 403
    assert [(e["user"], e["tenant"], e["verb"], e["subresource"], e["code"]) for e in world.audit()[-2:]] == [
        ("system:node:node-a", "acme", "patch", "status", 200),
        ("globex-admin", "globex", "create", "token", 403),
    ]
