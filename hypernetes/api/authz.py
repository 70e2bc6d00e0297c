"""Authorization: may this user do this verb on this resource. A pluggable step like
authentication; the admin is allowed everything now, tenants' rules plug in later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hypernetes.api.authn import UserInfo


@dataclass(frozen=True)
class Attributes:
    """As upstream's authorizer.Attributes: resource requests carry group/resource/namespace;
    others (discovery, /version, /openapi) only the path."""

    user: UserInfo
    verb: str  # get list watch create update patch delete deletecollection; or the HTTP verb
    resource_request: bool
    path: str
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> Decision: ...


class AllowAll:
    async def authorize(self, attrs: Attributes) -> Decision:
        return Decision(True)


class GroupAuthorizer:
    """Allows members of any of `groups` (e.g. system:masters) and denies everyone else."""

    def __init__(self, groups: tuple[str, ...] = ("system:masters",)) -> None:
        self._groups = frozenset(groups)

    async def authorize(self, attrs: Attributes) -> Decision:
        if self._groups.intersection(attrs.user.groups):
            return Decision(True)
        return Decision(False, "no rule allows it")


def forbidden_message(attrs: Attributes) -> str:
    """kube-apiserver's wording, which kubectl prints verbatim."""
    user = attrs.user.name
    if not attrs.resource_request:
        return f'forbidden: User "{user}" cannot {attrs.verb.lower()} path "{attrs.path}"'
    res = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    what = f'{res} "{attrs.name}"' if attrs.name else res
    where = f' in the namespace "{attrs.namespace}"' if attrs.namespace else ""
    scope = "" if attrs.namespace else " at the cluster scope"
    return (f'{what} is forbidden: User "{user}" cannot {attrs.verb} resource "{res}" in API group '
            f'"{attrs.api_group}"{where}{scope}')
