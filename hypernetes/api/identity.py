"""The identity endpoints beside the Kubernetes API, under /hypernetes/v1/ (JSON in, JSON or Status out):

    POST /hypernetes/v1/login                 {tenant, user, password, expirationSeconds?}  (no token)
    POST /hypernetes/v1/logout                the presented token is revoked
    POST /hypernetes/v1/tokens                {tenant?, user, expirationSeconds?}  a token for a user
                                              (operators; a tenant admin for its own users)
    PUT  /hypernetes/v1/users/{name}/password {password, currentPassword?}  (operators, the
                                              tenant's admin, or the user with its current password)
    POST /hypernetes/v1/users/{name}/revoke   every token of the user issued until now stops working

`login` answers with {token, expirationTimestamp} in the shape of an ExecCredential status, which
`hypernetes login` (a kubectl credential plugin) passes to kubectl as is. Failed logins are
answered after the same slow hash as good ones. Guessing is throttled by source address and
delayed per user name, never by locking the user out (`hypernetes.auth.throttle`).
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from hypernetes.api.authn import bearer_token
from hypernetes.api.routing import AUDIT_TARGET, CALLER, read_body, respond
from hypernetes.api.status import ApiError, bad_request, forbidden, not_found, too_many_requests, unauthorized
from hypernetes.auth.builtin import BuiltinIdentity
from hypernetes.auth.directory import user_spec
from hypernetes.auth.identity import AuthUnavailable, IdentityBackend, IssuedToken, LoginFailed, UserInfo
from hypernetes.auth.passwords import check_new_password
from hypernetes.auth.throttle import LoginThrottle, Throttled
from hypernetes.objects import Obj

DEFAULT_TTL = 3600.0


def token_body(issued: IssuedToken) -> Obj:
    expires = dt.datetime.fromtimestamp(issued.expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"token": issued.token, "expirationTimestamp": expires}


def _ttl(body: Obj) -> float:
    value = body.get("expirationSeconds", DEFAULT_TTL)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 60:
        raise bad_request("expirationSeconds must be a number of at least 60")
    return float(value)


def _str(body: Obj, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise bad_request(f"{key} is required (a string)")
    return value


def _caller() -> UserInfo:
    user = CALLER.get()
    if user is None:
        raise unauthorized()
    return user


class IdentityRoutes:
    def __init__(self, backend: IdentityBackend, builtin: BuiltinIdentity | None) -> None:
        self.backend, self.builtin = backend, builtin
        self.throttle = LoginThrottle()

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/hypernetes/v1/login", self.login)
        app.router.add_post("/hypernetes/v1/logout", self.logout)
        app.router.add_post("/hypernetes/v1/tokens", self.tokens)
        app.router.add_put("/hypernetes/v1/users/{name}/password", self.password)
        app.router.add_post("/hypernetes/v1/users/{name}/revoke", self.revoke)

    async def login(self, request: web.Request) -> web.Response:
        body = await read_body(request, protobuf_ok=False)
        tenant, user, password = _str(body, "tenant"), _str(body, "user"), _str(body, "password")
        ttl = _ttl(body)
        request[AUDIT_TARGET] = ("login", "", "", f"{tenant}/{user}")  # who tried, even if it fails
        try:
            attempt = self.throttle.begin(request.remote or "", user)
        except Throttled as e:
            raise too_many_requests(f"{e}; try again in {e.retry_after}s", e.retry_after) from None
        ok: bool | None = None
        try:
            issued = await self.backend.login(tenant, user, password, ttl)
            ok = True
        except LoginFailed as e:
            ok = False
            raise unauthorized(str(e)) from None
        except AuthUnavailable as e:
            raise ApiError(503, "ServiceUnavailable", str(e)) from None
        finally:
            self.throttle.end(attempt, ok)
        return respond(token_body(issued), 201)

    async def logout(self, request: web.Request) -> web.Response:
        token = bearer_token(request.headers)
        builtin = self._need_builtin()
        if token is None or not await builtin.revoke_token(token):
            raise bad_request("only a token issued by this cluster can be revoked here")
        return respond(
            {"kind": "Status", "apiVersion": "v1", "status": "Success", "message": "token revoked"}
        )

    def _need_builtin(self) -> BuiltinIdentity:
        if self.builtin is None:
            raise ApiError(501, "NotImplemented", "users are managed by the external identity service")
        return self.builtin

    async def _managed_user(self, caller: UserInfo, name: str, *, self_ok: bool) -> Obj:
        """The User object `name` if the caller may manage it: operators, its tenant's admin, or
        (when `self_ok`) the user itself. Others get 403 whether or not the user exists."""
        builtin = self._need_builtin()
        user = await builtin.directory.fetch_user(name)
        tenant = user_spec(user).get("tenant")
        allowed = caller.operator or (
            user is not None
            and caller.tenant == tenant
            and (caller.role == "admin" or (self_ok and caller.name == name))
        )
        if not allowed:
            raise forbidden(f'users "{name}" is forbidden: User "{caller.name}" cannot manage this user')
        if user is None:
            raise not_found("users", name, "hypernetes.io")
        return user

    async def tokens(self, request: web.Request) -> web.Response:
        caller = _caller()
        body = await read_body(request, protobuf_ok=False)
        user = await self._managed_user(caller, _str(body, "user"), self_ok=False)
        if body.get("tenant") not in (None, user_spec(user).get("tenant")):
            raise bad_request(f'user "{_str(body, "user")}" does not belong to tenant "{body.get("tenant")}"')
        return respond(token_body(self._need_builtin().issue_user(user, _ttl(body))), 201)

    async def password(self, request: web.Request) -> web.Response:
        caller = _caller()
        name = request.match_info["name"]
        body = await read_body(request, protobuf_ok=False)
        user = await self._managed_user(caller, name, self_ok=True)
        new = _str(body, "password")
        why = check_new_password(new)
        if why:
            raise ApiError(422, "Invalid", why)
        builtin = self._need_builtin()
        if (
            not caller.operator
            and caller.role != "admin"
            and not await builtin.check_password(user, str(body.get("currentPassword") or ""))
        ):
            raise forbidden("the current password is wrong")
        await builtin.set_password(user, new)
        return respond(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Success",
                "message": f'password of user "{name}" set; its earlier tokens are revoked',
            }
        )

    async def revoke(self, request: web.Request) -> web.Response:
        caller = _caller()
        name = request.match_info["name"]
        await self._managed_user(caller, name, self_ok=True)
        await self._need_builtin().revoke_user(name)
        return respond(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Success",
                "message": f'every token of user "{name}" issued until now is revoked',
            }
        )
