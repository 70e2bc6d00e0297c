"""RBAC inside a tenant (docs/tenants.md, "RBAC inside a tenant"): Roles and RoleBindings narrow a
tenant's users and service accounts, never widen them, never reach across tenants; no escalation;
the built-in ClusterRoles; quota; validation; and the local APIServices. A real API server with
the real kubectl 1.32 and the official Python client; every refusal has its positive control."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client as kc
import pytest

from hypernetes.api.registry.rbac.builtin import tenant_role_rules
from hypernetes.auth.authorizer import role_probe
from hypernetes.auth.rbac import Request, requests_of, rule_allows
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread
from tests.support.tenants import TenantWorld, assert_forbidden
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")

RBAC = "/apis/rbac.authorization.k8s.io/v1"
CM = "/api/v1/namespaces/{ns}/configmaps"
USERS = {
    "acme": {"acme-admin": "admin", "acme-admin2": "admin", "acme-member": "member", "acme-viewer": "viewer"},
    "globex": {"globex-admin": "admin"},
}
NAMESPACES = {"acme": ("acme-a", "acme-b"), "globex": ("globex-a",)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantWorld]:
    api = ApiServerThread(Path(tmp_path_factory.mktemp("rbac")), tenancy=True).start()
    w = TenantWorld(api)
    try:
        for tenant, users in USERS.items():
            w.create_tenant(tenant)
            for name, role in users.items():
                w.create_user(name, tenant, role)
            for ns in NAMESPACES[tenant]:
                w.create_namespace(f"{tenant}-admin", ns, tenant)
        yield w
    finally:
        w.close()
        api.stop()


def ok(proc: Any) -> str:
    assert proc.returncode == 0, proc.stderr
    return str(proc.stdout)


def can_i(w: TenantWorld, who: str, *args: str) -> bool:
    proc = w.kubectl(who, "auth", "can-i", *args)
    answer = proc.stdout.split(" ")[0].strip()
    assert answer in ("yes", "no"), proc
    return answer == "yes"


def eventually_can(w: TenantWorld, who: str, want: bool, *args: str) -> None:
    """RBAC objects reach the authorizer through a watch: wait (milliseconds) until it says so."""
    wait_for(lambda: can_i(w, who, *args) == want, timeout=10, interval=0.05, what=f"{who} can-i {args}")


def cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": list(rules),
    }


def binding(name: str, kind: str, ref: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": ref},
        "subjects": list(subjects),
    }


def user(name: str) -> dict[str, Any]:
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def post(w: TenantWorld, who: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return w.http(who).post(path, json=body)


# -- the built-in roles are the tenant roles, written out ------------------------------------------


@pytest.mark.parametrize("role_name", ["viewer", "member", "admin"])
def test_builtin_role_rules_are_the_ceiling(role_name: str) -> None:
    """Every request `view`/`edit`/`admin` grants is one the tenant role of that level allows (so
    binding one never exceeds it and an admin can always bind it), and the next role down lacks
    something of it."""
    allows = role_probe(role_name)
    rules = tenant_role_rules(role_name)
    asks = [q for r in rules for q in requests_of(r) or ()]
    assert asks and all(allows(q) for q in asks)
    lower = {"admin": "member", "member": "viewer"}.get(role_name)
    if lower:
        assert not all(role_probe(lower)(q) for q in asks)
    assert (Request("get", "", "secrets") in asks) == (role_name != "viewer")
    assert (Request("create", "rbac.authorization.k8s.io", "rolebindings") in asks) == (role_name == "admin")


def test_rule_matching_as_upstream() -> None:
    r = {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["*/scale"], "resourceNames": ["web"]}
    assert rule_allows(r, Request("get", "apps", "deployments", "scale", "web"))
    assert not rule_allows(r, Request("get", "apps", "deployments", "scale", "db"))
    assert not rule_allows(r, Request("get", "apps", "deployments", "", "web"))
    assert not rule_allows(r, Request("list", "apps", "deployments", "scale", ""))
    star = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
    assert rule_allows(star, Request("delete", "x.io", "things", "status", "a"))
    assert requests_of(star) is None  # only a holder of the wildcard may grant it
    assert not rule_allows({"verbs": ["get"], "nonResourceURLs": ["*"]}, Request("get", "", "pods"))


# -- narrowing a user ------------------------------------------------------------------------------


def test_member_restricted_to_reading_configmaps_in_one_namespace(world: TenantWorld) -> None:
    w = world
    assert post(w, "acme-member", CM.format(ns="acme-b"), cm("before")).status_code == 201  # control
    ok(
        w.kubectl(
            "acme-admin",
            "create",
            "role",
            "cm-reader",
            "--verb=get,list,watch",
            "--resource=configmaps",
            "-n",
            "acme-a",
        )
    )
    ok(
        w.kubectl(
            "acme-admin",
            "create",
            "rolebinding",
            "member-cm",
            "--role=cm-reader",
            "--user=acme-member",
            "-n",
            "acme-a",
        )
    )
    roles = ok(w.kubectl("acme-admin", "get", "roles", "-n", "acme-a"))
    assert roles.split("\n")[0].split() == ["NAME", "CREATED", "AT"] and "cm-reader" in roles
    wide = ok(w.kubectl("acme-admin", "get", "rolebindings", "-n", "acme-a", "-o", "wide"))
    row = next(line.split() for line in wide.splitlines() if line.startswith("member-cm"))
    assert row[1] == "Role/cm-reader" and "acme-member" in row
    eventually_can(w, "acme-member", False, "create", "configmaps", "-n", "acme-a")
    assert can_i(w, "acme-member", "list", "configmaps", "-n", "acme-a")
    assert not can_i(w, "acme-member", "list", "pods", "-n", "acme-a")
    why = w.kubectl("acme-member", "auth", "can-i", "create", "configmaps", "-n", "acme-a").stdout
    assert why.strip() == 'no - RBAC: no RoleBinding in namespace "acme-a" allows it', why
    assert not can_i(w, "acme-member", "create", "configmaps", "-n", "acme-b")  # bound: nothing elsewhere
    # the same answers from the real requests
    assert w.http("acme-member").get(CM.format(ns="acme-a")).status_code == 200
    r = post(w, "acme-member", CM.format(ns="acme-a"), cm("x"))
    assert_forbidden(r.status_code, r.json(), "acme-member")
    assert "RBAC" in r.json()["message"]
    r = post(w, "acme-member", CM.format(ns="acme-b"), cm("y"))
    assert_forbidden(r.status_code, r.json(), "acme-member")
    # a list across namespaces shows the one namespace the binding allows
    listed = ok(w.kubectl("acme-member", "get", "configmaps", "-A", "-o", "name"))
    assert w.names("acme-member", "/api/v1/configmaps") == {
        o for o in w.names("acme-admin", "/api/v1/configmaps") if o.startswith("acme-a/")
    }
    assert "configmap/before" not in listed
    rules = ok(w.kubectl("acme-member", "auth", "can-i", "--list", "-n", "acme-a"))
    rows = {line.split()[0]: line for line in rules.splitlines()[1:] if line.strip()}
    assert "[get list watch]" in rows["configmaps"] and "pods" not in rows
    # unbinding gives the tenant role back
    ok(w.kubectl("acme-admin", "delete", "rolebinding", "member-cm", "-n", "acme-a"))
    eventually_can(w, "acme-member", True, "create", "configmaps", "-n", "acme-b")


def test_binding_admin_clusterrole_cannot_exceed_tenant_role(world: TenantWorld) -> None:
    w = world
    ok(
        w.kubectl(
            "acme-admin",
            "create",
            "rolebinding",
            "viewer-admin",
            "--clusterrole=admin",
            "--user=acme-viewer",
            "-n",
            "acme-a",
        )
    )
    ok(
        w.kubectl(
            "acme-admin",
            "create",
            "rolebinding",
            "member-admin",
            "--clusterrole=admin",
            "--user=acme-member",
            "-n",
            "acme-b",
        )
    )
    eventually_can(w, "acme-member", False, "create", "configmaps", "-n", "acme-a")  # bound in acme-b only
    assert can_i(w, "acme-viewer", "list", "pods", "-n", "acme-a")  # control: view is within admin
    for who, ns, args in (
        ("acme-viewer", "acme-a", ("create", "configmaps")),
        ("acme-viewer", "acme-a", ("get", "secrets")),
        ("acme-member", "acme-b", ("create", "rolebindings")),
        ("acme-member", "acme-b", ("create", "roles")),
    ):
        assert not can_i(w, who, *args, "-n", ns), (who, args)
    r = post(w, "acme-viewer", CM.format(ns="acme-a"), cm("v"))
    assert_forbidden(r.status_code, r.json(), "acme-viewer")
    r = post(
        w,
        "acme-member",
        f"{RBAC}/namespaces/acme-b/rolebindings",
        binding("m", "ClusterRole", "view", user("acme-viewer")),
    )
    assert_forbidden(r.status_code, r.json(), "acme-member")
    assert post(w, "acme-member", CM.format(ns="acme-b"), cm("m")).status_code == 201  # control: edit holds
    ok(w.kubectl("acme-admin", "delete", "rolebinding", "viewer-admin", "-n", "acme-a"))
    ok(w.kubectl("acme-admin", "delete", "rolebinding", "member-admin", "-n", "acme-b"))
    eventually_can(w, "acme-member", True, "create", "configmaps", "-n", "acme-a")


def test_cross_tenant_binding_grants_and_restricts_nothing(world: TenantWorld) -> None:
    """globex's admin names acme's member, acme's users' group and an acme service account in a
    RoleBinding of its own namespace: none of them gets anything there, and none is narrowed at
    home. The create itself succeeds, as upstream (it tells nothing about other tenants' names)."""
    w = world
    foreign = binding(
        "steal",
        "ClusterRole",
        "edit",
        user("acme-member"),
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "hypernetes:tenant:acme"},
        {"kind": "ServiceAccount", "name": "default", "namespace": "acme-a"},
    )
    r = post(w, "globex-admin", f"{RBAC}/namespaces/globex-a/rolebindings", foreign)
    assert r.status_code == 201, r.text
    sa = w.create_sa("acme-admin", "acme-a", "worker", "member")
    foreign["metadata"]["name"] = "steal-sa"
    foreign["subjects"] = [{"kind": "ServiceAccount", "name": "worker", "namespace": "acme-a"}]
    assert post(w, "globex-admin", f"{RBAC}/namespaces/globex-a/rolebindings", foreign).status_code == 201
    token = w.sa_token("acme-admin", "acme-a", sa["metadata"]["name"])
    w.tokens["acme-worker"] = token
    wait_for(
        lambda: w.api.tenancy is not None and w.api.tenancy.directory.rbac.bindings.get("globex-a/steal-sa")
    )
    for who in ("acme-member", "acme-worker"):
        assert not can_i(w, who, "list", "configmaps", "-n", "globex-a")
        r = w.http(who).get(CM.format(ns="globex-a"))
        assert_forbidden(r.status_code, r.json(), who.replace("acme-worker", "acme-a:worker"))
    # not narrowed at home: the member still writes in both namespaces, the account in its own
    assert post(w, "acme-member", CM.format(ns="acme-b"), cm("home")).status_code == 201
    assert post(w, "acme-worker", CM.format(ns="acme-a"), cm("home-sa")).status_code == 201


# -- escalation -----------------------------------------------------------------------------------


def test_escalation_refused(world: TenantWorld) -> None:
    w = world
    roles = f"{RBAC}/namespaces/acme-a/roles"
    bindings = f"{RBAC}/namespaces/acme-a/rolebindings"
    for rules in (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]},  # not a tenant's
        {"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"]},  # a wildcard
        {"verbs": ["update"], "apiGroups": [""], "resources": ["pods/status"]},  # the nodes'
        {"verbs": ["get"], "apiGroups": ["hypernetes.io"], "resources": ["tenants"]},
    ):
        r = post(w, "acme-admin", roles, role("too-much", rules))
        assert_forbidden(r.status_code, r.json(), "acme-admin")
        assert "attempting to grant RBAC permissions not currently held" in r.json()["message"], r.text
    # ConfirmNoEscalation names only the pieces not held (BreakdownRule, CompactRules), sorted,
    # each as rbacv1helpers.CompactString prints it
    r = post(
        w,
        "acme-admin",
        roles,
        role(
            "part",
            {"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods", "nodes"]},
            {
                "verbs": ["get"],
                "apiGroups": ["hypernetes.io"],
                "resources": ["tenants"],
                "resourceNames": ["acme"],
            },
        ),
    )
    assert_forbidden(r.status_code, r.json(), "acme-admin")
    head, _, held_not = r.json()["message"].partition(
        " is attempting to grant RBAC permissions not currently held:\n"
    )
    assert head.startswith(
        'roles.rbac.authorization.k8s.io "part" is forbidden: user "acme-admin" (groups=['
    ), head
    assert held_not.split("\n") == [
        '{APIGroups:[""], Resources:["nodes"], Verbs:["get" "delete"]}',
        '{APIGroups:["hypernetes.io"], Resources:["tenants"], ResourceNames:["acme"], Verbs:["get"]}',
    ], held_not
    assert (
        post(
            w, "acme-admin", roles, role("fine", {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
        ).status_code
        == 201
    )
    r = post(w, "acme-admin", bindings, binding("root", "ClusterRole", "cluster-admin", user("acme-member")))
    assert_forbidden(r.status_code, r.json(), "acme-admin")
    # upstream's escalation check reads the role from the storage: a missing one is its 404
    r = post(w, "acme-admin", bindings, binding("ghost", "Role", "no-such-role", user("acme-member")))
    body = r.json()
    assert (r.status_code, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'roles.rbac.authorization.k8s.io "no-such-role" not found',
    ), body
    assert body["details"] == {"name": "no-such-role", "group": "rbac.authorization.k8s.io", "kind": "roles"}
    # a tenant admin narrowed by RBAC grants only what it still holds
    limited = role(
        "binder",
        {
            "verbs": ["create", "get", "list"],
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["rolebindings"],
        },
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"]},
    )
    assert post(w, "acme-admin", roles, limited).status_code == 201
    assert (
        post(
            w,
            "acme-admin",
            roles,
            role("cm-get", {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}),
        ).status_code
        == 201
    )
    assert (
        post(
            w, "acme-admin", bindings, binding("admin2-binder", "Role", "binder", user("acme-admin2"))
        ).status_code
        == 201
    )
    eventually_can(w, "acme-admin2", False, "create", "configmaps", "-n", "acme-a")
    r = post(w, "acme-admin2", bindings, binding("esc", "ClusterRole", "edit", user("acme-member")))
    assert_forbidden(r.status_code, r.json(), "acme-admin2")
    r = post(w, "acme-admin2", bindings, binding("ok", "Role", "cm-get", user("acme-member")))
    assert r.status_code == 201, r.text
    for name in ("ok", "admin2-binder"):
        assert w.http("acme-admin").delete(f"{bindings}/{name}").status_code == 200


# -- service accounts ----------------------------------------------------------------------------


def test_service_accounts_from_rolebindings(world: TenantWorld) -> None:
    w = world
    ns = "acme-b"
    # an annotated account acts by its annotation until a binding names it; then only as bound
    w.create_sa("acme-admin", ns, "getter", "member")
    w.create_sa("acme-admin", ns, "plain", None)
    w.tokens["getter"] = w.sa_token("acme-admin", ns, "getter")
    w.tokens["plain"] = w.sa_token("acme-admin", ns, "plain")
    assert post(w, "getter", CM.format(ns=ns), cm("by-annotation")).status_code == 201
    r = w.http("plain").get(CM.format(ns=ns))
    assert_forbidden(r.status_code, r.json(), "plain")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/busybox:1"}]},
    }
    assert post(w, "acme-admin", f"/api/v1/namespaces/{ns}/pods", pod).status_code == 201
    ok(w.kubectl("acme-admin", "create", "role", "pod-getter", "--verb=get", "--resource=pods", "-n", ns))
    ok(
        w.kubectl(
            "acme-admin",
            "create",
            "rolebinding",
            "getter",
            "--role=pod-getter",
            f"--serviceaccount={ns}:getter",
            "-n",
            ns,
        )
    )
    ok(
        w.kubectl(
            "acme-admin",
            "create",
            "rolebinding",
            "plain-view",
            "--clusterrole=view",
            f"--serviceaccount={ns}:plain",
            "-n",
            ns,
        )
    )
    eventually_can(w, "getter", False, "create", "configmaps", "-n", ns)
    assert w.http("getter").get(f"/api/v1/namespaces/{ns}/pods/p").status_code == 200
    for path in (f"/api/v1/namespaces/{ns}/pods", CM.format(ns=ns)):
        r = w.http("getter").get(path)
        assert_forbidden(r.status_code, r.json(), "getter")
    # without an annotation the binding is all it has (upstream's way): view, in that namespace
    eventually_can(w, "plain", True, "list", "pods", "-n", ns)
    assert w.http("plain").get(f"/api/v1/namespaces/{ns}/pods").status_code == 200
    r = post(w, "plain", CM.format(ns=ns), cm("plain"))
    assert_forbidden(r.status_code, r.json(), "plain")
    assert not can_i(w, "plain", "list", "pods", "-n", "acme-a")
    # the python client sees the same bindings
    rbac = w.py("acme-admin").api("RbacAuthorizationV1Api")
    names = {b.metadata.name for b in rbac.list_namespaced_role_binding(ns).items}
    assert {"getter", "plain-view"} <= names


def test_viewer_service_account_reads_no_secrets(world: TenantWorld) -> None:
    """The role table says viewers read no secrets; an account annotated viewer did (the account
    path skipped the check users had)."""
    w = world
    w.create_sa("acme-admin", "acme-a", "looker", "viewer")
    w.tokens["looker"] = w.sa_token("acme-admin", "acme-a", "looker")
    assert w.http("looker").get(CM.format(ns="acme-a")).status_code == 200  # control
    r = w.http("looker").get("/api/v1/namespaces/acme-a/secrets")
    assert_forbidden(r.status_code, r.json(), "looker")


# -- the kinds themselves: validation, quota, watch ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field", "reason"),
    [
        (
            "roles",
            role("r", {"apiGroups": [""], "resources": ["pods"]}),
            "rules[0].verbs",
            "FieldValueRequired",
        ),
        (
            "roles",
            role("r", {"verbs": ["get"], "resources": ["pods"]}),
            "rules[0].apiGroups",
            "FieldValueRequired",
        ),
        (
            "roles",
            role("r", {"verbs": ["get"], "apiGroups": [""]}),
            "rules[0].resources",
            "FieldValueRequired",
        ),
        (
            "roles",
            role("r", {"verbs": ["get"], "nonResourceURLs": ["/x"]}),
            "rules[0].nonResourceURLs",
            "FieldValueInvalid",
        ),
        (
            "rolebindings",
            binding("b", "Role", "r", {"kind": "Robot", "name": "x"}),
            "subjects[0].kind",
            "FieldValueNotSupported",
        ),
        ("rolebindings", binding("b", "Secret", "r"), "roleRef.kind", "FieldValueNotSupported"),
        ("rolebindings", binding("b", "Role", ""), "roleRef.name", "FieldValueRequired"),
    ],
)
def test_validation_as_upstream(
    world: TenantWorld, path: str, body: dict[str, Any], field: str, reason: str
) -> None:
    r = post(world, "operator", f"{RBAC}/namespaces/acme-a/{path}", body)
    assert r.status_code == 422, r.text
    assert any(c["field"] == field and c["reason"] == reason for c in r.json()["details"]["causes"]), r.text


def test_role_ref_immutable_and_subjects_defaulted(world: TenantWorld) -> None:
    w = world
    body = binding("imm", "ClusterRole", "view", {"kind": "User", "name": "acme-viewer"})
    del body["roleRef"]["apiGroup"]
    made = w.op("POST", f"{RBAC}/namespaces/acme-a/rolebindings", body)
    assert made["roleRef"]["apiGroup"] == made["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    made["roleRef"]["name"] = "edit"
    r = w.http("operator").put(f"{RBAC}/namespaces/acme-a/rolebindings/imm", json=made)
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "roleRef", r.text
    assert "cannot change roleRef" in r.text
    w.op("DELETE", f"{RBAC}/namespaces/acme-a/rolebindings/imm")


def test_roles_count_against_the_tenant_quota(world: TenantWorld) -> None:
    w = world
    admin = w.fresh_tenant("quotarbac", {"quota": {"count/roles.rbac.authorization.k8s.io": "1"}})
    path = f"{RBAC}/namespaces/quotarbac-a/roles"
    rules = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
    assert post(w, admin, path, role("one", rules)).status_code == 201
    r = post(w, admin, path, role("two", rules))
    assert_forbidden(r.status_code, r.json())
    assert "count/roles.rbac.authorization.k8s.io" in r.json()["message"]


def test_watch_rolebindings_python_client(world: TenantWorld) -> None:
    from kubernetes import watch

    w = world
    rbac = w.py("acme-admin").api("RbacAuthorizationV1Api")
    start = rbac.list_namespaced_role_binding("acme-b").metadata.resource_version
    w.op(
        "POST",
        f"{RBAC}/namespaces/acme-b/rolebindings",
        binding("watched", "ClusterRole", "view", user("acme-viewer")),
    )
    seen = []
    for ev in watch.Watch().stream(  # type: ignore[no-untyped-call]
        rbac.list_namespaced_role_binding, "acme-b", resource_version=start, timeout_seconds=5
    ):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "watched":
            break
    assert ("ADDED", "watched") in seen
    w.op("DELETE", f"{RBAC}/namespaces/acme-b/rolebindings/watched")


def test_clusterroles_builtin_and_operators_only(world: TenantWorld) -> None:
    w = world
    out = ok(w.kubectl("acme-viewer", "get", "clusterroles", "view", "edit", "admin", "cluster-admin"))
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"view", "edit", "admin", "cluster-admin"}
    view = json.loads(ok(w.kubectl("acme-member", "get", "clusterrole", "view", "-o", "json")))
    assert view["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    r = post(w, "acme-admin", f"{RBAC}/clusterroles", {"metadata": {"name": "mine"}, "rules": []})
    assert_forbidden(r.status_code, r.json(), "acme-admin")
    r = w.http("acme-admin").get(f"{RBAC}/clusterrolebindings")
    assert_forbidden(r.status_code, r.json(), "acme-admin")
    crb = {
        "metadata": {"name": "ops"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "x"}],  # a cluster binding must say where
    }
    r = post(w, "operator", f"{RBAC}/clusterrolebindings", crb)
    assert r.status_code == 422 and "subjects[0].namespace" in r.text, r.text
    aggregated = {"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{}]}}
    r = post(w, "operator", f"{RBAC}/clusterroles", aggregated)
    assert r.status_code == 422 and "not supported by hypernetes" in r.text, r.text
    # kubectl's generators send these as protobuf
    ok(w.kubectl("operator", "create", "clusterrole", "pod-reader", "--verb=get,list", "--resource=pods"))
    ok(
        w.kubectl(
            "operator", "create", "clusterrolebinding", "ops-read", "--clusterrole=pod-reader", "--group=ops"
        )
    )
    wide = ok(w.kubectl("operator", "get", "clusterrolebinding", "ops-read", "-o", "wide")).splitlines()
    assert wide[1].split()[1] == "ClusterRole/pod-reader" and "ops" in wide[1].split(), wide
    # printClusterRoleBinding's columns name their own kind
    table = w.http("operator").get(
        f"{RBAC}/clusterrolebindings/ops-read",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    described = {c["name"]: c["description"] for c in table.json()["columnDefinitions"]}
    assert (described["Users"], described["Groups"], described["ServiceAccounts"]) == (
        "Users in the clusterRoleBinding",
        "Groups in the clusterRoleBinding",
        "ServiceAccounts in the clusterRoleBinding",
    ), described


# -- APIService ----------------------------------------------------------------------------------


def test_local_apiservices(world: TenantWorld) -> None:
    w = world
    out = ok(w.kubectl("acme-viewer", "get", "apiservices"))
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "AVAILABLE", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for name in (
        "v1.",
        "v1.apps",
        "v1.rbac.authorization.k8s.io",
        "v1.apiregistration.k8s.io",
        "v1.hypernetes.io",
    ):
        assert rows[name][1:3] == ["Local", "True"], rows.get(name)
    api = kc.ApiregistrationV1Api(w.py("acme-member").client)
    spec = api.read_api_service("v1.apps").spec
    assert spec is not None and (spec.group, spec.version, spec.service) == ("apps", "v1", None)
    raw = w.http("acme-member").get("/apis/apiregistration.k8s.io/v1/apiservices/v1.apps").json()
    assert "service" in raw["spec"] and raw["spec"]["service"] is None
    assert raw["status"]["conditions"][0]["type"] == "Available"
    assert len(api.list_api_service().items) == len(rows)
    # read-only, for operators too
    with pytest.raises(kc.ApiException) as e:
        kc.ApiregistrationV1Api(w.py("operator").client).delete_api_service("v1.apps")
    assert e.value.status == 405


def test_leftover_binding_under_a_reused_namespace_name_binds_no_one(world: TenantWorld) -> None:
    """A RoleBinding older than its namespace (left by an earlier namespace of that name, which
    another tenant may have held) neither grants nor narrows anyone: without the check, acme's
    members would be bound by it, so refused everywhere else."""
    w = world
    stale = binding("left", "ClusterRole", "view", {"kind": "Group", "name": "hypernetes:tenant:acme"})
    stale["metadata"].update(namespace="acme-reused", uid="0", creationTimestamp="2020-01-01T00:00:00Z")
    key = "/registry/rbac.authorization.k8s.io/rolebindings/acme-reused/left"
    w.api.call(w.api.server.store.create(key, json.dumps(stale).encode()))
    w.create_namespace("acme-admin", "acme-reused", "acme")
    assert w.api.tenancy is not None
    wait_for(
        lambda: w.api.tenancy is not None and w.api.tenancy.directory.rbac.bindings.get("acme-reused/left")
    )
    assert can_i(w, "acme-member", "create", "configmaps", "-n", "acme-a")
    assert post(w, "acme-member", CM.format(ns="acme-reused"), cm("fresh")).status_code == 201


def test_kubectl_apply_role_and_binding_as_tenant_admin(world: TenantWorld) -> None:
    """What `kubectl apply -k` of an application carrying a Role and RoleBinding sends: applied
    twice, the second time unchanged; then deleted."""
    w = world
    manifest = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: app-reader, namespace: acme-b}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-reader, namespace: acme-b}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: app-reader}
subjects:
- {kind: ServiceAccount, name: app, namespace: acme-b}
"""
    first = ok(w.kubectl("acme-admin", "apply", "-f", "-", input=manifest))
    assert "role.rbac.authorization.k8s.io/app-reader created" in first
    assert "rolebinding.rbac.authorization.k8s.io/app-reader created" in first
    again = ok(w.kubectl("acme-admin", "apply", "-f", "-", input=manifest))
    assert again.count("unchanged") == 2, again
    ok(w.kubectl("acme-admin", "delete", "-f", "-", input=manifest))
