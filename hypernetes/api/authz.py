"""Authorization as the API server uses it: the rules live in `hypernetes.auth.authorizer`; this
module adds kube-apiserver's wording of a refusal, which kubectl prints verbatim."""

from __future__ import annotations

from hypernetes.auth.authorizer import (
    AllowAll,
    Attributes,
    Authorizer,
    Decision,
    GroupAuthorizer,
    Scope,
    TenantAuthorizer,
)

__all__ = [
    "AllowAll",
    "Attributes",
    "Authorizer",
    "Decision",
    "GroupAuthorizer",
    "Scope",
    "TenantAuthorizer",
    "forbidden_message",
]


def forbidden_message(attrs: Attributes) -> str:
    user = attrs.user.name
    if not attrs.resource_request:
        return f'forbidden: User "{user}" cannot {attrs.verb.lower()} path "{attrs.path}"'
    res = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    what = f'{res} "{attrs.name}"' if attrs.name else res
    where = f' in the namespace "{attrs.namespace}"' if attrs.namespace else ""
    scope = "" if attrs.namespace else " at the cluster scope"
    return (
        f'{what} is forbidden: User "{user}" cannot {attrs.verb} resource "{res}" in API group '
        f'"{attrs.api_group}"{where}{scope}'
    )
