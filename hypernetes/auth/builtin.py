"""The built-in identity backend (the embedded default): users are `hypernetes.io/v1 User` objects,
their password hashes live outside the API's key space (never served), and the server issues its
own signed tokens for users, service accounts and node agents.

A user token stays valid only while everything it stood for still holds, checked on every request
from memory: the user exists, is not disabled, still belongs to the token's tenant, the tenant is
not being deleted, the token was issued after the user's last password change or "revoke all",
and its own id is not revoked. The role comes from the User object now, not from the token, so a
demotion takes effect on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping

from hypernetes.auth.directory import Directory, user_spec
from hypernetes.auth.identity import (
    ROLES,
    IssuedToken,
    LoginFailed,
    UserInfo,
    node_user,
    service_account_user,
    tenant_user,
)
from hypernetes.auth.passwords import hash_password, verify_password
from hypernetes.auth.tokens import Claims, TokenInvalid, TokenSigner
from hypernetes.objects import Obj
from hypernetes.objects.names import ROLE_ANNOTATION
from hypernetes.store.interface import KeyExists, KeyNotFound, RevisionConflict
from hypernetes.store.keys import CREDENTIALS, REVOKED, object_key

MAX_USER_TTL = 7 * 24 * 3600.0
VERIFIED_CACHE = 10000
SA_AUDIENCE = "https://kubernetes.default.svc"
# a dummy hash to spend the same time on unknown users as on wrong passwords
_DUMMY_HASH = hash_password("not-a-real-password-0")


def bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class BuiltinIdentity:
    def __init__(self, directory: Directory, signer: TokenSigner) -> None:
        self.directory, self.signer = directory, signer
        self.store = directory.store
        # signature and claims of tokens seen before; everything that can end a token (expiry,
        # revocation, the user, the tenant) is still checked on every request
        self._verified: dict[str, Claims] = {}

    # -- authentication ------------------------------------------------------------------------

    async def authenticate(self, headers: Mapping[str, str]) -> UserInfo | None:
        token = bearer(headers)
        if token is None or not self.signer.looks_like_ours(token):
            return None
        claims = self._verified.get(token)
        if claims is None:
            try:
                claims = self.signer.verify(token)
            except TokenInvalid:
                return None
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.clear()  # crude but bounded; a re-verify costs ~15 µs
            self._verified[token] = claims
        elif time.time() >= claims.exp:
            del self._verified[token]
            return None
        if self.directory.is_revoked(claims.jti):
            return None
        if claims.kind == "user":
            return self._user(claims)
        if claims.kind == "node":
            return node_user(claims.sub)
        return await self._service_account(claims)

    def _user(self, c: Claims) -> UserInfo | None:
        user = self.directory.user(c.sub)
        spec = user_spec(user)
        if user is None or spec.get("disabled") or spec.get("tenant") != c.tenant:
            return None
        if (user.get("metadata") or {}).get("deletionTimestamp") or not self.directory.tenant_active(
            c.tenant
        ):
            return None
        uid = str((user.get("metadata") or {}).get("uid", ""))
        if c.extra.get("hn.uid") != uid:
            return None  # a token of a deleted user whose name was taken again
        cred = self.directory.credential(c.sub) or {}
        if c.iat < float(cred.get("notBefore", 0)):
            return None  # issued before a password change or a revoke-all
        role = spec.get("role")
        if role not in ROLES:
            return None
        return tenant_user(c.sub, c.tenant, str(role), uid=uid)

    async def _service_account(self, c: Claims) -> UserInfo | None:
        k8s = c.extra.get("kubernetes.io")
        if not isinstance(k8s, dict):
            return None
        aud = c.extra.get("aud")
        if not isinstance(aud, list) or SA_AUDIENCE not in aud:
            return None  # a token asked for another audience (a vault, another tenant's service) is not ours
        ns, sa = k8s.get("namespace"), k8s.get("serviceaccount")
        if not isinstance(ns, str) or not isinstance(sa, dict):
            return None
        kv = await self.store.get(object_key("", "serviceaccounts", ns, str(sa.get("name"))))
        if kv is None:
            return None
        obj = json.loads(kv.value)
        meta = obj.get("metadata") or {}
        if meta.get("uid") != sa.get("uid"):
            return None  # the account was deleted and re-created: old tokens die with the old one
        pod = k8s.get("pod")
        if isinstance(pod, dict):
            pkv = await self.store.get(object_key("", "pods", ns, str(pod.get("name"))))
            if pkv is None or (json.loads(pkv.value).get("metadata") or {}).get("uid") != pod.get("uid"):
                return None  # bound tokens die with their pod, as upstream's
        tenant = await self.directory.fetch_namespace_owner(ns) or ""
        role = (meta.get("annotations") or {}).get(ROLE_ANNOTATION, "")
        role = role if role in ("member", "viewer") else ""  # an account never administers a tenant
        extra = (
            {"authentication.kubernetes.io/pod-name": (str(pod["name"]),)} if isinstance(pod, dict) else {}
        )
        return service_account_user(ns, str(sa.get("name")), str(sa.get("uid")), tenant, role, extra)

    # -- issuing -------------------------------------------------------------------------------

    async def login(self, tenant: str, user: str, password: str, ttl: float) -> IssuedToken:
        obj = await self.directory.fetch_user(user)
        uid = str(((obj or {}).get("metadata") or {}).get("uid", ""))
        cred = await self.directory.credentials.fetch(user)
        if cred is not None and cred.get("uid") != uid:
            cred = None  # the password of a deleted user of the same name
        stored = str((cred or {}).get("hash") or _DUMMY_HASH)
        ok = await asyncio.to_thread(verify_password, password, stored)
        spec = user_spec(obj)
        if (
            not ok
            or cred is None
            or obj is None
            or spec.get("disabled")
            or spec.get("tenant") != tenant
            or not self.directory.tenant_active(tenant)
        ):
            raise LoginFailed("invalid user name, password or tenant")
        return self.issue_user(obj, ttl)

    def issue_user(self, user: Obj, ttl: float) -> IssuedToken:
        """A token for User object `user` (ttl clamped to 1 minute .. 7 days)."""
        meta = user.get("metadata") or {}
        token, claims = self.signer.issue(
            str(meta.get("name")),
            "user",
            min(max(ttl, 60.0), MAX_USER_TTL),
            tenant=str(user_spec(user).get("tenant")),
            extra={"hn.uid": str(meta.get("uid", ""))},
        )
        return IssuedToken(token, claims.exp)

    def issue_node(self, node: str, ttl: float = 365 * 24 * 3600.0) -> IssuedToken:
        token, claims = self.signer.issue(node, "node", ttl)
        return IssuedToken(token, claims.exp)

    def issue_service_account(
        self,
        namespace: str,
        sa: Obj,
        ttl: float,
        *,
        pod: Obj | None = None,
        audiences: list[str] | None = None,
    ) -> tuple[IssuedToken, list[str]]:
        """A token for service account object `sa`, bound to `pod` when given (as upstream's
        TokenRequest with a boundObjectRef); the audiences it carries."""
        meta = sa.get("metadata") or {}
        k8s: Obj = {
            "namespace": namespace,
            "serviceaccount": {"name": meta.get("name"), "uid": meta.get("uid")},
        }
        if pod is not None:
            pm = pod.get("metadata") or {}
            k8s["pod"] = {"name": pm.get("name"), "uid": pm.get("uid")}
        aud = audiences or [SA_AUDIENCE]
        token, claims = self.signer.issue(
            f"system:serviceaccount:{namespace}:{meta.get('name')}",
            "serviceaccount",
            ttl,
            extra={"kubernetes.io": k8s, "aud": aud},
        )
        return IssuedToken(token, claims.exp), aud

    # -- passwords and revocation --------------------------------------------------------------

    async def set_password(self, user: Obj, password: str) -> None:
        """Store a new hash for User object `user`; every token issued before now stops working."""
        meta = user.get("metadata") or {}
        hashed = await asyncio.to_thread(hash_password, password)
        await self._put_credential(
            str(meta.get("name")), {"hash": hashed, "uid": meta.get("uid"), "notBefore": time.time()}
        )

    async def check_password(self, user: Obj, password: str) -> bool:
        meta = user.get("metadata") or {}
        cred = await self.directory.credentials.fetch(str(meta.get("name"))) or {}
        if cred.get("uid") != meta.get("uid"):
            return False
        return await asyncio.to_thread(verify_password, password, str(cred.get("hash") or _DUMMY_HASH))

    async def revoke_user(self, user: str) -> None:
        """Invalidate every token of `user` issued until now (the password stays)."""
        cred = dict(await self.directory.credentials.fetch(user) or {})
        cred["notBefore"] = time.time()
        await self._put_credential(user, cred)

    async def forget_user(self, user: str) -> None:
        kv = await self.store.get(CREDENTIALS + user)
        if kv is not None:
            with contextlib.suppress(KeyNotFound, RevisionConflict):
                await self.store.delete(kv.key, kv.mod_revision)

    async def _put_credential(self, user: str, record: Obj) -> None:
        value = json.dumps(record).encode()
        for _ in range(10):
            kv = await self.store.get(CREDENTIALS + user)
            try:
                if kv is None:
                    await self.store.create(CREDENTIALS + user, value)
                else:
                    await self.store.update(kv.key, value, kv.mod_revision)
                return
            except (KeyExists, KeyNotFound, RevisionConflict):
                continue
        raise RuntimeError(f"could not store the credential of {user}: too many concurrent changes")

    async def revoke_token(self, token: str) -> bool:
        """Revoke one token of ours (logout). False if it is not a genuine, live token."""
        try:
            claims = self.signer.verify(token)
        except TokenInvalid:
            return False
        await self._sweep_revoked()
        with contextlib.suppress(KeyExists):
            await self.store.create(REVOKED + claims.jti, json.dumps({"exp": claims.exp}).encode())
        return True

    async def _sweep_revoked(self) -> None:
        """Revocations of tokens that have expired anyway are dropped."""
        now = time.time()
        for name, rec in self.directory.revoked.items():
            if float(rec.get("exp", 0)) < now:
                kv = await self.store.get(REVOKED + name)
                if kv is not None:
                    with contextlib.suppress(KeyNotFound, RevisionConflict):
                        await self.store.delete(kv.key, kv.mod_revision)
