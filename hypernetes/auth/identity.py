"""Who is calling: the user record every authenticator produces and the authorizer reads, and the
protocol an identity backend (built-in or OpenStack Keystone) implements.

Conventions every backend follows, so the authorizer needs no backend-specific knowledge:

- operators (cluster admins): group `system:masters`, no tenant;
- tenant users: `tenant` and `role` set (a credential is scoped to one tenant, as a Keystone
  project-scoped token is), groups `hypernetes:tenant:<T>` and `system:authenticated`;
- node agents: name `system:node:<node>`, group `system:nodes`;
- service accounts: name `system:serviceaccount:<ns>:<sa>`, groups `system:serviceaccounts` and
  `system:serviceaccounts:<ns>`, `tenant` = the namespace's tenant, `role` from the service
  account's `hypernetes.io/role` annotation ("" = no access beyond discovery and self-review).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

ROLES = ("admin", "member", "viewer")
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
NODES = "system:nodes"
NODE_PREFIX = "system:node:"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tenant: str = ""  # the tenant this credential is scoped to; "" for operators, nodes, system
    role: str = ""  # admin | member | viewer within `tenant`

    @property
    def operator(self) -> bool:
        return MASTERS in self.groups

    @property
    def node(self) -> str | None:
        """The node name of a node agent's identity, else None."""
        if NODES in self.groups and self.name.startswith(NODE_PREFIX):
            return self.name.removeprefix(NODE_PREFIX)
        return None


ADMIN = UserInfo("admin", groups=(MASTERS, AUTHENTICATED))


def tenant_user(
    name: str, tenant: str, role: str, *, uid: str = "", extra: Mapping[str, tuple[str, ...]] | None = None
) -> UserInfo:
    return UserInfo(
        name, uid, (f"hypernetes:tenant:{tenant}", AUTHENTICATED), dict(extra or {}), tenant, role
    )


def node_user(node: str) -> UserInfo:
    return UserInfo(NODE_PREFIX + node, groups=(NODES, AUTHENTICATED))


def service_account_user(
    namespace: str,
    name: str,
    uid: str,
    tenant: str,
    role: str,
    extra: Mapping[str, tuple[str, ...]] | None = None,
) -> UserInfo:
    return UserInfo(
        f"{SA_PREFIX}{namespace}:{name}",
        uid,
        (SA_GROUP, f"{SA_GROUP}:{namespace}", AUTHENTICATED),
        dict(extra or {}),
        tenant,
        role,
    )


class AuthUnavailable(Exception):
    """The identity backend cannot answer (Keystone down, timed out): the request fails with 503,
    never passes unauthenticated."""


class LoginFailed(Exception):
    """Wrong user, password or tenant; the message never says which."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: float  # unix time


class Authenticator(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> UserInfo | None:
        """The caller, or None when this authenticator does not recognise the credentials.
        Raises AuthUnavailable when it would recognise them but cannot check them now."""


class IdentityBackend(Authenticator, Protocol):
    """Where tenant users' passwords are checked: built-in or Keystone."""

    async def login(self, tenant: str, user: str, password: str, ttl: float) -> IssuedToken:
        """A bearer token for `user` scoped to `tenant`. Raises LoginFailed or AuthUnavailable."""
