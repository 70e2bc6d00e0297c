"""Putting the multi-tenant parts of a server together: the directory its authorizer and admission
read, tenant admission, the identity endpoints and the token issuer; and the authenticator that
accepts the admin token, the cluster's own signed tokens and (optionally) Keystone's.

    tenancy, authenticator = build_tenancy(store, pki_dir, admin_token)
    app = create_app(store, authenticator=authenticator, authorizer=tenancy.authorizer, tenancy=tenancy, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hypernetes.api import registry
from hypernetes.api.authn import ADMIN, Authenticator, TokenAuthenticator, UnionAuthenticator
from hypernetes.api.identity import IdentityRoutes
from hypernetes.auth.admission import TenantAdmission
from hypernetes.auth.authorizer import TenantAuthorizer
from hypernetes.auth.builtin import BuiltinIdentity
from hypernetes.auth.directory import Directory
from hypernetes.auth.identity import IdentityBackend
from hypernetes.auth.tenantlock import TenantLocks
from hypernetes.auth.tokens import TokenSigner, load_or_create_key
from hypernetes.store.interface import Store

SIGNING_KEY = "token-signing.key"


@dataclass
class Tenancy:
    directory: Directory
    admission: TenantAdmission
    issuer: BuiltinIdentity
    identity: IdentityRoutes
    authorizer: TenantAuthorizer = field(init=False)

    def __post_init__(self) -> None:
        self.authorizer = TenantAuthorizer(self.directory)
        self.admission.escalation = self.authorizer.escalation  # RBAC: no granting what one lacks


def build_tenancy(
    store: Store, pki_dir: Path, admin_token: str, *, external: IdentityBackend | None = None
) -> tuple[Tenancy, Authenticator]:
    """`external` (Keystone) checks tenant users' logins and tokens instead of the built-in users;
    service-account and node tokens are the cluster's own either way."""
    directory = Directory(store)
    builtin = BuiltinIdentity(directory, TokenSigner(load_or_create_key(pki_dir / SIGNING_KEY)))
    authenticators: list[Authenticator] = [TokenAuthenticator({admin_token: ADMIN}), builtin]
    if external is not None:
        authenticators.append(external)
    locks = TenantLocks(store if store.shared else None)  # quota checks of every server, serialized
    admission = TenantAdmission(directory, locks, pod_specs=registry.POD_SPECS)
    tenancy = Tenancy(directory, admission, builtin, IdentityRoutes(external or builtin, builtin))
    return tenancy, UnionAuthenticator(authenticators)
