"""Reviews a caller asks about itself, answered and never stored: SelfSubjectReview (`kubectl auth
whoami`), SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`) and SelfSubjectRulesReview
(`kubectl auth can-i --list`)."""

from __future__ import annotations

from hypernetes.api import schema
from hypernetes.api.authz import Attributes, Authorizer
from hypernetes.api.registry.rbac.builtin import tenant_role_rules
from hypernetes.api.status import bad_request
from hypernetes.auth.authorizer import TenantAuthorizer
from hypernetes.auth.identity import SA_PREFIX, UserInfo
from hypernetes.auth.rbac import Request, requests_of, rule
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
        out["status"] = await rules(user, str(spec.get("namespace") or ""), authorizer)
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


async def rules(user: UserInfo, namespace: str, authorizer: Authorizer) -> Obj:
    """What the caller may do in `namespace`, as rule lists in upstream's shape; kubectl prints
    them as a table. Each request the caller's tenant role covers is put to the authorizer itself,
    so the answer is what `can-i` says, RoleBindings included (and the names a bound rule lists).
    Filtered lists are not expressible as rules, so a tenant's answer is marked incomplete."""
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
    role = user.role or ("member" if user.name.startswith(SA_PREFIX) else "")
    if role and user.tenant and namespace:
        candidates: list[Obj] = list(tenant_role_rules(role))
        if isinstance(authorizer, TenantAuthorizer):  # the rules naming objects bound to the caller
            candidates += [r for r in authorizer.rbac.rules_in(user, namespace) if r.get("resourceNames")]
        held: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}  # (group, resource, names) -> verbs
        for r in candidates:
            for q in requests_of(r) or ():
                if await _allowed(authorizer, user, namespace, q):
                    res = f"{q.resource}/{q.subresource}" if q.subresource else q.resource
                    seen = held.setdefault((q.group, res, (q.name,) if q.name else ()), [])
                    if q.verb not in seen:
                        seen.append(q.verb)
        grouped: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[str]] = {}
        for (group, res, names), held_verbs in sorted(held.items()):
            grouped.setdefault((group, tuple(held_verbs), names), []).append(res)
        for (group, verbs, names), resources in grouped.items():
            r = rule([group], resources, verbs)
            if names:
                r["resourceNames"] = list(names)
            out.append(r)
    return {"resourceRules": out, "nonResourceRules": non_resource, "incomplete": True}


async def _allowed(authorizer: Authorizer, user: UserInfo, namespace: str, q: Request) -> bool:
    attrs = Attributes(user, q.verb, True, "", q.group, "", q.resource, q.subresource, namespace, q.name)
    return (await authorizer.authorize(attrs)).allowed
