"""OpenStack Keystone (identity API v3) as the identity backend.

Credentials accepted by `authenticate`:

- `Authorization: Bearer <token>`: a Keystone token, validated with `GET /v3/auth/tokens` where the
  token authenticates itself (`X-Auth-Token` = `X-Subject-Token`; Keystone's default policy lets a
  user validate its own token), so no service credential is needed.
- `Authorization: Basic base64(<user>@<project>:<password>)`: a password login scoped to
  `<project>`; the last `@` separates user from project, so e-mail-like user names work.

Only project-scoped credentials of users and projects in the configured domain count (project names
are unique only within a domain, so two domains could otherwise both claim a tenant). The project
name is the tenant, the user becomes `keystone:<user name>` (uid = Keystone user id), and the
highest of the token's roles that `role_map` knows decides the role; a token with no mapped role,
an unscoped, domain- or system-scoped token is not a tenant user here: None.

Keystone is external and untrusted in shape: every call has a total timeout, every body a size cap,
every field a type check. Anything but a clear answer (refused: 400/401/403/404) raises
AuthUnavailable, so an outage is a 503, never an open door. Answers are cached under an HMAC of the
credential (no plaintext passwords or tokens as keys), never past the token's `expires_at`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import ssl
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from hypernetes.auth.identity import ROLES, AuthUnavailable, IssuedToken, LoginFailed, UserInfo, tenant_user
from hypernetes.objects import Obj

DEFAULT_ROLE_MAP: Mapping[str, str] = {
    "admin": "admin",
    "member": "member",
    "_member_": "member",
    "reader": "viewer",
}
NAME_PREFIX = "keystone:"
# the same extra keys as cloud-provider-openstack's k8s-keystone-auth, so tooling reads both
EXTRA_ROLES = "alpha.kubernetes.io/identity/roles"
EXTRA_PROJECT_ID = "alpha.kubernetes.io/identity/project/id"
EXTRA_PROJECT_NAME = "alpha.kubernetes.io/identity/project/name"
EXTRA_DOMAIN_ID = "alpha.kubernetes.io/identity/user/domain/id"
EXTRA_DOMAIN_NAME = "alpha.kubernetes.io/identity/user/domain/name"

MAX_RESPONSE_BYTES = 1 << 20  # a token body without catalog is ~1 KiB; 1 MiB is generous
MAX_TOKEN_CHARS = 8192  # fernet tokens are ~200 chars, JWS ones under 1 KiB
MAX_BASIC_CHARS = 4096
_RANK = {role: i for i, role in enumerate(reversed(ROLES))}  # viewer < member < admin
_REFUSED = frozenset({400, 401, 403, 404})  # Keystone answered: these credentials are no good
# tenants become namespace label values, so a project name must be a valid one
_TENANT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: safe as an HTTP header value

Result = tuple[UserInfo | None, float]  # the answer and how long (s) it may be cached


def _unavailable(why: str) -> AuthUnavailable:
    return AuthUnavailable(f"identity service unavailable: {why}")


class KeystoneBackend:
    """IdentityBackend over Keystone's v3 API at `url` (with or without the `/v3` suffix)."""

    def __init__(
        self,
        url: str,
        *,
        role_map: Mapping[str, str] | None = None,
        domain: str = "Default",
        cache_ttl: float = 60.0,
        timeout: float = 5.0,
        ca_file: str | None = None,
        negative_ttl: float = 5.0,
        max_entries: int = 10_000,
    ) -> None:
        base = url.rstrip("/").removesuffix("/v3")
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"Keystone URL must be http(s)://host[:port][/path]: {url!r}")
        roles = DEFAULT_ROLE_MAP if role_map is None else role_map
        bad = {k: v for k, v in roles.items() if v not in ROLES or not k}
        if bad:
            raise ValueError(f"role_map values must be one of {ROLES}: {bad}")
        if not domain:
            raise ValueError("domain must be a Keystone domain name")
        self.url = base + "/v3"
        self.domain = domain
        # Keystone role names are compared case-insensitively, as Keystone's own policy does
        self._roles = {k.lower(): v for k, v in roles.items()}
        self._cache_ttl = cache_ttl
        self._negative_ttl = min(negative_ttl, cache_ttl)
        self._max_entries = max_entries
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._session: aiohttp.ClientSession | None = None
        self._hmac_key = secrets.token_bytes(32)  # per process: cache keys are useless outside it
        self._cache: OrderedDict[bytes, tuple[float, UserInfo | None]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Task[UserInfo | None]] = {}
        self.stats = {"requests": 0, "cache_hits": 0, "unavailable": 0}

    # -- IdentityBackend ---------------------------------------------------------------------------

    async def authenticate(self, headers: Mapping[str, str]) -> UserInfo | None:
        scheme, _, cred = headers.get("Authorization", "").strip().partition(" ")
        cred = cred.strip()
        match scheme.lower():
            case "bearer":
                if len(cred) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(cred):
                    return None
                return await self._cached(self._key(b"bearer", cred), lambda: self._validate(cred))
            case "basic":
                parsed = parse_basic(cred)
                if parsed is None:
                    return None
                user, project, password = parsed
                key = self._key(b"basic", user, project, password)
                return await self._cached(key, lambda: self._password_user(user, project, password))
            case _:
                return None

    async def login(self, tenant: str, user: str, password: str, ttl: float) -> IssuedToken:
        """A project-scoped Keystone token. Its lifetime is Keystone's (`[token] expiration`):
        Keystone cannot issue shorter tokens on request, so `ttl` is not applied."""
        if not (user and password and _TENANT.fullmatch(tenant)):
            raise LoginFailed("login failed")
        status, body, token = await self._issue(user, tenant, password)
        if status in _REFUSED:
            raise LoginFailed("login failed")
        if token is None or len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
            raise _unavailable("Keystone issued no usable token")
        info, expires = self._user_from(body)
        if info is None:  # valid in Keystone but no mapped role here: useless to the caller
            raise LoginFailed("login failed")
        # the first request with this token needs no round trip
        self._store(self._key(b"bearer", token), info, self._ttl_until(expires))
        return IssuedToken(token, expires)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- cache ---------------------------------------------------------------------------------------

    def _key(self, kind: bytes, *parts: str) -> bytes:
        # HMAC-SHA-256 with a per-process key: a leaked cache cannot be brute-forced offline
        msg = kind + b"\0" + b"\0".join(p.encode("utf-8", "surrogatepass") for p in parts)
        return hmac.new(self._hmac_key, msg, hashlib.sha256).digest()

    async def _cached(self, key: bytes, fetch: Callable[[], Awaitable[Result]]) -> UserInfo | None:
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > time.monotonic():
                self.stats["cache_hits"] += 1
                return hit[1]
            del self._cache[key]
        # one Keystone call per credential however many requests carry it at once
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(key, fetch))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._settled(key, t))
        # shielded: a caller that goes away does not cancel the lookup others wait for
        return await asyncio.shield(task)

    async def _fill(self, key: bytes, fetch: Callable[[], Awaitable[Result]]) -> UserInfo | None:
        try:
            user, ttl = await fetch()
        except AuthUnavailable:
            self.stats["unavailable"] += 1
            raise  # not cached: the next request tries Keystone again
        self._store(key, user, ttl)
        return user

    def _settled(self, key: bytes, task: asyncio.Task[UserInfo | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so no "never retrieved" noise if every waiter left

    def _store(self, key: bytes, user: UserInfo | None, ttl: float) -> None:
        if ttl <= 0:
            return
        now = time.monotonic()
        if len(self._cache) >= self._max_entries:
            for k in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                del self._cache[k]
            while len(self._cache) >= self._max_entries:
                self._cache.popitem(last=False)  # oldest first
        self._cache[key] = (now + ttl, user)
        self._cache.move_to_end(key)

    def _ttl_until(self, expires: float) -> float:
        return min(self._cache_ttl, expires - time.time())

    # -- Keystone calls ------------------------------------------------------------------------------

    async def _validate(self, token: str) -> Result:
        status, body, _ = await self._request(
            "GET", "/auth/tokens?nocatalog", headers={"X-Auth-Token": token, "X-Subject-Token": token}
        )
        if status in _REFUSED:
            return None, self._negative_ttl
        if status != 200:
            raise _unavailable(f"Keystone answered HTTP {status} to a token validation")
        user, expires = self._user_from(body)
        return user, self._ttl_until(expires)

    async def _password_user(self, user: str, project: str, password: str) -> Result:
        if not _TENANT.fullmatch(project):
            return None, self._negative_ttl
        status, body, _ = await self._issue(user, project, password)
        if status in _REFUSED:
            return None, self._negative_ttl
        info, expires = self._user_from(body)
        return info, self._ttl_until(expires)

    async def _issue(self, user: str, project: str, password: str) -> tuple[int, bytes, str | None]:
        """POST /v3/auth/tokens with the password method, scoped to `project` in our domain."""
        domain = {"name": self.domain}
        auth = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "domain": domain, "password": password}},
                },
                "scope": {"project": {"name": project, "domain": domain}},
            }
        }
        status, body, token = await self._request("POST", "/auth/tokens?nocatalog", json_body=auth)
        if status not in _REFUSED and status != 201:
            raise _unavailable(f"Keystone answered HTTP {status} to a password login")
        return status, body, token

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Obj | None = None,
    ) -> tuple[int, bytes, str | None]:
        """(status, body, X-Subject-Token) of one call; the body only of a 2xx answer."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
            )
        self.stats["requests"] += 1
        try:
            async with self._session.request(
                method, self.url + path, headers=headers, json=json_body, allow_redirects=False
            ) as resp:
                if not 200 <= resp.status < 300:
                    return resp.status, b"", None
                if (resp.content_length or 0) > MAX_RESPONSE_BYTES:
                    raise _unavailable("Keystone response too large")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise _unavailable("Keystone response too large")
                return resp.status, bytes(body), resp.headers.get("X-Subject-Token")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            # the message names the failure, never the credential (it is only in headers/body)
            raise _unavailable(f"{type(e).__name__}: {e}".rstrip(": ")) from e

    # -- Keystone's answer -> our user -----------------------------------------------------------------

    def _user_from(self, body: bytes) -> tuple[UserInfo | None, float]:
        """The tenant user a token body describes (None if it is not one) and its expiry (unix
        time). Raises AuthUnavailable if the body is not a Keystone token."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _unavailable("Keystone sent a body that is not JSON") from None
        token = _field(doc, "token", dict)
        expires = _parse_time(_field(token, "expires_at", str))
        user = _field(token, "user", dict)
        user_id, user_name = _field(user, "id", str), _field(user, "name", str)
        user_domain = _field(user, "domain", dict)
        if "project" not in token:  # unscoped, domain- or system-scoped: no tenant
            return None, expires
        project = _field(token, "project", dict)
        project_id, project_name = _field(project, "id", str), _field(project, "name", str)
        project_domain = _field(project, "domain", dict)
        roles = [_field(r, "name", str) for r in _field(token, "roles", list)]
        if (
            expires <= time.time()
            or _field(user_domain, "name", str) != self.domain
            or _field(project_domain, "name", str) != self.domain
            or not _TENANT.fullmatch(project_name)
            or not user_id
            or not user_name
        ):
            return None, expires
        mapped = [self._roles[r.lower()] for r in roles if r.lower() in self._roles]
        if not mapped:
            return None, expires
        extra = {
            EXTRA_ROLES: tuple(sorted(roles)),
            EXTRA_PROJECT_ID: (project_id,),
            EXTRA_PROJECT_NAME: (project_name,),
            EXTRA_DOMAIN_ID: (_field(user_domain, "id", str),),
            EXTRA_DOMAIN_NAME: (self.domain,),
        }
        role = max(mapped, key=_RANK.__getitem__)
        return tenant_user(NAME_PREFIX + user_name, project_name, role, uid=user_id, extra=extra), expires


def parse_basic(cred: str) -> tuple[str, str, str] | None:
    """(user, project, password) from a Basic credential `base64(user@project:password)`."""
    if len(cred) > MAX_BASIC_CHARS:
        return None
    try:
        text = base64.b64decode(cred, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    userpart, colon, password = text.partition(":")
    user, at, project = userpart.rpartition("@")
    if not (colon and at and user and project and password):
        return None
    return user, project, password


def _field(obj: Any, name: str, kind: type[Any]) -> Any:
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise _unavailable(f"Keystone token has no valid {name!r}")
    return value


def _parse_time(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _unavailable("Keystone token has an unreadable expires_at") from None
    if when.tzinfo is None:  # Keystone writes UTC with a Z; be lenient about a missing zone
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
