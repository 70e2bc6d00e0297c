"""The identity and ownership facts every request needs, mirrored in memory from the store:
tenants, users, which tenant owns each namespace, password records, revoked tokens, and the RBAC
objects that narrow tenants' roles."""

from __future__ import annotations

from hypernetes.auth.mirror import PrefixMirror
from hypernetes.auth.rbac import RoleBindings
from hypernetes.objects import Obj
from hypernetes.objects.names import TENANT_LABEL
from hypernetes.store.interface import Store
from hypernetes.store.keys import CREDENTIALS, REVOKED, key_prefix

GROUP = "hypernetes.io"


def owner(namespace: Obj | None) -> str | None:
    """The tenant that owns a namespace object, or None (an operators' namespace)."""
    if namespace is None:
        return None
    label = ((namespace.get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
    return label if isinstance(label, str) and label else None


def user_spec(user: Obj | None) -> Obj:
    spec = (user or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


class Directory:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.tenants = PrefixMirror(store, key_prefix(GROUP, "tenants", None))
        self.users = PrefixMirror(store, key_prefix(GROUP, "users", None))
        self.namespaces = PrefixMirror(store, key_prefix("", "namespaces", None))
        self.credentials = PrefixMirror(store, CREDENTIALS)
        self.revoked = PrefixMirror(store, REVOKED)
        self.rbac = RoleBindings(store, self.namespaces)  # tenants' Roles and RoleBindings (auth/rbac.py)
        self._all = (
            self.tenants,
            self.users,
            self.namespaces,
            self.credentials,
            self.revoked,
            *self.rbac.mirrors,
        )
        # tenant -> its namespaces, kept by the namespace mirror's change feed
        self._owned: dict[str, set[str]] = {}
        self._owner_of: dict[str, str] = {}
        self.namespaces.on_change(self._namespace_changed)

    def _namespace_changed(self, name: str, obj: Obj | None) -> None:
        old = self._owner_of.pop(name, None)
        if old is not None:
            self._owned.get(old, set()).discard(name)
        new = owner(obj)
        if new is not None:
            self._owner_of[name] = new
            self._owned.setdefault(new, set()).add(name)

    async def start(self) -> None:
        for m in self._all:
            await m.start()

    async def settled(self, key: str, revision: int) -> None:
        """After a write of `key` at `revision` through the API: once the mirrors holding it have
        applied it (PrefixMirror.caught_up), so the next request sees it."""
        for m in self._all:
            if key.startswith(m.prefix):
                await m.caught_up(revision)

    async def stop(self) -> None:
        for m in self._all:
            await m.stop()

    # -- lookups (memory; `fetch_*` also read the store on a miss) ------------------------------

    def namespace_owner(self, namespace: str) -> str | None:
        return self._owner_of.get(namespace)

    async def fetch_namespace_owner(self, namespace: str) -> str | None:
        if namespace in self._owner_of:
            return self._owner_of[namespace]
        return owner(await self.namespaces.fetch(namespace))

    def tenant_namespaces(self, tenant: str) -> frozenset[str]:
        return frozenset(self._owned.get(tenant, ()))

    def tenant(self, name: str) -> Obj | None:
        return self.tenants.get(name)

    async def fetch_tenant(self, name: str) -> Obj | None:
        return await self.tenants.fetch(name)

    def tenant_active(self, name: str) -> bool:
        t = self.tenants.get(name)
        return t is not None and not (t.get("metadata") or {}).get("deletionTimestamp")

    def user(self, name: str) -> Obj | None:
        return self.users.get(name)

    async def fetch_user(self, name: str) -> Obj | None:
        return await self.users.fetch(name)

    def credential(self, user: str) -> Obj | None:
        return self.credentials.get(user)

    def is_revoked(self, jti: str) -> bool:
        return jti in self.revoked
