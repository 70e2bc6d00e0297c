"""KeystoneBackend against a real Keystone (Debian's package on SQLite, tests/support/keystone.py),
plus a tiny misbehaving server on 127.0.0.1 for the faults a healthy Keystone never produces."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from hypernetes.auth.identity import AuthUnavailable, LoginFailed, UserInfo
from hypernetes.auth.keystone import EXTRA_PROJECT_ID, EXTRA_ROLES, KeystoneBackend
from tests.support.keystone import Keystone, require_keystone
from tests.support.listening import refusing_port

pytestmark = pytest.mark.keystone

ROLE_MAP = {"k8s-admin": "admin", "k8s-dev": "member", "k8s-view": "viewer"}
PW = "correct horse battery staple"


@dataclass
class World:
    ks: Keystone
    ids: dict[str, str]  # user/project name -> Keystone id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One Keystone for the module, with every user and grant made before any test issues a
    token (grants and revocations are second-granular in Keystone; separate users keep tests
    from revoking each other's tokens)."""
    require_keystone()
    ks = Keystone.start(tmp_path_factory.mktemp("keystone"))
    try:
        ids: dict[str, str] = {}
        roles = {r: ks.create_role(r) for r in ROLE_MAP}
        for p in ("team-a", "team-b", "team-c"):
            ids[p] = ks.create_project(p)
        for u in ("alice", "bob", "dave", "erin", "frank"):
            ids[u] = ks.create_user(u, PW)
        ks.grant(ids["alice"], ids["team-a"], roles["k8s-dev"])
        ks.grant(ids["alice"], ids["team-a"], roles["k8s-view"])
        ks.grant(ids["alice"], ids["team-b"], roles["k8s-admin"])
        ks.grant(ids["bob"], ids["team-a"], ks.role_id("member"))  # a role ROLE_MAP does not map
        for u in ("dave", "erin", "frank"):
            ks.grant(ids[u], ids["team-c"], roles["k8s-view"])
        # the same project name in another domain must not reach tenant team-a
        other = ks.create_domain("other")
        ids["other/team-a"] = ks.create_project("team-a", domain_id=other)
        ids["carol"] = ks.create_user("carol", PW, domain_id=other)
        ks.grant(ids["carol"], ids["other/team-a"], roles["k8s-admin"])
        ks.grant(ids["alice"], ids["other/team-a"], roles["k8s-admin"])  # across domains
        yield World(ks, ids)
    finally:
        ks.close()


@asynccontextmanager
async def backend(url: str, **kw: Any) -> AsyncIterator[KeystoneBackend]:
    b = KeystoneBackend(url, **kw)
    try:
        yield b
    finally:
        await b.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_user(u: UserInfo | None, world: World, user: str, tenant: str, role: str) -> None:
    assert u is not None
    assert (u.name, u.uid, u.tenant, u.role) == (f"keystone:{user}", world.ids[user], tenant, role)
    assert u.groups == (f"hypernetes:tenant:{tenant}", "system:authenticated")
    assert u.extra[EXTRA_PROJECT_ID] == (world.ids[tenant],)
    assert not u.operator


async def test_password_and_token_map_project_and_roles(world: World) -> None:
    async with backend(world.ks.url, role_map=ROLE_MAP) as b:
        # alice holds k8s-dev and k8s-view on team-a: the highest mapped role wins
        u = await b.authenticate(basic("alice@team-a", PW))
        assert_user(u, world, "alice", "team-a", "member")
        assert u is not None and u.extra[EXTRA_ROLES] == ("k8s-dev", "k8s-view")
        token = world.ks.issue_token("alice", PW, project="team-a")
        assert_user(await b.authenticate(bearer(token)), world, "alice", "team-a", "member")
        # a credential for another project is that project's tenant, with that project's role
        assert_user(await b.authenticate(basic("alice@team-b", PW)), world, "alice", "team-b", "admin")
        token_b = world.ks.issue_token("alice", PW, project="team-b")
        assert_user(await b.authenticate(bearer(token_b)), world, "alice", "team-b", "admin")
        # the same token twice: one Keystone call
        calls = b.stats["requests"]
        assert_user(await b.authenticate(bearer(token)), world, "alice", "team-a", "member")
        assert b.stats["requests"] == calls


async def test_default_role_map(world: World) -> None:
    async with backend(world.ks.url) as b:
        # bob's Keystone "member" is our member; alice's custom roles mean nothing here
        assert_user(await b.authenticate(basic("bob@team-a", PW)), world, "bob", "team-a", "member")
        assert await b.authenticate(basic("alice@team-a", PW)) is None


async def test_login_issues_a_project_scoped_token(world: World) -> None:
    async with backend(world.ks.url, role_map=ROLE_MAP) as b:
        issued = await b.login("team-b", "alice", PW, ttl=600)
        assert 3000 < issued.expires - time.time() <= 3600  # Keystone's default lifetime, not ttl
    async with backend(world.ks.url, role_map=ROLE_MAP) as fresh:  # no cache: Keystone checks it
        assert_user(await fresh.authenticate(bearer(issued.token)), world, "alice", "team-b", "admin")
        assert fresh.stats["requests"] == 1


async def test_refused_credentials(world: World) -> None:
    async with backend(world.ks.url, role_map=ROLE_MAP) as b:
        # unscoped token: no tenant
        assert await b.authenticate(bearer(world.ks.issue_token("alice", PW))) is None
        # bob's only role is not in ROLE_MAP: valid in Keystone, nobody here
        assert await b.authenticate(basic("bob@team-a", PW)) is None
        assert await b.authenticate(bearer(world.ks.issue_token("bob", PW, project="team-a"))) is None
        # wrong password, unknown project, a project alice has no role on, garbage tokens
        assert await b.authenticate(basic("alice@team-a", "wrong")) is None
        assert await b.authenticate(basic("alice@nope", PW)) is None
        assert await b.authenticate(basic("alice@team-c", PW)) is None
        assert await b.authenticate(bearer("gAAAAABnot-a-real-token")) is None
        # a same-named project in another domain is not tenant team-a, whoever's user it is
        carol = world.ks.issue_token("carol", PW, project="team-a", domain="other")
        assert await b.authenticate(bearer(carol)) is None
        alice_other = world.ks.issue_token("alice", PW, project="team-a", project_domain="other")
        assert await b.authenticate(bearer(alice_other)) is None
        for tenant, user, pw in [
            ("team-a", "alice", "wrong"),
            ("team-a", "bob", PW),
            ("nope", "alice", PW),
            ("team-a", "carol", PW),
            ("bad name", "alice", PW),
        ]:
            with pytest.raises(LoginFailed):
                await b.login(tenant, user, pw, ttl=600)
        # a refusal is cached briefly: the same wrong password again costs Keystone nothing
        calls = b.stats["requests"]
        assert await b.authenticate(basic("alice@team-a", "wrong")) is None
        assert b.stats["requests"] == calls


async def test_not_ours_never_reaches_keystone() -> None:
    with refusing_port() as port:  # nobody listens
        async with backend(f"http://127.0.0.1:{port}", role_map=ROLE_MAP) as b:
            for headers in [
                {},
                {"Authorization": "Negotiate abc"},
                {"Authorization": "Bearer "},
                {"Authorization": "Bearer a b"},
                {"Authorization": "Bearer " + "x" * 9000},
                {"Authorization": "Basic !!!"},
                basic("alice", PW),
                basic("alice@team-a", ""),
                {"Authorization": "Basic " + base64.b64encode(b"\xff@a:b").decode()},
            ]:
                assert await b.authenticate(headers) is None, headers
            assert b.stats["requests"] == 0


async def test_revoked_token_refused_after_cache_ttl(world: World) -> None:
    token = world.ks.issue_token("dave", PW, project="team-c")
    async with backend(world.ks.url, role_map=ROLE_MAP, cache_ttl=1.0) as b:
        assert_user(await b.authenticate(bearer(token)), world, "dave", "team-c", "viewer")
        world.ks.revoke_token(token)
        # still cached: the documented price of caching is up to cache_ttl of staleness
        assert await b.authenticate(bearer(token)) is not None
        await asyncio.sleep(1.1)
        assert await b.authenticate(bearer(token)) is None


async def test_expired_token_never_served_from_cache(world: World) -> None:
    short = world.ks.extra_server(token_expiration=2)  # same database and keys, 2 s tokens
    async with backend(short.url, role_map=ROLE_MAP) as issuer:
        issued = await issuer.login("team-c", "erin", PW, ttl=600)
    assert issued.expires - time.time() <= 2
    async with backend(world.ks.url, role_map=ROLE_MAP, cache_ttl=60) as b:
        assert_user(await b.authenticate(bearer(issued.token)), world, "erin", "team-c", "viewer")
        await asyncio.sleep(max(0.0, issued.expires - time.time()) + 0.5)
        # a 60 s cache, yet the token's own expiry ends the entry; Keystone then refuses it
        assert await b.authenticate(bearer(issued.token)) is None
        assert b.stats["requests"] == 2


async def test_cache_rides_out_an_outage_until_ttl(world: World) -> None:
    server = world.ks.extra_server()
    token = world.ks.issue_token("frank", PW, project="team-c")
    async with backend(server.url, role_map=ROLE_MAP, cache_ttl=1.5, timeout=2.0) as b:
        assert await b.authenticate(bearer(token)) is not None
        assert await b.authenticate(basic("frank@team-c", PW)) is not None
        calls = b.stats["requests"]
        server.stop()
        # within the TTL the cached answers hold without Keystone
        assert_user(await b.authenticate(bearer(token)), world, "frank", "team-c", "viewer")
        assert_user(await b.authenticate(basic("frank@team-c", PW)), world, "frank", "team-c", "viewer")
        assert b.stats["requests"] == calls
        # anything new needs Keystone: unavailable, neither a user nor "unauthenticated"
        with pytest.raises(AuthUnavailable, match="identity service unavailable"):
            await b.authenticate(basic("frank@team-c", "another guess"))
        with pytest.raises(AuthUnavailable):
            await b.login("team-c", "frank", PW, ttl=600)
        await asyncio.sleep(1.6)
        for headers in (bearer(token), basic("frank@team-c", PW)):
            with pytest.raises(AuthUnavailable):
                await b.authenticate(headers)


async def test_concurrent_requests_share_one_keystone_call(world: World) -> None:
    token = world.ks.issue_token("alice", PW, project="team-a")
    async with backend(world.ks.url, role_map=ROLE_MAP) as b:
        users = await asyncio.gather(*(b.authenticate(bearer(token)) for _ in range(20)))
        assert users[0] is not None and all(u == users[0] for u in users)
        assert b.stats["requests"] == 1


# -- a misbehaving "Keystone": faults a real one would only produce on a bad day ----------------

GOOD_TOKEN = {
    "token": {
        "expires_at": "2099-01-01T00:00:00.000000Z",
        "user": {"id": "u1", "name": "alice", "domain": {"id": "default", "name": "Default"}},
        "project": {"id": "p1", "name": "team-a", "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "r1", "name": "k8s-admin"}],
    }
}


def _with(path: str, value: object) -> bytes:
    """GOOD_TOKEN with one field (a/b/c path) replaced, as JSON."""
    doc = copy.deepcopy(GOOD_TOKEN)
    *parents, last = path.split("/")
    node: dict[str, Any] = doc
    for p in parents:
        node = node[p]
    node[last] = value
    return json.dumps(doc).encode()


# fault -> (status, body, headers), or a behaviour the handler implements
FAULTS: dict[str, tuple[int, bytes, dict[str, str]] | str] = {
    "good": (200, json.dumps(GOOD_TOKEN).encode(), {}),
    "not-json": (200, b"<html>gateway says hi</html>", {}),
    "deep-json": (200, b"[" * 200_000, {}),
    "no-token": (200, b'{"error": "what"}', {}),
    "expiry-number": (200, _with("token/expires_at", 12), {}),
    "expiry-text": (200, _with("token/expires_at", "tomorrow"), {}),
    "user-list": (200, _with("token/user", ["alice"]), {}),
    "role-no-name": (200, _with("token/roles", [{"id": "r1"}]), {}),
    "project-no-domain": (200, _with("token/project/domain", None), {}),
    "oversized": (200, b'{"token": "' + b"x" * (2 << 20) + b'"}', {}),
    "oversized-chunked": "chunked",
    "server-error": (500, b"boom", {}),
    "unavailable": (503, b"", {}),
    "redirect": (302, b"", {"Location": "http://127.0.0.1:1/"}),
    "teapot": (418, b"", {}),
    "slow": "slow",
}


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    # handler_cancellation: a client that timed out must not leave a handler for cleanup to await
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def fake_keystone() -> AsyncIterator[str]:
    """http://127.0.0.1:P; `/<fault>/v3/auth/tokens` answers GET and POST with that fault."""

    async def tokens(request: web.Request) -> web.StreamResponse:
        fault = FAULTS[request.match_info["fault"]]
        if fault == "slow":
            await asyncio.sleep(5)
            return web.json_response(GOOD_TOKEN)
        if fault == "chunked":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b"x" * 65536)
            return resp
        assert not isinstance(fault, str)
        status, body, headers = fault
        headers = {"Content-Type": "application/json", **headers}
        if request.method == "POST" and status == 200:
            status, headers["X-Subject-Token"] = 201, "gAAAAABfake"
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{fault}/v3/auth/tokens", tokens)
    async with serve(app) as url:
        yield url


@asynccontextmanager
async def raw_server(reply: bytes) -> AsyncIterator[str]:
    """Reads a request, writes `reply` (maybe not HTTP at all) and hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_fake_keystone_good_answer_is_understood() -> None:
    # proves the fault server speaks well enough that the faults below are the faults
    async with fake_keystone() as url, backend(url + "/good", role_map=ROLE_MAP) as b:
        u = await b.authenticate(bearer("tok"))
        assert u is not None and (u.name, u.tenant, u.role) == ("keystone:alice", "team-a", "admin")
        assert await b.authenticate(basic("alice@team-a", PW)) is not None
        assert (await b.login("team-a", "alice", PW, ttl=60)).token == "gAAAAABfake"


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "good"])
async def test_garbage_from_keystone_is_unavailable(fault: str) -> None:
    async with fake_keystone() as url, backend(url + f"/{fault}", role_map=ROLE_MAP, timeout=0.5) as b:
        for headers in (bearer("tok"), basic("alice@team-a", PW)):
            with pytest.raises(AuthUnavailable, match="identity service unavailable"):
                await b.authenticate(headers)
        with pytest.raises(AuthUnavailable):
            await b.login("team-a", "alice", PW, ttl=60)
        assert b.stats["unavailable"] == 2  # and nothing of it was cached
        with pytest.raises(AuthUnavailable):
            await b.authenticate(bearer("tok"))


@pytest.mark.parametrize(
    "reply", [b"", b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{"]
)
async def test_broken_connections_are_unavailable(reply: bytes) -> None:
    async with raw_server(reply) as url, backend(url, role_map=ROLE_MAP, timeout=2.0) as b:
        with pytest.raises(AuthUnavailable, match="identity service unavailable"):
            await b.authenticate(bearer("tok"))
        with pytest.raises(AuthUnavailable):
            await b.login("team-a", "alice", PW, ttl=60)


async def test_login_without_subject_token_is_unavailable() -> None:
    async def issue(request: web.Request) -> web.Response:
        return web.json_response(GOOD_TOKEN, status=201)  # no X-Subject-Token header

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", issue)
    async with serve(app) as url, backend(url + "/v3/", role_map=ROLE_MAP) as b:
        with pytest.raises(AuthUnavailable):
            await b.login("team-a", "alice", PW, ttl=60)


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        KeystoneBackend("ftp://keystone")
    with pytest.raises(ValueError):
        KeystoneBackend("http://keystone:5000", role_map={"admin": "root"})
    assert KeystoneBackend("https://keystone:5000/identity/v3/").url == "https://keystone:5000/identity/v3"
