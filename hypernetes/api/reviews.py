"""Reviews a caller asks about itself, answered and never stored: SelfSubjectReview (`kubectl auth
whoami`), SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`) and SelfSubjectRulesReview
(`kubectl auth can-i --list`)."""

from __future__ import annotations

from hypernetes.api import schema
from hypernetes.api.authz import Attributes, Authorizer
from hypernetes.api.status import bad_request
from hypernetes.auth.authorizer import MEMBER_SUBRESOURCES, READ, TENANT_KINDS, WRITE
from hypernetes.auth.identity import UserInfo
from hypernetes.objects import Obj
from hypernetes.objects.names import ROLE_EXTRA, TENANT_EXTRA


def user_info(user: UserInfo) -> Obj:
    out: Obj = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        out["uid"] = user.uid
    extra = {k: list(v) for k, v in user.extra.items()}
    if user.tenant:
        extra[TENANT_EXTRA] = [user.tenant]
        extra[ROLE_EXTRA] = [user.role]
    if extra:
        out["extra"] = extra
    return out


async def answer(kind: schema.Kind, body: Obj, user: UserInfo, authorizer: Authorizer) -> Obj:
    out: Obj = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {"creationTimestamp": None}}
    spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
    if kind.kind == "SelfSubjectReview":
        out["status"] = {"userInfo": user_info(user)}
    elif kind.kind == "SelfSubjectAccessReview":
        out["spec"] = spec
        out["status"] = await _access(spec, user, authorizer)
    else:
        out["spec"] = spec
        ns = str(spec.get("namespace") or "")
        probe = Attributes(user, "list", True, "", "", "v1", "pods", "", ns)
        out["status"] = rules(user, bool(ns) and (await authorizer.authorize(probe)).allowed)
    return out


async def _access(spec: Obj, user: UserInfo, authorizer: Authorizer) -> Obj:
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if isinstance(ra, dict):
        attrs = Attributes(
            user,
            str(ra.get("verb") or ""),
            True,
            "",
            str(ra.get("group") or ""),
            str(ra.get("version") or ""),
            str(ra.get("resource") or ""),
            str(ra.get("subresource") or ""),
            str(ra.get("namespace") or ""),
            str(ra.get("name") or ""),
        )
    elif isinstance(nra, dict):
        attrs = Attributes(user, str(nra.get("verb") or ""), False, str(nra.get("path") or ""))
    else:
        raise bad_request("spec.resourceAttributes or spec.nonResourceAttributes is required")
    d = await authorizer.authorize(attrs)
    status: Obj = {"allowed": d.allowed}
    if d.reason:
        status["reason"] = d.reason
    if not d.allowed:
        status["denied"] = False  # not an explicit deny: upstream's "no opinion" when nothing allows
    return status


def rules(user: UserInfo, in_namespace: bool) -> Obj:
    """What the caller may do in a namespace (`in_namespace`: one it may work in), as rule lists in
    upstream's shape; kubectl prints them as a table. Filtered lists are not expressible as rules,
    so a tenant's answer is marked incomplete."""
    non_resource = [
        {
            "verbs": ["get"],
            "nonResourceURLs": [
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/openapi",
                "/openapi/*",
                "/version",
                "/healthz",
                "/livez",
                "/readyz",
            ],
        }
    ]
    reviews = [
        {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
        {
            "verbs": ["create"],
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        },
    ]
    if user.operator:
        return {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    out: list[Obj] = list(reviews)
    if user.role and in_namespace:
        by_group: dict[str, list[str]] = {}
        for g, r in sorted(TENANT_KINDS):
            by_group.setdefault(g, []).append(r)
        verbs = sorted(READ | WRITE) if user.role in ("member", "admin") else sorted(READ)
        for g, rs in by_group.items():
            if user.role == "viewer":
                rs = [r for r in rs if r != "secrets"]  # as upstream's view role
            out.append({"verbs": verbs, "apiGroups": [g], "resources": rs})
        out.append({"verbs": sorted(READ), "apiGroups": [""], "resources": ["pods/log", "pods/status"]})
        if user.role in ("member", "admin"):
            out.append(
                {
                    "verbs": ["create"],
                    "apiGroups": [""],
                    "resources": sorted(f"pods/{s}" for s in MEMBER_SUBRESOURCES - {"scale", "token"}),
                }
            )
    return {"resourceRules": out, "nonResourceRules": non_resource, "incomplete": True}
